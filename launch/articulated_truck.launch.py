"""Articulated truck VLA graph: policy node + machine driver (safety gate) for a Volvo A40G-class hauler.

    ros2 launch vla_policy articulated_truck.launch.py checkpoint:=/path/to/ckpt

The machine side (started separately: OperaSim-style simulator or the hauler's bridge) publishes
/a40g/joint_states and takes one std_msgs/Float64 per DOF.

Topics: camera + /a40g/joint_states + instruction -> policy_node -> /vla/joint_trajectory ->
machine_driver_node (machine ``articulated_truck``: validation, interpolation to 50 Hz, watchdog,
e-stop, datasheet limits, the interlocks dump_only_when_stopped and no_drive_with_body_raised) ->
/a40g/articulation/cmd (rad), /a40g/drive/cmd (m/s), /a40g/vessel/cmd (body tilt angle, rad, as
OperaSim names it). The driver also accepts geometry_msgs/TwistStamped on /cmd_vel.

Topic names come only from ``params_file`` (default ``config/articulated_truck.yaml``), the file
recording and training read them from too.

Exit rules, lifecycle autostart and the launch arguments: ``vla_policy.launch_common``.
"""
from vla_policy.launch_common import machine_launch_description

MACHINE = 'articulated_truck'


def generate_launch_description():
    return machine_launch_description('articulated_truck.yaml', 'articulated truck', sim_time_note='true under a simulator')
