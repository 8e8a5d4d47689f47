"""ROS 2 node: camera + joint states + instruction -> VLA -> JointTrajectory (Humble and Jazzy).

Graph::

    /camera/image_raw (Image | CompressedImage) --+
    /joint_states (JointState)                    +--> policy_node --> /vla/joint_trajectory (JointTrajectory)
    /vla/instruction (String, latched)            --+

All behaviour is :class:`vla_policy.runtime.PolicyRuntime` + :class:`vla_policy.policy.VLAPolicy`
(ROS-free, tested without ROS); this node declares parameters, converts messages at the edge via
:mod:`robot_drivers.conversions`, ticks the runtime at ``control_rate_hz`` and publishes. An image
topic whose name ends in ``/compressed`` is subscribed as ``sensor_msgs/CompressedImage``.

Parameters (see ``config/franka.yaml``): ``checkpoint``, ``embodiment``, ``device``,
``image_topic``, ``joint_states_topic``, ``instruction_topic``, ``command_topic``,
``control_rate_hz``, ``n_action_steps`` (0 = the checkpoint's), ``max_obs_age_s``,
``temporal_ensemble_m`` (< 0 = off; >= 0 = ACT temporal ensembling with that m, one inference per tick).
"""
from __future__ import annotations

from typing import Any, Optional

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from robot_drivers import conversions as conv
from robot_drivers.arm_driver_node import qos_profile
from robot_drivers.embodiment import get_embodiment
from robot_drivers.spin_node import run_node
from robot_drivers.qos import COMMANDS, LATCHED, SENSOR_DATA

__all__ = ['PolicyNode', 'main']


class PolicyNode(Node):
    """See the module docstring.

    Raises:
        ValueError: ``checkpoint`` is empty or not a checkpoint directory; the checkpoint's
            embodiment differs from the ``embodiment`` parameter.
    """

    def __init__(self, node_name: str = 'policy_node', **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        from vla_policy.policy import VLAPolicy
        from vla_policy.runtime import PolicyRuntime, RuntimeConfig

        num = ParameterDescriptor(dynamic_typing=True)
        ckpt = str(self.declare_parameter('checkpoint', '').value)
        emb_name = self.declare_parameter('embodiment', 'franka_panda').value
        device = self.declare_parameter('device', 'cpu').value
        self._img_topic = self.declare_parameter('image_topic', '/camera/image_raw').value
        self._js_topic = self.declare_parameter('joint_states_topic', '/joint_states').value
        instr_topic = self.declare_parameter('instruction_topic', '/vla/instruction').value
        cmd_topic = self.declare_parameter('command_topic', '/vla/joint_trajectory').value
        rate = float(self.declare_parameter('control_rate_hz', 10.0, num).value)
        n_action = int(self.declare_parameter('n_action_steps', 0).value)
        max_age = float(self.declare_parameter('max_obs_age_s', 0.5, num).value)
        ensemble_m = float(self.declare_parameter('temporal_ensemble_m', -1.0, num).value)
        if not ckpt:
            raise ValueError('parameter checkpoint is empty: pass checkpoint:=<dir> to the launch file '
                             '(train one with `ros2 run vla_training train`)')

        self.embodiment = get_embodiment(emb_name)
        self.policy = VLAPolicy.from_checkpoint(ckpt, device=device)
        if self.policy.config.embodiment != self.embodiment.name:
            raise ValueError(f'checkpoint {ckpt} was trained for embodiment {self.policy.config.embodiment!r}, '
                             f'parameter embodiment is {self.embodiment.name!r}')
        chunk = self.policy.config.chunk
        policy = self.policy
        if ensemble_m >= 0:   # ACT temporal ensembling: infer every tick
            from vla_policy.wrappers import TemporalEnsembler
            policy = TemporalEnsembler(self.policy, ensemble_m, self.policy.config.binary_action_dims)
            n_action = 1
        self.runtime = PolicyRuntime(policy, self.embodiment, RuntimeConfig(
            n_obs_steps=chunk.n_obs_steps, n_action_steps=n_action or chunk.n_action_steps,
            max_obs_age_s=max_age, camera=self.policy.camera))
        self._types = conv.rclpy_types()
        self._pub = self.create_publisher(JointTrajectory, cmd_topic, qos_profile(COMMANDS))
        img_type = CompressedImage if self._img_topic.rstrip('/').endswith('/compressed') else Image
        self.create_subscription(img_type, self._img_topic, self._on_image, qos_profile(SENSOR_DATA))
        self.create_subscription(JointState, self._js_topic, self._on_joints, qos_profile(SENSOR_DATA))
        self.create_subscription(String, instr_topic, self._on_instruction, qos_profile(LATCHED))
        self._timer = self.create_timer(1.0 / rate, self._on_timer)
        self._last_status = ''
        self.get_logger().info(f'VLA {ckpt} ({self.policy.config.backbone.name}) for {self.embodiment.name}: '
                               f'{self._img_topic}, {self._js_topic}, {instr_topic} -> {cmd_topic} at {rate:g} Hz')

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_image(self, msg: Any) -> None:
        try:
            self.runtime.on_image_msg(msg, source=self._img_topic)
        except ValueError as exc:
            self.get_logger().error(f'ignoring image: {exc}', throttle_duration_sec=1.0)

    def _on_joints(self, msg: JointState) -> None:
        try:
            self.runtime.on_joint_state_msg(msg, source=self._js_topic)
        except (KeyError, ValueError) as exc:
            self.get_logger().error(f'ignoring joint state: {exc}', throttle_duration_sec=1.0)

    def _on_instruction(self, msg: String) -> None:
        try:
            self.runtime.on_instruction_msg(msg)
            self.get_logger().info(f'instruction: {msg.data!r}')
        except ValueError as exc:
            self.get_logger().error(f'ignoring instruction: {exc}')

    def _on_timer(self) -> None:
        try:
            cmd = self.runtime.step(self._now())
        except ValueError as exc:
            self.get_logger().error(f'policy step failed, nothing published: {exc}', throttle_duration_sec=1.0)
            return
        if self.runtime.status != self._last_status:
            self.get_logger().info(f'status: {self.runtime.status}')
            self._last_status = self.runtime.status
        if cmd is not None:
            self._pub.publish(cmd.to_msg(self._types))


def main(args: Optional[list] = None) -> None:
    """``ros2 run vla_policy policy_node --ros-args -p checkpoint:=<dir>``."""
    run_node(PolicyNode, args)


if __name__ == '__main__':
    main()
