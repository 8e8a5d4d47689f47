"""The policy contract shared by the runtime, the node, training and evaluation (ROS-free).

``Policy.infer(history) -> ActionChunk`` and ``Policy.reset()`` are all a policy is; wrappers
(chunk executor, temporal ensembler, recorder, remote client) implement the same two calls, as
openpi's ``BasePolicy`` / ``ActionChunkBroker``.

A policy whose head samples (flow matching, diffusion) may also implement
``infer_guided(history, guide: ChunkGuide) -> ActionChunk`` and set ``supports_guidance = True``:
real-time chunking (RTC) asks it for a chunk that continues the rows already being executed.
A policy that cannot answer (a remote server unreachable or too slow) raises
:class:`PolicyUnavailable`; the runtime then holds (publishes nothing) and says why.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Protocol, Sequence, Tuple, runtime_checkable

import numpy as np

__all__ = ['Observation', 'ActionChunk', 'ChunkGuide', 'Policy', 'PolicyUnavailable']


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


class PolicyUnavailable(RuntimeError):
    """The policy could not answer this call (server unreachable, connection lost, timeout).

    The message says why in one line; the caller may retry later. A bad observation is a
    ValueError instead (retrying the same input cannot help).
    """


@dataclass
class ChunkGuide:
    """Real-time chunking guidance for the next chunk (Black et al. 2025, "Real-Time Execution of
    Action Chunking Flow Policies", arXiv 2506.07339, sec. 4).

    Attributes:
        actions: ``float32 (H, A)`` absolute targets the new chunk should reproduce, row ``k``
            aligned with the new chunk's row ``k`` (time ``stamp + (k + 1) * dt`` of the
            observation the new chunk is computed from); rows with no previous plan are ignored
            (their weight is 0).
        weights: ``float32 (H,)`` in [0, 1]: 1 for the rows executed while the new chunk is
            being computed (the frozen prefix, ``inference_delay`` rows), decaying over the
            overlap, 0 where the new chunk is free (the paper's soft mask ``W``).
        inference_delay: ``d``, rows that will have executed before the new chunk arrives.
        max_guidance_weight: the clip ``beta`` on the guidance weight (paper: 5; LeRobot: 10).
    """

    actions: np.ndarray
    weights: np.ndarray
    inference_delay: int
    max_guidance_weight: float = 10.0

    def __post_init__(self) -> None:
        self.actions = np.asarray(self.actions, dtype=np.float32)
        self.weights = np.asarray(self.weights, dtype=np.float32).reshape(-1)
        if self.actions.ndim != 2 or self.weights.shape[0] != self.actions.shape[0]:
            raise ValueError(f'ChunkGuide actions (H, A) and weights (H,) disagree: '
                             f'{self.actions.shape} vs {self.weights.shape}')
        if not (np.all(self.weights >= 0) and np.all(self.weights <= 1)):
            raise ValueError('ChunkGuide weights must lie in [0, 1]')
        if not 0 <= self.inference_delay <= self.actions.shape[0]:
            raise ValueError(f'ChunkGuide inference_delay {self.inference_delay} outside [0, {self.actions.shape[0]}]')
        if not self.max_guidance_weight > 0:
            raise ValueError(f'ChunkGuide max_guidance_weight must be > 0, got {self.max_guidance_weight}')


@runtime_checkable
class Policy(Protocol):
    def infer(self, history: Sequence[Observation]) -> ActionChunk:
        """Action chunk for the newest observation; ``history`` is oldest-first, length n_obs_steps."""

    def reset(self) -> None:
        """Forget episode state (call at episode start / instruction change)."""
