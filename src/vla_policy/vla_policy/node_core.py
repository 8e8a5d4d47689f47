"""ROS-free parts of ``policy_node``: where the instruction comes from, and which checkpoint to load.

Instruction sources (:class:`InstructionSelector`): a user changes the instruction the obvious
ways, and the latest one from any of them wins:

* ``ros2 topic pub --once /vla/instruction std_msgs/msg/String "{data: '...'}"`` (default QoS:
  reliable, volatile) -> the node's volatile subscription (:data:`robot_drivers.qos.INSTRUCTION_VOLATILE`);
* a latched (transient-local) publisher such as ``sim_node``, including a value published before
  the node started -> the node's transient-local subscription (:data:`robot_drivers.qos.LATCHED`);
* ``ros2 param set /policy_node instruction "..."`` -> the ``instruction`` parameter.

Parameters (:func:`parameter_defaults`, :func:`runtime_config`): one per
:class:`vla_policy.runtime.RuntimeConfig` field, declared from the dataclass (so a field added to
the runtime is a node parameter without a change here), plus :data:`NODE_PARAMETERS`.

A volatile subscription also matches a transient-local publisher, so each *live* latched message
arrives on both subscriptions; the selector pairs the second delivery with the first (same text,
other subscription, within ``pair_window_s``) and drops it, so one publication is one change.
"""
from __future__ import annotations

from collections import deque
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Deque, Dict, Mapping, Optional, Tuple, Union

__all__ = ['LATCHED_TOPIC', 'VOLATILE_TOPIC', 'PARAMETER', 'SOURCES', 'InstructionChange',
           'InstructionSelector', 'DEFAULT_CHECKPOINT', 'resolve_checkpoint', 'NODE_PARAMETERS',
           'RUNTIME_DEFAULTS', 'MODEL_FIELDS', 'parameter_defaults', 'runtime_config', 'camera_topics']

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


#: policy_node's own parameters (not RuntimeConfig fields) and their defaults.
NODE_PARAMETERS: Dict[str, Any] = {
    'checkpoint': DEFAULT_CHECKPOINT,   # local model ('' with policy_endpoint set is fine)
    'embodiment': 'franka_panda',       # robot_drivers.embodiment registry key
    'device': 'cpu',                    # torch device of the local model
    'image_topic': '/camera/image_raw',  # the model's first camera when `cameras` is '' (see camera_topics)
    'joint_states_topic': '/joint_states',
    'instruction_topic': '/vla/instruction',
    'instruction': '',                  # '' = wait for the topic
    'command_topic': '/vla/joint_trajectory',
    'policy_endpoint': '',              # '' = local checkpoint; ws://host:port = a policy_server
    'policy_token': '',
    'policy_timeout_s': 1.0,
    'record_rollouts': '',              # '' = off; a directory
    'record_command_topic': '/arm_controller/joint_trajectory',
    'diagnostics_period_s': 1.0,
    'autostart': False,                 # configure + activate at start-up (ros2 run)
}
#: RuntimeConfig fields declared with another default than the dataclass's: 0 = the model's.
RUNTIME_DEFAULTS: Dict[str, Any] = {'n_action_steps': 0}
#: RuntimeConfig fields the model (or the policy server's metadata) dictates.
MODEL_FIELDS = ('n_obs_steps', 'camera')


def camera_topics(params: Mapping[str, Any], camera_names: Any) -> Dict[str, str]:
    """``{camera: image topic}`` for the model's ``camera_names``, in that order.

    With parameter ``cameras`` set (``name=topic`` pairs, see
    :attr:`vla_policy.runtime.RuntimeConfig.cameras`) it must name exactly the model's cameras.
    Empty: the first camera is on ``image_topic`` (one camera, as before several existed) and any
    other camera ``c`` on ``/<c>_camera/image_raw`` (REP-144 style; the sim's ``wrist`` camera is
    ``/wrist_camera/image_raw``).

    Raises:
        ValueError: no camera names; ``cameras`` malformed, naming other cameras than the model's
            (both listed), or giving one topic to two cameras.
    """
    from vla_policy.runtime import RuntimeConfig
    names = [str(c) for c in (camera_names or [])]
    if not names:
        raise ValueError('model metadata camera_names is empty: the model reads no camera')
    given = params.get('cameras', '') or ''
    if isinstance(given, Mapping) or str(given).strip():
        topics = RuntimeConfig(cameras=given).camera_topics   # parses and checks the pairs
        if sorted(topics) != sorted(names):
            raise ValueError(f'parameter cameras names cameras {list(topics)} but the model reads {names}: '
                             f'give one name=topic pair per model camera')
        out = {c: str(topics[c]) for c in names}
    else:
        first = str(params.get('image_topic', NODE_PARAMETERS['image_topic']))
        out = {c: first if i == 0 else f'/{c}_camera/image_raw' for i, c in enumerate(names)}
    dup = sorted({t for t in out.values() if list(out.values()).count(t) > 1})
    if dup:
        raise ValueError(f'cameras {list(out)} would share the image topic(s) {dup}: set parameter cameras '
                         f'(name=topic pairs) or image_topic')
    return out


def parameter_defaults() -> Dict[str, Any]:
    """Every policy_node parameter and its default: the RuntimeConfig fields (dataclass defaults,
    except :data:`RUNTIME_DEFAULTS`) then :data:`NODE_PARAMETERS`. Raises ValueError when a node
    parameter shadows a RuntimeConfig field with another default (``control_rate_hz`` is both: one
    parameter, the timer rate and the runtime's missed-tick period)."""
    from vla_policy.runtime import RuntimeConfig
    out = {f.name: RUNTIME_DEFAULTS.get(f.name, f.default) for f in dataclasses.fields(RuntimeConfig)}
    for k, v in NODE_PARAMETERS.items():
        if k in out and out[k] != v:
            raise ValueError(f'policy_node parameter {k} is a RuntimeConfig field with default {out[k]!r}, '
                             f'not {v!r}')
        out.setdefault(k, v)
    return out


def runtime_config(params: Mapping[str, Any], metadata: Mapping[str, Any]) -> Any:
    """The :class:`vla_policy.runtime.RuntimeConfig` of the node's parameter values and the model's
    metadata (``VLAPolicy.metadata()`` / ``RemotePolicy.metadata``: ``n_obs_steps``,
    ``n_action_steps``, ``camera_names``).

    ``n_obs_steps`` and ``camera`` are the model's; ``n_action_steps`` <= 0 is the model's; an int
    given for a float field is taken as a float (``-p max_obs_age_s:=1``). ``cameras`` becomes
    every model camera with its topic (:func:`camera_topics`, from ``cameras`` or ``image_topic``
    in ``params``).

    Raises:
        ValueError: ``n_obs_steps`` / ``camera`` set to something other than the dataclass default
            and the model's value (names both); ``cameras`` that do not match the model's
            ``camera_names`` (:func:`camera_topics`); a value RuntimeConfig rejects; metadata
            lacking a key.
        TypeError: a value of the wrong type (RuntimeConfig names the field).
    """
    from vla_policy.runtime import RuntimeConfig
    defaults = {f.name: f.default for f in dataclasses.fields(RuntimeConfig)}
    values: Dict[str, Any] = {}
    for name, default in defaults.items():
        v = params.get(name, RUNTIME_DEFAULTS.get(name, default))
        if isinstance(default, float) and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        values[name] = v
    try:
        model = {'n_obs_steps': int(metadata['n_obs_steps']), 'camera': str(list(metadata['camera_names'])[0]),
                 'n_action_steps': int(metadata['n_action_steps'])}
    except (KeyError, IndexError, TypeError) as exc:
        raise ValueError(f'model metadata lacks n_obs_steps / n_action_steps / camera_names: {exc!r}') from exc
    for name in MODEL_FIELDS:
        if values[name] not in (defaults[name], model[name]):
            raise ValueError(f'parameter {name} is {values[name]!r} but the model uses {model[name]!r} '
                             f'(leave {name} unset: it comes from the model)')
        values[name] = model[name]
    if isinstance(values['n_action_steps'], int) and values['n_action_steps'] <= 0:
        values['n_action_steps'] = model['n_action_steps']
    topics = camera_topics(params, list(metadata['camera_names']))
    values['cameras'] = ','.join(f'{c}={t}' for c, t in topics.items())
    return RuntimeConfig(**values)
