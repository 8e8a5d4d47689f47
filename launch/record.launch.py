"""Record demonstration episodes on the robot: one rosbag2 (MCAP, zstd) per episode.

    ros2 launch vla_policy record.launch.py episodes:=20 episode_duration:=30 output:=recordings
    ros2 launch vla_policy record.launch.py instruction:='pick up the red cube'

Runs ``ros2 run vla_training record_robot`` with the topics of ``params_file`` (default the installed
``config/franka.yaml``, the file ``franka.launch.py`` deploys with). A launch gives the recorder no
terminal input, so episodes have a fixed length here (``episode_duration`` > 0); to start and stop
each episode with Enter, run ``ros2 run vla_training record_robot`` in a terminal instead. The launch
ends when the recorder does (all episodes written, or Ctrl-C).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare


def _recorder(context):
    """The ``record_robot`` process; ``--instruction`` only when one is given."""
    value = {name: LaunchConfiguration(name).perform(context)
             for name in ('params_file', 'output', 'episodes', 'episode_duration', 'instruction')}
    cmd = ['ros2', 'run', 'vla_training', 'record_robot', '--robot-config', value['params_file'],
           '--output', value['output'], '--episodes', value['episodes'],
           '--episode-duration', value['episode_duration']]
    if value['instruction']:
        cmd += ['--instruction', value['instruction']]
    return [ExecuteProcess(cmd=cmd, output='screen', name='record_robot',
                           on_exit=Shutdown(reason='record_robot finished'))]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument(
            'params_file',
            default_value=PathJoinSubstitution([FindPackageShare('vla_policy'), 'config', 'franka.yaml']),
            description='robot parameter file: the topics to record (policy_node / arm_driver_node) '
                        'and the record_robot section'),
        DeclareLaunchArgument('output', default_value='recordings',
                              description='episodes go to <output>/episode_<nnnn>'),
        DeclareLaunchArgument('episodes', default_value='10', description='number of episodes'),
        DeclareLaunchArgument('episode_duration', default_value='30.0',
                              description='seconds per episode (> 0: a launch has no terminal for Enter)'),
        DeclareLaunchArgument('instruction', default_value='',
                              description='if not empty, published latched on the instruction topic while recording'),
        OpaqueFunction(function=_recorder),
    ])
