"""Universal Robots UR5e (6 revolute joints), by position, through Universal_Robots_ROS2_Driver.

Joint names are the ones the UR ROS 2 driver publishes on ``/joint_states`` (ur_description's
URDF with an empty ``tf_prefix``): ``shoulder_pan_joint`` ... ``wrist_3_joint``. The output is a
``trajectory_msgs/JointTrajectory`` on ``/scaled_joint_trajectory_controller/joint_trajectory``,
the topic of the ``scaled_joint_trajectory_controller`` the driver's ``ur_control.launch.py``
activates by default (a ros2_control ``joint_trajectory_controller`` whose execution speed follows
the teach pendant's speed slider).

Limits (:data:`UR5E_LIMITS_SOURCE`): ``config/ur5e/joint_limits.yaml`` of
UniversalRobots/Universal_Robots_ROS2_Description (itself citing the UR5e User Manual 5.8 and the
"Max. joint torques" support article):

* position ±360° for every joint except ``elbow_joint`` ±180° (the file halves the elbow's range
  because the shoulder lift link blocks it beyond about ±π anyway);
* velocity 180°/s = π rad/s for every joint (also the UR5e datasheet's joint speed);
* acceleration 180°/s² = π rad/s²: the file's value, which it notes is not published by UR and is
  set for MoveIt's time-optimal trajectory generation. It is the acceleration limit the driver
  enforces, so commands stay within what MoveIt on the same arm would plan.
"""
from __future__ import annotations

import math

from robot_drivers.embodiment import POSITION, Embodiment, Group, JointSpec, register_embodiment
from robot_drivers.machine import Machine, register_machine
from robot_drivers.safety import SafetyConfig

__all__ = ['UR5E', 'UR5E_MACHINE', 'UR5E_JOINT_NAMES', 'UR5E_COMMAND_TOPIC', 'UR5E_LIMITS_SOURCE']

#: Joint names published by Universal_Robots_ROS2_Driver (action-vector order).
UR5E_JOINT_NAMES = ('shoulder_pan_joint', 'shoulder_lift_joint', 'elbow_joint',
                    'wrist_1_joint', 'wrist_2_joint', 'wrist_3_joint')
#: The scaled JointTrajectoryController's command topic (ur_robot_driver's default controller).
UR5E_COMMAND_TOPIC = '/scaled_joint_trajectory_controller/joint_trajectory'
UR5E_LIMITS_SOURCE = (
    'UniversalRobots/Universal_Robots_ROS2_Description config/ur5e/joint_limits.yaml '
    '(commit 1c32d8fb400b73213170000c48a84be4503b881a): min/max_position +-360 deg (elbow_joint +-180 deg), '
    'max_velocity 180 deg/s, max_acceleration 180 deg/s^2; sources cited there: UR5e User Manual 5.8 '
    '(https://s3-eu-west-1.amazonaws.com/ur-support-site/69091/99404_UR5e_User_Manual_en_Global.pdf)')

_FULL_TURN = math.radians(360.0)     # 2 pi
_ELBOW = math.radians(180.0)         # pi
_VMAX = math.radians(180.0)          # pi rad/s
_AMAX = math.radians(180.0)          # pi rad/s^2
#: Driver tick rate, Hz (interpolation target). The UR controller runs at 500 Hz and its
#: trajectory controller interpolates between the driver's points.
DRIVER_RATE_HZ = 50.0

UR5E = register_embodiment(Embodiment(
    name='ur5e',
    joints=tuple(
        JointSpec(n, -(_ELBOW if n == 'elbow_joint' else _FULL_TURN), _ELBOW if n == 'elbow_joint' else _FULL_TURN,
                  _VMAX, interface=POSITION, max_acceleration=_AMAX, source=UR5E_LIMITS_SOURCE)
        for n in UR5E_JOINT_NAMES),
    # 10 Hz: the policy rate of the Franka recordings and of RT-1/Octo style policies; the driver
    # interpolates to DRIVER_RATE_HZ.
    control_rate_hz=10.0,
    command_topic=UR5E_COMMAND_TOPIC,
    state_topic='/joint_states',
    limits_source=UR5E_LIMITS_SOURCE,
    groups=(Group('arm', UR5E_JOINT_NAMES, 'joint_trajectory', UR5E_COMMAND_TOPIC,
                  # one driver tick: each point is due when the next one arrives
                  options={'time_from_start': 1.0 / DRIVER_RATE_HZ}),),
    machine_class='arm',
))

UR5E_MACHINE = register_machine(Machine(
    embodiment=UR5E,
    safety=SafetyConfig(watchdog_timeout_s=0.5),
    control_rate_hz=DRIVER_RATE_HZ,
    sim='robot_drivers.sim.ur5e:UR5eSim',
    description='6-DOF arm, Universal_Robots_ROS2_Driver scaled_joint_trajectory_controller',
))
