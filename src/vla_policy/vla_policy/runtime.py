"""The policy runtime: inputs at the edge -> observation history -> policy -> executed chunk (ROS-free).

The rclpy ``policy_node`` and the ROS-free closed-loop evaluation both drive this class, so one
code path turns camera / joint-state / instruction messages into trajectory commands.

Per control tick (``step(now)``):
1. refuse to act when an input is missing or older than ``max_obs_age_s`` (the pending chunk is
   dropped: acting on it would replay stale intent);
2. push the newest observation into the history (``n_obs_steps`` long);
3. when the executed part of the previous chunk is used up, call ``policy.infer(history)`` and
   return its first ``n_action_steps`` rows as a :class:`TrajectoryCommand` (one point per
   chunk step, ``time_from_start = (k + 1) * dt``), the open-loop chunk execution of ACT /
   Diffusion Policy / LeRobot ``n_action_steps``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import numpy as np

from robot_drivers import conversions as conv
from robot_drivers.embodiment import Embodiment
from vla_policy.contracts import Observation, Policy
from vla_policy.history import ObservationHistory

__all__ = ['RuntimeConfig', 'TrajectoryCommand', 'PolicyRuntime']

log = logging.getLogger('vla_policy.runtime')


@dataclass
class RuntimeConfig:
    """Runtime parameters (map 1:1 onto the ``policy_node`` ROS parameters).

    n_obs_steps: observations fed to the policy (must match the model's).
    n_action_steps: chunk rows executed per inference; fewer = more reactive, more inference.
    max_obs_age_s: refuse to act on an image or joint state older than this (s). 0.5 s = 5
        control periods at 10 Hz: a camera hiccup is tolerated, a dead driver is not.
    camera: key of the image in ``Observation.images`` (the model's camera name).
    """

    n_obs_steps: int = 1
    n_action_steps: int = 4
    max_obs_age_s: float = 0.5
    camera: str = 'front'

    def __post_init__(self) -> None:
        if self.n_obs_steps < 1:
            raise ValueError(f'n_obs_steps must be >= 1, got {self.n_obs_steps}')
        if self.n_action_steps < 1:
            raise ValueError(f'n_action_steps must be >= 1, got {self.n_action_steps}')
        if not self.max_obs_age_s > 0:
            raise ValueError(f'max_obs_age_s must be > 0, got {self.max_obs_age_s}')


@dataclass
class TrajectoryCommand:
    """What to publish: ``positions (P, J)`` for ``joint_names``, point k due at ``stamp + (k + 1) * dt``."""

    joint_names: Tuple[str, ...]
    positions: np.ndarray
    dt: float
    stamp: float

    def to_msg(self, types: conv.MessageTypes) -> Any:
        """As ``trajectory_msgs/JointTrajectory`` built from ``types``."""
        return conv.arrays_to_trajectory(self.joint_names, self.positions, self.stamp, types, dt=self.dt)


class PolicyRuntime:
    """Feeds a :class:`~vla_policy.contracts.Policy` from timestamped inputs; see the module docstring."""

    def __init__(self, policy: Policy, embodiment: Embodiment, config: Optional[RuntimeConfig] = None) -> None:
        self.policy = policy
        self.embodiment = embodiment
        self.cfg = config or RuntimeConfig()
        self.history = ObservationHistory(self.cfg.n_obs_steps)
        self._image: Optional[Tuple[np.ndarray, float]] = None
        self._joints: Optional[Tuple[np.ndarray, Optional[np.ndarray], float]] = None
        self._instruction: Optional[str] = None
        self._remaining = 0           # executed-chunk ticks left before the next inference
        self._last_pushed = None      # (image stamp, joint stamp) of the last history entry
        self.status = 'waiting for inputs'
        self.inferences = 0

    # ------------------------------------------------------------------ inputs (arrays)
    def on_image(self, image: np.ndarray, stamp: float) -> None:
        """``image`` uint8 (H, W, 3) RGB stamped ``stamp`` s."""
        self._image = (image, float(stamp))

    def on_joint_state(self, positions: np.ndarray, stamp: float, velocities: Optional[np.ndarray] = None) -> None:
        """``positions (J,)`` in embodiment order (rad / m); raises ValueError on the wrong length."""
        positions = np.asarray(positions, dtype=np.float64).reshape(-1)
        if positions.shape[0] != self.embodiment.dof:
            raise ValueError(f'joint state has {positions.shape[0]} positions, embodiment '
                             f'{self.embodiment.name!r} has {self.embodiment.dof}')
        self._joints = (positions, velocities, float(stamp))

    def on_instruction(self, text: str) -> None:
        """A new instruction resets the policy and drops the pending chunk."""
        text = str(text).strip()
        if not text:
            raise ValueError('instruction is empty')
        if text != self._instruction:
            log.info('new instruction: %r', text)
            self._instruction = text
            self.reset()

    # ------------------------------------------------------------------ inputs (messages, any flavour)
    def on_image_msg(self, msg: Any, *, source: str = '/camera/image_raw') -> None:
        """``sensor_msgs/Image`` or ``CompressedImage`` (rclpy or rosbags)."""
        if hasattr(msg, 'encoding'):
            img = conv.image_to_numpy(msg, source=source)
        else:
            img = conv.compressed_image_to_numpy(msg, source=source)
        self.on_image(img, conv.stamp_to_sec(msg.header.stamp))

    def on_joint_state_msg(self, msg: Any, *, source: str = '/joint_states') -> None:
        pos, vel = conv.joint_state_to_arrays(msg, self.embodiment.joint_names, source=source)
        self.on_joint_state(pos, conv.stamp_to_sec(msg.header.stamp), vel)

    def on_instruction_msg(self, msg: Any) -> None:
        self.on_instruction(msg.data)

    # ------------------------------------------------------------------ control tick
    def reset(self) -> None:
        self.history.clear()
        self._remaining = 0
        self._last_pushed = None
        self.policy.reset()

    def _refuse(self, why: str) -> None:
        if why != self.status:
            log.warning('not acting: %s', why)
        self.status = why
        self._remaining = 0

    def step(self, now: float) -> Optional[TrajectoryCommand]:
        """One control tick at time ``now`` (s). Returns a command on inference ticks, else None.

        ``self.status`` says why no command was produced when inputs are missing or stale.
        """
        if self._image is None or self._joints is None or self._instruction is None:
            missing = [n for n, v in (('image', self._image), ('joint state', self._joints),
                                      ('instruction', self._instruction)) if v is None]
            self._refuse(f'waiting for {", ".join(missing)}')
            return None
        img, img_stamp = self._image
        q, qd, q_stamp = self._joints
        for what, stamp in (('image', img_stamp), ('joint state', q_stamp)):
            age = now - stamp
            if age > self.cfg.max_obs_age_s:
                self._refuse(f'{what} is {age:.3f} s old (max_obs_age_s = {self.cfg.max_obs_age_s})')
                return None
        key = (img_stamp, q_stamp)
        if key != self._last_pushed:
            self.history.push(Observation(images={self.cfg.camera: img}, joint_positions=q,
                                          instruction=self._instruction, stamp=max(img_stamp, q_stamp),
                                          joint_velocities=qd))
            self._last_pushed = key
        self.status = 'running'
        if self._remaining > 0:
            self._remaining -= 1
            return None
        chunk = self.policy.infer(self.history.frames())
        self.inferences += 1
        if tuple(chunk.joint_names) != tuple(self.embodiment.joint_names):
            raise ValueError(f'policy returned joints {chunk.joint_names}, embodiment '
                             f'{self.embodiment.name!r} expects {self.embodiment.joint_names}')
        n = min(self.cfg.n_action_steps, chunk.horizon)
        self._remaining = n - 1
        return TrajectoryCommand(tuple(chunk.joint_names), np.asarray(chunk.actions[:n], dtype=np.float64),
                                 chunk.dt, now)
