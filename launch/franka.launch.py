"""Franka VLA graph: policy node + arm driver (+ MuJoCo sim with sim:=true).

    ros2 launch vla_policy franka.launch.py sim:=true
    ros2 launch vla_policy franka.launch.py checkpoint:=/path/to/ckpt

Topics: camera + joint states + instruction -> policy_node -> /vla/joint_trajectory ->
arm_driver_node (safety filter, watchdog) -> /arm_controller/joint_trajectory -> robot
(ros2_control JointTrajectoryController) or sim_node.

Topic names come only from ``params_file`` (default ``config/franka.yaml``), the same file
``record_robot`` and ``train`` read them from, so recording, training and deployment cannot
disagree; for another robot pass ``params_file:=<your copy>``.

``checkpoint`` defaults to the film_cnn checkpoint ``make demo`` trains
(``outputs/demo/film_cnn/checkpoint``, relative to the directory the launch is started in, the
workspace root).

Which exits end the launch (``on_exit=Shutdown``), so that it never waits forever on a graph
that cannot work:

* arm_driver_node (the safety layer) and, with sim:=true, sim_node: any exit;
* policy_node: a failure, i.e. a positive exit status -- a start-up error such as a missing
  checkpoint, reported in one line (``checkpoint '<path>' not found: run `make demo` or pass
  checkpoint:=<dir>``), or a crash. A policy_node stopped by a signal (``kill``) leaves the
  driver running: its watchdog holds the arm, the behaviour the watchdog exists for.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, Shutdown
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

# vla_policy.node_core.DEFAULT_CHECKPOINT (a test keeps the two equal).
DEFAULT_CHECKPOINT = 'outputs/demo/film_cnn/checkpoint'


def _text(name):
    """A launch argument as a string parameter (launch_ros would otherwise YAML-parse it)."""
    return ParameterValue(LaunchConfiguration(name), value_type=str)


def _required(name):
    """``on_exit`` for a node the graph cannot do without: end the launch with it."""
    return Shutdown(reason=f'{name} exited; the Franka VLA graph cannot run without it')


def _end_on_failure(name):
    """``on_exit`` that ends the launch when the process exits with a positive status (an error);
    an exit by signal (negative status) or a clean one (0) leaves the rest of the graph running."""
    def on_exit(event, context):
        if event.returncode is not None and event.returncode > 0:
            return [Shutdown(reason=f'{name} failed with exit status {event.returncode}')]
        return None
    return on_exit


def generate_launch_description():
    params = LaunchConfiguration('params_file')
    use_sim_time = ParameterValue(LaunchConfiguration('use_sim_time'), value_type=bool)
    return LaunchDescription([
        DeclareLaunchArgument(
            'params_file',
            default_value=PathJoinSubstitution([FindPackageShare('vla_policy'), 'config', 'franka.yaml']),
            description='ROS parameters of policy_node, arm_driver_node and sim_node'),
        DeclareLaunchArgument('checkpoint', default_value=DEFAULT_CHECKPOINT,
                              description='VLA checkpoint directory (from `ros2 run vla_training train`); '
                                          'default: the one `make demo` trains, relative to the current directory'),
        DeclareLaunchArgument('sim', default_value='false',
                              description='also start the MuJoCo Franka scene (publishes camera + joint states)'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='every node uses the /clock topic (true under Gazebo)'),
        DeclareLaunchArgument('instruction', default_value='reach the red cube',
                              description='task the sim node publishes on /vla/instruction (sim:=true only)'),
        Node(package='vla_policy', executable='policy_node', name='policy_node', output='screen',
             parameters=[params, {'checkpoint': _text('checkpoint'),
                                  'use_sim_time': use_sim_time}],
             on_exit=_end_on_failure('policy_node')),
        Node(package='robot_drivers', executable='arm_driver_node', name='arm_driver_node', output='screen',
             parameters=[params, {'use_sim_time': use_sim_time}],
             on_exit=_required('arm_driver_node')),
        Node(package='robot_drivers', executable='sim_node', name='sim_node', output='screen',
             condition=IfCondition(LaunchConfiguration('sim')),
             parameters=[params, {'instruction': _text('instruction'),
                                  'use_sim_time': use_sim_time}],
             on_exit=_required('sim_node')),
    ])
