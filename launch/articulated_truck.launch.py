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

Which exits end the launch (``on_exit=Shutdown``), as in ``franka.launch.py``:

* machine_driver_node (the safety layer): any exit;
* policy_node: a failure (positive exit status) or a failed ``configure`` transition (e.g. no
  checkpoint: ``parameter checkpoint is empty: pass checkpoint:=<dir>``). A policy_node stopped by a
  signal leaves the driver running: its watchdog holds the body and brakes the truck to 0 m/s.

policy_node is a lifecycle node; ``autostart:=true`` (default) configures and activates it.
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

MACHINE = 'articulated_truck'


def _text(name):
    """A launch argument as a string parameter (launch_ros would otherwise YAML-parse it)."""
    return ParameterValue(LaunchConfiguration(name), value_type=str)


def _shutting_down(context):
    """The launch is ending already (a second Shutdown would shut launch_ros's ROS adapter twice)."""
    return bool(getattr(context, 'is_shutdown', False))


def _required(name):
    """``on_exit`` for a node the graph cannot do without: end the launch with it."""
    def on_exit(event, context):
        if _shutting_down(context):
            return None
        return [Shutdown(reason=f'{name} exited; the {MACHINE} VLA graph cannot run without it')]
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
    only with ``autostart``)."""
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
            default_value=PathJoinSubstitution([FindPackageShare('vla_policy'), 'config', 'articulated_truck.yaml']),
            description='ROS parameters of policy_node and machine_driver_node'),
        DeclareLaunchArgument('checkpoint', default_value='',
                              description='VLA checkpoint directory trained for the articulated truck '
                                          '(`ros2 run vla_training train`); required unless policy_endpoint is set'),
        DeclareLaunchArgument('policy_endpoint', default_value='',
                              description='"" = load checkpoint in policy_node; ws://host:port = use the '
                                          '`ros2 run vla_policy policy_server` there'),
        DeclareLaunchArgument('autostart', default_value='true',
                              description='configure and activate policy_node at start; false = wait for '
                                          '`ros2 lifecycle set /policy_node configure` / `activate`'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='every node uses the /clock topic (true under a simulator)'),
        policy_node,
        *_lifecycle(policy_node, 'policy_node', LaunchConfiguration('autostart')),
        Node(package='robot_drivers', executable='machine_driver_node', name='machine_driver_node', output='screen',
             parameters=[params, {'use_sim_time': use_sim_time}],
             on_exit=_required('machine_driver_node')),
    ])
