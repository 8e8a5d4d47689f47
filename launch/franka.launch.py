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
* policy_node: a failure, i.e. a positive exit status (a crash), or a failed ``configure``
  transition -- a start-up error such as a missing checkpoint or an unreachable policy server,
  reported in one line (``configure failed: checkpoint '<path>' not found: run `make demo` or pass
  checkpoint:=<dir>``). A policy_node stopped by a signal (``kill``) leaves the driver running:
  its watchdog holds the arm, the behaviour the watchdog exists for.

policy_node is a lifecycle (managed) node. With ``autostart:=true`` (the default) this file
drives it as nav2's and ros2_control's launch files drive theirs: a ``configure`` transition at
start, and ``activate`` when it reaches ``inactive`` from ``configuring``. With
``autostart:=false`` it waits unconfigured for ``ros2 lifecycle set /policy_node configure``
(then ``activate``; ``deactivate`` stops the commands and the arm driver's watchdog holds the arm).
``policy_endpoint:=ws://host:port`` makes it use a ``policy_server`` instead of ``checkpoint``.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler, Shutdown
from launch.conditions import IfCondition
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition

# vla_policy.node_core.DEFAULT_CHECKPOINT (a test keeps the two equal).
DEFAULT_CHECKPOINT = 'outputs/demo/film_cnn/checkpoint'


def _text(name):
    """A launch argument as a string parameter (launch_ros would otherwise YAML-parse it)."""
    return ParameterValue(LaunchConfiguration(name), value_type=str)


def _shutting_down(context):
    """The launch is ending already. A second Shutdown event then would make launch_ros shut its
    ROS adapter (started for the lifecycle transitions) down twice: 'Caught exception in launch:
    Cannot shutdown a ROS adapter that is not running'."""
    return bool(getattr(context, 'is_shutdown', False))


def _required(name):
    """``on_exit`` for a node the graph cannot do without: end the launch with it."""
    def on_exit(event, context):
        if _shutting_down(context):
            return None
        return [Shutdown(reason=f'{name} exited; the Franka VLA graph cannot run without it')]
    return on_exit


def _end_on_failure(name):
    """``on_exit`` that ends the launch when the process exits with a positive status (an error);
    an exit by signal (negative status) or a clean one (0) leaves the rest of the graph running."""
    def on_exit(event, context):
        if event.returncode is not None and event.returncode > 0 and not _shutting_down(context):
            return [Shutdown(reason=f'{name} failed with exit status {event.returncode}')]
        return None
    return on_exit


def _transition(node, transition_id, **kwargs):
    """Ask the lifecycle node ``node`` (a launch_ros LifecycleNode action) for a transition."""
    return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node), transition_id=transition_id),
                     **kwargs)


def _lifecycle(node, name, autostart):
    """configure at start, activate once configured, end the launch when configure fails (all
    only with ``autostart``). ``start_state='configuring'``: a later ``deactivate`` (active ->
    inactive) must not re-activate the node."""
    return [
        RegisterEventHandler(OnStateTransition(
            target_lifecycle_node=node, start_state='configuring', goal_state='inactive',
            entities=[_transition(node, Transition.TRANSITION_ACTIVATE)]), condition=IfCondition(autostart)),
        RegisterEventHandler(OnStateTransition(
            target_lifecycle_node=node, start_state='configuring', goal_state='unconfigured',
            entities=[Shutdown(reason=f'{name} failed to configure (its error line is above)')]),
            condition=IfCondition(autostart)),
        _transition(node, Transition.TRANSITION_CONFIGURE, condition=IfCondition(autostart)),
    ]


def generate_launch_description():
    params = LaunchConfiguration('params_file')
    use_sim_time = ParameterValue(LaunchConfiguration('use_sim_time'), value_type=bool)
    # namespace='': launch_ros on Humble requires it for a LifecycleNode
    policy_node = LifecycleNode(
        package='vla_policy', executable='policy_node', name='policy_node', namespace='', output='screen',
        parameters=[params, {'checkpoint': _text('checkpoint'), 'policy_endpoint': _text('policy_endpoint'),
                             'use_sim_time': use_sim_time}],
        on_exit=_end_on_failure('policy_node'))
    return LaunchDescription([
        DeclareLaunchArgument(
            'params_file',
            default_value=PathJoinSubstitution([FindPackageShare('vla_policy'), 'config', 'franka.yaml']),
            description='ROS parameters of policy_node, arm_driver_node and sim_node'),
        DeclareLaunchArgument('checkpoint', default_value=DEFAULT_CHECKPOINT,
                              description='VLA checkpoint directory (from `ros2 run vla_training train`); '
                                          'default: the one `make demo` trains, relative to the current directory'),
        DeclareLaunchArgument('policy_endpoint', default_value='',
                              description='"" = load checkpoint in policy_node; ws://host:port = use the '
                                          '`ros2 run vla_policy policy_server` there'),
        DeclareLaunchArgument('autostart', default_value='true',
                              description='configure and activate policy_node at start; false = wait for '
                                          '`ros2 lifecycle set /policy_node configure` / `activate`'),
        DeclareLaunchArgument('sim', default_value='false',
                              description='also start the MuJoCo Franka scene (publishes camera + joint states)'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='every node uses the /clock topic (true under Gazebo)'),
        DeclareLaunchArgument('instruction', default_value='reach the red cube',
                              description='task the sim node publishes on /vla/instruction (sim:=true only)'),
        policy_node,
        *_lifecycle(policy_node, 'policy_node', LaunchConfiguration('autostart')),
        Node(package='robot_drivers', executable='arm_driver_node', name='arm_driver_node', output='screen',
             parameters=[params, {'use_sim_time': use_sim_time}],
             on_exit=_required('arm_driver_node')),
        Node(package='robot_drivers', executable='sim_node', name='sim_node', output='screen',
             condition=IfCondition(LaunchConfiguration('sim')),
             parameters=[params, {'instruction': _text('instruction'),
                                  'use_sim_time': use_sim_time}],
             on_exit=_required('sim_node')),
    ])
