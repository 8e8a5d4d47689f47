"""Humanoid VLA graph: policy node + machine driver (safety gate) for a Unitree G1 / H1 or a Fourier GR1.

    ros2 launch vla_policy humanoid.launch.py machine:=unitree_g1 checkpoint:=/path/to/ckpt
    ros2 launch vla_policy humanoid.launch.py machine:=unitree_h1 checkpoint:=/path/to/ckpt
    ros2 launch vla_policy humanoid.launch.py machine:=fourier_gr1 checkpoint:=/path/to/ckpt

One launch file for the three humanoids: ``machine`` (a registry name of
``robot_drivers.machines.humanoids``) selects the parameter file ``config/<machine>.yaml``, which
names the machine to both nodes (policy_node ``embodiment``, machine_driver_node ``machine``). An
explicit ``params_file:=...`` replaces that file (and with it the choice of machine).

Topics: camera + /joint_states + instruction -> policy_node -> /vla/joint_trajectory (upper-body
positions + base velocity) -> machine_driver_node (validation, leg joints rejected, interpolation to
50 Hz, watchdog, e-stop, position / velocity / acceleration limits) -> the robot's own inputs:

* Unitree G1: ``unitree_hg/LowCmd`` on /arm_sdk (arm SDK, blend weight ramped) and a
  ``unitree_api/Request`` SetVelocity (api_id 7105) on /api/sport/request;
* Unitree H1: ``unitree_go/LowCmd`` on /arm_sdk and SetVelocity (api_id 8105) on /api/loco/request;
* Fourier GR1: ``trajectory_msgs/JointTrajectory`` on /upper_body_controller/joint_trajectory and
  ``geometry_msgs/TwistStamped`` on /cmd_vel.

The Unitree message packages (unitree_ros2's ``unitree_hg``, ``unitree_go``, ``unitree_api``) must be
built in the workspace; without them machine_driver_node stops at start naming the package (or the
config selects the generic outputs, see ``config/unitree_g1.yaml``).

Exit rules, lifecycle autostart and the other launch arguments: ``vla_policy.launch_common``.
"""
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration

from vla_policy.launch_common import machine_launch_description

#: The humanoids this launch file drives (values of the ``machine`` launch argument).
MACHINES = ('unitree_g1', 'unitree_h1', 'fourier_gr1')
DEFAULT_MACHINE = 'unitree_g1'


def generate_launch_description():
    return machine_launch_description(
        [LaunchConfiguration('machine'), '.yaml'], 'humanoid',
        extra_arguments=[DeclareLaunchArgument(
            'machine', default_value=DEFAULT_MACHINE, choices=list(MACHINES),
            description='which humanoid: unitree_g1, unitree_h1 or fourier_gr1; selects config/<machine>.yaml')],
        sim_time_note='true under a simulator')
