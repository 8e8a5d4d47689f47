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

Refusing to act, resuming, and a new instruction are recorded as :class:`RuntimeEvent` edges in
``events`` (one when a condition starts or changes, one when it ends; never one per tick); the
node logs each one once (:meth:`PolicyRuntime.take_events`).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Deque, List, Optional, Tuple

import numpy as np

from robot_drivers import conversions as conv
from robot_drivers.embodiment import Embodiment
from vla_policy.contracts import Observation, Policy
from vla_policy.history import ObservationHistory

__all__ = ['RuntimeConfig', 'RuntimeEvent', 'TrajectoryCommand', 'PolicyRuntime']


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


@dataclass(frozen=True)
class RuntimeEvent:
    """An edge in the runtime's state.

    kind: ``'refusing'`` (no command: ``detail`` says why; recorded when refusal starts or its
        reason changes), ``'acting'`` (the refusal ended), ``'instruction'`` (``detail`` is the new
        instruction).
    stamp: control time (s) of the tick that saw it; None for an instruction (arrives off-tick).
    """

    kind: str
    detail: str
    stamp: Optional[float] = None


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
    """Feeds a :class:`~vla_policy.contracts.Policy` from timestamped inputs; see the module docstring.

    Attributes:
        status: ``'running'`` or why no command is produced (the current refusal).
        refusal: the current refusal reason, None while acting.
        events: the last :data:`MAX_EVENTS` :class:`RuntimeEvent` edges, oldest first.
        inferences: policy calls so far.
    """

    MAX_EVENTS = 256

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
        self.refusal: Optional[str] = self.status
        self._refusal_key: Optional[Tuple[str, ...]] = ('start',)
        self.events: Deque[RuntimeEvent] = deque(maxlen=self.MAX_EVENTS)
        self._unread: Deque[RuntimeEvent] = deque(maxlen=self.MAX_EVENTS)
        self.inferences = 0

    def _event(self, kind: str, detail: str, stamp: Optional[float] = None) -> None:
        ev = RuntimeEvent(kind, detail, stamp)
        self.events.append(ev)
        self._unread.append(ev)

    def take_events(self) -> List[RuntimeEvent]:
        """The events recorded since the last call (each is returned once; for logging)."""
        out = list(self._unread)
        self._unread.clear()
        return out

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

    @property
    def instruction(self) -> Optional[str]:
        """The instruction the policy is conditioned on (None until one arrives)."""
        return self._instruction

    def on_instruction(self, text: str) -> bool:
        """A new instruction resets the policy and drops the pending chunk.

        Returns True when the instruction changed (an ``'instruction'`` event is recorded),
        False for the current one again. Raises ValueError on an empty instruction.
        """
        text = str(text).strip()
        if not text:
            raise ValueError('instruction is empty')
        if text == self._instruction:
            return False
        self._instruction = text
        self._event('instruction', text)
        self.reset()
        return True

    # ------------------------------------------------------------------ inputs (messages, any flavour)
    def on_image_msg(self, msg: Any, *, source: str = '/camera/image_raw', bridge: Any = None) -> None:
        """``sensor_msgs/Image`` or ``CompressedImage`` (rclpy or rosbags), converted by
        :func:`robot_drivers.conversions.image_msg_to_rgb` (cv_bridge when ``bridge`` is a
        ``CvBridge``, else the built-in converter). Raises ValueError naming ``source``."""
        self.on_image(conv.image_msg_to_rgb(msg, source=source, bridge=bridge), conv.stamp_to_sec(msg.header.stamp))

    def on_joint_state_msg(self, msg: Any, *, source: str = '/joint_states') -> None:
        pos, vel = conv.joint_state_to_arrays(msg, self.embodiment.joint_names, source=source)
        self.on_joint_state(pos, conv.stamp_to_sec(msg.header.stamp), vel)

    def on_instruction_msg(self, msg: Any) -> bool:
        return self.on_instruction(msg.data)

    # ------------------------------------------------------------------ control tick
    def reset(self) -> None:
        self.history.clear()
        self._remaining = 0
        self._last_pushed = None
        self.policy.reset()

    def _refuse(self, key: Tuple[str, ...], why: str, now: float) -> None:
        """Refuse this tick. ``key`` names the condition (an age in ``why`` grows every tick; the
        condition does not), so an event is recorded only when the condition starts or changes."""
        if key != self._refusal_key:
            self._event('refusing', why, now)
            self._refusal_key = key
        self.status = self.refusal = why
        self._remaining = 0

    def step(self, now: float) -> Optional[TrajectoryCommand]:
        """One control tick at time ``now`` (s). Returns a command on inference ticks, else None.

        ``self.status`` says why no command was produced when inputs are missing or stale; the
        start and end of each refusal are recorded in ``events``.
        """
        if self._image is None or self._joints is None or self._instruction is None:
            missing = [n for n, v in (('image', self._image), ('joint state', self._joints),
                                      ('instruction', self._instruction)) if v is None]
            self._refuse(('waiting', *missing), f'waiting for {", ".join(missing)}', now)
            return None
        img, img_stamp = self._image
        q, qd, q_stamp = self._joints
        for what, stamp in (('image', img_stamp), ('joint state', q_stamp)):
            age = now - stamp
            if age > self.cfg.max_obs_age_s:
                self._refuse(('stale', what), f'{what} is {age:.3f} s old (max_obs_age_s = {self.cfg.max_obs_age_s})',
                             now)
                return None
        key = (img_stamp, q_stamp)
        if key != self._last_pushed:
            self.history.push(Observation(images={self.cfg.camera: img}, joint_positions=q,
                                          instruction=self._instruction, stamp=max(img_stamp, q_stamp),
                                          joint_velocities=qd))
            self._last_pushed = key
        if self.refusal is not None:
            self._event('acting', f'acting (was: {self.refusal})', now)
            self.refusal = None
            self._refusal_key = None
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
