"""ROS-free parts of ``policy_node``: where the instruction comes from, and which checkpoint to load.

Instruction sources (:class:`InstructionSelector`): a user changes the instruction the obvious
ways, and the latest one from any of them wins:

* ``ros2 topic pub --once /vla/instruction std_msgs/msg/String "{data: '...'}"`` (default QoS:
  reliable, volatile) -> the node's volatile subscription (:data:`robot_drivers.qos.INSTRUCTION_VOLATILE`);
* a latched (transient-local) publisher such as ``sim_node``, including a value published before
  the node started -> the node's transient-local subscription (:data:`robot_drivers.qos.LATCHED`);
* ``ros2 param set /policy_node instruction "..."`` -> the ``instruction`` parameter.

A volatile subscription also matches a transient-local publisher, so each *live* latched message
arrives on both subscriptions; the selector pairs the second delivery with the first (same text,
other subscription, within ``pair_window_s``) and drops it, so one publication is one change.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Deque, Dict, Optional, Tuple, Union

__all__ = ['LATCHED_TOPIC', 'VOLATILE_TOPIC', 'PARAMETER', 'SOURCES', 'InstructionChange',
           'InstructionSelector', 'DEFAULT_CHECKPOINT', 'resolve_checkpoint']

LATCHED_TOPIC = 'topic (transient local)'
VOLATILE_TOPIC = 'topic'
PARAMETER = 'parameter'
SOURCES = (LATCHED_TOPIC, VOLATILE_TOPIC, PARAMETER)

#: Where ``make demo`` (``vla_training.demo``, default ``--output outputs/demo``) writes the
#: trained film_cnn checkpoint, relative to the directory it runs in (the workspace root); the
#: default of ``policy_node``'s ``checkpoint`` parameter and of ``franka.launch.py checkpoint:=``.
DEFAULT_CHECKPOINT = 'outputs/demo/film_cnn/checkpoint'


@dataclass(frozen=True)
class InstructionChange:
    """The instruction changed to ``text`` (from ``source``, one of :data:`SOURCES`); ``previous``
    is None for the first one."""

    text: str
    source: str
    previous: Optional[str]


class InstructionSelector:
    """The latest instruction from any source wins; repeats and double deliveries are not changes.

    Args:
        pair_window_s: a topic delivery is the double of one on the other subscription with the
            same text received at most this long before (s). Both subscriptions of one node see a
            publication within milliseconds; 1 s leaves room for a busy executor.
        max_unpaired: deliveries remembered per subscription for pairing.
    """

    def __init__(self, pair_window_s: float = 1.0, max_unpaired: int = 16) -> None:
        if not pair_window_s > 0:
            raise ValueError(f'pair_window_s must be > 0, got {pair_window_s}')
        self.pair_window_s = float(pair_window_s)
        self.current: Optional[str] = None
        self.source: Optional[str] = None
        self._unpaired: Dict[str, Deque[Tuple[str, float]]] = {
            LATCHED_TOPIC: deque(maxlen=max_unpaired), VOLATILE_TOPIC: deque(maxlen=max_unpaired)}

    @staticmethod
    def validate(text: object, source: str) -> str:
        """``text`` stripped; raises ValueError unless it is a non-empty string (names ``source``)."""
        if not isinstance(text, str):
            raise ValueError(f'instruction from {source} must be a string, got {type(text).__name__}')
        text = text.strip()
        if not text:
            raise ValueError(f'instruction from {source} is empty')
        return text

    def offer(self, text: object, source: str, now: float) -> Optional[InstructionChange]:
        """An instruction arrived from ``source`` at ``now`` (s, a monotonic clock).

        Returns the change, or None when it is the current instruction again or the second
        delivery of a latched publication.

        Raises:
            ValueError: unknown ``source``; ``text`` empty or not a string.
        """
        if source not in SOURCES:
            raise ValueError(f'unknown instruction source {source!r}; expected one of {SOURCES}')
        text = self.validate(text, source)
        if source in self._unpaired:
            other = self._unpaired[VOLATILE_TOPIC if source == LATCHED_TOPIC else LATCHED_TOPIC]
            for i, (seen, t) in enumerate(other):
                if seen == text and 0 <= now - t <= self.pair_window_s:
                    del other[i]
                    return None
            self._unpaired[source].append((text, float(now)))
        if text == self.current:
            return None
        change = InstructionChange(text, source, self.current)
        self.current, self.source = text, source
        return change


def resolve_checkpoint(path: Union[str, Path], cwd: Optional[Union[str, Path]] = None) -> Path:
    """The checkpoint directory ``path`` names (relative paths against ``cwd``, default the
    working directory), checked to exist.

    Raises:
        ValueError: ``path`` is empty.
        FileNotFoundError: no such directory, in one line saying what to do:
            ``checkpoint '<path>' not found: run `make demo` or pass checkpoint:=<dir>``.
    """
    text = str(path).strip()
    if not text:
        raise ValueError('parameter checkpoint is empty: pass checkpoint:=<dir> '
                         '(a directory written by `ros2 run vla_training train` or `make demo`)')
    p = Path(text).expanduser()
    if not p.is_absolute():
        p = Path(cwd if cwd is not None else Path.cwd()) / p
    if not p.is_dir():
        raise FileNotFoundError(f"checkpoint '{p}' not found: run `make demo` or pass checkpoint:=<dir>")
    return p
