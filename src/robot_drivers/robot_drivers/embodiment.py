"""Embodiment definitions: what a machine's command interface looks like, as data.

An :class:`Embodiment` names the joints (or actuators) a policy commands, in the order the
action vector uses, with their units and limits and where those limits come from. Drivers,
the safety filter, the policy runtime and training all read the same definition, so adding a
machine (an arm, a humanoid, an excavator) is adding a definition, not a code path.

Units follow ROS REP-103: radians and rad/s for revolute joints, metres and m/s for prismatic.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np

__all__ = [
    'JointSpec',
    'Embodiment',
    'register_embodiment',
    'get_embodiment',
    'available_embodiments',
    'FRANKA_PANDA',
]


@dataclass(frozen=True)
class JointSpec:
    """One commanded degree of freedom.

    Attributes:
        name: joint name as published in ``sensor_msgs/JointState.name``.
        lower, upper: position limits (rad or m).
        max_velocity: speed limit, > 0 (rad/s or m/s).
        kind: ``'revolute'`` or ``'prismatic'``.
    """

    name: str
    lower: float
    upper: float
    max_velocity: float
    kind: str = 'revolute'

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError('JointSpec.name must be a non-empty string')
        if not (np.isfinite(self.lower) and np.isfinite(self.upper)) or self.lower >= self.upper:
            raise ValueError(
                f'joint {self.name!r}: lower ({self.lower}) must be finite and below upper ({self.upper})')
        if not np.isfinite(self.max_velocity) or self.max_velocity <= 0:
            raise ValueError(f'joint {self.name!r}: max_velocity must be > 0, got {self.max_velocity}')
        if self.kind not in ('revolute', 'prismatic'):
            raise ValueError(f"joint {self.name!r}: kind must be 'revolute' or 'prismatic', got {self.kind!r}")


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

    def __post_init__(self) -> None:
        if not self.joints:
            raise ValueError(f'embodiment {self.name!r} has no joints')
        names = [j.name for j in self.joints]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f'embodiment {self.name!r}: duplicate joint names {dup}')
        if not self.control_rate_hz > 0:
            raise ValueError(f'embodiment {self.name!r}: control_rate_hz must be > 0')

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


def get_embodiment(name: str) -> Embodiment:
    """The registered embodiment ``name``; raises KeyError listing the known names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f'unknown embodiment {name!r}; known: {sorted(_REGISTRY)}') from None


def available_embodiments() -> List[str]:
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
))
