"""Franka VLA graph: policy node + arm driver (+ MuJoCo sim with sim:=true).

    ros2 launch vla_policy franka.launch.py checkpoint:=/path/to/ckpt sim:=true

Topics: camera + joint states + instruction -> policy_node -> /vla/joint_trajectory ->
arm_driver_node (safety filter, watchdog) -> /arm_controller/joint_trajectory -> robot
(ros2_control JointTrajectoryController) or sim_node.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    params = LaunchConfiguration('params_file')
    checkpoint = LaunchConfiguration('checkpoint')
    return LaunchDescription([
        DeclareLaunchArgument(
            'params_file',
            default_value=PathJoinSubstitution([FindPackageShare('vla_policy'), 'config', 'franka.yaml']),
            description='ROS parameters of policy_node, arm_driver_node and sim_node'),
        DeclareLaunchArgument('checkpoint', default_value='',
                              description='VLA checkpoint directory (from `ros2 run vla_training train`)'),
        DeclareLaunchArgument('sim', default_value='false',
                              description='also start the MuJoCo Franka scene (publishes camera + joint states)'),
        DeclareLaunchArgument('instruction', default_value='reach the red cube',
                              description='task the sim node publishes on /vla/instruction (sim:=true only)'),
        DeclareLaunchArgument('image_topic', default_value='/camera/image_raw',
                              description='camera topic (sensor_msgs/Image)'),
        DeclareLaunchArgument('command_topic', default_value='/arm_controller/joint_trajectory',
                              description='controller topic the arm driver publishes safe commands on'),
        Node(package='vla_policy', executable='policy_node', name='policy_node', output='screen',
             parameters=[params, {'checkpoint': checkpoint,
                                  'image_topic': LaunchConfiguration('image_topic')}]),
        Node(package='robot_drivers', executable='arm_driver_node', name='arm_driver_node', output='screen',
             parameters=[params, {'output_topic': LaunchConfiguration('command_topic')}]),
        Node(package='robot_drivers', executable='sim_node', name='sim_node', output='screen',
             condition=IfCondition(LaunchConfiguration('sim')),
             parameters=[params, {'instruction': LaunchConfiguration('instruction'),
                                  'image_topic': LaunchConfiguration('image_topic'),
                                  'command_topic': LaunchConfiguration('command_topic')}]),
    ])
