"""Excavator VLA graph: policy node + machine driver (safety gate) for a Hitachi ZX200 on OPERA COM3.

    ros2 launch excavator_com3_ros excavator_com3_ros.launch.py   # the machine's COM3 relay, separately
    ros2 launch vla_policy excavator.launch.py checkpoint:=/path/to/ckpt instruction:='dig at the left pile'

Topics: /zx200/camera/image_raw + /zx200/joint_state + instruction -> policy_node ->
/vla/joint_trajectory (velocities of swing, boom, arm, bucket, left_track, right_track) ->
machine_driver_node (machine ``excavator_zx200``: validation, interpolation to 50 Hz, 0.5 s watchdog
(the COM3 relay's own timeout), latched e-stop, velocity / acceleration / jerk limits, braking
before the ZX200 URDF's boom / arm / bucket limits) -> com3_msgs/JointCmd on /zx200/front_cmd and
/zx200/tracks_cmd, std_msgs/Bool /zx200/emg_stop at e-stop / re-arm, and OperaSim's per-joint
std_msgs/Float64 angle commands /zx200/{swing,boom,arm,bucket}/cmd. E-stop: publish ``true`` on
/machine_driver_node/emergency_stop (``false`` re-arms).

Topic names come only from ``params_file`` (default ``config/excavator.yaml``), the file recording
and training read them from too.

Exit rules, lifecycle autostart and the launch arguments: ``vla_policy.launch_common``.
"""
from vla_policy.launch_common import machine_launch_description

MACHINE = 'excavator_zx200'
# config/excavator.yaml policy_node.checkpoint (a test keeps the two equal).
DEFAULT_CHECKPOINT = 'outputs/demo_excavator/film_cnn/checkpoint'


def generate_launch_description():
    return machine_launch_description('excavator.yaml', 'excavator', checkpoint_default=DEFAULT_CHECKPOINT,
                                      sim_time_note='true under OperaSim')
