"""UR5e VLA graph: policy node + machine driver (safety gate) for Universal_Robots_ROS2_Driver.

    ros2 launch ur_robot_driver ur_control.launch.py ur_type:=ur5e robot_ip:=<ip>   # the arm, separately
    ros2 launch vla_policy ur5e.launch.py checkpoint:=/path/to/ckpt

Topics: camera + /joint_states + instruction -> policy_node -> /vla/joint_trajectory ->
machine_driver_node (machine ``ur5e``: validation, interpolation to 50 Hz, watchdog, e-stop,
joint_limits.yaml position / velocity / acceleration limits) ->
/scaled_joint_trajectory_controller/joint_trajectory (trajectory_msgs/JointTrajectory, the UR
driver's default controller).

Topic names come only from ``params_file`` (default ``config/ur5e.yaml``), the file recording and
training read them from too.

Exit rules, lifecycle autostart and the launch arguments: ``vla_policy.launch_common``.
"""
from vla_policy.launch_common import machine_launch_description

MACHINE = 'ur5e'


def generate_launch_description():
    return machine_launch_description('ur5e.yaml', 'UR5e', sim_time_note='true under a simulator')
