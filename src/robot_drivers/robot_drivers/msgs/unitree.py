"""Unitree humanoid interfaces: ``unitree_hg`` / ``unitree_go`` / ``unitree_api`` message definitions and
the ``unitree_arm_sdk`` and ``unitree_sport`` output adapters (ROS-free).

unitree_ros2 (https://github.com/unitreerobotics/unitree_ros2) talks to the robots' DDS topics
directly with these message packages; there is no ``/cmd_vel`` and no ros2_control on a Unitree
humanoid. What a driver may command while the robot's own locomotion controller keeps it
balanced:

* **Upper body** through the *arm SDK*: a ``LowCmd`` on ``/arm_sdk`` (DDS ``rt/arm_sdk``) whose
  ``motor_cmd[i]`` (joint index table of the robot) carries ``q`` / ``kp`` / ``kd`` for the arm and
  waist motors, and whose ``motor_cmd[NOT_USED_JOINT].q`` is the **blend weight** in [0, 1]
  between the locomotion controller's arm posture (0) and the command (1). Unitree's examples
  (``example/src/src/g1/high_level/g1_arm_sdk_dds_example.cpp`` in unitree_ros2,
  ``example/h1/high_level/h1_arm_sdk_dds_example.cpp`` in unitree_sdk2) publish at
  ``control_dt = 0.02`` s, change the weight by ``delta_weight = weight_rate * control_dt`` with
  ``weight_rate = 0.2`` per second, and use ``kp = 60``, ``kd = 1.5`` (the G1 example: four times
  that on the three waist motors). The G1 (and H1-2) speak ``unitree_hg/LowCmd`` (35 motors, the
  weight in index 29 on the 29-DOF G1); the H1 speaks ``unitree_go/LowCmd`` (20 motors, weight in
  index 9).
* **Base velocity** through the locomotion service's request topic: a ``unitree_api/Request``
  with ``header.identity.api_id`` = SetVelocity and ``parameter`` the JSON
  ``{"velocity": [vx, vy, omega], "duration": d}`` (``LocoClient::SetVelocity`` in unitree_ros2
  ``example/src/include/g1/g1_loco_client.hpp``: api_id 7105 on ``/api/sport/request`` for the
  G1; unitree_sdk2 ``include/unitree/robot/h1/loco/h1_loco_api.hpp``: service ``loco``, api_id
  8105, for the H1). The robot walks at that velocity for ``duration`` seconds, so a short
  duration makes each request a dead-man command: a driver that stops publishing stops the robot.

``MSG_DEFINITIONS`` holds the ``.msg`` texts as published in unitree_ros2, so the rosbags type
store (tests, bags) builds and reads these messages with real CDR without unitree_ros2 installed.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from robot_drivers.adapters import OutputAdapter, register_adapter

__all__ = ['MSG_DEFINITIONS', 'HG_LOW_CMD', 'GO_LOW_CMD', 'REQUEST', 'NUM_MOTORS', 'UNITREE_ROS2_SOURCE',
           'ArmSdkAdapter', 'SportRequestAdapter', 'low_cmd_weight']

HG_LOW_CMD = 'unitree_hg/msg/LowCmd'
GO_LOW_CMD = 'unitree_go/msg/LowCmd'
REQUEST = 'unitree_api/msg/Request'
#: ``motor_cmd`` length of each LowCmd type (fixed-size arrays in the definitions below).
NUM_MOTORS = {HG_LOW_CMD: 35, GO_LOW_CMD: 20}

UNITREE_ROS2_SOURCE = 'https://github.com/unitreerobotics/unitree_ros2/blob/{commit}/cyclonedds_ws/src/unitree/{path}'
_HG_COMMIT = 'b34fdf74ed1a2847631eff7e8398c40a537e5b9e'
_API_GO_COMMIT = '055e47663c7058bef742fc65943f361d7288ddef'


def _src(pkg: str, name: str, commit: str) -> str:
    url = UNITREE_ROS2_SOURCE.format(commit=commit, path=f'{pkg}/msg/{name}.msg')
    return f'# Source: {url}\n# copied verbatim below this line.\n'


MSG_DEFINITIONS: Dict[str, str] = {
    'unitree_hg/msg/MotorCmd': _src('unitree_hg', 'MotorCmd', _HG_COMMIT) + """\
uint8 mode
float32 q
float32 dq
float32 tau
float32 kp
float32 kd
uint32 reserve
""",
    HG_LOW_CMD: _src('unitree_hg', 'LowCmd', _HG_COMMIT) + """\
uint8 mode_pr
uint8 mode_machine

MotorCmd[35] motor_cmd

uint32[4] reserve
uint32 crc
""",
    'unitree_hg/msg/MotorState': _src('unitree_hg', 'MotorState', _HG_COMMIT) + """\
uint8 mode
float32 q
float32 dq
float32 ddq
float32 tau_est

int16[2] temperature
float32 vol
uint32[2] sensor
uint32 motorstate
uint32[4] reserve
""",
    'unitree_hg/msg/IMUState': _src('unitree_hg', 'IMUState', _HG_COMMIT) + """\
float32[4] quaternion
float32[3] gyroscope
float32[3] accelerometer
float32[3] rpy
int16 temperature
""",
    'unitree_hg/msg/LowState': _src('unitree_hg', 'LowState', _HG_COMMIT) + """\
uint32[2] version
uint8 mode_pr
uint8 mode_machine
uint32 tick
IMUState imu_state
MotorState[35] motor_state
uint8[40] wireless_remote
uint32[4] reserve
uint32 crc
""",
    'unitree_go/msg/MotorCmd': _src('unitree_go', 'MotorCmd', _API_GO_COMMIT) + """\
uint8 mode
float32 q
float32 dq
float32 tau
float32 kp
float32 kd
uint32[3] reserve
""",
    'unitree_go/msg/BmsCmd': _src('unitree_go', 'BmsCmd', _API_GO_COMMIT) + """\
uint8 off
uint8[3] reserve
""",
    GO_LOW_CMD: _src('unitree_go', 'LowCmd', _API_GO_COMMIT) + """\
uint8[2] head
uint8 level_flag
uint8 frame_reserve
uint32[2] sn
uint32[2] version
uint16 bandwidth
MotorCmd[20] motor_cmd
BmsCmd bms_cmd
uint8[40] wireless_remote
uint8[12] led
uint8[2] fan
uint8 gpio
uint32 reserve
uint32 crc
""",
    'unitree_api/msg/RequestIdentity': _src('unitree_api', 'RequestIdentity', _API_GO_COMMIT) + """\
int64  id
int64 api_id
""",
    'unitree_api/msg/RequestLease': _src('unitree_api', 'RequestLease', _API_GO_COMMIT) + """\
int64 id
""",
    'unitree_api/msg/RequestPolicy': _src('unitree_api', 'RequestPolicy', _API_GO_COMMIT) + """\
int32 priority
bool noreply
""",
    'unitree_api/msg/RequestHeader': _src('unitree_api', 'RequestHeader', _API_GO_COMMIT) + """\
RequestIdentity identity
RequestLease lease
RequestPolicy policy
""",
    REQUEST: _src('unitree_api', 'Request', _API_GO_COMMIT) + """\
RequestHeader header
string parameter
uint8[] binary
""",
}


def _zeros(n: int, dtype: Any) -> np.ndarray:
    return np.zeros(n, dtype=dtype)


def _motor_cmd(cls: Any, pkg: str, q: float = 0.0, kp: float = 0.0, kd: float = 0.0) -> Any:
    reserve = 0 if pkg == 'unitree_hg' else _zeros(3, np.uint32)
    return cls(mode=0, q=float(q), dq=0.0, tau=0.0, kp=float(kp), kd=float(kd), reserve=reserve)


def _low_cmd(types: Any, msg_type: str, motors: List[Any]) -> Any:
    cls = types.lookup(msg_type)
    if msg_type == HG_LOW_CMD:
        return cls(mode_pr=0, mode_machine=0, motor_cmd=motors, reserve=_zeros(4, np.uint32), crc=0)
    bms = types.lookup('unitree_go/msg/BmsCmd')(off=0, reserve=_zeros(3, np.uint8))
    return cls(head=_zeros(2, np.uint8), level_flag=0, frame_reserve=0, sn=_zeros(2, np.uint32),
               version=_zeros(2, np.uint32), bandwidth=0, motor_cmd=motors, bms_cmd=bms,
               wireless_remote=_zeros(40, np.uint8), led=_zeros(12, np.uint8), fan=_zeros(2, np.uint8), gpio=0,
               reserve=0, crc=0)


def low_cmd_weight(msg: Any, weight_index: int, *, source: str = 'arm_sdk') -> float:
    """The arm-SDK blend weight ``motor_cmd[weight_index].q`` of a LowCmd; ValueError if it is not in [0, 1]."""
    try:
        w = float(msg.motor_cmd[weight_index].q)
    except (AttributeError, IndexError, TypeError) as exc:
        raise ValueError(f'{source}: LowCmd has no motor_cmd[{weight_index}].q (the arm SDK weight): {exc}') from None
    if not (0.0 <= w <= 1.0):
        raise ValueError(f'{source}: arm SDK weight motor_cmd[{weight_index}].q = {w!r} is not in [0, 1]')
    return w


def _inside_float32(values: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """``values`` as float32, each rounded toward the inside of ``[lower, upper]`` where float32
    rounding would leave it (so the value on the wire is never outside a limit)."""
    v32 = values.astype(np.float32)
    up = v32.astype(np.float64) > upper
    lo = v32.astype(np.float64) < lower
    v32 = np.where(up, np.nextafter(v32, np.float32(-np.inf)), v32)
    v32 = np.where(lo, np.nextafter(v32, np.float32(np.inf)), v32)
    return v32


@register_adapter('unitree_arm_sdk')
class ArmSdkAdapter(OutputAdapter):
    """Position DOFs -> a Unitree arm-SDK ``LowCmd`` on ``/arm_sdk`` (see the module docstring).

    Each message carries, for every group joint, ``q`` = the safe position (rad, float32 rounded
    toward the inside of the joint's limits), ``dq = tau = 0``, the joint's ``kp`` / ``kd``; every
    other motor entry is zero, and ``motor_cmd[weight_index].q`` is the blend weight. The weight
    ramps at ``weight_rate`` per second: from 0 at the first message up to 1, down to 0 after an
    e-stop (:meth:`estop_messages` with ``engaged=True``: the robot's own controller takes the arms
    back smoothly, as ``StopControl`` in the example does), and up again after the re-arm.

    Options (``Group.options``):
        message: ``'unitree_hg/msg/LowCmd'`` (G1, H1-2; default) or ``'unitree_go/msg/LowCmd'`` (H1).
        motor_index: ``{dof: motor index}`` (the robot's joint index table), required for every joint.
        weight_index: index of ``NOT_USED_JOINT`` (the weight), required.
        kp, kd: ``{dof: gain}`` (N·m/rad, N·m·s/rad), required for every joint.
        weight_rate: 1/s, default 0.2 (the examples' ``weight_rate``; a full ramp takes 5 s).

    Raises:
        ValueError: (construction) a missing or out-of-range index, a motor index used twice or equal
            to the weight index, a missing gain, a velocity DOF in the group, an unknown message,
            a non-positive weight rate.
    """

    def __init__(self, group, embodiment, topic):
        super().__init__(group, embodiment, topic)
        opts = self.options
        self.msg_type = str(opts.get('message', HG_LOW_CMD))
        if self.msg_type not in NUM_MOTORS:
            raise ValueError(f'unitree_arm_sdk group {group.name!r}: message must be one of {sorted(NUM_MOTORS)}, '
                             f'got {self.msg_type!r}')
        self.pkg = self.msg_type.split('/')[0]
        self.num_motors = NUM_MOTORS[self.msg_type]
        specs = {j.name: j for j in embodiment.joints}
        vel = [n for n in self.joints if specs[n].interface != 'position']
        if vel:
            raise ValueError(f'unitree_arm_sdk group {group.name!r}: joints {vel} are not position DOFs')
        index = dict(opts.get('motor_index', {}))
        self.index = np.array([self._int(index, n, 'motor_index') for n in self.joints], dtype=np.int64)
        if 'weight_index' not in opts:
            raise ValueError(f'unitree_arm_sdk group {group.name!r}: option weight_index (NOT_USED_JOINT) is required')
        self.weight_index = int(opts['weight_index'])
        used = list(self.index) + [self.weight_index]
        bad = [i for i in used if not 0 <= i < self.num_motors]
        if bad or len(set(used)) != len(used):
            raise ValueError(f'unitree_arm_sdk group {group.name!r}: motor indices {list(self.index)} and weight '
                             f'index {self.weight_index} must be distinct and in [0, {self.num_motors})')
        self.kp = np.array([self._float(opts.get('kp', {}), n, 'kp') for n in self.joints])
        self.kd = np.array([self._float(opts.get('kd', {}), n, 'kd') for n in self.joints])
        self.weight_rate = float(opts.get('weight_rate', 0.2))
        if not (np.isfinite(self.weight_rate) and self.weight_rate > 0):
            raise ValueError(f'unitree_arm_sdk group {group.name!r}: weight_rate must be > 0, got {self.weight_rate}')
        self._lower = np.array([specs[n].lower for n in self.joints])
        self._upper = np.array([specs[n].upper for n in self.joints])
        self.weight = 0.0
        self.releasing = False
        self._last_now: Optional[float] = None

    def _int(self, table: Mapping[str, Any], name: str, what: str) -> int:
        if name not in table:
            raise ValueError(f'unitree_arm_sdk group {self.group.name!r}: option {what} lacks joint {name!r}')
        return int(table[name])

    def _float(self, table: Mapping[str, Any], name: str, what: str) -> float:
        if name not in table:
            raise ValueError(f'unitree_arm_sdk group {self.group.name!r}: option {what} lacks joint {name!r}')
        v = float(table[name])
        if not (np.isfinite(v) and v >= 0):
            raise ValueError(f'unitree_arm_sdk group {self.group.name!r}: {what} of {name!r} must be >= 0, got {v}')
        return v

    def release(self) -> None:
        """Start ramping the weight to 0 (the robot's controller takes the arms back); :meth:`engage` undoes it."""
        self.releasing = True

    def engage(self) -> None:
        """Ramp the weight (back) up to 1."""
        self.releasing = False

    def _update_weight(self, now: float) -> float:
        dt = 0.0 if self._last_now is None else min(max(float(now) - self._last_now, 0.0), 0.1)
        self._last_now = float(now)
        step = self.weight_rate * dt
        self.weight = max(0.0, self.weight - step) if self.releasing else min(1.0, self.weight + step)
        return self.weight

    def encode(self, setpoint, state, now, types):
        sp = self._check(setpoint)
        if not np.all(np.isfinite(sp)):
            raise ValueError(f'unitree_arm_sdk {self.topic}: non-finite setpoint for '
                             f'{[n for n, v in zip(self.joints, sp) if not np.isfinite(v)]}')
        weight = self._update_weight(now)
        q = _inside_float32(sp, self._lower, self._upper)
        mcls = types.lookup(f'{self.pkg}/msg/MotorCmd')
        motors = [_motor_cmd(mcls, self.pkg) for _ in range(self.num_motors)]
        for k, idx in enumerate(self.index):
            motors[idx] = _motor_cmd(mcls, self.pkg, q=q[k], kp=self.kp[k], kd=self.kd[k])
        motors[self.weight_index] = _motor_cmd(mcls, self.pkg, q=weight)
        return [(self.topic, _low_cmd(types, self.msg_type, motors))]

    def decode(self, msg, *, source=''):
        """A LowCmd -> ``{dof: q}``; raises ValueError for a wrong ``motor_cmd`` length, a weight outside
        [0, 1] or a non-finite ``q`` (the joint and index named)."""
        src = source or self.topic
        motors = getattr(msg, 'motor_cmd', None)
        if motors is None or len(motors) != self.num_motors:
            raise ValueError(f'{src}: {self.msg_type} needs {self.num_motors} motor_cmd entries, got '
                             f'{None if motors is None else len(motors)}')
        low_cmd_weight(msg, self.weight_index, source=src)
        out = {}
        for n, idx in zip(self.joints, self.index):
            v = float(motors[idx].q)
            if not np.isfinite(v):
                raise ValueError(f'{src}: motor_cmd[{idx}].q of joint {n!r} is {v!r}')
            out[n] = v
        return out

    def estop_messages(self, engaged, now, types):
        """E-stop engaged: the weight ramps down to 0 in the following messages; released: back up. No
        message of its own (the ramp rides on :meth:`encode`)."""
        if engaged:
            self.release()
        else:
            self.engage()
        return []


@register_adapter('unitree_sport')
class SportRequestAdapter(OutputAdapter):
    """Base velocity DOFs -> a ``unitree_api/Request`` SetVelocity call on the locomotion service's
    request topic (see the module docstring).

    ``header.identity.id`` = a request id (ns of the driver clock, strictly increasing, as
    unitree_ros2's ``BaseClient`` stamps the system uptime in ns), ``api_id`` = option ``api_id``,
    ``parameter`` = ``{"velocity": [vx, vy, omega], "duration": d}`` (m/s, m/s, rad/s, s), lease 0,
    priority 0, ``noreply`` = option ``noreply``. The group's joints map, in order, to vx, vy, omega.

    Options: ``api_id`` (default 7105, G1 LocoClient SetVelocity), ``duration`` (s, default 0.25:
    the robot stops on its own when requests stop), ``noreply`` (default True: the driver streams
    and reads no responses).

    Raises:
        ValueError: (construction) not exactly three velocity DOFs, a non-positive duration.
    """

    msg_type = REQUEST

    def __init__(self, group, embodiment, topic):
        super().__init__(group, embodiment, topic)
        specs = {j.name: j for j in embodiment.joints}
        if len(self.joints) != 3 or any(specs[n].interface != 'velocity' for n in self.joints):
            raise ValueError(f'unitree_sport group {group.name!r}: needs exactly three velocity DOFs (vx, vy, '
                             f'omega), got {list(self.joints)}')
        self.api_id = int(self.options.get('api_id', 7105))
        self.duration = float(self.options.get('duration', 0.25))
        if not (np.isfinite(self.duration) and self.duration > 0):
            raise ValueError(f'unitree_sport group {group.name!r}: duration must be > 0 s, got {self.duration}')
        self.noreply = bool(self.options.get('noreply', True))
        self._last_id = 0

    def parameter(self, setpoint: np.ndarray) -> str:
        """The JSON ``parameter`` of a SetVelocity request for ``setpoint (3,)`` (vx m/s, vy m/s, omega rad/s)."""
        sp = self._check(setpoint)
        if not np.all(np.isfinite(sp)):
            raise ValueError(f'unitree_sport {self.topic}: non-finite velocity {sp.tolist()}')
        return json.dumps({'velocity': [float(v) for v in sp], 'duration': self.duration})

    def encode(self, setpoint, state, now, types):
        param = self.parameter(setpoint)
        rid = max(int(round(max(float(now), 0.0) * 1e9)), self._last_id + 1)
        self._last_id = rid
        L = types.lookup
        header = L('unitree_api/msg/RequestHeader')(
            identity=L('unitree_api/msg/RequestIdentity')(id=rid, api_id=self.api_id),
            lease=L('unitree_api/msg/RequestLease')(id=0),
            policy=L('unitree_api/msg/RequestPolicy')(priority=0, noreply=self.noreply))
        msg = L(REQUEST)(header=header, parameter=param, binary=types.uint8_seq(np.zeros(0, dtype=np.uint8)))
        return [(self.topic, msg)]

    def decode(self, msg, *, source=''):
        """A SetVelocity Request -> ``{dof: velocity}``; ValueError for another api_id or a parameter
        that is not ``{"velocity": [3 finite numbers], "duration": d}``."""
        src = source or self.topic
        api_id = int(msg.header.identity.api_id)
        if api_id != self.api_id:
            raise ValueError(f'{src}: Request header.identity.api_id is {api_id}, not SetVelocity ({self.api_id})')
        try:
            data = json.loads(msg.parameter)
            vel = [float(v) for v in data['velocity']]
            float(data['duration'])
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f'{src}: Request parameter {msg.parameter!r} is not '
                             f'{{"velocity": [vx, vy, omega], "duration": d}}: {exc!r}') from None
        if len(vel) != 3 or not all(np.isfinite(vel)):
            raise ValueError(f'{src}: Request parameter velocity {vel} must be three finite numbers')
        return dict(zip(self.joints, vel))
