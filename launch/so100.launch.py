"""SO-100 VLA graph: policy node + machine driver (safety gate) for a ros2_control forward position controller.

    ros2 launch vla_policy so100.launch.py checkpoint:=/path/to/ckpt

The arm side (started separately) is a ros2_control stack for the SO-100's Feetech STS3215 servos
that publishes /joint_states and runs a ``forward_command_controller/ForwardCommandController``
named ``forward_position_controller`` with ``joints: [shoulder_pan, shoulder_lift, elbow_flex,
wrist_flex, wrist_roll, gripper]`` and ``interface_name: position``.

Topics: camera + /joint_states + instruction -> policy_node -> /vla/joint_trajectory ->
machine_driver_node (machine ``so100``: validation, interpolation to 60 Hz, watchdog, e-stop,
MJCF position limits, STS3215 velocity / acceleration limits) ->
/forward_position_controller/commands (std_msgs/Float64MultiArray, one value per joint).

Topic names come only from ``params_file`` (default ``config/so100.yaml``), the file recording and
training read them from too.

Exit rules, lifecycle autostart and the launch arguments: ``vla_policy.launch_common``.
"""
from vla_policy.launch_common import machine_launch_description

MACHINE = 'so100'


def generate_launch_description():
    return machine_launch_description('so100.yaml', 'SO-100', sim_time_note='true under a simulator')
