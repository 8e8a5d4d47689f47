"""Hardware interface protocol and the ROS-free arm driver core (trajectory execution, safety, watchdog).

:class:`ArmDriverCore` is the logic of a ros2_control-style position driver without ROS: the
node (``arm_driver_node``), the MuJoCo rollout and the tests all call the same two methods,

* :meth:`ArmDriverCore.on_trajectory` when a ``trajectory_msgs/JointTrajectory`` arrives, and
* :meth:`ArmDriverCore.tick` at the driver rate (e.g. 100 Hz),

against any object that satisfies :class:`Hardware` (the simulator, a fake in tests, a topic
bridge in the node).

Trajectory execution (as ros2_control's ``joint_trajectory_controller`` with linear
interpolation): a trajectory received at time ``t_r`` is anchored at ``t_r`` (the header stamp is
kept for diagnostics only, so clock offsets between machines cannot delay or skip points). Point
``k`` is due at ``t_r + time_from_start[k]``. The setpoint at time ``t`` is the piecewise-linear
interpolation through the knots ``(t_r, q_start), (t_r + tfs[0], p_0), ..., (t_r + tfs[P-1], p_{P-1})``,
where ``q_start`` is the last setpoint written to the hardware (or the measured position if none
was written yet), so a new trajectory continues smoothly from where the previous command was.
After the last point is due the setpoint stays at the last point. Every setpoint then goes
through :meth:`SafetyFilter.filter <robot_drivers.safety.SafetyFilter.filter>` with
``dt = now - previous tick`` before it is written. The reference the step is limited from is the
previous setpoint (``SafetyConfig.rate_limit_reference='command'``, the default, as libfranka's
``limitRate``) or the measured position (``'measured'``); on the first tick, and while e-stopped,
it is always the measured position (read from the hardware every tick).

Watchdog: when no trajectory has been received for more than ``watchdog_timeout_s`` **and** the
last trajectory's final point is due, the driver drops the trajectory and holds the measured
position captured at that moment (one ``watchdog_hold`` event and one warning per timeout). A
new trajectory re-arms it. Before any trajectory has arrived the driver holds the position it
measured on its first tick.

Emergency stop: :meth:`ArmDriverCore.estop` drops the trajectory and latches the filter's hold
(setpoint = measured); trajectories are rejected until :meth:`ArmDriverCore.rearm`, after which
the driver holds the position measured at re-arm until a new trajectory arrives.

Log lines go to the Python logger ``'robot_drivers'``; the node forwards them to rosout.
"""
from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from typing import Deque, List, Optional, Protocol, Sequence, Tuple, runtime_checkable

import numpy as np

from robot_drivers.embodiment import Embodiment
from robot_drivers.safety import (ESTOP, REARM, REJECTED, TIME_JUMP, WATCHDOG_HOLD, CommandRejected,
                                  SafetyConfig, SafetyEvent, SafetyFilter)

__all__ = ['JointSample', 'Hardware', 'ArmDriverCore', 'LOGGER_NAME']

LOGGER_NAME = 'robot_drivers'
_log = logging.getLogger(LOGGER_NAME)


@dataclass
class JointSample:
    """One measurement of the joints.

    Attributes:
        positions: ``(J,)`` rad / m, in the hardware's ``joint_names`` order.
        velocities: ``(J,)`` rad/s / m/s, same order.
        stamp: time of the measurement, s.
    """

    positions: np.ndarray
    velocities: np.ndarray
    stamp: float


@runtime_checkable
class Hardware(Protocol):
    """What :class:`ArmDriverCore` needs from a robot (ros2_control hardware-interface style).

    ``read()`` returns an object with ``positions (J,)``, ``velocities (J,)`` and ``stamp`` (a
    :class:`JointSample` or anything shaped like it, e.g. the simulator's sample) in
    ``joint_names`` order; ``write(positions (J,))`` sets position targets in that order.
    """

    @property
    def joint_names(self) -> Sequence[str]: ...

    def read(self) -> JointSample: ...

    def write(self, positions: np.ndarray) -> None: ...


@dataclass
class _Trajectory:
    knot_t: np.ndarray       # (P + 1,) absolute times, s; knot 0 is the receive time
    knot_q: np.ndarray       # (P + 1, J) positions in embodiment order; knot 0 is the start position
    stamp: float             # header stamp, s (diagnostics only)

    @property
    def end_time(self) -> float:
        return float(self.knot_t[-1])

    def sample(self, now: float) -> np.ndarray:
        """Piecewise-linear setpoint ``(J,)`` at ``now`` (s); see the module docstring."""
        n_le = int(np.searchsorted(self.knot_t, now, side='right'))  # knots with time <= now
        if n_le >= self.knot_t.shape[0]:
            return self.knot_q[-1].copy()
        if n_le == 0:                     # before the receive time (clock stepped back)
            return self.knot_q[0].copy()
        t0, t1 = self.knot_t[n_le - 1], self.knot_t[n_le]   # t0 <= now < t1, so t1 > t0
        a = (now - t0) / (t1 - t0)
        return (1.0 - a) * self.knot_q[n_le - 1] + a * self.knot_q[n_le]  # (J,)


class ArmDriverCore:
    """ROS-free position driver: trajectory interpolation, safety filter, watchdog, e-stop.

    Args:
        embodiment: the commanded joints and their limits.
        hardware: a :class:`Hardware`; its ``joint_names`` must be the embodiment's joints (any order).
        safety_config: :class:`SafetyConfig` (margins, velocity scale, watchdog timeout).
        max_events: length of the :attr:`events` history kept (oldest dropped first).

    Attributes:
        events: ``deque`` of the most recent :class:`SafetyEvent` s (rejections, clamps, holds).
        filter: the :class:`SafetyFilter` in use.

    Raises:
        ValueError: the hardware's joint names are not a permutation of the embodiment's.
    """

    def __init__(self, embodiment: Embodiment, hardware: Hardware, safety_config: Optional[SafetyConfig] = None,
                 *, max_events: int = 1000) -> None:
        self.embodiment = embodiment
        self.hardware = hardware
        self.config = safety_config if safety_config is not None else SafetyConfig()
        self.filter = SafetyFilter(embodiment, self.config)
        hw_names = [str(n) for n in hardware.joint_names]
        if sorted(hw_names) != sorted(embodiment.joint_names) or len(set(hw_names)) != len(hw_names):
            raise ValueError(f'hardware joints {hw_names} are not the joints of embodiment '
                             f'{embodiment.name!r} {embodiment.joint_names}')
        self._hw_names = hw_names
        # embodiment order -> hardware order and back
        self._to_emb = embodiment.index_of(hw_names, source='hardware.joint_names')  # (J,)
        self._to_hw = np.argsort(self._to_emb)                                         # (J,)
        self.events: Deque[SafetyEvent] = collections.deque(maxlen=max_events)
        self._traj: Optional[_Trajectory] = None
        self._hold: Optional[np.ndarray] = None          # (J,) hold setpoint when no trajectory runs
        self._last_setpoint: Optional[np.ndarray] = None  # (J,) last value written to hardware
        self._last_tick: Optional[float] = None
        self._last_receive: Optional[float] = None

    # ------------------------------------------------------------------ helpers
    @property
    def estopped(self) -> bool:
        return self.filter.estopped

    @property
    def has_trajectory(self) -> bool:
        """True while a trajectory is being executed (not holding)."""
        return self._traj is not None

    def _record(self, ev: SafetyEvent, level: int) -> None:
        self.events.append(ev)
        _log.log(level, '%s', ev)

    def measured(self) -> np.ndarray:
        """Measured positions ``(J,)`` in embodiment order from ``hardware.read()``.

        Raises:
            ValueError: the hardware returned the wrong number of values or NaN/Inf (joints named).
        """
        pos = np.asarray(self.hardware.read().positions, dtype=np.float64).reshape(-1)
        if pos.shape[0] != len(self._hw_names):
            raise ValueError(f'hardware.read() returned {pos.shape[0]} positions for joints {self._hw_names}')
        bad = np.flatnonzero(~np.isfinite(pos))
        if bad.size:
            raise ValueError(f'hardware.read() returned non-finite positions for joints '
                             f'{[self._hw_names[i] for i in bad]}: {pos[bad].tolist()}')
        return pos[self._to_emb]

    # ------------------------------------------------------------------ commands
    def on_trajectory(self, names: Sequence[str], positions: np.ndarray, time_from_start: np.ndarray,
                      stamp: float, now: float, *, source: str = 'joint_trajectory') -> None:
        """Accept a trajectory; it replaces the running one.

        Args:
            names: ``(J,)`` joint names, any order (all joints of the embodiment, no others).
            positions: ``(P, J)`` (or ``(J,)`` for one point) target positions, rad / m, ``names`` order.
            time_from_start: ``(P,)`` seconds after receipt at which each point is due;
                finite, >= 0, non-decreasing.
            stamp: the message header stamp, s (kept for diagnostics; execution is anchored at ``now``).
            now: receive time, s (same clock as :meth:`tick`).
            source: topic or origin, used in messages.

        Raises:
            CommandRejected: invalid names, shape, NaN/Inf, bad ``time_from_start``, or e-stop
                active. The rejection is appended to :attr:`events`, logged at ERROR on the
                ``'robot_drivers'`` logger, and the previous trajectory (or hold) keeps running.
        """
        try:
            if self.filter.estopped:
                raise CommandRejected(f'{source}: emergency stop is active; trajectory ignored until rearm()')
            pos = self.filter.validate(names, positions, source=source)
            if pos.ndim == 1:
                pos = pos[None]                                   # (1, J)
            if pos.shape[0] == 0:
                raise CommandRejected(f'{source}: trajectory has no points')
            tfs = np.asarray(time_from_start, dtype=np.float64).reshape(-1)  # (P,)
            if tfs.shape[0] != pos.shape[0]:
                raise CommandRejected(f'{source}: {pos.shape[0]} points but {tfs.shape[0]} time_from_start values')
            if not np.all(np.isfinite(tfs)) or np.any(tfs < 0):
                raise CommandRejected(f'{source}: time_from_start must be finite and >= 0, got {tfs.tolist()}')
            if np.any(np.diff(tfs) < 0):
                raise CommandRejected(f'{source}: time_from_start decreases: {tfs.tolist()}')
            if not (np.isfinite(now) and np.isfinite(stamp)):
                raise CommandRejected(f'{source}: receive time {now} / header stamp {stamp} must be finite')
        except CommandRejected as exc:
            self._record(SafetyEvent(REJECTED, None, str(exc)), logging.ERROR)
            raise
        start = self._last_setpoint if self._last_setpoint is not None else self.measured()
        self._traj = _Trajectory(
            knot_t=np.concatenate([[float(now)], float(now) + tfs]),      # (P + 1,)
            knot_q=np.concatenate([start[None], pos], axis=0),            # (P + 1, J)
            stamp=float(stamp))
        self._hold = None
        self._last_receive = float(now)

    def estop(self) -> None:
        """Emergency stop: drop the trajectory and hold the measured position until :meth:`rearm`."""
        if not self.filter.estopped:
            self._record(SafetyEvent(ESTOP, None, 'emergency stop engaged: trajectory dropped, holding'),
                         logging.WARNING)
        self.filter.estop()
        self._traj = None
        self._hold = None

    def rearm(self) -> None:
        """Release the emergency stop; the driver holds the position measured at the next tick."""
        if self.filter.estopped:
            self._record(SafetyEvent(REARM, None, 'emergency stop released: holding until a new trajectory'),
                         logging.WARNING)
        self.filter.rearm()
        self._traj = None
        self._hold = None

    # ------------------------------------------------------------------ control loop
    def tick(self, now: float) -> Tuple[np.ndarray, List[SafetyEvent]]:
        """One control period: interpolate, watchdog, safety filter, write to hardware.

        Args:
            now: current time, s (same clock as :meth:`on_trajectory`'s ``now``).

        Returns:
            ``(setpoint (J,) in embodiment order, rad / m, events of this tick)``. The setpoint
            has been written to the hardware (in the hardware's joint order).

        Raises:
            ValueError: ``now`` is not finite, or the hardware returned invalid positions.
        """
        now = float(now)
        if not np.isfinite(now):
            raise ValueError(f'tick time must be finite, got {now}')
        events: List[SafetyEvent] = []
        measured = self.measured()                                   # (J,)
        if self._last_tick is None:
            dt = 0.0
        elif now < self._last_tick:
            ev = SafetyEvent(TIME_JUMP, None, f'clock went back from {self._last_tick:.6f} s to {now:.6f} s; '
                                              'no motion this tick')
            self._record(ev, logging.WARNING)
            events.append(ev)
            dt = 0.0
        else:
            dt = now - self._last_tick
        self._last_tick = now

        # Watchdog; dropping the trajectory makes it fire once per timeout.
        if (self._traj is not None and self._last_receive is not None
                and now - self._last_receive > self.config.watchdog_timeout_s and now >= self._traj.end_time):
            self._traj = None
            self._hold = measured.copy()
            ev = SafetyEvent(WATCHDOG_HOLD, None,
                             f'no trajectory for {now - self._last_receive:.3f} s '
                             f'(timeout {self.config.watchdog_timeout_s:.3f} s): holding measured position')
            self._record(ev, logging.WARNING)
            events.append(ev)

        if self._traj is not None:
            target = self._traj.sample(now)                          # (J,)
        else:
            if self._hold is None:
                self._hold = measured.copy()
            target = self._hold

        if (self.config.rate_limit_reference == 'measured' or self._last_setpoint is None
                or self.filter.estopped):
            reference = measured
        else:
            reference = self._last_setpoint
        safe, fev = self.filter.filter(self.embodiment.joint_names, target, reference, dt, source='setpoint')
        for ev in fev:
            self._record(ev, logging.DEBUG)
        events.extend(fev)
        self.hardware.write(safe[self._to_hw])
        self._last_setpoint = safe.copy()
        return safe, events
