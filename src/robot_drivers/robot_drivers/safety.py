"""Command safety filter: validation, position-limit clamp, velocity limit, emergency stop (ROS-free).

Every joint command that reaches hardware goes through :meth:`SafetyFilter.filter`. It is a pure
function of its inputs, the :class:`SafetyConfig`, the embodiment's limits and the e-stop flag, so
property tests can drive it directly. Steps, in order:

1. **Validation** (:meth:`SafetyFilter.validate`): the command must name every joint of the
   embodiment exactly once, no others, with one finite value per name. Anything else raises
   :class:`CommandRejected` naming the problem (the joints, the index, the value). A rejected
   command never moves the robot; nothing is guessed or dropped silently.
2. **Reordering** into embodiment (action-vector) order.
3. **E-stop**: while the filter is e-stopped the output is the measured position (hold).
4. **Position clamp** to ``[lower + margin, upper - margin]`` (one ``position_clamp`` event per
   clamped joint). Limits are the embodiment's, whose ``limits_source`` cites the datasheet
   (for the Franka Panda: the Franka Control Interface "Robot and interface specifications").
5. **Velocity limit** relative to the reference position passed as ``measured``: ``|safe - measured|
   <= max_velocity * velocity_scale * dt`` per joint (one ``velocity_limit`` event per limited
   joint), and, if ``max_step`` is set, ``|safe - measured| <= max_step`` (``max_step`` event).
   This is libfranka's ``limitRate`` bound on commanded joint velocity (datasheet ``dq_max``);
   :class:`~robot_drivers.hardware.ArmDriverCore` passes either the measured position or its
   previous setpoint, see :attr:`SafetyConfig.rate_limit_reference`.
6. If the measured position itself is outside the limits (a sensor offset, a joint pushed past a
   soft limit), the output is clamped to the limits again (``measured_outside_limits`` event), so
   the output is *always* within limits; only then can the step exceed ``vmax * dt``.

Units follow REP-103: rad and rad/s for revolute joints, m and m/s for prismatic ones; ``dt`` in s.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from robot_drivers.embodiment import Embodiment

__all__ = [
    'SafetyConfig', 'SafetyEvent', 'SafetyFilter', 'CommandRejected',
    'REJECTED', 'POSITION_CLAMP', 'VELOCITY_LIMIT', 'MAX_STEP', 'ESTOP_HOLD',
    'MEASURED_OUTSIDE_LIMITS', 'WATCHDOG_HOLD', 'ESTOP', 'REARM', 'TIME_JUMP',
]

# Event kinds (SafetyEvent.kind).
REJECTED = 'rejected'
POSITION_CLAMP = 'position_clamp'
VELOCITY_LIMIT = 'velocity_limit'
MAX_STEP = 'max_step'
ESTOP_HOLD = 'estop_hold'
MEASURED_OUTSIDE_LIMITS = 'measured_outside_limits'
WATCHDOG_HOLD = 'watchdog_hold'
ESTOP = 'estop'
REARM = 'rearm'
TIME_JUMP = 'time_jump'

# Relative tolerance used when deciding whether a value was actually changed by a clamp
# (values already on the bound do not produce an event).
_EVENT_EPS = 1e-12


class CommandRejected(ValueError):
    """A joint command that must not reach the hardware (NaN/Inf, wrong length, unknown/missing joints).

    The message names the problem: the offending joints or indices and their values.
    """


@dataclass(frozen=True)
class SafetyEvent:
    """Something the safety layer did to (or instead of) a command.

    Attributes:
        kind: one of the module's event-kind constants (``'position_clamp'``, ``'velocity_limit'``,
            ``'rejected'``, ``'watchdog_hold'``, ...).
        joint: the joint concerned, or ``None`` for whole-command events.
        detail: human-readable explanation with the numbers involved.
    """

    kind: str
    joint: Optional[str]
    detail: str

    def __str__(self) -> str:
        where = f' {self.joint}' if self.joint else ''
        return f'{self.kind}{where}: {self.detail}'


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

    Raises:
        ValueError: a value out of the ranges above (names the field and the value).
    """

    position_margin: float = 0.0
    velocity_scale: float = 1.0
    max_step: Optional[np.ndarray] = None
    watchdog_timeout_s: float = 0.5
    prismatic_margin: float = 0.0
    rate_limit_reference: str = 'command'

    def __post_init__(self) -> None:
        if self.rate_limit_reference not in ('command', 'measured'):
            raise ValueError(f"SafetyConfig.rate_limit_reference must be 'command' or 'measured', "
                             f'got {self.rate_limit_reference!r}')
        for name in ('position_margin', 'prismatic_margin'):
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
    """Validates and limits joint position commands for one embodiment.

    Args:
        embodiment: joint names, order and limits.
        config: :class:`SafetyConfig`; default: no margin, full datasheet velocity.

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
        self._estopped = False

    # ------------------------------------------------------------------ e-stop
    @property
    def estopped(self) -> bool:
        return self._estopped

    def estop(self) -> None:
        """Latch the emergency stop: :meth:`filter` returns the measured position until :meth:`rearm`."""
        self._estopped = True

    def rearm(self) -> None:
        """Release the emergency stop."""
        self._estopped = False

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
                length mismatch, a non-numeric value, or NaN/Inf (joint, point and value named).
        """
        names = [str(n) for n in names]
        emb = self.embodiment
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise CommandRejected(f'{source}: duplicate joint names {dup}')
        unknown = emb.unknown_joints(names)
        if unknown:
            raise CommandRejected(f'{source}: unknown joints {unknown} (embodiment {emb.name!r} has {emb.joint_names})')
        missing = [n for n in emb.joint_names if n not in names]
        if missing:
            raise CommandRejected(f'{source}: missing joints {missing} of embodiment {emb.name!r}')
        try:
            pos = np.asarray(positions, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise CommandRejected(f'{source}: positions are not numeric: {exc}') from None
        if pos.ndim not in (1, 2) or pos.shape[-1] != len(names):
            raise CommandRejected(
                f'{source}: positions of shape {pos.shape} do not match {len(names)} joint names '
                f'(expected ({len(names)},) or (P, {len(names)}))')
        bad = ~np.isfinite(pos)
        if bad.any():
            where = np.argwhere(bad)
            first = tuple(int(i) for i in where[0])
            joint = names[first[-1]]
            point = f' at point {first[0]}' if pos.ndim == 2 else ''
            bad_joints = sorted({names[int(c[-1])] for c in where})
            raise CommandRejected(
                f'{source}: non-finite position {pos[first]!r} for joint {joint!r}{point} '
                f'(non-finite joints: {bad_joints})')
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

    # ------------------------------------------------------------------ filter
    def filter(self, names: Sequence[str], positions: np.ndarray, measured: np.ndarray, dt: float,
               *, source: str = 'command') -> Tuple[np.ndarray, List[SafetyEvent]]:
        """Make a position command safe to send.

        Args:
            names: ``(J,)`` joint names of the command, any order.
            positions: ``(J,)`` commanded positions (rad / m) in ``names`` order.
            measured: ``(J,)`` measured positions (rad / m) in **embodiment** order.
            dt: seconds until the next command (the control period), >= 0. ``dt = 0`` allows no motion.
            source: name of the command's origin for messages.

        Returns:
            ``(safe (J,) float64 in embodiment order, events)``. ``safe`` is within
            ``[lower + margin, upper - margin]``; when ``measured`` is within those limits,
            ``|safe - measured| <= max_velocity * velocity_scale * dt`` (and ``<= max_step``).
            While e-stopped, ``safe`` is ``measured`` (one ``estop_hold`` event).

        Raises:
            CommandRejected: invalid command (see :meth:`validate`); checked even while e-stopped.
            ValueError: ``measured`` non-finite or of the wrong length; ``dt`` negative or non-finite.
        """
        target = self.validate(names, positions, source=source)
        if target.ndim != 1:
            raise CommandRejected(f'{source}: filter takes one point (J,), got shape {target.shape}')
        m = self._check_measured(measured)
        dt = float(dt)
        if not np.isfinite(dt) or dt < 0:
            raise ValueError(f'dt must be finite and >= 0 s, got {dt}')
        jn = self.embodiment.joint_names
        events: List[SafetyEvent] = []
        if self._estopped:
            events.append(SafetyEvent(ESTOP_HOLD, None, 'emergency stop active: holding measured position'))
            return m.copy(), events

        clamped = np.clip(target, self.lower, self.upper)  # (J,)
        for i in np.flatnonzero(np.abs(clamped - target) > _EVENT_EPS):
            events.append(SafetyEvent(POSITION_CLAMP, jn[i],
                                      f'{target[i]:.6g} outside [{self.lower[i]:.6g}, {self.upper[i]:.6g}], '
                                      f'clamped to {clamped[i]:.6g}'))

        step = self.max_velocity * dt  # (J,) largest allowed change this period
        kind = np.full(step.shape, VELOCITY_LIMIT, dtype=object)
        if self.config.max_step is not None:
            use_cap = self.config.max_step < step
            kind[use_cap] = MAX_STEP
            step = np.minimum(step, self.config.max_step)
        delta = clamped - m  # (J,)
        limited = np.clip(delta, -step, step)
        for i in np.flatnonzero(np.abs(limited - delta) > _EVENT_EPS):
            events.append(SafetyEvent(str(kind[i]), jn[i],
                                      f'step {delta[i]:.6g} from measured {m[i]:.6g} exceeds '
                                      f'{step[i]:.6g} (dt {dt:.6g} s), limited'))
        safe = m + limited

        final = np.clip(safe, self.lower, self.upper)
        for i in np.flatnonzero(np.abs(final - safe) > _EVENT_EPS):
            events.append(SafetyEvent(MEASURED_OUTSIDE_LIMITS, jn[i],
                                      f'measured {m[i]:.6g} outside [{self.lower[i]:.6g}, {self.upper[i]:.6g}], '
                                      f'command set to the limit {final[i]:.6g}'))
        return final, events
