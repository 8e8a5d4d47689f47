"""Machines as data, and the one driver core every machine runs through (ROS-free).

A :class:`Machine` is an :class:`~robot_drivers.embodiment.Embodiment` (DOFs with their command
interface and limits, groups bound to native outputs) plus the machine's interlock rules, its
safety defaults, its driver rate and its simulator. :class:`MachineDriverCore` is the driver logic
of every machine: arms, humanoids, excavators, wheel loaders and articulated trucks alike.

Per driver tick (:meth:`MachineDriverCore.tick`, at :attr:`Machine.control_rate_hz`):

1. **Targets** from the running command: the policy's ``JointTrajectory`` (positions for
   position DOFs, velocities for velocity DOFs, :func:`robot_drivers.conversions.action_trajectory`)
   is interpolated linearly between its points, from the last output (knot 0, at receipt) to point
   ``k`` due ``time_from_start[k]`` after receipt, as ros2_control's ``joint_trajectory_controller``
   does; after the last point the last values stay. This is the interpolation from the policy rate
   to the machine's control rate.
2. **Watchdog**: when no command arrived for more than ``watchdog_timeout_s``, the command is
   dropped on the first tick past the timeout: position DOFs target the position measured then,
   velocity DOFs target 0 (reached at the acceleration limit, never faster). The same hold applies
   before the first command, while the **e-stop** is latched (:meth:`estop`; commands are rejected
   until :meth:`rearm`) and after a re-arm until a new command arrives.
3. **Interlocks**: the machine's :class:`Interlock` rules change targets (e.g. a truck's speed
   target 0 while its body is raised); each rule that acts is an ``interlock`` condition.
4. **Motion limits**: :class:`~robot_drivers.safety.MotionLimiter` (position clamp with margins,
   velocity, acceleration, jerk smoothing, braking toward position limits, step cap from the
   measured state).
5. **Outputs**: each group's output adapter (:mod:`robot_drivers.adapters`) turns its part of the
   safe setpoint into the machine's native message (:meth:`outputs`).

Conditions are edges in an :class:`~robot_drivers.safety.EdgeTracker` (one ``start`` and one
``end`` :class:`~robot_drivers.safety.SafetyEvent` per occurrence, never one per tick), appended to
:attr:`MachineDriverCore.events` and passed to ``on_event``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from robot_drivers.embodiment import Embodiment, get_embodiment
from robot_drivers.safety import (ESTOP, INTERLOCK, MOTION_KINDS, REJECTED, TIME_JUMP, WATCHDOG_HOLD,
                                  MIN_DT, CommandRejected, ConditionKey, EdgeTracker, MotionLimiter,
                                  SafetyConfig, SafetyEvent)

__all__ = ['MachineState', 'Interlock', 'CommandInput', 'Machine', 'register_machine', 'get_machine', 'available_machines',
           'MachineDriverCore', 'validate_command']


@dataclass
class MachineState:
    """What a machine measures, in embodiment (action-vector) order.

    Attributes:
        positions: ``(J,)`` rad / m; NaN where a DOF has no position sensor (a base velocity).
        velocities: ``(J,)`` rad/s / m/s; NaN where unknown.
        stamp: time of the measurement, s.
        extras: measurements an interlock needs that are no DOF (e.g. ``'ground_speed'``).
    """

    positions: np.ndarray
    velocities: np.ndarray
    stamp: float
    extras: Dict[str, Any] = field(default_factory=dict)


class Interlock:
    """A machine rule on the targets, applied every tick before the motion limits.

    Subclass, set :attr:`name` and implement :meth:`apply`. A rule only changes *targets* (a speed
    target to 0, a dump target to at most the measured angle), so velocity and acceleration limits
    still hold on the way there. :meth:`violated` states the rule as an invariant on the measured
    state and the output, for property tests.
    """

    name: str = 'interlock'

    def apply(self, targets: np.ndarray, state: MachineState, emb: Embodiment) -> Tuple[np.ndarray, Optional[str]]:
        """``targets (J,)`` -> ``(new targets (J,), detail or None when the rule did not act)``."""
        raise NotImplementedError

    def violated(self, state: MachineState, out: np.ndarray, prev_out: np.ndarray, emb: Embodiment) -> Optional[str]:
        """Why ``out`` (after ``prev_out``) breaks the rule in ``state``; None when it holds (default: never)."""
        return None


class CommandInput:
    """A second way to command a machine besides the policy's JointTrajectory (e.g. a wheel loader
    driven by ``geometry_msgs/TwistStamped`` through its steering kinematics).

    Subclass, set :attr:`msg_type`, :attr:`topic` (default topic) and :attr:`name`, implement
    :meth:`to_command`; the driver node subscribes to it and feeds
    :meth:`MachineDriverCore.on_trajectory` with the result, so the same validation, limits and
    watchdog apply.
    """

    name: str = 'input'
    msg_type: str = ''
    topic: str = ''

    def to_command(self, msg: Any, state: Optional[MachineState], emb: Embodiment
                   ) -> Tuple[List[str], Optional[np.ndarray], Optional[np.ndarray], np.ndarray]:
        """``msg`` -> ``(names, positions (P, N) or None, velocities (P, N) or None, time_from_start (P,))``;
        raises ValueError naming the field it cannot use."""
        raise NotImplementedError


@dataclass(frozen=True)
class Machine:
    """A machine: its action space, rules, safety defaults, driver rate and simulator.

    Attributes:
        embodiment: DOFs, limits (with sources), groups and their outputs.
        interlocks: machine rules (:class:`Interlock`), applied in order.
        safety: default :class:`~robot_drivers.safety.SafetyConfig` (watchdog, margins).
        control_rate_hz: driver tick rate, Hz: the policy's points are interpolated to it.
        sim: ``'module:Class'`` of the simulator (``robot_drivers.sim.<machine>``), '' if none.
        description: one line for the README's machine table.
        inputs: extra command inputs (:class:`CommandInput`), e.g. a TwistStamped for a loader.
    """

    embodiment: Embodiment
    interlocks: Tuple[Interlock, ...] = ()
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    control_rate_hz: float = 50.0
    sim: str = ''
    description: str = ''
    inputs: Tuple[CommandInput, ...] = ()

    def __post_init__(self) -> None:
        if not (np.isfinite(self.control_rate_hz) and self.control_rate_hz > 0):
            raise ValueError(f'machine {self.embodiment.name!r}: control_rate_hz must be > 0')
        object.__setattr__(self, 'interlocks', tuple(self.interlocks))
        object.__setattr__(self, 'inputs', tuple(self.inputs))

    @property
    def name(self) -> str:
        return self.embodiment.name

    def make_sim(self, *args: Any, **kwargs: Any) -> Any:
        """Instantiate the simulator (``sim`` = ``'module:Class'``); raises LookupError if there is none."""
        if not self.sim:
            raise LookupError(f'machine {self.name!r} has no simulator')
        mod, _, cls = self.sim.partition(':')
        return getattr(importlib.import_module(mod), cls)(*args, **kwargs)


_MACHINES: Dict[str, Machine] = {}


def register_machine(machine: Machine) -> Machine:
    """Add ``machine`` under its embodiment's name (the embodiment must be registered too).

    Raises:
        ValueError: another machine of that name is registered.
    """
    if machine.name in _MACHINES and _MACHINES[machine.name] is not machine:
        raise ValueError(f'machine {machine.name!r} is already registered')
    _MACHINES[machine.name] = machine
    return machine


def get_machine(name: str) -> Machine:
    """The machine ``name`` (an embodiment name); raises KeyError listing the machines."""
    if name not in _MACHINES:
        import robot_drivers.machines  # noqa: F401  (registers every machine)
    try:
        return _MACHINES[name]
    except KeyError:
        raise KeyError(f'unknown machine {name!r}; machines: {sorted(_MACHINES)}') from None


def available_machines() -> List[str]:
    """Names of every registered machine."""
    import robot_drivers.machines  # noqa: F401
    return sorted(_MACHINES)


def validate_command(emb: Embodiment, names: Sequence[str], positions: Optional[np.ndarray],
                     velocities: Optional[np.ndarray], *, source: str = 'command') -> np.ndarray:
    """Check a command and return its action values ``(P, J)`` in embodiment order.

    Each DOF's value comes from the field of its interface: ``positions`` for position DOFs,
    ``velocities`` for velocity DOFs (the other field may be absent, or NaN in those entries).

    Args:
        names: ``(N,)`` joint names of the command, any order.
        positions / velocities: ``(P, N)`` or ``(N,)`` (or None / empty when no DOF uses the field).

    Raises:
        CommandRejected: duplicate (``duplicate_joints``), forbidden (``forbidden_joints``),
            unknown (``unknown_joints``) or missing (``missing_joints``) names; a field a DOF needs
            absent or of the wrong shape (``shape``); not numeric (``not_numeric``); a non-finite
            value a DOF uses (``non_finite``, joint and point named); no points (``no_points``).
    """
    names = [str(n) for n in names]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise CommandRejected(f'{source}: duplicate joint names {dup}', 'duplicate_joints')
    forbidden = [n for n in names if n in emb.forbidden_joints]
    if forbidden:
        raise CommandRejected(f'{source}: joints {forbidden} must never be streamed to {emb.name!r} '
                              '(its own controller owns them)', 'forbidden_joints')
    unknown = emb.unknown_joints(names)
    if unknown:
        raise CommandRejected(f'{source}: unknown joints {unknown} (embodiment {emb.name!r} has '
                              f'{emb.joint_names})', 'unknown_joints')
    missing = [n for n in emb.joint_names if n not in names]
    if missing:
        raise CommandRejected(f'{source}: missing joints {missing} of embodiment {emb.name!r}', 'missing_joints')
    idx = emb.index_of(names, source=source)                 # (J,)
    is_vel = emb.is_velocity
    fields = {}
    for fname, arr in (('positions', positions), ('velocities', velocities)):
        needed = bool(np.any(~is_vel)) if fname == 'positions' else bool(np.any(is_vel))
        try:
            a = None if arr is None else np.asarray(arr, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise CommandRejected(f'{source}: {fname} are not numeric: {exc}', 'not_numeric') from None
        if a is not None and a.size == 0:
            a = None
        if a is None:
            if needed:
                users = [n for n, v in zip(emb.joint_names, is_vel) if v == (fname == 'velocities')]
                raise CommandRejected(f'{source}: no {fname} but joints {users} are commanded by {fname[:-1]}',
                                      'shape')
            continue
        if a.ndim == 1:
            a = a[None]
        if a.ndim != 2 or a.shape[1] != len(names):
            raise CommandRejected(f'{source}: {fname} of shape {a.shape} do not match {len(names)} joint names',
                                  'shape')
        fields[fname] = a[:, idx]                             # (P, J) embodiment order
    shapes = {a.shape[0] for a in fields.values()}
    if len(shapes) > 1:
        raise CommandRejected(f'{source}: positions and velocities have different point counts', 'shape')
    P = shapes.pop()
    if P == 0:
        raise CommandRejected(f'{source}: command has no points', 'no_points')
    pos = fields.get('positions', np.full((P, emb.dof), np.nan))
    vel = fields.get('velocities', np.full((P, emb.dof), np.nan))
    values = np.where(is_vel[None], vel, pos)                 # (P, J)
    bad = ~np.isfinite(values)
    if bad.any():
        k, j = (int(i) for i in np.argwhere(bad)[0])
        field_name = 'velocity' if is_vel[j] else 'position'
        raise CommandRejected(f'{source}: non-finite {field_name} {values[k, j]!r} for joint '
                              f'{emb.joint_names[j]!r} at point {k}', 'non_finite')
    return values


@dataclass
class _Command:
    knot_t: np.ndarray     # (P + 1,) s, knot 0 = receipt
    knot_v: np.ndarray     # (P + 1, J) targets, knot 0 = the output at receipt

    def sample(self, now: float) -> np.ndarray:
        n_le = int(np.searchsorted(self.knot_t, now, side='right'))
        if n_le >= self.knot_t.shape[0]:
            return self.knot_v[-1].copy()
        if n_le == 0:
            return self.knot_v[0].copy()
        t0, t1 = self.knot_t[n_le - 1], self.knot_t[n_le]
        a = (now - t0) / (t1 - t0)
        return (1.0 - a) * self.knot_v[n_le - 1] + a * self.knot_v[n_le]


class MachineDriverCore:
    """The driver of any :class:`Machine` (see the module docstring).

    Args:
        machine: a :class:`Machine`, a registered machine name, or a bare
            :class:`~robot_drivers.embodiment.Embodiment` (no interlocks, default safety).
        config: overrides ``machine.safety``.
        on_event: called with every edge (the node publishes and logs it).
        max_tick_dt: the longest period one tick may move over, s (default 4 driver periods): a
            driver that stalls for a second does not command a second's worth of motion at once.

    Attributes:
        events: every edge recorded, in order.
        output_velocity: ``(J,)`` velocity of the last output.
    """

    def __init__(self, machine: Union[Machine, Embodiment, str], config: Optional[SafetyConfig] = None, *,
                 on_event: Optional[Callable[[SafetyEvent], None]] = None,
                 max_tick_dt: Optional[float] = None) -> None:
        if isinstance(machine, str):
            machine = get_machine(machine)
        if isinstance(machine, Embodiment):
            machine = Machine(machine)
        self.machine = machine
        self.embodiment = emb = machine.embodiment
        self.config = config if config is not None else machine.safety
        self.limiter = MotionLimiter(emb, self.config)
        self.tracker = EdgeTracker()
        self.events: List[SafetyEvent] = []
        self._on_event = on_event
        self.max_tick_dt = float(max_tick_dt) if max_tick_dt is not None else 4.0 / machine.control_rate_hz
        self._cmd: Optional[_Command] = None
        self._hold: Optional[np.ndarray] = None        # (J,) targets while holding
        self._estopped = False
        self._last_tick: Optional[float] = None
        self._last_receive: Optional[float] = None
        self._out: Optional[np.ndarray] = None          # (J,) last output
        self._out_pos: Optional[np.ndarray] = None      # (J,) last position setpoint (position DOFs)
        self.output_velocity = np.zeros(emb.dof)
        self._out_acc = np.zeros(emb.dof)
        self._pending: List[Tuple[str, Any]] = []       # (kind, payload) e-stop edges for the adapters
        self._adapters: Optional[List[Any]] = None

    # ------------------------------------------------------------------ bookkeeping
    @property
    def estopped(self) -> bool:
        return self._estopped

    @property
    def has_command(self) -> bool:
        return self._cmd is not None

    @property
    def active_conditions(self) -> Dict[ConditionKey, str]:
        return self.tracker.active

    def _record(self, events: List[SafetyEvent]) -> List[SafetyEvent]:
        for ev in events:
            self.events.append(ev)
            if self._on_event is not None:
                self._on_event(ev)
        return events

    def set_condition(self, kind: str, active: bool, detail: str, *, joint: Optional[str] = None,
                      tag: Optional[str] = None) -> List[SafetyEvent]:
        """Observe a condition the caller checks (joint states missing / stale, a failed tick)."""
        return self._record(self.tracker.set(kind, joint, active, detail, tag=tag))

    # ------------------------------------------------------------------ commands
    def on_trajectory(self, names: Sequence[str], positions: Optional[np.ndarray], velocities: Optional[np.ndarray],
                      time_from_start: np.ndarray, stamp: float, now: float, *,
                      source: str = 'joint_trajectory') -> List[SafetyEvent]:
        """Accept a command (it replaces the running one).

        Args:
            names: ``(N,)`` joint names, any order (every DOF, no others).
            positions / velocities: ``(P, N)`` per :func:`validate_command`.
            time_from_start: ``(P,)`` s after receipt each point is due; finite, > 0 for the first
                point unless it is the only one, non-decreasing.
            stamp: header stamp, s (diagnostics only: execution is anchored at ``now``).
            now: receive time, s (the clock of :meth:`tick`).

        Returns:
            The edges an accepted command ends (``rejected``, ``watchdog_hold``).

        Raises:
            CommandRejected: see :func:`validate_command`; ``estop_active`` while the e-stop is
                latched; ``time_from_start`` not finite / negative / decreasing or not one per point.
        """
        try:
            if self._estopped:
                raise CommandRejected(f'{source}: emergency stop is active; command ignored until rearm()',
                                      'estop_active')
            values = validate_command(self.embodiment, names, positions, velocities, source=source)  # (P, J)
            tfs = np.asarray(time_from_start, dtype=np.float64).reshape(-1)                            # (P,)
            if tfs.shape[0] != values.shape[0]:
                raise CommandRejected(f'{source}: {values.shape[0]} points but {tfs.shape[0]} time_from_start '
                                      'values', 'time_from_start')
            if not np.all(np.isfinite(tfs)) or np.any(tfs < 0) or np.any(np.diff(tfs) < 0):
                raise CommandRejected(f'{source}: time_from_start must be finite, >= 0 and non-decreasing, '
                                      f'got {tfs.tolist()}', 'time_from_start')
            if not (np.isfinite(now) and np.isfinite(stamp)):
                raise CommandRejected(f'{source}: receive time {now} / header stamp {stamp} must be finite',
                                      'invalid_time')
        except CommandRejected as exc:
            self._record(self.tracker.set(REJECTED, None, True, str(exc), tag=exc.reason))
            raise
        start = self._current_targets_start()
        self._cmd = _Command(knot_t=np.concatenate([[float(now)], float(now) + tfs]),
                             knot_v=np.concatenate([start[None], values], axis=0))
        self._hold = None
        n = self.tracker.count(REJECTED)
        events = self.tracker.set(REJECTED, None, False,
                                  f'{source}: command accepted after {n} rejected command{"s" if n != 1 else ""}')
        if self._last_receive is not None:
            events += self.tracker.set(WATCHDOG_HOLD, None, False,
                                       f'{source}: command received {now - self._last_receive:.3f} s after the '
                                       'previous one: resuming')
        self._last_receive = float(now)
        return self._record(events)

    def on_command_msg(self, msg: Any, now: float, *, source: str = 'joint_trajectory') -> List[SafetyEvent]:
        """:meth:`on_trajectory` from a ``trajectory_msgs/JointTrajectory`` (rclpy or rosbags).

        Raises:
            CommandRejected: as :meth:`on_trajectory`, and for a message whose fields cannot be read.
        """
        from robot_drivers import conversions as conv
        try:
            names, pos, vel, tfs = conv.trajectory_fields(msg, source=source)
            stamp = conv.stamp_to_sec(msg.header.stamp)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            err = CommandRejected(f'{source}: unreadable JointTrajectory: {exc}', 'invalid')
            self._record(self.tracker.set(REJECTED, None, True, str(err), tag=err.reason))
            raise err from None
        return self.on_trajectory(names, pos, vel, tfs, stamp, now, source=source)

    def _current_targets_start(self) -> np.ndarray:
        """Knot 0 of a new command: the last output (positions of position DOFs, velocities of
        velocity DOFs), or the hold targets before any output."""
        if self._out is not None:
            return self._out.copy()
        if self._hold is not None:
            return self._hold.copy()
        return np.where(self.embodiment.is_velocity, 0.0, np.nan)   # replaced at the first tick

    def estop(self) -> List[SafetyEvent]:
        """Latch the e-stop: drop the command, hold positions, ramp velocities to 0 until :meth:`rearm`.

        Returns:
            ``[estop start edge]`` or ``[]`` if it was engaged already.
        """
        events = self.tracker.set(ESTOP, None, True, 'emergency stop engaged: holding positions, '
                                                     'velocities ramp to 0, commands rejected until rearm')
        if events:
            self._pending.append(('estop', True))
        self._estopped = True
        self._cmd = None
        self._hold = None
        return self._record(events)

    def rearm(self) -> List[SafetyEvent]:
        """Release the e-stop; the driver holds (positions measured at the next tick, velocities 0)
        until a new command arrives. Returns ``[estop end edge]`` or ``[]``."""
        events = self.tracker.set(ESTOP, None, False, 'emergency stop released (rearm)')
        if events:
            self._pending.append(('estop', False))
        self._estopped = False
        self._cmd = None
        self._hold = None
        return self._record(events)

    # ------------------------------------------------------------------ control loop
    def _check_state(self, state: MachineState) -> Tuple[np.ndarray, np.ndarray]:
        emb = self.embodiment
        pos = np.asarray(state.positions, dtype=np.float64).reshape(-1)
        vel = np.asarray(state.velocities, dtype=np.float64).reshape(-1)
        if pos.shape[0] != emb.dof or vel.shape[0] != emb.dof:
            raise ValueError(f'machine state has {pos.shape[0]} positions / {vel.shape[0]} velocities, '
                             f'embodiment {emb.name!r} has {emb.dof} DOFs')
        need = ~emb.is_velocity & ~np.isfinite(pos)
        if need.any():
            raise ValueError(f'measured position is non-finite for position-commanded joints '
                             f'{[n for n, b in zip(emb.joint_names, need) if b]}: {pos[need].tolist()}')
        if np.any(np.isinf(pos)) or np.any(np.isinf(vel)):
            raise ValueError('measured state has infinite values')
        return pos, vel

    def _hold_targets(self, pos: np.ndarray) -> np.ndarray:
        """Position DOFs: the measured position (in the limits); velocity DOFs: 0."""
        lim = self.limiter
        return np.where(self.embodiment.is_velocity, 0.0, np.clip(np.nan_to_num(pos), lim.lower, lim.upper))

    def tick(self, now: float, state: MachineState) -> np.ndarray:
        """One driver period.

        Args:
            now: current time, s (the clock of :meth:`on_trajectory`).
            state: the measurement (:class:`MachineState`, embodiment order).

        Returns:
            ``(J,)`` safe setpoint in embodiment order: positions for position DOFs, velocities for
            velocity DOFs. Its edges are in :attr:`events`.

        Raises:
            ValueError: ``now`` not finite; a state of the wrong size, non-finite positions of
                position DOFs, or infinite values.
        """
        now = float(now)
        if not np.isfinite(now):
            raise ValueError(f'tick time must be finite, got {now}')
        pos, vel = self._check_state(state)
        emb, tr = self.embodiment, self.tracker
        jumped = self._last_tick is not None and now < self._last_tick
        events = tr.set(TIME_JUMP, None, jumped,
                        f'clock went back from {self._last_tick:.6f} s to {now:.6f} s; no motion'
                        if jumped else f'clock runs forward again at {now:.6f} s')
        dt = 0.0 if self._last_tick is None or jumped else min(now - self._last_tick, self.max_tick_dt)
        if not jumped:
            self._last_tick = now

        if self._out is None:                          # first tick: start from the measured state
            self._out_pos = np.clip(np.nan_to_num(pos), self.limiter.lower, self.limiter.upper)
            v0 = np.clip(np.nan_to_num(vel), -self.limiter.vmax, self.limiter.vmax)
            self.output_velocity = v0
            self._out = np.where(emb.is_velocity, v0, self._out_pos)
            if self._cmd is not None:                  # a command that arrived before the first tick
                nan0 = ~np.isfinite(self._cmd.knot_v[0])
                self._cmd.knot_v[0][nan0] = self._out[nan0]

        if (self._cmd is not None and self._last_receive is not None
                and now - self._last_receive > self.config.watchdog_timeout_s):
            self._cmd = None
            self._hold = self._hold_targets(pos)
            events += tr.set(WATCHDOG_HOLD, None, True,
                             f'no command for {now - self._last_receive:.3f} s (timeout '
                             f'{self.config.watchdog_timeout_s:.3f} s): holding positions, velocities to 0')
        if self._cmd is not None:
            targets = self._cmd.sample(now)
        else:
            if self._hold is None:
                self._hold = self._hold_targets(pos)
            targets = self._hold
        targets = np.where(np.isfinite(targets), targets, self._out)

        state_emb = MachineState(pos, vel, float(state.stamp), dict(getattr(state, 'extras', {}) or {}))
        acting: Dict[ConditionKey, str] = {}
        for rule in self.machine.interlocks:
            targets, detail = rule.apply(np.array(targets, dtype=np.float64), state_emb, emb)
            if detail:
                acting[(INTERLOCK, rule.name)] = detail
        # hysteresis as the limit conditions: a rule with nothing to change on one tick (the first tick
        # of a new command starts from the last output) does not end and restart
        events += tr.update((INTERLOCK,), acting, lambda key, n: f'rule {key[1]} released after {n} ticks',
                            dt=dt, clear_s=self.config.condition_clear_s)

        ref_pos = np.where(emb.is_velocity, pos, self._out_pos)
        stop = self._cmd.knot_v[-1] if self._cmd is not None else targets   # where the motion ends
        out, out_vel, cond = self.limiter.step(targets, ref_pos, self.output_velocity, pos, dt, self._out_acc,
                                               stop_targets=np.where(np.isfinite(stop), stop, targets),
                                               jerk=self._cmd is not None and not acting)
        if dt >= MIN_DT:
            self._out_acc = (out_vel - self.output_velocity) / dt
            events += tr.update(MOTION_KINDS, cond, dt=dt, clear_s=self.config.condition_clear_s)
        self._out = out
        self._out_pos = np.where(emb.is_velocity, self._out_pos, out)
        self.output_velocity = out_vel
        self._record(events)
        return out.copy()

    # ------------------------------------------------------------------ native outputs
    @property
    def adapters(self) -> List[Any]:
        """One output adapter per group (:mod:`robot_drivers.adapters`), built on first use."""
        if self._adapters is None:
            from robot_drivers.adapters import build_adapters
            self._adapters = build_adapters(self.embodiment)
        return self._adapters

    def outputs(self, now: float, state: MachineState, types: Any) -> List[Tuple[str, Any]]:
        """:meth:`tick`, then every group's native messages ``[(topic, msg), ...]`` (e-stop messages
        of the adapters first, at the e-stop's edges)."""
        out = self.tick(now, state)
        msgs = self.pending_messages(now, types)
        idx = {n: i for i, n in enumerate(self.embodiment.joint_names)}
        for ad in self.adapters:
            sel = np.array([idx[n] for n in ad.group.joints], dtype=np.int64)
            msgs += ad.encode(out[sel], state, now, types)
        return msgs

    def pending_messages(self, now: float, types: Any) -> List[Tuple[str, Any]]:
        """The adapters' e-stop messages for the e-stop edges since the last call."""
        msgs: List[Tuple[str, Any]] = []
        for kind, engaged in self._pending:
            for ad in self.adapters:
                msgs += ad.estop_messages(bool(engaged), now, types)
        self._pending.clear()
        return msgs


