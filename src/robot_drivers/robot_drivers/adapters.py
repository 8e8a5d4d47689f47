"""Output adapters: a group's safe setpoint -> the message its machine's stack expects (ROS-free).

The policy always emits one form (:func:`robot_drivers.conversions.action_trajectory`); each
:class:`~robot_drivers.embodiment.Group` of a machine names the adapter that speaks its native
interface. Adapters are mirrored: :meth:`OutputAdapter.encode` builds the native message from the
safe setpoint, :meth:`OutputAdapter.decode` reads a recorded native message back into action
values, so training can learn from whatever the machine's own command topics carried (openpi's
per-robot input/output transforms).

Generic adapters here (machine-specific ones register from their machine modules):

=====================  ===========================================  ====================================
key                    message                                      stack
=====================  ===========================================  ====================================
``joint_trajectory``   ``trajectory_msgs/JointTrajectory``, 1 point  ros2_control ``joint_trajectory_controller``
``float64_array``      ``std_msgs/Float64MultiArray``               ros2_control ``forward_command_controller``
                                                                    (``~/commands``, one value per joint)
``twist_stamped``      ``geometry_msgs/TwistStamped``               ``/cmd_vel`` of a base controller
``float64_per_joint``  one ``std_msgs/Float64`` per DOF             OperaSim-style ``/<ns>/<joint>/cmd``
=====================  ===========================================  ====================================
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple, Type

import numpy as np

from robot_drivers.embodiment import Embodiment, Group

__all__ = ['OutputAdapter', 'register_adapter', 'get_adapter', 'available_adapters', 'build_adapters',
           'JointTrajectoryAdapter', 'Float64ArrayAdapter', 'TwistStampedAdapter', 'Float64PerJointAdapter',
           'TWIST_FIELDS']

_ADAPTERS: Dict[str, Type['OutputAdapter']] = {}


def register_adapter(key: str):
    """Class decorator: register an :class:`OutputAdapter` under ``key`` (ValueError on a clash)."""
    def deco(cls):
        if key in _ADAPTERS and _ADAPTERS[key] is not cls:
            raise ValueError(f'output adapter {key!r} is already registered')
        cls.key = key
        _ADAPTERS[key] = cls
        return cls
    return deco


def get_adapter(key: str) -> Type['OutputAdapter']:
    """The adapter class ``key``; raises KeyError listing the keys."""
    if key not in _ADAPTERS:
        import robot_drivers.machines  # noqa: F401  (machine modules register their adapters)
    try:
        return _ADAPTERS[key]
    except KeyError:
        raise KeyError(f'unknown output adapter {key!r}; adapters: {sorted(_ADAPTERS)}') from None


def available_adapters() -> List[str]:
    import robot_drivers.machines  # noqa: F401
    return sorted(_ADAPTERS)


def build_adapters(emb: Embodiment, topics: Optional[Mapping[str, str]] = None,
                   outputs: Optional[Mapping[str, str]] = None) -> List['OutputAdapter']:
    """One adapter per group of ``emb`` (the default group for an embodiment without groups).

    Args:
        topics: ``{group name: topic}`` overrides of the groups' default topics.
        outputs: ``{group name: adapter key}`` overrides of the groups' adapters, for a deployment
            whose stack speaks another interface (an excavator in OperaSim takes per-joint
            ``Float64`` commands instead of COM3 ``JointCmd``); the group's options go along.

    Raises:
        KeyError: a group names an unknown adapter, or ``topics`` / ``outputs`` name an unknown group.
    """
    topics = dict(topics or {})
    outputs = dict(outputs or {})
    groups = emb.groups_or_default()
    unknown = sorted((set(topics) | set(outputs)) - {g.name for g in groups})
    if unknown:
        raise KeyError(f'embodiment {emb.name!r} has no groups {unknown}; groups: {[g.name for g in groups]}')
    return [get_adapter(outputs.get(g.name, g.output))(g, emb, topics.get(g.name, g.topic)) for g in groups]


class OutputAdapter:
    """Turns one group's safe setpoint into native messages, and recorded ones back into actions.

    Args:
        group: the group (its ``joints`` order is the setpoint's order).
        embodiment: the machine's embodiment.
        topic: the output topic.

    Attributes:
        msg_type: full message type name of the output (``'pkg/msg/Name'``).
        key: the registry key (set by :func:`register_adapter`).
    """

    msg_type: str = ''
    key: str = ''

    def __init__(self, group: Group, embodiment: Embodiment, topic: str) -> None:
        self.group = group
        self.embodiment = embodiment
        self.topic = topic
        self.options: Mapping[str, Any] = dict(group.options)
        self.joints: Tuple[str, ...] = tuple(group.joints)

    def topics(self) -> List[Tuple[str, str]]:
        """``[(topic, msg_type), ...]`` this adapter publishes (for publishers and bag topics)."""
        return [(self.topic, self.msg_type)]

    def encode(self, setpoint: np.ndarray, state: Any, now: float, types: Any) -> List[Tuple[str, Any]]:
        """``setpoint (G,)`` in ``group.joints`` order -> ``[(topic, msg), ...]``."""
        raise NotImplementedError

    def decode(self, msg: Any, *, source: str = '') -> Dict[str, float]:
        """A native message -> ``{dof name: action value}``; raises ValueError naming the field."""
        raise NotImplementedError

    def estop_messages(self, engaged: bool, now: float, types: Any) -> List[Tuple[str, Any]]:
        """Native e-stop messages at the e-stop's edges (default: none)."""
        return []

    def estop_topics(self) -> List[Tuple[str, str]]:
        """``[(topic, msg_type), ...]`` that :meth:`estop_messages` publishes on (latched QoS)."""
        return []

    def _check(self, setpoint: np.ndarray) -> np.ndarray:
        sp = np.asarray(setpoint, dtype=np.float64).reshape(-1)
        if sp.shape[0] != len(self.joints):
            raise ValueError(f'{self.key} output {self.topic}: {sp.shape[0]} values for {len(self.joints)} joints '
                             f'{list(self.joints)}')
        return sp


@register_adapter('joint_trajectory')
class JointTrajectoryAdapter(OutputAdapter):
    """One-point ``JointTrajectory`` for ros2_control's ``joint_trajectory_controller``.

    ``positions`` for position DOFs and ``velocities`` for velocity DOFs (NaN-filled as
    :func:`~robot_drivers.conversions.action_trajectory` when mixed), zero header stamp (start on
    receipt), ``time_from_start`` = option ``time_from_start`` (s, default 0.02 = one 50 Hz tick).
    """

    msg_type = 'trajectory_msgs/msg/JointTrajectory'

    def encode(self, setpoint, state, now, types):
        from robot_drivers import conversions as conv
        sp = self._check(setpoint)
        tfs = float(self.options.get('time_from_start', 0.02))
        names = list(self.joints)
        is_vel = np.array([self.embodiment.joints[self.embodiment.joint_names.index(n)].interface == 'velocity'
                           for n in names])
        msg = conv.arrays_to_trajectory(names, np.where(is_vel, np.nan, sp)[None], 0.0, types, times=np.array([tfs]))
        if is_vel.any():
            seq = types.float64_seq
            msg.points[0].velocities = seq(np.where(is_vel, sp, np.nan))
            if is_vel.all():
                msg.points[0].positions = seq(np.zeros(0))
        return [(self.topic, msg)]

    def decode(self, msg, *, source=''):
        from robot_drivers import conversions as conv
        names, pos, vel, _ = conv.trajectory_fields(msg, source=source or self.topic)
        out = {}
        for j, n in enumerate(names):
            if n not in self.joints:
                continue
            is_vel = self.embodiment.joints[self.embodiment.joint_names.index(n)].interface == 'velocity'
            arr = vel if is_vel else pos
            if arr is None:
                raise ValueError(f'{source or self.topic}: no {"velocities" if is_vel else "positions"} for {n!r}')
            out[n] = float(arr[0, j])
        return out


@register_adapter('float64_array')
class Float64ArrayAdapter(OutputAdapter):
    """``std_msgs/Float64MultiArray``, one value per joint in group order: what ros2_control's
    ``forward_command_controller`` (position_controllers / velocity_controllers
    ``JointGroup*Controller``) reads on ``~/commands``. The layout is left empty, as those
    controllers expect."""

    msg_type = 'std_msgs/msg/Float64MultiArray'

    def encode(self, setpoint, state, now, types):
        sp = self._check(setpoint)
        cls = types.lookup(self.msg_type)
        layout = types.lookup('std_msgs/msg/MultiArrayLayout')(dim=[], data_offset=0)
        return [(self.topic, cls(layout=layout, data=types.float64_seq(sp)))]

    def decode(self, msg, *, source=''):
        data = np.asarray(msg.data, dtype=np.float64).reshape(-1)
        if data.shape[0] != len(self.joints):
            raise ValueError(f'{source or self.topic}: Float64MultiArray.data has {data.shape[0]} values for '
                             f'{len(self.joints)} joints {list(self.joints)}')
        return {n: float(v) for n, v in zip(self.joints, data)}


#: ``geometry_msgs/Twist`` fields a DOF may map to.
TWIST_FIELDS = ('linear.x', 'linear.y', 'linear.z', 'angular.x', 'angular.y', 'angular.z')


@register_adapter('twist_stamped')
class TwistStampedAdapter(OutputAdapter):
    """``geometry_msgs/TwistStamped`` (e.g. ``/cmd_vel``) from velocity DOFs.

    Options: ``fields`` (one :data:`TWIST_FIELDS` entry per group joint, default ``linear.x``,
    ``linear.y``, ``angular.z`` for three joints), ``frame_id`` (default ``base_link``, REP-105).

    Raises:
        ValueError: (construction) a field not in :data:`TWIST_FIELDS`, a count different from the
            group's joints, or a position DOF in the group.
    """

    msg_type = 'geometry_msgs/msg/TwistStamped'

    def __init__(self, group, embodiment, topic):
        super().__init__(group, embodiment, topic)
        default = ('linear.x', 'linear.y', 'angular.z')[:len(self.joints)]
        self.fields = tuple(self.options.get('fields', default))
        bad = [f for f in self.fields if f not in TWIST_FIELDS]
        if bad or len(self.fields) != len(self.joints):
            raise ValueError(f'twist_stamped group {group.name!r}: fields {list(self.fields)} must be one of '
                             f'{TWIST_FIELDS} per joint {list(self.joints)}')
        pos = [n for n in self.joints if embodiment.joints[embodiment.joint_names.index(n)].interface != 'velocity']
        if pos:
            raise ValueError(f'twist_stamped group {group.name!r}: joints {pos} are not velocity DOFs')
        self.frame_id = str(self.options.get('frame_id', 'base_link'))

    def encode(self, setpoint, state, now, types):
        from robot_drivers import conversions as conv
        sp = self._check(setpoint)
        vec = types.lookup('geometry_msgs/msg/Vector3')
        lin, ang = [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
        for f, v in zip(self.fields, sp):
            part, axis = f.split('.')
            (lin if part == 'linear' else ang)['xyz'.index(axis)] = float(v)
        twist = types.lookup('geometry_msgs/msg/Twist')(linear=vec(x=lin[0], y=lin[1], z=lin[2]),
                                                         angular=vec(x=ang[0], y=ang[1], z=ang[2]))
        msg = types.lookup(self.msg_type)(header=conv.header(max(float(now), 0.0), self.frame_id, types), twist=twist)
        return [(self.topic, msg)]

    def decode(self, msg, *, source=''):
        tw = getattr(msg, 'twist', msg)           # TwistStamped or a bare Twist
        out = {}
        for n, f in zip(self.joints, self.fields):
            part, axis = f.split('.')
            out[n] = float(getattr(getattr(tw, part), axis))
        return out


@register_adapter('float64_per_joint')
class Float64PerJointAdapter(OutputAdapter):
    """One ``std_msgs/Float64`` per DOF, on ``topic`` with ``{joint}`` replaced by the DOF's topic
    word (option ``names``: ``{dof: word}``, default the DOF name), e.g. OperaSim's
    ``/zx200/{joint}/cmd`` -> ``/zx200/boom/cmd``.

    Raises:
        ValueError: (construction) a topic without ``{joint}``.
    """

    msg_type = 'std_msgs/msg/Float64'

    def __init__(self, group, embodiment, topic):
        super().__init__(group, embodiment, topic)
        if '{joint}' not in topic:
            raise ValueError(f'float64_per_joint group {group.name!r}: topic {topic!r} needs a {{joint}} placeholder')
        words = dict(self.options.get('names', {}))
        self.per_joint = [(n, topic.replace('{joint}', str(words.get(n, n)))) for n in self.joints]

    def topics(self):
        return [(t, self.msg_type) for _, t in self.per_joint]

    def encode(self, setpoint, state, now, types):
        sp = self._check(setpoint)
        cls = types.lookup(self.msg_type)
        return [(t, cls(data=float(v))) for (_, t), v in zip(self.per_joint, sp)]

    def decode(self, msg, *, source=''):
        """A ``Float64`` of one DOF; ``source`` must be its topic (ValueError otherwise)."""
        for n, t in self.per_joint:
            if t == source:
                return {n: float(msg.data)}
        raise ValueError(f'{source!r} is none of the topics {[t for _, t in self.per_joint]} of group '
                         f'{self.group.name!r}')
