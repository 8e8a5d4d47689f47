"""Command safety filter: validation, position-limit clamp, velocity limit, emergency stop (ROS-free).

Every joint command that reaches hardware goes through :meth:`SafetyFilter.filter`. Steps, in order:

1. **Validation** (:meth:`SafetyFilter.validate`): the command must name every joint of the
   embodiment exactly once, no others, with one finite value per name. Anything else raises
   :class:`CommandRejected` naming the problem (the joints, the index, the value) and carrying a
   short reason code (:attr:`CommandRejected.reason`). A rejected command never moves the robot;
   nothing is guessed or dropped silently.
2. **Reordering** into embodiment (action-vector) order.
3. **E-stop**: while the filter is e-stopped the output is the measured position (hold).
4. **Position clamp** to ``[lower + margin, upper - margin]`` (``position_clamp`` per joint).
   Limits are the embodiment's, whose ``limits_source`` cites the datasheet (for the Franka Panda:
   the Franka Control Interface "Robot and interface specifications").
5. **Velocity limit** relative to the reference position passed as ``measured``: ``|safe - measured|
   <= max_velocity * velocity_scale * dt`` per joint (``velocity_limit``), and, if ``max_step`` is
   set, ``|safe - measured| <= max_step`` (``max_step``). This is libfranka's ``limitRate`` bound on
   commanded joint velocity (datasheet ``dq_max``); :class:`~robot_drivers.hardware.ArmDriverCore`
   passes either the measured position or its previous setpoint, see
   :attr:`SafetyConfig.rate_limit_reference`.
6. If the measured position itself is outside the limits (a sensor offset, a joint pushed past a
   soft limit), the output is clamped to the limits again (``measured_outside_limits``), so the
   output is *always* within limits; only then can the step exceed ``vmax * dt``.

**Events are edges.** Steps 3-6 are *conditions* that hold for a joint (or for the whole command)
on a given call, e.g. ``('position_clamp', 'panda_finger_joint1')``. :meth:`SafetyFilter.conditions`
returns them as a pure function of its inputs; an :class:`EdgeTracker` keyed by ``(kind, joint)``
turns the per-call condition sets into :class:`SafetyEvent` s with ``edge='start'`` the first
time a condition holds and ``edge='end'`` the first time it no longer does. A condition that
persists for a thousand control ticks (fingers commanded past their stroke, an e-stop held)
gives one start and one end event, never one per tick. A limit condition ends only after it has
been absent for :attr:`SafetyConfig.condition_clear_s` (0.1 s by default), so a joint that is
rate-limited on every tick but the one where a new trajectory starts from the last setpoint (a
policy streaming chunks) stays one condition instead of flapping start/end at the policy rate.
The same tracker serves the driver's own conditions (watchdog hold, rejected commands, stale
joint states; see :mod:`robot_drivers.hardware`). The conditions are those for which
ros2_control's ``joint_trajectory_controller`` rejects a trajectory or holds position (its
``cmd_timeout``) and libfranka's ``limitRate`` limits a command.

**At the limit is not a clamp.** A value beyond a bound by at most :data:`LIMIT_TOLERANCE`
(1e-9 rad or m) is still clipped onto the bound, so the output never leaves the limits, but it
does not raise a condition. Such excesses are float64 round-off, not commands: the trajectory
interpolation ``(1 - a) q0 + a q1``, the action denormalisation and a limit written into a
message come back within a few ulp (about 1e-15 for the Franka's |q| < 4 rad), and a nanoradian
is a nanometre at the end of a 1 m arm, five orders of magnitude below the Panda's ±0.1 mm pose
repeatability (Franka Emika Panda datasheet). The same tolerance decides whether a velocity
limit or a measured-outside-limits clip changed anything.

Units follow REP-103: rad and rad/s for revolute joints, m and m/s for prismatic ones; ``dt`` in s.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import (Callable, Collection, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple)

import numpy as np

from robot_drivers.embodiment import Embodiment

__all__ = [
    'SafetyConfig', 'SafetyEvent', 'SafetyFilter', 'CommandRejected', 'EdgeTracker', 'ConditionKey',
    'START', 'END', 'LIMIT_TOLERANCE', 'LIMIT_KINDS', 'SEVERITY', 'severity',
    'REJECTED', 'POSITION_CLAMP', 'VELOCITY_LIMIT', 'MAX_STEP', 'ESTOP', 'ESTOP_HOLD',
    'MEASURED_OUTSIDE_LIMITS', 'WATCHDOG_HOLD', 'TIME_JUMP',
    'JOINT_STATE_MISSING', 'JOINT_STATE_STALE', 'JOINT_STATE_INVALID', 'TICK_FAILED',
    'ACCELERATION_LIMIT', 'POSITION_BRAKE', 'INTERLOCK', 'MOTION_KINDS', 'MotionLimiter', 'braking_speed', 'MIN_DT',
]

# Edges (SafetyEvent.edge).
START = 'start'
END = 'end'

# Condition kinds (SafetyEvent.kind). Per joint: POSITION_CLAMP, VELOCITY_LIMIT, MAX_STEP,
# MEASURED_OUTSIDE_LIMITS. Whole command / driver (joint None): the rest.
REJECTED = 'rejected'                      # commands are being rejected (ends when one is accepted)
POSITION_CLAMP = 'position_clamp'          # target beyond a position limit, clamped
VELOCITY_LIMIT = 'velocity_limit'          # step beyond max_velocity * dt, limited (libfranka limitRate)
MAX_STEP = 'max_step'                      # step beyond SafetyConfig.max_step, limited
MEASURED_OUTSIDE_LIMITS = 'measured_outside_limits'  # reference outside the limits, output set to the limit
ESTOP = 'estop'                            # emergency stop engaged, holding; ends at rearm
ESTOP_HOLD = ESTOP                         # former name of the per-tick e-stop event; same condition
WATCHDOG_HOLD = 'watchdog_hold'            # no trajectory within the timeout, holding; ends on a new one
TIME_JUMP = 'time_jump'                    # the tick clock went backwards; ends at the next forward tick
JOINT_STATE_MISSING = 'joint_state_missing'  # no joint state received yet: nothing is commanded
JOINT_STATE_STALE = 'joint_state_stale'      # the latest joint state is too old: nothing is commanded
JOINT_STATE_INVALID = 'joint_state_invalid'  # a joint state message could not be used
TICK_FAILED = 'tick_failed'                  # a driver tick raised (e.g. non-finite measured positions)
ACCELERATION_LIMIT = 'acceleration_limit'  # velocity change beyond max_acceleration * dt, limited
POSITION_BRAKE = 'position_brake'          # slowed so a position limit is reached without exceeding max_acceleration
INTERLOCK = 'interlock'                    # a machine rule changed the targets (joint = the rule's name)

#: The per-joint kinds :meth:`SafetyFilter.conditions` evaluates on every call.
LIMIT_KINDS = (POSITION_CLAMP, VELOCITY_LIMIT, MAX_STEP, MEASURED_OUTSIDE_LIMITS)

#: Excess over a bound (rad or m) below which clipping is round-off, not a condition (module docstring).
LIMIT_TOLERANCE = 1e-9

#: Log severity of each kind's start edge (``'error'``, ``'warning'`` or ``'info'``); end edges are
#: ``'info'``. Rate limiting is expected while a policy moves fast, so it is ``'info'``.
SEVERITY: Dict[str, str] = {
    REJECTED: 'error', JOINT_STATE_STALE: 'error', JOINT_STATE_INVALID: 'error', TICK_FAILED: 'error',
    ESTOP: 'warning', WATCHDOG_HOLD: 'warning', TIME_JUMP: 'warning', POSITION_CLAMP: 'warning',
    MEASURED_OUTSIDE_LIMITS: 'warning', JOINT_STATE_MISSING: 'warning',
    VELOCITY_LIMIT: 'info', MAX_STEP: 'info', ACCELERATION_LIMIT: 'info', POSITION_BRAKE: 'info',
    INTERLOCK: 'warning',
}

#: ``(kind, joint)``: what an :class:`EdgeTracker` keys conditions by (joint ``None`` for whole-command ones).
ConditionKey = Tuple[str, Optional[str]]


class CommandRejected(ValueError):
    """A joint command that must not reach the hardware (NaN/Inf, wrong length, unknown/missing joints).

    The message names the problem: the offending joints or indices and their values.

    Attributes:
        reason: short code of the problem (``'non_finite'``, ``'unknown_joints'``,
            ``'missing_joints'``, ``'duplicate_joints'``, ``'not_numeric'``, ``'shape'``,
            ``'estop_active'``, ``'time_from_start'``, ``'no_points'``, ``'invalid'``). Consecutive
            rejections with the same code are one ``rejected`` condition (counted, published once).
    """

    def __init__(self, message: str, reason: str = 'invalid') -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class SafetyEvent:
    """An edge of a safety condition: it started, or it ended.

    Attributes:
        kind: one of the module's condition kinds (``'position_clamp'``, ``'velocity_limit'``,
            ``'rejected'``, ``'watchdog_hold'``, ``'estop'``, ...).
        joint: the joint concerned, or ``None`` for whole-command conditions.
        detail: human-readable explanation with the numbers involved.
        edge: :data:`START` (the condition began) or :data:`END` (it no longer holds).
        count: for an end edge, how many times the condition was observed while it held (ticks,
            or rejected commands for ``rejected``); 1 for a start edge.
    """

    kind: str
    joint: Optional[str]
    detail: str
    edge: str = START
    count: int = 1

    @property
    def key(self) -> ConditionKey:
        return (self.kind, self.joint)

    @property
    def severity(self) -> str:
        """``'error'``, ``'warning'`` or ``'info'``; see :func:`severity`."""
        return severity(self)

    def __str__(self) -> str:
        where = f' {self.joint}' if self.joint else ''
        return f'{self.kind}{where} {self.edge}: {self.detail}'


def severity(event: SafetyEvent) -> str:
    """Log severity of an event: :data:`SEVERITY` of its kind for a start edge (``'warning'`` for
    kinds not listed), ``'info'`` for an end edge."""
    if event.edge == END:
        return 'info'
    return SEVERITY.get(event.kind, 'warning')


@dataclass
class _Active:
    detail: str            # detail of the start edge
    tag: Optional[str]     # sub-reason: a different tag ends the condition and starts it again
    count: int = 1         # observations holding since the start (including the first)
    absent_s: float = 0.0  # time it has been observed absent without ending (update's hysteresis)


class EdgeTracker:
    """Active conditions keyed by ``(kind, joint)``; turns observations into start/end edges.

    Each key alternates strictly: ``start``, ``end``, ``start``, ... and a key is reported again
    only after it ended. Two ways to feed it:

    * :meth:`update` with the complete set of conditions of some kinds that hold *now* (the
      safety filter's per-tick limits): new keys start, keys of those kinds that are missing end.
    * :meth:`set` for one condition observed to hold or not (watchdog, rejections, joint states).

    Repeated observations of an active condition only increase its count, which the end edge
    carries (:attr:`SafetyEvent.count`).
    """

    def __init__(self) -> None:
        self._active: Dict[ConditionKey, _Active] = {}

    @property
    def active(self) -> Dict[ConditionKey, str]:
        """The conditions holding now: ``{(kind, joint): start detail}`` in the order they started."""
        return {k: a.detail for k, a in self._active.items()}

    def count(self, kind: str, joint: Optional[str] = None) -> int:
        """Observations of an active condition since it started; 0 when it is not active."""
        a = self._active.get((kind, joint))
        return a.count if a is not None else 0

    def _start(self, key: ConditionKey, detail: str, tag: Optional[str]) -> SafetyEvent:
        self._active[key] = _Active(detail, tag)
        return SafetyEvent(key[0], key[1], detail, START, 1)

    def _end(self, key: ConditionKey, detail: str) -> SafetyEvent:
        a = self._active.pop(key)
        return SafetyEvent(key[0], key[1], detail, END, a.count)

    def set(self, kind: str, joint: Optional[str], active: bool, detail: str = '', *,
            tag: Optional[str] = None) -> List[SafetyEvent]:
        """Observe one condition.

        Args:
            kind, joint: the condition's key.
            active: whether it holds now.
            detail: text of the edge this observation produces (start detail when it starts, end
                detail when it ends); unused when nothing changes.
            tag: sub-reason of an active condition. Observing it active with a different tag
                than it started with ends it and starts it again (two edges), so a new reason
                is reported while a repeated one is only counted.

        Returns:
            The edges, in order: ``[]``, ``[start]``, ``[end]`` or ``[end, start]``.
        """
        key = (kind, joint)
        cur = self._active.get(key)
        if not active:
            return [self._end(key, detail)] if cur is not None else []
        if cur is None:
            return [self._start(key, detail, tag)]
        if cur.tag != tag:
            return [self._end(key, f'reason changed from {cur.tag} to {tag}'), self._start(key, detail, tag)]
        cur.count += 1
        return []

    def update(self, kinds: Collection[str], holding: Mapping[ConditionKey, str],
               end_detail: Optional[Callable[[ConditionKey, int], str]] = None, *,
               dt: float = 0.0, clear_s: float = 0.0) -> List[SafetyEvent]:
        """Observe the complete set of conditions of ``kinds`` that hold now.

        Args:
            kinds: the kinds this observation covers; active keys of other kinds are untouched.
            holding: ``{(kind, joint): start detail}`` of every condition of ``kinds`` holding now;
                each key's kind must be in ``kinds``.
            end_detail: ``(key, count) -> text`` for the end edges; default ``'cleared after N ticks'``
                (``count``: the observations on which it held).
            dt: seconds since the previous observation, >= 0.
            clear_s: hysteresis, s: an active key ends once it has been absent from ``holding``
                on consecutive observations spanning more than ``clear_s`` (summed ``dt``); one
                that reappears earlier continues without an edge. 0 ends it at the first absence.

        Returns:
            End edges of the keys of ``kinds`` that cleared (in the order they started), then
            start edges of the new keys (in ``holding``'s order).

        Raises:
            ValueError: a key of ``holding`` has a kind outside ``kinds``.
        """
        kinds = frozenset(kinds)
        stray = [k for k in holding if k[0] not in kinds]
        if stray:
            raise ValueError(f'EdgeTracker.update: conditions {stray} are not of the observed kinds {sorted(kinds)}')
        fmt = end_detail or (lambda key, n: f'cleared after {n} tick{"s" if n != 1 else ""}')
        events = []
        for k, a in list(self._active.items()):
            if k[0] in kinds and k not in holding:
                a.absent_s += dt
                if clear_s <= 0.0 or a.absent_s > clear_s:
                    events.append(self._end(k, fmt(k, a.count)))
        for k, detail in holding.items():
            cur = self._active.get(k)
            if cur is None:
                events.append(self._start(k, detail, None))
            else:
                cur.count += 1
                cur.absent_s = 0.0
        return events

    def clear(self, kinds: Iterable[str], detail: str) -> List[SafetyEvent]:
        """End every active condition of ``kinds`` with ``detail``; returns the end edges."""
        return self.update(kinds, {}, lambda key, n: detail)


@dataclass
class SafetyConfig:
    """Safety parameters.

    Attributes:
        position_margin: distance kept from each revolute joint's position limits, rad (>= 0).
        velocity_scale: fraction of the datasheet maximum joint velocity allowed, in (0, 1].
        max_step: optional per-joint cap on ``|safe - measured|`` per filter call, ``(J,)`` in
            joint units (rad or m), each > 0; ``None`` for no cap beyond the velocity limit.
        watchdog_timeout_s: seconds without a new trajectory (after the last one has finished)
            before the driver holds the measured position, > 0.
        prismatic_margin: distance kept from each prismatic joint's limits, m (>= 0). Separate
            from ``position_margin`` because the units differ (a 0.05 rad margin would be larger
            than the Franka Hand's 0.04 m finger stroke).
        rate_limit_reference: what :class:`~robot_drivers.hardware.ArmDriverCore` limits the
            per-tick step from (the ``measured`` argument of :meth:`SafetyFilter.filter`):
            ``'command'`` (default) the previous setpoint it wrote, as libfranka's ``limitRate``
            does with the last commanded position; ``'measured'`` the measured position. With
            ``'measured'`` a position-controlled joint can never be commanded more than
            ``vmax * dt`` beyond where it is, so a gripper cannot squeeze an object (its force
            comes from the position error) and soft position servos lag: in the MuJoCo scene
            the scripted expert solves 6/6 reach and 6/6 pick episodes through the driver with
            ``'command'`` and 2/6 reach, 0/6 pick with ``'measured'``. The filter itself is the
            same in both modes; e-stop always holds the measured position.
        condition_clear_s: hysteresis of the per-joint limit conditions, s (>= 0): a clamp or
            rate limit ends (one ``end`` event) only after it has not held for this long, so a
            gap of a tick or two does not end and restart it. 0.1 s spans the one-tick gap at
            each new trajectory at driver rates of 10 Hz and above and is short next to an
            operator reading the events; 0 reports every change.

    Raises:
        ValueError: a value out of the ranges above (names the field and the value).
    """

    position_margin: float = 0.0
    velocity_scale: float = 1.0
    max_step: Optional[np.ndarray] = None
    watchdog_timeout_s: float = 0.5
    prismatic_margin: float = 0.0
    rate_limit_reference: str = 'command'
    condition_clear_s: float = 0.1

    def __post_init__(self) -> None:
        if self.rate_limit_reference not in ('command', 'measured'):
            raise ValueError(f"SafetyConfig.rate_limit_reference must be 'command' or 'measured', "
                             f'got {self.rate_limit_reference!r}')
        for name in ('position_margin', 'prismatic_margin', 'condition_clear_s'):
            v = float(getattr(self, name))
            if not np.isfinite(v) or v < 0:
                raise ValueError(f'SafetyConfig.{name} must be finite and >= 0, got {v}')
            setattr(self, name, v)
        vs = float(self.velocity_scale)
        if not np.isfinite(vs) or not 0.0 < vs <= 1.0:
            raise ValueError(f'SafetyConfig.velocity_scale must be in (0, 1], got {vs}')
        self.velocity_scale = vs
        wt = float(self.watchdog_timeout_s)
        if not np.isfinite(wt) or wt <= 0:
            raise ValueError(f'SafetyConfig.watchdog_timeout_s must be finite and > 0, got {wt}')
        self.watchdog_timeout_s = wt
        if self.max_step is not None:
            ms = np.asarray(self.max_step, dtype=np.float64)
            if ms.ndim != 1 or ms.size == 0:
                raise ValueError(f'SafetyConfig.max_step must be a 1-D array (J,), got shape {ms.shape}')
            if not np.all(np.isfinite(ms)) or np.any(ms <= 0):
                raise ValueError(f'SafetyConfig.max_step must be finite and > 0, got {ms.tolist()}')
            self.max_step = ms


class SafetyFilter:
    """Validates and limits joint position commands for one embodiment; reports conditions as edges.

    Args:
        embodiment: joint names, order and limits.
        config: :class:`SafetyConfig`; default: no margin, full datasheet velocity.

    Attributes:
        tracker: the :class:`EdgeTracker` holding the active conditions (the e-stop and the
            per-joint limits; :class:`~robot_drivers.hardware.ArmDriverCore` adds its own to it).

    Raises:
        ValueError: ``config.max_step`` length differs from the embodiment's joint count, or a
            margin leaves no allowed range for some joint (the joint is named).
    """

    def __init__(self, embodiment: Embodiment, config: Optional[SafetyConfig] = None) -> None:
        self.embodiment = embodiment
        self.config = config if config is not None else SafetyConfig()
        names = embodiment.joint_names
        margin = np.array([self.config.prismatic_margin if j.kind == 'prismatic' else self.config.position_margin
                           for j in embodiment.joints])
        lower, upper = embodiment.lower + margin, embodiment.upper - margin  # (J,)
        bad = [n for n, lo, hi in zip(names, lower, upper) if not lo < hi]
        if bad:
            raise ValueError(f'SafetyConfig margins leave no position range for joints {bad} '
                             f'of embodiment {embodiment.name!r}')
        self.lower: np.ndarray = lower          # (J,) rad / m
        self.upper: np.ndarray = upper          # (J,) rad / m
        self.max_velocity: np.ndarray = embodiment.max_velocity * self.config.velocity_scale  # (J,) rad/s, m/s
        if self.config.max_step is not None and self.config.max_step.shape[0] != embodiment.dof:
            raise ValueError(f'SafetyConfig.max_step has {self.config.max_step.shape[0]} values, '
                             f'embodiment {embodiment.name!r} has {embodiment.dof} joints {names}')
        self._units = ['m' if j.kind == 'prismatic' else 'rad' for j in embodiment.joints]
        self._estopped = False
        self.tracker = EdgeTracker()

    # ------------------------------------------------------------------ e-stop
    @property
    def estopped(self) -> bool:
        return self._estopped

    def estop(self) -> List[SafetyEvent]:
        """Latch the emergency stop: :meth:`filter` returns the measured position until :meth:`rearm`.

        Returns:
            ``[estop start edge]``, or ``[]`` if it was already engaged.
        """
        self._estopped = True
        return self.tracker.set(ESTOP, None, True, 'emergency stop engaged: holding the measured position '
                                                   'until rearm')

    def rearm(self) -> List[SafetyEvent]:
        """Release the emergency stop.

        Returns:
            ``[estop end edge]``, or ``[]`` if it was not engaged.
        """
        self._estopped = False
        return self.tracker.set(ESTOP, None, False, 'emergency stop released (rearm)')

    # ------------------------------------------------------------------ validation
    def validate(self, names: Sequence[str], positions: np.ndarray, *, source: str = 'command') -> np.ndarray:
        """Check a command and return it in embodiment order.

        Args:
            names: ``(J,)`` joint names of the command, any order.
            positions: ``(J,)`` or ``(P, J)`` positions (rad / m), columns in ``names`` order.
            source: what the command is (topic name), used in error messages.

        Returns:
            ``float64`` array of the same shape, columns reordered into embodiment order.

        Raises:
            CommandRejected: duplicate, unknown or missing joint names (listed), a values/names
                length mismatch, a non-numeric value, or NaN/Inf (joint, point and value named);
                :attr:`CommandRejected.reason` says which.
        """
        names = [str(n) for n in names]
        emb = self.embodiment
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise CommandRejected(f'{source}: duplicate joint names {dup}', 'duplicate_joints')
        unknown = emb.unknown_joints(names)
        if unknown:
            raise CommandRejected(f'{source}: unknown joints {unknown} (embodiment {emb.name!r} has '
                                  f'{emb.joint_names})', 'unknown_joints')
        missing = [n for n in emb.joint_names if n not in names]
        if missing:
            raise CommandRejected(f'{source}: missing joints {missing} of embodiment {emb.name!r}', 'missing_joints')
        try:
            pos = np.asarray(positions, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise CommandRejected(f'{source}: positions are not numeric: {exc}', 'not_numeric') from None
        if pos.ndim not in (1, 2) or pos.shape[-1] != len(names):
            raise CommandRejected(
                f'{source}: positions of shape {pos.shape} do not match {len(names)} joint names '
                f'(expected ({len(names)},) or (P, {len(names)}))', 'shape')
        bad = ~np.isfinite(pos)
        if bad.any():
            where = np.argwhere(bad)
            first = tuple(int(i) for i in where[0])
            joint = names[first[-1]]
            point = f' at point {first[0]}' if pos.ndim == 2 else ''
            bad_joints = sorted({names[int(c[-1])] for c in where})
            raise CommandRejected(
                f'{source}: non-finite position {pos[first]!r} for joint {joint!r}{point} '
                f'(non-finite joints: {bad_joints})', 'non_finite')
        idx = emb.index_of(names, source=source)  # (J,)
        return np.ascontiguousarray(pos[..., idx])

    def _check_measured(self, measured: np.ndarray) -> np.ndarray:
        m = np.asarray(measured, dtype=np.float64).reshape(-1)
        if m.shape[0] != self.embodiment.dof:
            raise ValueError(f'measured positions have {m.shape[0]} values, embodiment '
                             f'{self.embodiment.name!r} has {self.embodiment.dof} joints')
        bad = np.flatnonzero(~np.isfinite(m))
        if bad.size:
            joints = [self.embodiment.joint_names[i] for i in bad]
            raise ValueError(f'measured position is non-finite for joints {joints}: {m[bad].tolist()}')
        return m

    def _checked(self, names: Sequence[str], positions: np.ndarray, measured: np.ndarray, dt: float,
                 source: str) -> Tuple[np.ndarray, np.ndarray, float]:
        target = self.validate(names, positions, source=source)
        if target.ndim != 1:
            raise CommandRejected(f'{source}: filter takes one point (J,), got shape {target.shape}', 'shape')
        m = self._check_measured(measured)
        dt = float(dt)
        if not np.isfinite(dt) or dt < 0:
            raise ValueError(f'dt must be finite and >= 0 s, got {dt}')
        return target, m, dt

    # ------------------------------------------------------------------ filter
    def _limit(self, target: np.ndarray, m: np.ndarray, dt: float) -> Tuple[np.ndarray, Dict[ConditionKey, str]]:
        jn, unit, lo, hi = self.embodiment.joint_names, self._units, self.lower, self.upper
        cond: Dict[ConditionKey, str] = {}
        clamped = np.clip(target, lo, hi)  # (J,)
        for i in np.flatnonzero(np.abs(clamped - target) > LIMIT_TOLERANCE):
            side, lim = ('above the upper', hi[i]) if target[i] > hi[i] else ('below the lower', lo[i])
            cond[(POSITION_CLAMP, jn[i])] = (f'target {target[i]:.6g} {unit[i]} is {abs(target[i] - lim):.3g} '
                                             f'{side} limit {lim:.6g}: clamped')

        step = self.max_velocity * dt  # (J,) largest allowed change this period
        kind = np.full(step.shape, VELOCITY_LIMIT, dtype=object)
        if self.config.max_step is not None:
            use_cap = self.config.max_step < step
            kind[use_cap] = MAX_STEP
            step = np.minimum(step, self.config.max_step)
        delta = clamped - m  # (J,)
        limited = np.clip(delta, -step, step)
        for i in np.flatnonzero(np.abs(limited - delta) > LIMIT_TOLERANCE):
            bound = 'max_step' if kind[i] == MAX_STEP else f'max_velocity * dt, dt {dt:.4g} s'
            cond[(str(kind[i]), jn[i])] = (f'step {delta[i]:+.4g} {unit[i]} from {m[i]:.6g} exceeds '
                                           f'{step[i]:.4g} ({bound}): limited')
        safe = m + limited

        final = np.clip(safe, lo, hi)
        for i in np.flatnonzero(np.abs(final - safe) > LIMIT_TOLERANCE):
            cond[(MEASURED_OUTSIDE_LIMITS, jn[i])] = (
                f'reference {m[i]:.6g} {unit[i]} outside [{lo[i]:.6g}, {hi[i]:.6g}]: '
                f'command set to the limit {final[i]:.6g}')
        return final, cond

    def conditions(self, names: Sequence[str], positions: np.ndarray, measured: np.ndarray, dt: float,
                   *, source: str = 'command') -> Tuple[np.ndarray, Dict[ConditionKey, str]]:
        """The limiting steps 4-6 as a pure function: the safe command and the conditions that hold.

        Ignores the e-stop and changes no state. Arguments and errors as :meth:`filter`.

        Returns:
            ``(safe (J,) float64 in embodiment order, {(kind, joint): detail})`` with kinds from
            :data:`LIMIT_KINDS`, one entry per joint and kind whose value the step changed by more
            than :data:`LIMIT_TOLERANCE`.
        """
        target, m, dt = self._checked(names, positions, measured, dt, source)
        return self._limit(target, m, dt)

    def filter(self, names: Sequence[str], positions: np.ndarray, measured: np.ndarray, dt: float,
               *, source: str = 'command') -> Tuple[np.ndarray, List[SafetyEvent]]:
        """Make a position command safe to send.

        Args:
            names: ``(J,)`` joint names of the command, any order.
            positions: ``(J,)`` commanded positions (rad / m) in ``names`` order.
            measured: ``(J,)`` reference positions (rad / m) in **embodiment** order, the measured
                position or the previous setpoint (see :attr:`SafetyConfig.rate_limit_reference`).
            dt: seconds until the next command (the control period), >= 0. ``dt = 0`` allows no motion.
            source: name of the command's origin for messages.

        Returns:
            ``(safe (J,) float64 in embodiment order, events)``. ``safe`` is within
            ``[lower + margin, upper - margin]``; when ``measured`` is within those limits,
            ``|safe - measured| <= max_velocity * velocity_scale * dt`` (and ``<= max_step``).
            While e-stopped, ``safe`` is ``measured`` clipped into the limits. ``events`` are the edges of the per-joint
            limit conditions since the previous call: a start for each condition that holds now
            and did not before, an end for each that held and no longer does (all end while the
            e-stop holds, since no limit is applied then). A condition that keeps holding gives
            no further event; one that stops holding ends after
            :attr:`SafetyConfig.condition_clear_s` without it.

        Raises:
            CommandRejected: invalid command (see :meth:`validate`); checked even while e-stopped.
                No condition changes.
            ValueError: ``measured`` non-finite or of the wrong length; ``dt`` negative or non-finite.
        """
        target, m, dt = self._checked(names, positions, measured, dt, source)
        if self._estopped:   # no limit is applied while holding: they end at once
            # the measured position, clipped into the limits: a joint resting a hair past its
            # limit (a gripper against its stop) is not commanded beyond it
            return np.clip(m, self.lower, self.upper), self.tracker.update(
                LIMIT_KINDS, {}, lambda key, n: f'not applied while the emergency stop holds (held {n} ticks)')
        safe, cond = self._limit(target, m, dt)
        jn, unit, lo, hi = self.embodiment.joint_names, self._units, self.lower, self.upper

        def ended(key: ConditionKey, n: int) -> str:
            i = jn.index(key[1])
            ticks = f'after {n} tick{"s" if n != 1 else ""}'
            if key[0] == POSITION_CLAMP:
                return f'target {target[i]:.6g} {unit[i]} within [{lo[i]:.6g}, {hi[i]:.6g}] {ticks}'
            if key[0] == MEASURED_OUTSIDE_LIMITS:
                return f'reference {m[i]:.6g} {unit[i]} within [{lo[i]:.6g}, {hi[i]:.6g}] {ticks}'
            return f'step {safe[i] - m[i]:+.4g} {unit[i]} within the bound {ticks}'

        return safe, self.tracker.update(LIMIT_KINDS, cond, ended, dt=dt, clear_s=self.config.condition_clear_s)


# ============================================================================ motion limiter
#: Periods shorter than this (s) move nothing: a clock that comes back to within a few ulp of the
#: previous tick (after jumping back) would otherwise turn round-off into velocities.
MIN_DT = 1e-6

#: The per-DOF kinds :meth:`MotionLimiter.step` reports.
MOTION_KINDS = (POSITION_CLAMP, VELOCITY_LIMIT, ACCELERATION_LIMIT, POSITION_BRAKE, MAX_STEP)


def braking_speed(distance: np.ndarray, max_acceleration: np.ndarray, dt: float) -> np.ndarray:
    """Largest speed from which a DOF can still stop within ``distance``, in discrete time.

    ``v_b(d) = a (-dt + sqrt(dt² + 2 d / a))`` is the positive root of ``v dt + v² / (2a) = d``:
    one more period at ``v`` and then braking at ``a``. It is *recursively feasible*: if
    ``v <= v_b(d)`` now and the DOF moves ``v dt``, then ``max(v - a dt, 0) <= v_b(d - v dt)``
    for any next ``dt`` (expand ``(v - a dt) dt + (v - a dt)² / 2a = v² / 2a - a dt² / 2 <= d - v dt``),
    so a limiter that keeps ``v <= v_b`` never needs more than ``a`` to stop at a limit. With
    ``a = inf`` it is ``d / dt`` (stop in one period). ``d <= 0`` gives 0.

    Args:
        distance: ``(J,)`` distance to the stop, rad or m (``inf`` = no limit).
        max_acceleration: ``(J,)`` > 0, rad/s² or m/s² (``inf`` = not limited).
        dt: control period, s, > 0.

    Returns:
        ``(J,)`` speed bound, >= 0 (``inf`` where ``distance`` is ``inf``).
    """
    d = np.maximum(np.asarray(distance, dtype=np.float64), 0.0)
    a = np.asarray(max_acceleration, dtype=np.float64)
    out = np.empty(np.broadcast(d, a).shape)
    fin_a = np.isfinite(a) & np.isfinite(d)
    with np.errstate(invalid='ignore', over='ignore'):
        out[...] = d / dt                                             # a = inf: stop in one period
        aa = np.where(fin_a, a, 1.0)
        root = aa * (-dt + np.sqrt(dt * dt + 2.0 * np.where(fin_a, d, 0.0) / aa))
    out = np.where(fin_a, np.maximum(root, 0.0), out)
    return np.where(np.isinf(d), np.inf, out)


class MotionLimiter:
    """Per-DOF position, velocity, acceleration (and jerk) limiting for position and velocity DOFs.

    One call per driver tick (:meth:`step`). ``J`` DOFs in embodiment order; units rad, rad/s, rad/s²
    (m, m/s, m/s² for prismatic DOFs). With ``v_prev`` the previous output velocity:

    *Position DOF* (``out`` is a position setpoint; ``ref_pos`` is the previous setpoint, as
    libfranka's ``limitRate`` rate-limits from the last command):

    1. the target is clamped into ``[lower, upper]`` (less margins) (``position_clamp``) and to
       ``measured ± max_step`` when ``SafetyConfig.max_step`` is set (``max_step``);
    2. ``v = (target - ref_pos) / dt``, clipped to ``±vmax`` (``velocity_limit``) and, when an
       acceleration limit exists, to the braking speed toward where the command ends
       (:func:`braking_speed`, so it arrives without overshoot);
    3. ``|v - v_prev| <= amax dt`` (``acceleration_limit``);
    4. ``v`` is kept within the braking speeds toward both position limits (``position_brake``),
       which the recursion in :func:`braking_speed` makes compatible with 3 whenever the previous
       output obeyed it; ``out = ref_pos + v dt``, within the limits whatever the inputs.

    *Velocity DOF* (``out`` is a velocity; positions are measured, NaN where there is no sensor):
    ``v`` = target clipped to ``±vmax``; braked toward finite position limits from the measured
    position (``position_brake``); then ``|v - v_prev| <= amax dt``, which has priority, so the
    acceleration bound holds even when the measured position jumps (a hydraulic machine cannot
    stop faster than its valves anyway).

    *Jerk* (``max_jerk`` finite, velocity DOFs): before step 3, ``v`` is also kept within
    ``v_prev + (a_prev ± j dt) dt``. This smooths hydraulic valve commands; braking for a position
    limit, the watchdog and the e-stop may override it (they need the full deceleration), velocity and
    acceleration bounds never are. It is not applied to position DOFs: the braking toward a position
    target assumes an instant change of acceleration, and a jerk bound on top makes the DOF cycle
    around a constant target instead of settling on it.

    ``dt < MIN_DT`` (no time passed, or the clock went back) returns the previous output unchanged.

    Args:
        embodiment: the DOFs and their limits.
        config: margins and ``velocity_scale`` (fraction of ``max_velocity``), ``max_step``.
    """

    def __init__(self, embodiment: Embodiment, config: Optional[SafetyConfig] = None) -> None:
        self.embodiment = embodiment
        self.config = config if config is not None else SafetyConfig()
        emb = embodiment
        margin = np.array([self.config.prismatic_margin if j.kind == 'prismatic' else self.config.position_margin
                           for j in emb.joints])
        self.lower = emb.lower + margin                                   # (J,) -inf stays -inf
        self.upper = emb.upper - margin
        bad = [n for n, lo, hi in zip(emb.joint_names, self.lower, self.upper) if not lo < hi]
        if bad:
            raise ValueError(f'SafetyConfig margins leave no position range for joints {bad} '
                             f'of embodiment {emb.name!r}')
        self.vmax = emb.max_velocity * self.config.velocity_scale         # (J,)
        self.amax = emb.max_acceleration                                  # (J,) inf = none
        self.jmax = emb.max_jerk                                          # (J,) inf = none
        self.is_vel = emb.is_velocity                                     # (J,) bool
        if self.config.max_step is not None and self.config.max_step.shape[0] != emb.dof:
            raise ValueError(f'SafetyConfig.max_step has {self.config.max_step.shape[0]} values, '
                             f'embodiment {emb.name!r} has {emb.dof} joints {emb.joint_names}')
        self._names = emb.joint_names
        self._units = [j.unit for j in emb.joints]

    def clip_targets(self, targets: np.ndarray) -> np.ndarray:
        """Targets ``(J,)`` clipped into the action bounds (positions into limits, velocities into ±vmax)."""
        return np.where(self.is_vel, np.clip(targets, -self.vmax, self.vmax), np.clip(targets, self.lower, self.upper))

    def step(self, targets: np.ndarray, ref_pos: np.ndarray, ref_vel: np.ndarray, measured_pos: np.ndarray,
             dt: float, ref_acc: Optional[np.ndarray] = None, stop_targets: Optional[np.ndarray] = None,
             jerk: bool = True) -> Tuple[np.ndarray, np.ndarray, Dict[ConditionKey, str]]:
        """Limit one tick.

        Args:
            targets: ``(J,)`` position targets (position DOFs) and velocity targets (velocity DOFs), finite.
            ref_pos: ``(J,)`` previous position setpoint of position DOFs (within the limits); ignored
                for velocity DOFs.
            ref_vel: ``(J,)`` previous output velocity of every DOF, finite.
            measured_pos: ``(J,)`` measured positions; NaN where unknown (no brake from limits then
                for velocity DOFs; no ``max_step`` cap for position DOFs).
            dt: seconds since the previous tick, >= 0.
            ref_acc: ``(J,)`` previous output acceleration (for the jerk limit); None = 0.
            stop_targets: ``(J,)`` where the running command ends (its last point) for position DOFs:
                the braking toward the target uses the distance to it, so a streamed trajectory whose
                per-tick target moves a little each tick is followed at full speed and the DOF still
                stops at the end without overshoot. None = the target itself.
            jerk: apply the jerk smoothing; False while stopping (watchdog, e-stop, an interlock acting),
                which needs the full deceleration and must not swing past zero.

        Returns:
            ``(out (J,), out_vel (J,), conditions {(kind, joint): detail})``: ``out`` holds positions for
            position DOFs and velocities for velocity DOFs; ``out_vel`` the velocity of every DOF.

        Raises:
            ValueError: non-finite targets / references, arrays of the wrong length, dt < 0.
        """
        J = self.embodiment.dof
        tgt = np.asarray(targets, dtype=np.float64).reshape(-1)
        p = np.asarray(ref_pos, dtype=np.float64).reshape(-1)
        v_prev = np.asarray(ref_vel, dtype=np.float64).reshape(-1)
        m = np.asarray(measured_pos, dtype=np.float64).reshape(-1)
        for what, arr in (('targets', tgt), ('ref_pos', p), ('ref_vel', v_prev), ('measured_pos', m)):
            if arr.shape[0] != J:
                raise ValueError(f'MotionLimiter.step: {what} has {arr.shape[0]} values, embodiment '
                                 f'{self.embodiment.name!r} has {J} DOFs')
        pos_dof = ~self.is_vel
        if not np.all(np.isfinite(tgt)) or not np.all(np.isfinite(v_prev)) or not np.all(np.isfinite(p[pos_dof])):
            bad = [self._names[i] for i in range(J)
                   if not (np.isfinite(tgt[i]) and np.isfinite(v_prev[i]) and (self.is_vel[i] or np.isfinite(p[i])))]
            raise ValueError(f'MotionLimiter.step: non-finite target or reference for DOFs {bad}')
        dt = float(dt)
        if not np.isfinite(dt) or dt < 0:
            raise ValueError(f'dt must be finite and >= 0 s, got {dt}')
        out_prev = np.where(self.is_vel, v_prev, p)
        if dt < MIN_DT:
            return out_prev.copy(), v_prev.copy(), {}
        a_prev = np.zeros(J) if ref_acc is None else np.asarray(ref_acc, dtype=np.float64).reshape(-1)
        jn, unit = self._names, self._units
        cond: Dict[ConditionKey, str] = {}
        tol = LIMIT_TOLERANCE

        # --- position DOFs: the target -----------------------------------------------------------
        t_pos = np.clip(tgt, self.lower, self.upper)
        for i in np.flatnonzero(pos_dof & (np.abs(t_pos - tgt) > tol)):
            cond[(POSITION_CLAMP, jn[i])] = (f'target {tgt[i]:.6g} {unit[i]} outside '
                                             f'[{self.lower[i]:.6g}, {self.upper[i]:.6g}]: clamped')
        if self.config.max_step is not None:
            ms = self.config.max_step
            known = pos_dof & np.isfinite(m)
            capped = np.where(known, np.clip(t_pos, m - ms, m + ms), t_pos)
            for i in np.flatnonzero(np.abs(capped - t_pos) > tol):
                cond[(MAX_STEP, jn[i])] = (f'target {t_pos[i]:.6g} {unit[i]} more than max_step {ms[i]:.4g} '
                                           f'from the measured {m[i]:.6g}: capped')
            t_pos = capped
        err = t_pos - p                                                     # (J,) position DOFs
        with np.errstate(invalid='ignore'):
            v_des = np.where(pos_dof, err / dt, tgt)                        # (J,)
        v = np.clip(v_des, -self.vmax, self.vmax)
        for i in np.flatnonzero(np.abs(v - v_des) > tol):
            what = 'step' if pos_dof[i] else 'velocity'
            cond[(VELOCITY_LIMIT, jn[i])] = (f'{what} of {v_des[i]:+.4g} {unit[i]}/s beyond max_velocity '
                                             f'{self.vmax[i]:.4g}: limited')
        # position DOFs with an acceleration limit approach the target without overshoot
        if stop_targets is None:
            d_stop = np.abs(err)
        else:
            stop = np.clip(np.asarray(stop_targets, dtype=np.float64).reshape(-1), self.lower, self.upper)
            d_stop = np.where(np.isfinite(stop), np.abs(stop - p), np.abs(err))
            # moving away from the end point (a trajectory that turns back): no brake toward it
            d_stop = np.where(np.sign(stop - p) * np.sign(v) < 0, np.inf, d_stop)
        vb_t = braking_speed(d_stop, self.amax, dt)
        v = np.where(pos_dof & np.isfinite(self.amax), np.clip(v, -vb_t, vb_t), v)

        # --- jerk (smoothing) ---------------------------------------------------------------------
        jfin = np.isfinite(self.jmax) & self.is_vel    # velocity DOFs (hydraulic valves); see the class doc
        if jerk and jfin.any():
            lo_j = v_prev + (a_prev - self.jmax * dt) * dt
            hi_j = v_prev + (a_prev + self.jmax * dt) * dt
            v = np.where(jfin, np.clip(v, lo_j, hi_j), v)
            v = np.clip(v, -self.vmax, self.vmax)         # the jerk bound never lifts the speed limit

        # --- brakes toward position limits, acceleration -----------------------------------------
        here = np.where(pos_dof, p, m)                                      # (J,) NaN = unknown
        known = np.isfinite(here)
        up = braking_speed(np.where(known, self.upper - here, np.inf), self.amax, dt)
        down = braking_speed(np.where(known, here - self.lower, np.inf), self.amax, dt)
        acc_lo, acc_hi = v_prev - self.amax * dt, v_prev + self.amax * dt
        v_b = np.clip(v, -down, up)
        # velocity DOFs: the acceleration bound has priority over the brake
        v_vel = np.clip(v_b, acc_lo, acc_hi)
        # position DOFs: acceleration, then the brake (compatible when the previous output obeyed it)
        v_acc = np.clip(v, acc_lo, acc_hi)
        v_pos = np.clip(v_acc, -down, up)
        v_out = np.where(self.is_vel, v_vel, v_pos)
        for i in range(J):
            before = v[i]
            if self.is_vel[i]:
                if abs(v_b[i] - before) > tol:
                    cond[(POSITION_BRAKE, jn[i])] = (f'{before:+.4g} {unit[i]}/s slowed to {v_b[i]:+.4g} near a '
                                                     f'position limit (measured {here[i]:.6g})')
                if abs(v_vel[i] - v_b[i]) > tol:
                    cond[(ACCELERATION_LIMIT, jn[i])] = (
                        f'velocity change {v_b[i] - v_prev[i]:+.4g} {unit[i]}/s in {dt:.4g} s beyond '
                        f'max_acceleration {self.amax[i]:.4g}: limited')
            else:
                if abs(v_acc[i] - before) > tol:
                    cond[(ACCELERATION_LIMIT, jn[i])] = (
                        f'velocity change {before - v_prev[i]:+.4g} {unit[i]}/s in {dt:.4g} s beyond '
                        f'max_acceleration {self.amax[i]:.4g}: limited')
                if abs(v_pos[i] - v_acc[i]) > tol:
                    cond[(POSITION_BRAKE, jn[i])] = (f'{v_acc[i]:+.4g} {unit[i]}/s slowed to {v_pos[i]:+.4g} near a '
                                                     f'position limit (at {here[i]:.6g})')
        raw = p + v_out * dt
        out_pos = np.clip(raw, self.lower, self.upper)                     # clip: float round-off only
        out = np.where(self.is_vel, v_out, out_pos)
        # the velocity is the one chosen, not (out - p) / dt: that quotient is round-off noise when dt is tiny
        out_vel = np.where(self.is_vel | (out_pos == raw), v_out, (out_pos - p) / dt)
        return out, out_vel, cond
