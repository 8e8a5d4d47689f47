"""Franka Emika Panda (7 joints + one finger joint), by position, as a :class:`~robot_drivers.machine.Machine`.

The embodiment (:data:`robot_drivers.embodiment.FRANKA_PANDA`, limits from the Franka Control
Interface specification) has no groups, so its output is one ros2_control
``JointTrajectoryController`` on ``/arm_controller/joint_trajectory``. The Franka graph
(``franka.launch.py``) runs :class:`~robot_drivers.hardware.ArmDriverCore` in ``arm_driver_node``;
registering it here puts it under the same machine registry, property tests and safety benchmark
as every other machine.
"""
from robot_drivers.embodiment import FRANKA_PANDA
from robot_drivers.machine import Machine, register_machine
from robot_drivers.safety import SafetyConfig

FRANKA = register_machine(Machine(
    embodiment=FRANKA_PANDA,
    safety=SafetyConfig(watchdog_timeout_s=0.5),
    control_rate_hz=50.0,   # arm_driver_node's rate in config/franka.yaml
    sim='robot_drivers.sim.franka_cubes:FrankaCubeSim',
    description='7-DOF arm + gripper, ros2_control JointTrajectoryController',
))
