"""Embodiment definitions: what a machine's command interface looks like, as data.

An :class:`Embodiment` names the joints (or actuators) a policy commands, in the order the
action vector uses, with their units and limits and where those limits come from. Drivers,
the safety filter, the policy runtime and training all read the same definition, so adding a
machine (an arm, a humanoid, an excavator) is adding a definition, not a code path.

Units follow ROS REP-103: radians and rad/s for revolute joints, metres and m/s for prismatic.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Sequence, Tuple

import numpy as np

__all__ = [
    'POSITION',
    'VELOCITY',
    'INTERFACES',
    'MACHINE_CLASSES',
    'JointSpec',
    'Group',
    'Embodiment',
    'register_embodiment',
    'get_embodiment',
    'available_embodiments',
    'FRANKA_PANDA',
]


#: Command interfaces of a DOF (ros2_control's hardware-interface names).
POSITION = 'position'
VELOCITY = 'velocity'
INTERFACES = (POSITION, VELOCITY)
#: What kind of machine an embodiment describes (README machine table).
MACHINE_CLASSES = ('arm', 'humanoid', 'excavator', 'wheel_loader', 'articulated_truck')


@dataclass(frozen=True)
class JointSpec:
    """One commanded degree of freedom (a joint, an actuator, or a virtual DOF such as ``base_vx``).

    Attributes:
        name: name as published in ``sensor_msgs/JointState.name``.
        lower, upper: position limits (rad or m). A position DOF needs finite limits; a velocity DOF
            may have none (``-inf`` / ``inf``: a continuous swing, a track, a base velocity).
        max_velocity: speed limit, > 0 (rad/s or m/s). For a velocity DOF also the command bound.
        kind: ``'revolute'`` or ``'prismatic'``.
        interface: :data:`POSITION` (the action value is a position target) or :data:`VELOCITY`
            (the action value is a velocity).
        max_acceleration: > 0 (rad/s² or m/s²); ``inf`` = not limited (the Franka's driver limits
            velocity only, as libfranka's ``limitRate`` on positions does).
        max_jerk: > 0 (rad/s³ or m/s³); ``inf`` = not limited. Smooths hydraulic commands (see
            :mod:`robot_drivers.safety`).
        source: where this DOF's limits come from (datasheet, vendor file, paper).

    Raises:
        ValueError: an empty name, position limits that are not ordered (or not finite for a
            position DOF), a non-positive limit, an unknown kind or interface (value named).
    """

    name: str
    lower: float
    upper: float
    max_velocity: float
    kind: str = 'revolute'
    interface: str = POSITION
    max_acceleration: float = math.inf
    max_jerk: float = math.inf
    source: str = ''

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError('JointSpec.name must be a non-empty string')
        if self.interface not in INTERFACES:
            raise ValueError(f'joint {self.name!r}: interface must be one of {INTERFACES}, got {self.interface!r}')
        finite = np.isfinite(self.lower) and np.isfinite(self.upper)
        if self.interface == POSITION and not finite:
            raise ValueError(f'joint {self.name!r}: a position DOF needs finite limits, '
                             f'got [{self.lower}, {self.upper}]')
        if np.isnan(self.lower) or np.isnan(self.upper) or self.lower >= self.upper:
            raise ValueError(
                f'joint {self.name!r}: lower ({self.lower}) must be below upper ({self.upper})')
        if not np.isfinite(self.max_velocity) or self.max_velocity <= 0:
            raise ValueError(f'joint {self.name!r}: max_velocity must be > 0, got {self.max_velocity}')
        for attr in ('max_acceleration', 'max_jerk'):
            v = float(getattr(self, attr))
            if np.isnan(v) or v <= 0:
                raise ValueError(f'joint {self.name!r}: {attr} must be > 0 (inf = not limited), got {v}')
        if self.kind not in ('revolute', 'prismatic'):
            raise ValueError(f"joint {self.name!r}: kind must be 'revolute' or 'prismatic', got {self.kind!r}")

    @property
    def unit(self) -> str:
        """``'rad'`` or ``'m'``."""
        return 'm' if self.kind == 'prismatic' else 'rad'


@dataclass(frozen=True)
class Group:
    """DOFs bound to one native output of the machine.

    Attributes:
        name: e.g. ``'arm'``, ``'gripper'``, ``'upper_body'``, ``'base'``, ``'front'``, ``'tracks'``.
        joints: DOF names (a subset of the embodiment's), in the order the output wants them.
        output: output adapter registry key (:mod:`robot_drivers.adapters`).
        topic: the output's default topic.
        options: adapter options (frame_id, field mapping, ...), see the adapter.
    """

    name: str
    joints: Tuple[str, ...]
    output: str
    topic: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or not self.joints:
            raise ValueError(f'group {self.name!r} needs a name and at least one joint')
        object.__setattr__(self, 'joints', tuple(self.joints))


@dataclass(frozen=True)
class Embodiment:
    """A machine's command interface.

    Attributes:
        name: registry key, e.g. ``'franka_panda'``.
        joints: commanded joints in action-vector order.
        control_rate_hz: rate at which the policy produces commands (Hz).
        command_topic: default ros2_control trajectory topic (REP-144 name).
        state_topic: default joint state topic.
        limits_source: citation for the limits (datasheet, upstream file).
    """

    name: str
    joints: Tuple[JointSpec, ...]
    control_rate_hz: float
    command_topic: str = '/arm_controller/joint_trajectory'
    state_topic: str = '/joint_states'
    limits_source: str = ''
    extra: Dict[str, float] = field(default_factory=dict)
    groups: Tuple[Group, ...] = ()
    forbidden_joints: Tuple[str, ...] = ()
    machine_class: str = 'arm'

    def __post_init__(self) -> None:
        if not self.joints:
            raise ValueError(f'embodiment {self.name!r} has no joints')
        names = [j.name for j in self.joints]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f'embodiment {self.name!r}: duplicate joint names {dup}')
        if not self.control_rate_hz > 0:
            raise ValueError(f'embodiment {self.name!r}: control_rate_hz must be > 0')
        if self.machine_class not in MACHINE_CLASSES:
            raise ValueError(f'embodiment {self.name!r}: machine_class must be one of {MACHINE_CLASSES}, '
                             f'got {self.machine_class!r}')
        object.__setattr__(self, 'groups', tuple(self.groups))
        object.__setattr__(self, 'forbidden_joints', tuple(self.forbidden_joints))
        clash = sorted(set(self.forbidden_joints) & set(names))
        if clash:
            raise ValueError(f'embodiment {self.name!r}: joints {clash} are both commanded and forbidden')
        seen: Dict[str, str] = {}
        for g in self.groups:
            unknown = [n for n in g.joints if n not in names]
            if unknown:
                raise ValueError(f'embodiment {self.name!r}: group {g.name!r} names unknown joints {unknown}')
            for n in g.joints:
                if n in seen:
                    raise ValueError(f'embodiment {self.name!r}: joint {n!r} is in groups {seen[n]!r} and {g.name!r}')
                seen[n] = g.name
        if self.groups and len(seen) != len(names):
            raise ValueError(f'embodiment {self.name!r}: joints {[n for n in names if n not in seen]} are in no group')
        gnames = [g.name for g in self.groups]
        if len(set(gnames)) != len(gnames):
            raise ValueError(f'embodiment {self.name!r}: duplicate group names {gnames}')

    # Array views, (J,) float64, in action-vector order.
    @property
    def joint_names(self) -> List[str]:
        return [j.name for j in self.joints]

    @property
    def dof(self) -> int:
        return len(self.joints)

    @property
    def lower(self) -> np.ndarray:
        return np.array([j.lower for j in self.joints], dtype=np.float64)

    @property
    def upper(self) -> np.ndarray:
        return np.array([j.upper for j in self.joints], dtype=np.float64)

    @property
    def max_velocity(self) -> np.ndarray:
        return np.array([j.max_velocity for j in self.joints], dtype=np.float64)

    @property
    def max_acceleration(self) -> np.ndarray:
        """``(J,)`` rad/s² or m/s²; ``inf`` where not limited."""
        return np.array([j.max_acceleration for j in self.joints], dtype=np.float64)

    @property
    def max_jerk(self) -> np.ndarray:
        """``(J,)`` rad/s³ or m/s³; ``inf`` where not limited."""
        return np.array([j.max_jerk for j in self.joints], dtype=np.float64)

    @property
    def interfaces(self) -> List[str]:
        """Command interface per DOF, action-vector order."""
        return [j.interface for j in self.joints]

    @property
    def is_velocity(self) -> np.ndarray:
        """``bool (J,)``: True where the action value is a velocity."""
        return np.array([j.interface == VELOCITY for j in self.joints], dtype=bool)

    @property
    def action_lower(self) -> np.ndarray:
        """``(J,)`` lower bound of each action value: the position limit of a position DOF,
        ``-max_velocity`` of a velocity DOF."""
        return np.where(self.is_velocity, -self.max_velocity, self.lower)

    @property
    def action_upper(self) -> np.ndarray:
        """``(J,)`` upper bound of each action value (see :attr:`action_lower`)."""
        return np.where(self.is_velocity, self.max_velocity, self.upper)

    def groups_or_default(self) -> Tuple[Group, ...]:
        """The output groups; without any, one group ``'arm'`` of all joints, a ros2_control
        ``JointTrajectoryController`` on :attr:`command_topic` (the Franka's output)."""
        if self.groups:
            return self.groups
        return (Group('arm', tuple(self.joint_names), 'joint_trajectory', self.command_topic),)

    def group(self, name: str) -> Group:
        """The group ``name``; raises KeyError listing the groups."""
        for g in self.groups_or_default():
            if g.name == name:
                return g
        raise KeyError(f'embodiment {self.name!r} has no group {name!r}; '
                       f'groups: {[g.name for g in self.groups_or_default()]}')

    @property
    def dt(self) -> float:
        """Control period in seconds."""
        return 1.0 / self.control_rate_hz

    def index_of(self, names: Sequence[str], *, source: str = 'message') -> np.ndarray:
        """Indices of this embodiment's joints inside ``names``.

        Returns an int array ``(J,)`` such that ``values[idx]`` reorders a message's values into
        action-vector order. Extra names in ``names`` are ignored (a JointState may carry more).

        Raises:
            KeyError: a joint of this embodiment is missing from ``names`` (message named in text).
        """
        lookup = {n: i for i, n in enumerate(names)}
        missing = [n for n in self.joint_names if n not in lookup]
        if missing:
            raise KeyError(
                f'{source} lacks joints {missing} of embodiment {self.name!r} (it has {list(names)})')
        return np.array([lookup[n] for n in self.joint_names], dtype=np.int64)

    def unknown_joints(self, names: Iterable[str]) -> List[str]:
        known = set(self.joint_names)
        return [n for n in names if n not in known]


_REGISTRY: Dict[str, Embodiment] = {}


def register_embodiment(emb: Embodiment) -> Embodiment:
    """Add ``emb`` to the registry under ``emb.name``; raises ValueError on a duplicate name."""
    if emb.name in _REGISTRY and _REGISTRY[emb.name] is not emb:
        raise ValueError(f'embodiment {emb.name!r} is already registered')
    _REGISTRY[emb.name] = emb
    return emb


def _load_machines() -> None:
    """Import :mod:`robot_drivers.machines`, whose modules register every machine's embodiment."""
    import robot_drivers.machines  # noqa: F401


def get_embodiment(name: str) -> Embodiment:
    """The registered embodiment ``name``; raises KeyError listing the known names.

    The machine definitions (:mod:`robot_drivers.machines`) are imported on the first miss, so a
    name resolves wherever it is used (policy, training) without importing the machine first.
    """
    if name not in _REGISTRY:
        _load_machines()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f'unknown embodiment {name!r}; known: {sorted(_REGISTRY)}') from None


def available_embodiments() -> List[str]:
    """Names of every embodiment (the machine definitions included)."""
    _load_machines()
    return sorted(_REGISTRY)


# Franka Emika Panda, limits from the Franka Control Interface documentation, "Robot and
# interface specifications", https://frankaemika.github.io/docs/control_parameters.html
# (q_min/q_max, dq_max per joint). Gripper: Franka Hand, 0..0.04 m per finger (80 mm stroke),
# 0.05 m/s per finger (franka_ros franka_gripper default max speed 0.1 m/s on the width).
_PANDA_Q_MIN = (-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973)
_PANDA_Q_MAX = (2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973)
_PANDA_DQ_MAX = (2.1750, 2.1750, 2.1750, 2.1750, 2.6100, 2.6100, 2.6100)

FRANKA_PANDA = register_embodiment(Embodiment(
    name='franka_panda',
    joints=tuple(
        JointSpec(f'panda_joint{i + 1}', lo, hi, v)
        for i, (lo, hi, v) in enumerate(zip(_PANDA_Q_MIN, _PANDA_Q_MAX, _PANDA_DQ_MAX))
    ) + (JointSpec('panda_finger_joint1', 0.0, 0.04, 0.05, kind='prismatic'),),
    # 10 Hz: the rate of the recorded demonstrations and of RT-1/Octo style policies; the
    # trajectory controller interpolates between points at its own 1 kHz.
    control_rate_hz=10.0,
    command_topic='/arm_controller/joint_trajectory',
    state_topic='/joint_states',
    limits_source='https://frankaemika.github.io/docs/control_parameters.html (arm); '
                  'Franka Hand datasheet, 80 mm stroke (gripper)',
    machine_class='arm',
))
