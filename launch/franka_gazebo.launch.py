"""Franka VLA graph in Gazebo Sim (Harmonic, ROS 2 Jazzy): the MuJoCo tabletop task rebuilt in Gazebo.

    ros2 launch vla_policy franka_gazebo.launch.py [checkpoint:=/path/to/ckpt] [instruction:='reach the red cube']

What it starts (each part follows its upstream example; see the README section "Gazebo"):

- ``gz sim`` with ``config/gazebo/franka_cubes.sdf`` (table, red/green/blue 4 cm cubes at the
  MuJoCo scene's seed-0 poses, the 96x96 "front" camera), through ros_gz_sim's ``gz_sim.launch.py``.
- ``robot_state_publisher`` with the Franka from franka_description: ``xacro`` of
  ``config/gazebo/franka_gazebo.urdf.xacro`` (gazebo:=true, Franka Hand, gz_ros2_control system +
  plugin), joints renamed to the franka_panda embodiment's ``panda_joint1..7`` /
  ``panda_finger_joint1..2`` (:func:`embodiment_joint_names`), as franka_ros2's
  ``franka_gazebo_bringup`` builds robot_description with ``xacro.process_file``.
- ``ros_gz_sim create -topic robot_description`` spawns it; when that exits the
  ``controller_manager`` spawners start ``joint_state_broadcaster`` and then ``arm_controller``
  (JointTrajectoryController, ``config/gazebo/controllers.yaml``), as in gz_ros2_control_demos'
  ``cart_example_position.launch.py``.
- ``ros_gz_bridge parameter_bridge`` with ``config/gazebo/bridge.yaml``: ``/clock``,
  ``/camera/image_raw`` (sensor_msgs/Image), ``/camera/camera_info``.
- ``franka.launch.py`` with ``sim:=false use_sim_time:=true``: policy_node + arm_driver_node,
  whose safe commands on ``/arm_controller/joint_trajectory`` drive the Gazebo arm. Its own
  arguments (``checkpoint``, ``params_file``, ``policy_endpoint``, ``autostart``) are not
  redeclared here: given on this command line they reach it (an included launch file sees the
  including one's launch configurations), and otherwise its defaults apply. policy_node is a
  lifecycle node; franka.launch.py configures and activates it (``autostart:=true``).
- ``instruction``: published once on ``/vla/instruction`` (reliable, transient local) as soon as
  policy_node subscribes (``ros2 topic pub --once -w 1``); empty = publish nothing.

Every ROS node here runs with ``use_sim_time`` true (the gz_ros2_control plugin sets it on its
controller_manager itself).
"""
import re
import xml.etree.ElementTree as ET

import yaml
from launch import LaunchContext, LaunchDescription
from launch.actions import (AppendEnvironmentVariable, DeclareLaunchArgument, ExecuteProcess,
                            IncludeLaunchDescription, OpaqueFunction, RegisterEventHandler)
from launch.event_handlers import OnProcessExit
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

# The franka_panda embodiment's joints (robot_drivers/embodiment.py FRANKA_PANDA.joint_names) plus
# the Franka Hand's mimic finger; franka_description names them <robot_type>_joint1..7 and
# <robot_type>_finger_joint1..2.
PANDA_JOINTS = tuple(f'panda_joint{i}' for i in range(1, 8)) + ('panda_finger_joint1', 'panda_finger_joint2')
ROBOT_TYPES = ('fr3', 'fer', 'fp3')


def embodiment_joint_names(urdf: str, robot_type: str) -> str:
    """Rename franka_description's joints in a URDF string to the franka_panda embodiment's names.

    ``<robot_type>_joint1..7`` -> ``panda_joint1..7`` and ``<robot_type>_finger_joint1..2`` ->
    ``panda_finger_joint1..2`` wherever the name appears whole (joint names, ``<mimic joint>``,
    ``<gazebo reference>``, transmission and ros2_control ``<joint name>``); names that merely
    start with it (``fr3_joint1_transmission``) and links (``fr3_link0``) are kept.

    Raises:
        ValueError: ``robot_type`` is not one of fr3/fer/fp3, or after renaming the URDF does not
            define a ``<joint>`` named each of :data:`PANDA_JOINTS` (the message lists the missing
            names and the joints it does define), e.g. a franka_description whose naming changed.
    """
    if robot_type not in ROBOT_TYPES:
        raise ValueError(f'robot_type must be one of {ROBOT_TYPES}, got {robot_type!r}')
    pattern = re.compile(r'(?<![\w/])' + re.escape(robot_type) + r'_(joint[1-7]|finger_joint[12])(?![\w])')
    renamed = pattern.sub(r'panda_\1', urdf)
    defined = [j.get('name') for j in ET.fromstring(renamed).findall('joint')]
    missing = [n for n in PANDA_JOINTS if n not in defined]
    if missing:
        raise ValueError(f'robot_description ({robot_type}): no joints {missing} after renaming '
                         f'{robot_type}_joint* to panda_joint*; the URDF defines {defined}')
    return renamed


def _robot_state_publisher(context: LaunchContext, robot_type, xacro_file, controllers):
    import xacro  # ROS's xacro; imported when the launch runs so the description builds without it

    robot_type_str = context.perform_substitution(robot_type)
    doc = xacro.process_file(
        context.perform_substitution(xacro_file),
        mappings={
            'robot_type': robot_type_str,
            'gazebo': 'true',
            'hand': 'true',
            'ee_id': 'franka_hand',
            'ros2_control': 'false',
            'controllers': context.perform_substitution(controllers),
        })
    urdf = embodiment_joint_names(doc.toxml(), robot_type_str)
    return [Node(package='robot_state_publisher', executable='robot_state_publisher', output='both',
                 parameters=[{'robot_description': urdf, 'use_sim_time': True}])]


def _instruction_publisher(context: LaunchContext, instruction):
    text = context.perform_substitution(instruction)
    if not text:
        return []
    msg = yaml.safe_dump({'data': text}, default_flow_style=True).strip()
    return [ExecuteProcess(
        cmd=['ros2', 'topic', 'pub', '--once', '-w', '1',
             '--qos-reliability', 'reliable', '--qos-durability', 'transient_local',
             '/vla/instruction', 'std_msgs/msg/String', msg],
        name='instruction_publisher', output='screen')]


def generate_launch_description():
    share = FindPackageShare('vla_policy')
    gz_config = PathJoinSubstitution([share, 'config', 'gazebo'])
    robot_type = LaunchConfiguration('robot_type')
    world = LaunchConfiguration('world')
    gz_args = LaunchConfiguration('gz_args')
    controllers = LaunchConfiguration('controllers')
    instruction = LaunchConfiguration('instruction')

    spawn = Node(package='ros_gz_sim', executable='create', output='screen',
                 arguments=['-topic', 'robot_description', '-name', 'franka', '-allow_renaming', 'true'])
    joint_state_broadcaster = Node(package='controller_manager', executable='spawner',
                                   arguments=['joint_state_broadcaster'])
    arm_controller = Node(package='controller_manager', executable='spawner',
                          arguments=['arm_controller', '--param-file', controllers])

    return LaunchDescription([
        DeclareLaunchArgument('instruction', default_value='reach the red cube',
                              description='task published once on /vla/instruction; empty = none'),
        DeclareLaunchArgument('robot_type', default_value='fr3', choices=list(ROBOT_TYPES),
                              description='franka_description arm (see config/gazebo/franka_gazebo.urdf.xacro)'),
        DeclareLaunchArgument('world',
                              default_value=PathJoinSubstitution([gz_config, 'franka_cubes.sdf']),
                              description='Gazebo world SDF'),
        DeclareLaunchArgument('gz_args', default_value='-r -v 3',
                              description="gz sim options before the world (e.g. '-r -s --headless-rendering')"),
        DeclareLaunchArgument('xacro_file',
                              default_value=PathJoinSubstitution([gz_config, 'franka_gazebo.urdf.xacro']),
                              description='robot xacro (franka_description + gz_ros2_control)'),
        DeclareLaunchArgument('controllers',
                              default_value=PathJoinSubstitution([gz_config, 'controllers.yaml']),
                              description='ros2_control controllers (gz_ros2_control plugin + spawners)'),
        DeclareLaunchArgument('bridge_config',
                              default_value=PathJoinSubstitution([gz_config, 'bridge.yaml']),
                              description='ros_gz_bridge YAML (clock, camera image and info)'),
        # Gazebo resolves the meshes' package://franka_description/... URIs on this path
        # (as franka_gazebo_bringup sets GZ_SIM_RESOURCE_PATH).
        AppendEnvironmentVariable('GZ_SIM_RESOURCE_PATH',
                                  PathJoinSubstitution([FindPackageShare('franka_description'), '..'])),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(
                PathJoinSubstitution([FindPackageShare('ros_gz_sim'), 'launch', 'gz_sim.launch.py'])),
            launch_arguments={'gz_args': [gz_args, ' ', world], 'on_exit_shutdown': 'true'}.items()),
        OpaqueFunction(function=_robot_state_publisher,
                       args=[robot_type, LaunchConfiguration('xacro_file'), controllers]),
        spawn,
        RegisterEventHandler(OnProcessExit(target_action=spawn, on_exit=[joint_state_broadcaster])),
        RegisterEventHandler(OnProcessExit(target_action=joint_state_broadcaster, on_exit=[arm_controller])),
        Node(package='ros_gz_bridge', executable='parameter_bridge', name='gz_bridge', output='screen',
             parameters=[{'config_file': LaunchConfiguration('bridge_config'), 'use_sim_time': True}]),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(PathJoinSubstitution([share, 'launch', 'franka.launch.py'])),
            launch_arguments={
                'sim': 'false',
                'use_sim_time': 'true',
            }.items()),
        OpaqueFunction(function=_instruction_publisher, args=[instruction]),
    ])
