"""OPERA COM3 excavator interface: ``com3_msgs`` message definitions and the ``com3_joint_cmd`` adapter.

The public Japanese construction-machine interface "COM3" (共通制御信号, PWRI OPERA project) is
bridged to ROS 2 by pwri-opera/com3_ros: its relay node (``excavator_com3_ros``) subscribes
``com3_msgs/JointCmd`` on ``front_cmd`` (joints ``swing``, ``boom``, ``arm``, ``bucket``) and
``tracks_cmd`` (``left_track``, ``right_track``), turns ``velocity[i]`` into the CAN frames
``Velocity_Cmd_1`` (target angular velocities, rad/s) / ``Velocity_Cmd_2`` (target track
velocities) and ``effort[i]`` (percent of pilot pressure) into ``Pilot_Pressure_Cmd_*``. It only
acts on a message whose ``velocity`` and ``effort`` have one entry per ``joint_name``
(``front_cmd_callback`` in ``excavator_com3_ros/include/excavator_com3_relay.hpp``), so the
adapter always fills all three arrays. The machine's emergency stop is ``std_msgs/Bool`` on
``/<ns>/emg_stop`` (``excavator_com3_ros/zx200_cmd_list.md``).

``MSG_DEFINITIONS`` holds the ``.msg`` text as published, so the rosbags type store (tests, bags)
builds and reads ``com3_msgs/msg/JointCmd`` with real CDR without com3_ros installed.

OperaSim (pwri-opera/OperaSim-PhysX, the OPERA project's Unity simulator) takes other topics for
the same machine (pwri-opera/OperaSim-PhysX-doc ``ros-topics-and-messages.rst``):
``/<ns>/{swing,boom,arm,bucket}/cmd`` ``std_msgs/Float64`` joint **angle** commands (rad) and
``/<ns>/tracks/cmd_vel`` ``geometry_msgs/Twist`` (m/s, rad/s) for the crawlers. The adapters
``operasim_joint_cmd`` and ``operasim_tracks_cmd_vel`` speak those; ``com3_joint_cmd`` can emit the
angle topics next to its JointCmd (option ``operasim_topic``).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from robot_drivers.adapters import OutputAdapter, register_adapter
from robot_drivers.embodiment import Group

__all__ = ['MSG_DEFINITIONS', 'JOINT_CMD', 'CONTROL_TYPES', 'Com3JointCmdAdapter', 'OperaSimJointAngleAdapter',
           'OperaSimTracksTwistAdapter']

JOINT_CMD = 'com3_msgs/msg/JointCmd'
#: ``JointCmd.control_type`` values (the comment of the public definition: 0 position, 1 velocity, 2 effort).
CONTROL_TYPES = {0: 'position', 1: 'velocity', 2: 'effort'}

MSG_DEFINITIONS: Dict[str, str] = {
    JOINT_CMD: """\
# Source: https://github.com/pwri-opera/com3_ros/blob/main/com3_msgs/msg/JointCmd.msg
# (commit 8232b7a28cecb9ee92756521ebded68749040ddc), copied verbatim below this line.
# joint name of control target.
string[] joint_name

# control type of joint
# 0:position, 1:velocity, 2:effor
uint8 control_type

# controlled variable for each joint name
float64[] position
float64[] velocity
float64[] effort
""",
}

_FIELD_OF = {0: 'position', 1: 'velocity', 2: 'effort'}


class OperaSimJointAngleAdapter(OutputAdapter):
    """Velocity DOFs -> OperaSim's per-joint ``std_msgs/Float64`` angle commands (rad).

    OperaSim's ``/<ns>/<joint>/cmd`` are joint **angles** (not velocities), so the adapter integrates
    the safe velocity: ``q_cmd += v * dt`` (``dt`` = time since the previous encode, at most 0.1 s),
    kept within ``max_lead`` rad of the measured angle and inside the DOF's position limits; it starts
    at the measured angle, so a velocity of 0 holds the joint where it is. A joint without a finite
    measured angle gets no message (nothing safe to send). Position DOFs: the setpoint is sent as is.

    Args:
        topic: with ``{joint}``, e.g. ``/zx200/{joint}/cmd``.

    Options: ``names`` (``{dof: topic word}``, default the DOF name), ``max_lead`` (rad, default 0.2).

    Raises:
        ValueError: (construction) a topic without ``{joint}``, a non-positive ``max_lead``.
    """

    msg_type = 'std_msgs/msg/Float64'

    def __init__(self, group, embodiment, topic):
        super().__init__(group, embodiment, topic)
        if '{joint}' not in topic:
            raise ValueError(f'{self.key or "operasim_joint_cmd"} group {group.name!r}: topic {topic!r} needs a '
                             '{joint} placeholder')
        self.max_lead = float(self.options.get('max_lead', self.options.get('operasim_max_lead', 0.2)))
        if not self.max_lead > 0:
            raise ValueError(f'operasim_joint_cmd group {group.name!r}: max_lead must be > 0, got {self.max_lead}')
        words = dict(self.options.get('names', {}))
        self.per_joint = [(n, topic.replace('{joint}', str(words.get(n, n)))) for n in self.joints]
        idx = {n: i for i, n in enumerate(embodiment.joint_names)}
        specs = [embodiment.joints[idx[n]] for n in self.joints]
        self._sel = np.array([idx[n] for n in self.joints], dtype=np.int64)
        self._is_vel = np.array([j.interface == 'velocity' for j in specs])
        self._lower = np.array([j.lower for j in specs])
        self._upper = np.array([j.upper for j in specs])
        self._q_cmd: Optional[np.ndarray] = None
        self._last_now: Optional[float] = None

    def topics(self):
        return [(t, self.msg_type) for _, t in self.per_joint]

    def angles(self, setpoint: np.ndarray, state: Any, now: float) -> Tuple[np.ndarray, np.ndarray]:
        """``(angle commands (G,), measured angles (G,), NaN where unknown)`` for this tick (updates the integrator)."""
        sp = self._check(setpoint)
        pos = np.full(sp.shape[0], np.nan)
        allpos = None if state is None else getattr(state, 'positions', None)
        if allpos is not None:
            allpos = np.asarray(allpos, dtype=np.float64).reshape(-1)
            if allpos.shape[0] == self.embodiment.dof:
                pos = allpos[self._sel]
        known = np.isfinite(pos)
        dt = 0.0 if self._last_now is None else min(max(float(now) - self._last_now, 0.0), 0.1)
        q = pos.copy() if self._q_cmd is None else np.where(np.isfinite(self._q_cmd), self._q_cmd, pos)
        q = q + sp * dt
        q = np.where(known, np.clip(q, pos - self.max_lead, pos + self.max_lead), q)
        q = np.clip(q, self._lower, self._upper)
        q = np.where(self._is_vel, q, np.clip(sp, self._lower, self._upper))
        self._q_cmd, self._last_now = q, float(now)
        return q, pos

    def encode(self, setpoint, state, now, types):
        q, pos = self.angles(setpoint, state, now)
        cls = types.lookup(self.msg_type)
        return [(t, cls(data=float(v))) for (_, t), v, p, isv in zip(self.per_joint, q, pos, self._is_vel)
                if np.isfinite(v) and (np.isfinite(p) or not isv)]

    def decode(self, msg, *, source=''):
        """Angles cannot be turned back into velocity actions without timing: raises ValueError for a
        velocity DOF (train from the JointCmd topic); a position DOF's angle is returned."""
        for n, t in self.per_joint:
            if t == source:
                if self._is_vel[self.joints.index(n)]:
                    raise ValueError(f'{source}: OperaSim angle command of velocity DOF {n!r} is no action value; '
                                     'record the com3 JointCmd or the policy command instead')
                return {n: float(msg.data)}
        raise ValueError(f'{source!r} is none of the topics {[t for _, t in self.per_joint]} of group '
                         f'{self.group.name!r}')


register_adapter('operasim_joint_cmd')(OperaSimJointAngleAdapter)


@register_adapter('operasim_tracks_cmd_vel')
class OperaSimTracksTwistAdapter(OutputAdapter):
    """Left/right track velocities (m/s) -> OperaSim's ``geometry_msgs/Twist`` on ``/<ns>/tracks/cmd_vel``.

    Skid-steer kinematics: ``linear.x = (v_l + v_r) / 2``, ``angular.z = (v_r - v_l) / gauge`` (option
    ``gauge``, m, the track centre distance; default 2.2 m, the ZX200's). Decoding inverts it:
    ``v_l = vx - w g/2``, ``v_r = vx + w g/2``.

    Raises:
        ValueError: (construction) a group that is not two velocity DOFs (left, right), a gauge <= 0.
    """

    msg_type = 'geometry_msgs/msg/Twist'

    def __init__(self, group, embodiment, topic):
        super().__init__(group, embodiment, topic)
        self.gauge = float(self.options.get('gauge', 2.2))
        idx = {n: i for i, n in enumerate(embodiment.joint_names)}
        if len(self.joints) != 2 or any(embodiment.joints[idx[n]].interface != 'velocity' for n in self.joints):
            raise ValueError(f'operasim_tracks_cmd_vel group {group.name!r}: needs two velocity DOFs (left, right), '
                             f'got {list(self.joints)}')
        if not self.gauge > 0:
            raise ValueError(f'operasim_tracks_cmd_vel group {group.name!r}: gauge must be > 0, got {self.gauge}')

    def encode(self, setpoint, state, now, types):
        vl, vr = (float(v) for v in self._check(setpoint))
        vec = types.lookup('geometry_msgs/msg/Vector3')
        msg = types.lookup(self.msg_type)(linear=vec(x=0.5 * (vl + vr), y=0.0, z=0.0),
                                          angular=vec(x=0.0, y=0.0, z=(vr - vl) / self.gauge))
        return [(self.topic, msg)]

    def decode(self, msg, *, source=''):
        vx, w = float(msg.linear.x), float(msg.angular.z)
        half = 0.5 * w * self.gauge
        return {self.joints[0]: vx - half, self.joints[1]: vx + half}


@register_adapter('com3_joint_cmd')
class Com3JointCmdAdapter(OutputAdapter):
    """A group of velocity (or position) DOFs -> one ``com3_msgs/JointCmd`` per tick.

    Message: ``joint_name`` = the group's joints (option ``names`` maps a DOF to its COM3 name,
    default the DOF name), ``control_type`` = option ``control_type`` (default 1, velocity), the
    setpoint in the array of that control type, zeros in the other two (the relay needs all three
    at full length; zero effort = no pilot-pressure override).

    Options:
        control_type: 0 (position DOFs) or 1 (velocity DOFs); it must match the group's interfaces.
        names: ``{dof: com3 joint name}``.
        emg_stop_topic: where :meth:`estop_messages` publishes ``std_msgs/Bool`` (True at the
            driver's e-stop, False at re-arm); '' or absent = none. Set it on one group only.
        operasim_topic: OperaSim's per-joint ``std_msgs/Float64`` topic with ``{joint}`` (e.g.
            ``/zx200/{joint}/cmd``); '' or absent = none. OperaSim reads those as joint **angles**
            (rad; pwri-opera/OperaSim-PhysX-doc ``ros-topics-and-messages.rst``), so for a velocity
            DOF the adapter publishes the integrated angle ``q_cmd += v * dt``, kept within
            ``operasim_max_lead`` (rad, default 0.2) of the measured angle and inside the DOF's
            position limits (:class:`OperaSimJointAngleAdapter`).
        operasim_names: ``{dof: topic word}`` for ``{joint}`` (default the COM3 name).
        operasim_max_lead: see :class:`OperaSimJointAngleAdapter` (``max_lead``).

    Raises:
        ValueError: (construction) a control_type other than 0/1, or one that does not match the
            group's interfaces; a non-positive ``operasim_max_lead``; an ``operasim_topic`` without
            ``{joint}``.
    """

    msg_type = JOINT_CMD

    def __init__(self, group, embodiment, topic):
        super().__init__(group, embodiment, topic)
        self.control_type = int(self.options.get('control_type', 1))
        if self.control_type not in (0, 1):
            raise ValueError(f'com3_joint_cmd group {group.name!r}: control_type must be 0 (position) or 1 '
                             f'(velocity), got {self.control_type}')
        want = 'velocity' if self.control_type == 1 else 'position'
        idx = {n: i for i, n in enumerate(embodiment.joint_names)}
        self._specs = [embodiment.joints[idx[n]] for n in self.joints]
        wrong = [j.name for j in self._specs if j.interface != want]
        if wrong:
            raise ValueError(f'com3_joint_cmd group {group.name!r}: control_type {self.control_type} ({want}) but '
                             f'joints {wrong} are not {want} DOFs')
        names = dict(self.options.get('names', {}))
        self.com3_names = [str(names.get(n, n)) for n in self.joints]
        self._dof_of = dict(zip(self.com3_names, self.joints))
        self.emg_stop_topic = str(self.options.get('emg_stop_topic', '') or '')
        self.operasim_topic = str(self.options.get('operasim_topic', '') or '')
        self._angles: Optional[OperaSimJointAngleAdapter] = None
        if self.operasim_topic:
            words = dict(self.options.get('operasim_names', {}))
            sub = Group(group.name, group.joints, 'operasim_joint_cmd', self.operasim_topic,
                        {'names': {n: str(words.get(n, c)) for n, c in zip(self.joints, self.com3_names)},
                         'max_lead': self.options.get('operasim_max_lead', 0.2)})
            self._angles = OperaSimJointAngleAdapter(sub, embodiment, self.operasim_topic)
        self.operasim: List[Tuple[str, str]] = [] if self._angles is None else list(self._angles.per_joint)

    def topics(self) -> List[Tuple[str, str]]:
        """The JointCmd topic, then OperaSim's per-joint Float64 topics (if configured)."""
        return [(self.topic, self.msg_type)] + [(t, 'std_msgs/msg/Float64') for _, t in self.operasim]

    def estop_topics(self) -> List[Tuple[str, str]]:
        """``[(emg_stop_topic, 'std_msgs/msg/Bool')]`` if configured (published latched)."""
        return [(self.emg_stop_topic, 'std_msgs/msg/Bool')] if self.emg_stop_topic else []

    def encode(self, setpoint, state, now, types):
        sp = self._check(setpoint)
        zeros = types.float64_seq(np.zeros(sp.shape[0]))
        arrays = {'position': zeros, 'velocity': zeros, 'effort': zeros}
        arrays[_FIELD_OF[self.control_type]] = types.float64_seq(sp)
        msg = types.lookup(JOINT_CMD)(joint_name=list(self.com3_names), control_type=self.control_type, **arrays)
        out: List[Tuple[str, Any]] = [(self.topic, msg)]
        if self._angles is not None:
            out += self._angles.encode(sp, state, now, types)
        return out

    def decode(self, msg, *, source=''):
        """A recorded ``JointCmd`` -> ``{dof: value of the control_type's array}``.

        Raises:
            ValueError: a ``control_type`` other than the group's, an array of the wrong length, a
                joint name outside the group, or a topic that carries OperaSim angles or the
                emg_stop Bool (no action values), each named.
        """
        where = source or self.topic
        if source and (source == self.emg_stop_topic or source in {t for _, t in self.operasim}):
            what = 'the emergency stop' if source == self.emg_stop_topic else 'OperaSim joint angles'
            raise ValueError(f'{source}: carries {what}, not action values; read {self.topic} '
                             '(com3_msgs/JointCmd) instead')
        ct = int(msg.control_type)
        if ct != self.control_type:
            raise ValueError(f'{where}: JointCmd.control_type is {ct} ({CONTROL_TYPES.get(ct, "unknown")}), '
                             f'group {self.group.name!r} is commanded with {self.control_type} '
                             f'({CONTROL_TYPES[self.control_type]})')
        names = [str(n) for n in msg.joint_name]
        field = _FIELD_OF[ct]
        values = np.asarray(getattr(msg, field), dtype=np.float64).reshape(-1)
        if values.shape[0] != len(names):
            raise ValueError(f'{where}: JointCmd.{field} has {values.shape[0]} values for {len(names)} joint_name '
                             f'entries {names}')
        unknown = [n for n in names if n not in self._dof_of]
        if unknown:
            raise ValueError(f'{where}: JointCmd.joint_name {unknown} are not in group {self.group.name!r} '
                             f'(COM3 names {self.com3_names})')
        return {self._dof_of[n]: float(v) for n, v in zip(names, values)}

    def estop_messages(self, engaged, now, types):
        if not self.emg_stop_topic:
            return []
        return [(self.emg_stop_topic, types.lookup('std_msgs/msg/Bool')(data=bool(engaged)))]
