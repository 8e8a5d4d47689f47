"""The policy contract shared by the runtime, the node, training and evaluation (ROS-free).

``Policy.infer(history) -> ActionChunk`` and ``Policy.reset()`` are all a policy is; wrappers
(chunk executor, temporal ensembler, recorder, remote client) implement the same two calls, as
openpi's ``BasePolicy`` / ``ActionChunkBroker``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Protocol, Sequence, Tuple, runtime_checkable

import numpy as np

__all__ = ['Observation', 'ActionChunk', 'Policy']


@dataclass
class Observation:
    """One time step of what the robot sees.

    Attributes:
        images: ``{camera_name: uint8 (H, W, 3) RGB}``.
        joint_positions: ``float32 (J,)`` in embodiment order (rad / m).
        instruction: the language task, e.g. ``"reach the red cube"``.
        stamp: time of the observation, float seconds (the newest of its header stamps).
        joint_velocities: optional ``float32 (J,)``.
    """

    images: Dict[str, np.ndarray]
    joint_positions: np.ndarray
    instruction: str
    stamp: float
    joint_velocities: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        self.joint_positions = np.asarray(self.joint_positions, dtype=np.float32).reshape(-1)
        for cam, img in self.images.items():
            if not (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3):
                got = (getattr(img, 'dtype', type(img)), getattr(img, 'shape', None))
                raise ValueError(f'Observation image {cam!r} must be uint8 (H, W, 3) RGB, got {got}')
        if not np.all(np.isfinite(self.joint_positions)):
            raise ValueError('Observation joint_positions contain NaN/Inf')


@dataclass
class ActionChunk:
    """A chunk of future commands.

    Attributes:
        actions: ``float32 (H, A)`` absolute joint position targets in embodiment units, row ``k``
            meant for time ``stamp + (k + 1) * dt``.
        joint_names: ``(A,)`` names, embodiment order.
        dt: step period in seconds.
        stamp: stamp of the observation the chunk was computed from (s).
    """

    actions: np.ndarray
    joint_names: Tuple[str, ...]
    dt: float
    stamp: float
    info: Dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.actions = np.asarray(self.actions, dtype=np.float32)
        if self.actions.ndim != 2 or self.actions.shape[1] != len(self.joint_names):
            raise ValueError(
                f'ActionChunk actions must be (H, {len(self.joint_names)}), got {self.actions.shape}')
        if not self.dt > 0:
            raise ValueError(f'ActionChunk dt must be > 0, got {self.dt}')
        self.joint_names = tuple(self.joint_names)

    @property
    def horizon(self) -> int:
        return int(self.actions.shape[0])


@runtime_checkable
class Policy(Protocol):
    def infer(self, history: Sequence[Observation]) -> ActionChunk:
        """Action chunk for the newest observation; ``history`` is oldest-first, length n_obs_steps."""

    def reset(self) -> None:
        """Forget episode state (call at episode start / instruction change)."""
