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
position captured at that moment (as ros2_control's ``joint_trajectory_controller`` holds
position after its ``cmd_timeout``, also counted from the end of the trajectory). A new trajectory re-arms it. Before any trajectory has
arrived the driver holds the position it measured on its first tick.

Emergency stop: :meth:`ArmDriverCore.estop` drops the trajectory and latches the filter's hold
(setpoint = measured); trajectories are rejected until :meth:`ArmDriverCore.rearm`, after which
the driver holds the position measured at re-arm until a new trajectory arrives.

Events are edges of conditions (see :mod:`robot_drivers.safety`), tracked in the filter's
:class:`~robot_drivers.safety.EdgeTracker` keyed by ``(kind, joint)``; each condition gives one
``start`` event when it begins and one ``end`` event when it clears, however many ticks it lasts:

* ``estop``: starts at :meth:`~ArmDriverCore.estop`, ends at :meth:`~ArmDriverCore.rearm`.
* ``watchdog_hold``: starts on the tick the watchdog drops the trajectory, ends at the next
  accepted trajectory.
* ``rejected``: starts at the first rejected trajectory, with its reason; further rejections with
  the same :attr:`~robot_drivers.safety.CommandRejected.reason` are counted, not reported, and a
  different reason ends it and starts it again; ends at the next accepted trajectory (the end
  event carries the count).
* ``time_jump``: starts on a tick whose time is before the previous tick's, ends on the next tick
  forward in time.
* ``position_clamp``, ``velocity_limit``, ``max_step``, ``measured_outside_limits`` (per joint):
  start when the filter changes the joint's setpoint by more than
  :data:`~robot_drivers.safety.LIMIT_TOLERANCE`, end once it has not for
  :attr:`~robot_drivers.safety.SafetyConfig.condition_clear_s`.
* ``joint_state_missing``, ``joint_state_stale``, ``joint_state_invalid``, ``tick_failed``: reported
  by the caller (the node) through :meth:`~ArmDriverCore.set_condition`.

Every edge is appended to :attr:`ArmDriverCore.events` and passed to the ``on_event`` callback
(the node publishes it on ``~/events`` and writes one rosout line at the edge's
:func:`~robot_drivers.safety.severity`); without a callback it is logged on the Python logger
``'robot_drivers'``: starts of rejections, holds, e-stop and joint-state conditions at their
severity, per-joint limit conditions and end edges at DEBUG.
"""
from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from typing import Callable, Deque, Dict, List, Optional, Protocol, Sequence, Tuple, runtime_checkable

import numpy as np

from robot_drivers.embodiment import Embodiment
from robot_drivers.safety import (END, LIMIT_KINDS, REJECTED, TIME_JUMP, WATCHDOG_HOLD, CommandRejected,
                                  ConditionKey, SafetyConfig, SafetyEvent, SafetyFilter)

__all__ = ['JointSample', 'Hardware', 'ArmDriverCore', 'LOGGER_NAME']

LOGGER_NAME = 'robot_drivers'
_log = logging.getLogger(LOGGER_NAME)
_LEVELS = {'error': logging.ERROR, 'warning': logging.WARNING, 'info': logging.INFO}


def _log_level(ev: SafetyEvent) -> int:
    """Python log level of an edge when no ``on_event`` callback is set (scripts, the rollout):
    the kind's severity for starts of whole-driver conditions, DEBUG for per-joint limit
    conditions and for end edges (a script counts those from the returned events)."""
    if ev.edge == END or ev.kind in LIMIT_KINDS:
        return logging.DEBUG
    return _LEVELS[ev.severity]


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
        on_event: called once with every edge as it is recorded (from :meth:`tick`,
            :meth:`on_trajectory`, :meth:`estop`, :meth:`rearm`, :meth:`set_condition`); ``None``
            logs each edge on the ``'robot_drivers'`` Python logger instead (module docstring).

    Attributes:
        events: ``deque`` of the most recent :class:`SafetyEvent` edges (start and end of
            rejections, clamps, holds), oldest first.
        filter: the :class:`SafetyFilter` in use; ``filter.tracker`` holds the active conditions.

    Raises:
        ValueError: the hardware's joint names are not a permutation of the embodiment's.
    """

    def __init__(self, embodiment: Embodiment, hardware: Hardware, safety_config: Optional[SafetyConfig] = None,
                 *, max_events: int = 1000, on_event: Optional[Callable[[SafetyEvent], None]] = None) -> None:
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
        self.on_event = on_event
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

    @property
    def active_conditions(self) -> Dict[ConditionKey, str]:
        """Conditions holding now, ``{(kind, joint): start detail}`` (e.g. ``('estop', None)``)."""
        return self.filter.tracker.active

    def _record(self, events: List[SafetyEvent]) -> List[SafetyEvent]:
        for ev in events:
            self.events.append(ev)
            if self.on_event is not None:
                self.on_event(ev)
            else:
                _log.log(_log_level(ev), '%s', ev)
        return events

    def set_condition(self, kind: str, active: bool, detail: str, *, joint: Optional[str] = None,
                      tag: Optional[str] = None) -> List[SafetyEvent]:
        """Report a condition observed outside the core (e.g. the node's ``joint_state_stale``).

        Call it whenever the condition is checked, holding or not; only changes produce events.

        Args:
            kind: condition kind (a constant of :mod:`robot_drivers.safety`).
            active: whether it holds now.
            detail: text of the start edge (when it begins) or of the end edge (when it clears).
            joint: joint concerned, ``None`` for whole-driver conditions.
            tag: sub-reason; a different one while active ends and restarts the condition.

        Returns:
            The edges recorded (``[]`` while nothing changes).
        """
        return self._record(self.filter.tracker.set(kind, joint, active, detail, tag=tag))

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
                      stamp: float, now: float, *, source: str = 'joint_trajectory') -> List[SafetyEvent]:
        """Accept a trajectory; it replaces the running one.

        Args:
            names: ``(J,)`` joint names, any order (all joints of the embodiment, no others).
            positions: ``(P, J)`` (or ``(J,)`` for one point) target positions, rad / m, ``names`` order.
            time_from_start: ``(P,)`` seconds after receipt at which each point is due;
                finite, >= 0, non-decreasing.
            stamp: the message header stamp, s (kept for diagnostics; execution is anchored at ``now``).
            now: receive time, s (same clock as :meth:`tick`).
            source: topic or origin, used in messages.

        Returns:
            The edges an accepted trajectory ends: ``rejected`` (with the count of rejected
            commands) and ``watchdog_hold``, if they were active.

        Raises:
            CommandRejected: invalid names, shape, NaN/Inf, bad ``time_from_start``, or e-stop
                active; the previous trajectory (or hold) keeps running. The first rejection
                starts the ``rejected`` condition (one event with the message); later ones with
                the same :attr:`~robot_drivers.safety.CommandRejected.reason` are only counted.
        """
        tracker = self.filter.tracker
        try:
            if self.filter.estopped:
                raise CommandRejected(f'{source}: emergency stop is active; trajectory ignored until rearm()',
                                      'estop_active')
            pos = self.filter.validate(names, positions, source=source)
            if pos.ndim == 1:
                pos = pos[None]                                   # (1, J)
            if pos.shape[0] == 0:
                raise CommandRejected(f'{source}: trajectory has no points', 'no_points')
            tfs = np.asarray(time_from_start, dtype=np.float64).reshape(-1)  # (P,)
            if tfs.shape[0] != pos.shape[0]:
                raise CommandRejected(f'{source}: {pos.shape[0]} points but {tfs.shape[0]} time_from_start values',
                                      'time_from_start')
            if not np.all(np.isfinite(tfs)) or np.any(tfs < 0):
                raise CommandRejected(f'{source}: time_from_start must be finite and >= 0, got {tfs.tolist()}',
                                      'time_from_start')
            if np.any(np.diff(tfs) < 0):
                raise CommandRejected(f'{source}: time_from_start decreases: {tfs.tolist()}', 'time_from_start')
            if not (np.isfinite(now) and np.isfinite(stamp)):
                raise CommandRejected(f'{source}: receive time {now} / header stamp {stamp} must be finite',
                                      'invalid_time')
        except CommandRejected as exc:
            self._record(tracker.set(REJECTED, None, True, str(exc), tag=exc.reason))
            raise
        start = (self._last_setpoint if self._last_setpoint is not None
                 else self._hold_setpoint(self.measured()))
        self._traj = _Trajectory(
            knot_t=np.concatenate([[float(now)], float(now) + tfs]),      # (P + 1,)
            knot_q=np.concatenate([start[None], pos], axis=0),            # (P + 1, J)
            stamp=float(stamp))
        self._hold = None
        n = tracker.count(REJECTED)
        events = tracker.set(REJECTED, None, False,
                             f'{source}: trajectory accepted after {n} rejected command{"s" if n != 1 else ""}')
        if self._last_receive is not None:
            events += tracker.set(WATCHDOG_HOLD, None, False,
                                  f'{source}: trajectory received {now - self._last_receive:.3f} s after the '
                                  'previous one: resuming')
        self._last_receive = float(now)
        return self._record(events)

    def estop(self) -> List[SafetyEvent]:
        """Emergency stop: drop the trajectory and hold the measured position until :meth:`rearm`.

        Returns:
            ``[estop start edge]``, or ``[]`` if it was already engaged.
        """
        events = self.filter.estop()
        self._traj = None
        self._hold = None
        return self._record(events)

    def rearm(self) -> List[SafetyEvent]:
        """Release the emergency stop; the driver holds the position measured at the next tick.

        Returns:
            ``[estop end edge]``, or ``[]`` if it was not engaged.
        """
        events = self.filter.rearm()
        self._traj = None
        self._hold = None
        return self._record(events)

    # ------------------------------------------------------------------ control loop
    def _hold_setpoint(self, measured: np.ndarray) -> np.ndarray:
        """The position to hold: the measured one ``(J,)``, clipped into the position limits
        (less the margin). A joint resting a hair past its limit (a simulated or real gripper pushed
        against its stop measures 1e-9..2e-4 m beyond 0.04 m) would otherwise be clamped on every
        hold tick and clear when the measurement wobbles back, a stream of clamp edges for a joint
        that is not being commanded anywhere."""
        return np.clip(measured, self.filter.lower, self.filter.upper)

    def tick(self, now: float) -> Tuple[np.ndarray, List[SafetyEvent]]:
        """One control period: interpolate, watchdog, safety filter, write to hardware.

        Args:
            now: current time, s (same clock as :meth:`on_trajectory`'s ``now``).

        Returns:
            ``(setpoint (J,) in embodiment order, rad / m, edges recorded during this tick)``
            (``time_jump``, ``watchdog_hold``, the filter's limit conditions; each also appended
            to :attr:`events`). The setpoint has been written to the hardware (in the hardware's
            joint order).

        Raises:
            ValueError: ``now`` is not finite, or the hardware returned invalid positions.
        """
        now = float(now)
        if not np.isfinite(now):
            raise ValueError(f'tick time must be finite, got {now}')
        tracker = self.filter.tracker
        measured = self.measured()                                   # (J,)
        jumped = self._last_tick is not None and now < self._last_tick
        events = tracker.set(TIME_JUMP, None, jumped,
                             f'clock went back from {self._last_tick:.6f} s to {now:.6f} s; no motion'
                             if jumped else f'clock runs forward again at {now:.6f} s')
        dt = 0.0 if self._last_tick is None or jumped else now - self._last_tick
        self._last_tick = now

        # Watchdog: dropping the trajectory makes it fire once per timeout.
        if (self._traj is not None and self._last_receive is not None
                and now - self._last_receive > self.config.watchdog_timeout_s and now >= self._traj.end_time):
            self._traj = None
            self._hold = self._hold_setpoint(measured)
            events += tracker.set(WATCHDOG_HOLD, None, True,
                                  f'no trajectory for {now - self._last_receive:.3f} s '
                                  f'(timeout {self.config.watchdog_timeout_s:.3f} s): holding measured position')

        if self._traj is not None:
            target = self._traj.sample(now)                          # (J,)
        else:
            if self._hold is None:
                self._hold = self._hold_setpoint(measured)
            target = self._hold

        if (self.config.rate_limit_reference == 'measured' or self._last_setpoint is None
                or self.filter.estopped):
            reference = measured
        else:
            reference = self._last_setpoint
        safe, fev = self.filter.filter(self.embodiment.joint_names, target, reference, dt, source='setpoint')
        events += fev
        self.hardware.write(safe[self._to_hw])
        self._last_setpoint = safe.copy()
        return safe, self._record(events)
