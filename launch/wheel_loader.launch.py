"""Wheel loader VLA graph: policy node + machine driver (safety gate) for a Volvo L120H-class loader.

    ros2 launch vla_policy wheel_loader.launch.py checkpoint:=/path/to/ckpt

The machine side (started separately: OperaSim-style simulator or the loader's bridge) publishes
/l120h/joint_states and takes one std_msgs/Float64 per DOF.

Topics: camera + /l120h/joint_states + instruction -> policy_node -> /vla/joint_trajectory ->
machine_driver_node (machine ``wheel_loader``: validation, interpolation to 50 Hz, watchdog, e-stop,
datasheet position / velocity / acceleration limits, the interlock slow_with_boom_raised) ->
/l120h/articulation/cmd (rad), /l120h/drive/cmd (m/s), /l120h/boom/cmd and /l120h/bucket/cmd (rad).
The driver also accepts geometry_msgs/TwistStamped on /cmd_vel (teleop, Nav2), converted with the
articulated-steering kinematics (robot_drivers/articulated.py).

Topic names come only from ``params_file`` (default ``config/wheel_loader.yaml``), the file recording
and training read them from too.

Exit rules, lifecycle autostart and the launch arguments: ``vla_policy.launch_common``.
"""
from vla_policy.launch_common import machine_launch_description

MACHINE = 'wheel_loader'


def generate_launch_description():
    return machine_launch_description('wheel_loader.yaml', 'wheel loader', sim_time_note='true under a simulator')
