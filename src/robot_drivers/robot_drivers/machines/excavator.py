"""Hitachi ZX200 hydraulic excavator (OPERA / COM3 interface), by velocity.

Degrees of freedom (action-vector order; names as the COM3 relay uses them in
``com3_msgs/JointCmd.joint_name`` and in the ``sensor_msgs/JointState`` it publishes on
``/<ns>/joint_state``: pwri-opera/com3_ros ``excavator_com3_ros/include/excavator_com3_relay.hpp``,
``front_cmd_callback`` / ``tracks_cmd_callback`` / ``publisher_variable_init``):

============  ========  ===========================  =====================================================
DOF           unit      position limits (rad)        velocity / acceleration / jerk limits
============  ========  ===========================  =====================================================
swing         rad/s     none (continuous)            1.393 rad/s = 13.3 min^-1 / 0.5 rad/s^2 / 2 rad/s^3
boom          rad/s     [-1.137, 1.0]                0.5 rad/s / 0.4 rad/s^2 / 2 rad/s^3
arm           rad/s     [0.594, 2.687]               0.6 rad/s / 0.5 rad/s^2 / 2 rad/s^3
bucket        rad/s     [-0.622, 2.372]              0.8 rad/s / 0.5 rad/s^2 / 2 rad/s^3
left_track    m/s       none (no position sensor)    1.528 m/s = 5.5 km/h / 0.5 m/s^2 / 2 m/s^3
right_track   m/s       none                         1.528 m/s / 0.5 m/s^2 / 2 m/s^3
============  ========  ===========================  =====================================================

Every DOF is commanded by **velocity** (COM3's ``Velocity_Cmd_1`` / ``Velocity_Cmd_2`` CAN frames
carry target angular velocities of the front and target track velocities; ``control_type`` 1 of
``JointCmd``). Sources per DOF are in :data:`ZX200_SOURCES`; where no public number exists the
value is a conservative choice and says so.

Native outputs (:mod:`robot_drivers.msgs.com3`):

* group ``front`` (swing, boom, arm, bucket): ``com3_msgs/JointCmd`` on ``/zx200/front_cmd``; the
  same adapter emits the latched ``std_msgs/Bool`` on ``/zx200/emg_stop`` at the driver's e-stop
  edges (``True`` on e-stop, ``False`` on re-arm) and, as a second output, OperaSim's per-joint
  ``std_msgs/Float64`` on ``/zx200/{swing,boom,arm,bucket}/cmd``. OperaSim documents those as joint
  **angle** commands in rad (pwri-opera/OperaSim-PhysX-doc ``ros-topics-and-messages.rst``), not
  velocities, so the adapter publishes the angle the safe velocity leads to (see
  :class:`~robot_drivers.msgs.com3.Com3JointCmdAdapter`), not the raw velocity the generic
  ``float64_per_joint`` adapter would.
* group ``tracks`` (left_track, right_track): ``com3_msgs/JointCmd`` on ``/zx200/tracks_cmd``.

The COM3 relay zeroes its CAN velocity commands when no ``front_cmd`` / ``tracks_cmd`` arrived for
500 ms (``cmd_timeout`` in ``excavator_com3_relay.hpp``); the driver's watchdog uses the same
0.5 s so that the safety layer and the machine agree.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

from robot_drivers.embodiment import VELOCITY, Embodiment, Group, JointSpec, register_embodiment
from robot_drivers.machine import Interlock, Machine, MachineState, register_machine
from robot_drivers.msgs import com3  # noqa: F401  (registers the 'com3_joint_cmd' adapter)
from robot_drivers.safety import SafetyConfig

__all__ = ['EXCAVATOR_ZX200', 'ZX200', 'ZX200_SOURCES', 'NAMESPACE', 'FRONT_JOINTS', 'TRACK_JOINTS',
           'TRACK_GAUGE_M', 'EmgStopInterlock']

#: Default ROS namespace of the machine (com3_ros ``zx200_cmd_list.md`` uses ``/zx200/...``).
NAMESPACE = '/zx200'
FRONT_JOINTS = ('swing', 'boom', 'arm', 'bucket')
TRACK_JOINTS = ('left_track', 'right_track')
#: Track gauge (centre to centre of the crawlers), m: Hitachi ZX200-6 specifications, 2,200 mm.
TRACK_GAUGE_M = 2.2

_URDF = ('pwri-opera/zx200_ros2 zx200_description/urdf/zx200.xacro, <limit> of boom_joint / arm_joint / '
         'bucket_joint')
_MOVEIT = 'pwri-opera/zx200_ros2 zx200_moveit_config/config/joint_limits.yaml (max_acceleration)'
_SPEC = 'Hitachi ZX200-6 hydraulic excavator specifications (Hitachi Construction Machinery spec sheet)'
_JERK = ('jerk: conservative choice (no public value): reaches the acceleration limit in <= 0.25 s, '
         'smoothing pilot-valve steps')

#: Where each limit comes from.
ZX200_SOURCES = {
    'swing': f'position: continuous swing_joint ({_URDF}); velocity: swing speed 13.3 min^-1 = 1.393 rad/s '
             f'({_SPEC}); acceleration 0.5 rad/s^2 ({_MOVEIT}, swing_joint); {_JERK}',
    'boom': f'position [-1.137, 1.0] rad ({_URDF}); velocity 0.5 rad/s: conservative choice, the URDF value '
            f'6.16 rad/s is a placeholder and the spec sheet gives no joint speeds; acceleration 0.4 rad/s^2 '
            f'({_MOVEIT}, boom_joint); {_JERK}',
    'arm': f'position [0.594, 2.687] rad ({_URDF}); velocity 0.6 rad/s: conservative choice (no public value); '
           f'acceleration 0.5 rad/s^2: conservative choice, the MoveIt file sets none for arm_joint (bucket '
           f'and swing use 0.5); {_JERK}',
    'bucket': f'position [-0.622, 2.372] rad ({_URDF}); velocity 0.8 rad/s: conservative choice (no public '
              f'value); acceleration 0.5 rad/s^2 ({_MOVEIT}, bucket_joint); {_JERK}',
    'left_track': f'velocity: high travel speed 5.5 km/h = 1.528 m/s ({_SPEC}); acceleration 0.5 m/s^2: '
                  f'conservative choice (no public value); {_JERK}; no position (COM3 reports none)',
    'right_track': f'velocity: high travel speed 5.5 km/h = 1.528 m/s ({_SPEC}); acceleration 0.5 m/s^2: '
                   f'conservative choice (no public value); {_JERK}; no position (COM3 reports none)',
}

_INF = math.inf


def _joint(name: str, lower: float, upper: float, vmax: float, amax: float, *, kind: str = 'revolute',
           jerk: float = 2.0) -> JointSpec:
    return JointSpec(name, lower, upper, vmax, kind=kind, interface=VELOCITY, max_acceleration=amax,
                     max_jerk=jerk, source=ZX200_SOURCES[name])


EXCAVATOR_ZX200 = register_embodiment(Embodiment(
    name='excavator_zx200',
    joints=(
        _joint('swing', -_INF, _INF, 13.3 * 2.0 * math.pi / 60.0, 0.5),
        _joint('boom', -1.137, 1.0, 0.5, 0.4),
        _joint('arm', 0.594, 2.687, 0.6, 0.5),
        _joint('bucket', -0.622, 2.372, 0.8, 0.5),
        _joint('left_track', -_INF, _INF, 5.5 / 3.6, 0.5, kind='prismatic'),
        _joint('right_track', -_INF, _INF, 5.5 / 3.6, 0.5, kind='prismatic'),
    ),
    # 10 Hz: the rate the dig demonstrations are recorded and the policy runs at; the driver
    # interpolates to 50 Hz (Machine.control_rate_hz).
    control_rate_hz=10.0,
    command_topic=f'{NAMESPACE}/front_cmd',
    state_topic=f'{NAMESPACE}/joint_state',
    limits_source=f'{_URDF}; {_MOVEIT}; {_SPEC}; conservative choices where none is published '
                  '(see robot_drivers.machines.excavator.ZX200_SOURCES)',
    groups=(
        Group('front', FRONT_JOINTS, 'com3_joint_cmd', f'{NAMESPACE}/front_cmd',
              {'control_type': 1, 'emg_stop_topic': f'{NAMESPACE}/emg_stop',
               'operasim_topic': f'{NAMESPACE}/{{joint}}/cmd'}),
        Group('tracks', TRACK_JOINTS, 'com3_joint_cmd', f'{NAMESPACE}/tracks_cmd', {'control_type': 1}),
    ),
    machine_class='excavator',
))


class EmgStopInterlock(Interlock):
    """Every velocity target 0 while the machine reports its emergency stop (``state.extras['emg_stop']``
    true, e.g. a remote e-stop seen on ``/<ns>/emg_stop`` or COM3's machine state); the tracks, the
    swing and the front then ramp down at their deceleration limits. The driver's own latched e-stop
    (:meth:`~robot_drivers.machine.MachineDriverCore.estop`) acts the same way and also publishes the
    ``emg_stop`` Bool."""

    name = 'emg_stop'

    def apply(self, targets: np.ndarray, state: MachineState, emb: Embodiment) -> Tuple[np.ndarray, Optional[str]]:
        if not bool((state.extras or {}).get('emg_stop', False)):
            return targets, None
        out = np.where(emb.is_velocity, 0.0, targets)
        return out, 'emg_stop reported by the machine: all velocities to 0'

    def violated(self, state: MachineState, out: np.ndarray, prev_out: np.ndarray, emb: Embodiment) -> Optional[str]:
        if not bool((state.extras or {}).get('emg_stop', False)):
            return None
        v = emb.is_velocity
        grew = v & (np.abs(out) > np.abs(prev_out) + 1e-12)
        if grew.any():
            return f'speed of {[n for n, g in zip(emb.joint_names, grew) if g]} grew during emg_stop'
        return None


ZX200 = register_machine(Machine(
    embodiment=EXCAVATOR_ZX200,
    interlocks=(EmgStopInterlock(),),
    # 0.5 s: the COM3 relay's own command timeout (cmd_timeout 500 ms, excavator_com3_relay.hpp).
    safety=SafetyConfig(watchdog_timeout_s=0.5),
    control_rate_hz=50.0,
    sim='robot_drivers.sim.excavator:ExcavatorSim',
    description='Hitachi ZX200 hydraulic excavator: swing/boom/arm/bucket + tracks by velocity, '
                'OPERA COM3 com3_msgs/JointCmd (+ OperaSim angle topics), emg_stop Bool',
))
