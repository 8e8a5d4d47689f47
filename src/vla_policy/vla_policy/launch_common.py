"""The VLA graph of any machine, for launch files: ``policy_node`` (lifecycle) + ``machine_driver_node``.

Imported only by launch files (``launch/<machine>.launch.py``), which keep their own docstring (what
the machine side runs, which topics) and call :func:`machine_launch_description`. Needs ``launch``
and ``launch_ros`` (a ROS 2 installation).

Which exits end the launch (``on_exit=Shutdown``), as in ``franka.launch.py``:

* machine_driver_node (the safety layer): any exit;
* policy_node: a failure (positive exit status) or a failed ``configure`` transition (e.g. no
  checkpoint: ``parameter checkpoint is empty: pass checkpoint:=<dir>``). A policy_node stopped by a
  signal leaves the driver running: its watchdog holds positions and ramps velocities to zero.

policy_node is a lifecycle node; ``autostart:=true`` (default) configures and activates it.
"""
from __future__ import annotations

from typing import Iterable, List

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

__all__ = ['text_param', 'required', 'end_on_failure', 'lifecycle_actions', 'machine_launch_description']


def text_param(name: str) -> ParameterValue:
    """A launch argument as a string parameter (launch_ros would otherwise YAML-parse it)."""
    return ParameterValue(LaunchConfiguration(name), value_type=str)


def _shutting_down(context) -> bool:
    """The launch is ending already (a second Shutdown would shut launch_ros's ROS adapter twice)."""
    return bool(getattr(context, 'is_shutdown', False))


def required(name: str, graph: str):
    """``on_exit`` for a node the graph cannot do without: end the launch with it."""
    def on_exit(event, context):
        if _shutting_down(context):
            return None
        return [Shutdown(reason=f'{name} exited; the {graph} VLA graph cannot run without it')]
    return on_exit


def end_on_failure(name: str):
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


def lifecycle_actions(node, name: str, autostart) -> List:
    """configure at start, activate once configured, end the launch when configure fails (all only
    with ``autostart``)."""
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


def machine_launch_description(config, title: str, *, checkpoint_default: str = '',
                               extra_arguments: Iterable[DeclareLaunchArgument] = (),
                               sim_time_note: str = 'true under a simulator') -> LaunchDescription:
    """policy_node + machine_driver_node with parameters from ``config/<config>`` of this package.

    Launch arguments: ``params_file`` (default ``config/<config>``), ``checkpoint``,
    ``policy_endpoint``, ``instruction`` ("" = wait for the instruction topic), ``autostart``,
    ``use_sim_time``, plus ``extra_arguments``.

    Args:
        config: parameter file name in ``share/vla_policy/config`` (e.g. ``'ur5e.yaml'``), or a list of
            strings and substitutions that make it (``[LaunchConfiguration('machine'), '.yaml']``); its
            ``machine_driver_node.machine`` names the machine.
        title: the machine in words, for descriptions and shutdown reasons (``'UR5e'``).
        checkpoint_default: default of ``checkpoint`` ("" = required unless ``policy_endpoint``).
    """
    params = LaunchConfiguration('params_file')
    use_sim_time = ParameterValue(LaunchConfiguration('use_sim_time'), value_type=bool)
    # namespace='': launch_ros on Humble requires it for a LifecycleNode
    policy_node = LifecycleNode(
        package='vla_policy', executable='policy_node', name='policy_node', namespace='', output='screen',
        parameters=[params, {'checkpoint': text_param('checkpoint'), 'policy_endpoint': text_param('policy_endpoint'),
                             'instruction': text_param('instruction'), 'use_sim_time': use_sim_time}],
        on_exit=end_on_failure('policy_node'))
    ckpt_help = (f'VLA checkpoint directory trained for the {title} (`ros2 run vla_training train`); '
                 + (f'default: {checkpoint_default}, relative to the current directory' if checkpoint_default
                    else 'required unless policy_endpoint is set'))
    name = [config] if isinstance(config, str) else list(config)
    return LaunchDescription([
        *extra_arguments,            # first: the default of params_file may use them (humanoid: machine)
        DeclareLaunchArgument(
            'params_file', default_value=[PathJoinSubstitution([FindPackageShare('vla_policy'), 'config', '']), *name],
            description='ROS parameters of policy_node and machine_driver_node'),
        DeclareLaunchArgument('checkpoint', default_value=checkpoint_default, description=ckpt_help),
        DeclareLaunchArgument('policy_endpoint', default_value='',
                              description='"" = load checkpoint in policy_node; ws://host:port = use the '
                                          '`ros2 run vla_policy policy_server` there'),
        DeclareLaunchArgument('instruction', default_value='',
                              description='task for the policy; "" = wait for the instruction topic'),
        DeclareLaunchArgument('autostart', default_value='true',
                              description='configure and activate policy_node at start; false = wait for '
                                          '`ros2 lifecycle set /policy_node configure` / `activate`'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description=f'every node uses the /clock topic ({sim_time_note})'),
        policy_node,
        *lifecycle_actions(policy_node, 'policy_node', LaunchConfiguration('autostart')),
        Node(package='robot_drivers', executable='machine_driver_node', name='machine_driver_node', output='screen',
             parameters=[params, {'use_sim_time': use_sim_time}],
             on_exit=required('machine_driver_node', title)),
    ])
