"""ROS 2 node: camera + joint states + instruction -> VLA -> JointTrajectory (Humble and Jazzy).

Graph::

    /camera/image_raw (Image | CompressedImage) --+
    /joint_states (JointState)                    +--> policy_node --> /vla/joint_trajectory (JointTrajectory)
    /vla/instruction (String, latched or not)     --+

All behaviour is :class:`vla_policy.runtime.PolicyRuntime` + :class:`vla_policy.policy.VLAPolicy`
and :mod:`vla_policy.node_core` (ROS-free, tested without ROS); this node declares parameters,
converts messages at the edge, ticks the runtime at ``control_rate_hz`` and publishes. Images
go through ``cv_bridge`` (``imgmsg_to_cv2(msg, desired_encoding='rgb8')``) where it is installed,
else through the built-in :mod:`robot_drivers.conversions` (same pixels, same encodings). An
image topic whose name ends in ``/compressed`` is subscribed as ``sensor_msgs/CompressedImage``.

The instruction: the latest from any source wins (:class:`vla_policy.node_core.InstructionSelector`):
``ros2 topic pub`` (volatile), a latched publisher (transient local, also one that published
before this node started), or ``ros2 param set /policy_node instruction "..."``. The parameter
follows the topic, so ``ros2 param get`` shows the instruction in use.

Parameters (see ``config/franka.yaml``): ``checkpoint`` (default ``outputs/demo/film_cnn/checkpoint``,
what ``make demo`` trains), ``embodiment``, ``device``, ``image_topic``, ``joint_states_topic``,
``instruction_topic``, ``instruction`` ("" = wait for the topic), ``command_topic``,
``control_rate_hz``, ``n_action_steps`` (0 = the checkpoint's), ``max_obs_age_s``,
``temporal_ensemble_m`` (< 0 = off; >= 0 = ACT temporal ensembling with that m, one inference per tick).
"""
from __future__ import annotations

import robot_drivers.quiet_start  # noqa: F401,I001  (first: Ctrl-C during start-up exits quietly)

import time
from typing import Any, Dict, List, Optional, Tuple

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

try:  # Jazzy
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

from robot_drivers import conversions as conv
from robot_drivers.arm_driver_node import qos_profile
from robot_drivers.embodiment import get_embodiment
from robot_drivers.spin_node import run_node
from robot_drivers.qos import COMMANDS, INSTRUCTION_VOLATILE, LATCHED, SENSOR_DATA

__all__ = ['PolicyNode', 'main']


def _cv_bridge() -> Tuple[Any, str]:
    """``(CvBridge, 'cv_bridge')`` where cv_bridge works, else ``(None, why)`` (built-in converter).

    cv_bridge imports OpenCV and its compiled module lazily, so both are loaded here: a cv_bridge
    built against another numpy fails now, with its reason logged, not on every image.
    """
    try:
        from cv_bridge import CvBridge
    except ImportError:
        return None, 'built-in converter (cv_bridge is not installed)'
    try:
        bridge = CvBridge()
        import cv_bridge.boost.cv_bridge_boost  # noqa: F401  (what imgmsg_to_cv2 calls)
    except Exception as exc:  # noqa: BLE001 - ImportError, numpy ABI errors: reported, not hidden
        return None, f'built-in converter (cv_bridge is installed but does not load: {exc})'
    return bridge, 'cv_bridge'


class PolicyNode(Node):
    """See the module docstring.

    Raises:
        ValueError: ``checkpoint`` is empty; the checkpoint is invalid or its embodiment differs
            from the ``embodiment`` parameter; ``instruction`` is not a string.
        FileNotFoundError: ``checkpoint`` names no directory (one line: run `make demo` or pass
            checkpoint:=<dir>).
    """

    def __init__(self, node_name: str = 'policy_node', **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        from vla_policy.node_core import (DEFAULT_CHECKPOINT, LATCHED_TOPIC, PARAMETER, VOLATILE_TOPIC,
                                          InstructionSelector, resolve_checkpoint)

        num = ParameterDescriptor(dynamic_typing=True)
        ckpt_param = str(self.declare_parameter('checkpoint', DEFAULT_CHECKPOINT).value)
        emb_name = self.declare_parameter('embodiment', 'franka_panda').value
        device = self.declare_parameter('device', 'cpu').value
        self._img_topic = self.declare_parameter('image_topic', '/camera/image_raw').value
        self._js_topic = self.declare_parameter('joint_states_topic', '/joint_states').value
        instr_topic = self.declare_parameter('instruction_topic', '/vla/instruction').value
        instruction = self.declare_parameter('instruction', '', ParameterDescriptor(
            description='task for the policy; set at run time with `ros2 param set`; "" = wait for the topic')).value
        cmd_topic = self.declare_parameter('command_topic', '/vla/joint_trajectory').value
        rate = float(self.declare_parameter('control_rate_hz', 10.0, num).value)
        n_action = int(self.declare_parameter('n_action_steps', 0).value)
        max_age = float(self.declare_parameter('max_obs_age_s', 0.5, num).value)
        ensemble_m = float(self.declare_parameter('temporal_ensemble_m', -1.0, num).value)

        ckpt = resolve_checkpoint(ckpt_param)   # before importing torch: a wrong path fails at once
        self.embodiment = get_embodiment(emb_name)
        from vla_policy.policy import VLAPolicy
        from vla_policy.runtime import PolicyRuntime, RuntimeConfig
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
        self.instructions = InstructionSelector()
        self._param_source = PARAMETER
        self._bridge, converter = _cv_bridge()
        self._input_errors: Dict[str, str] = {}
        self._types = conv.rclpy_types()
        self._pub = self.create_publisher(JointTrajectory, cmd_topic, qos_profile(COMMANDS))
        img_type = CompressedImage if self._img_topic.rstrip('/').endswith('/compressed') else Image
        self.create_subscription(img_type, self._img_topic, self._on_image, qos_profile(SENSOR_DATA))
        self.create_subscription(JointState, self._js_topic, self._on_joints, qos_profile(SENSOR_DATA))
        # Two subscriptions on one topic: transient local gets a latched value published before
        # this node started; volatile accepts plain publishers (`ros2 topic pub`), which a
        # transient-local subscription rejects as incompatible QoS. That rejection is expected (the
        # volatile subscription receives those messages), so it is not logged: rclpy's default
        # callback would warn 'offering incompatible QoS. No messages will be received from it'.
        self.create_subscription(String, instr_topic, lambda m: self._offer(m.data, LATCHED_TOPIC),
                                 qos_profile(LATCHED),
                                 event_callbacks=SubscriptionEventCallbacks(incompatible_qos=lambda _event: None))
        self.create_subscription(String, instr_topic, lambda m: self._offer(m.data, VOLATILE_TOPIC),
                                 qos_profile(INSTRUCTION_VOLATILE))
        if instruction != '':
            error = self._offer(instruction, PARAMETER)
            if error is not None:
                raise ValueError(f'parameter instruction: {error}')
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._timer = self.create_timer(1.0 / rate, self._on_timer)
        self.get_logger().info(
            f'VLA {ckpt} ({self.policy.config.backbone.name}) for {self.embodiment.name}: '
            f'{self._img_topic}, {self._js_topic}, {instr_topic} -> {cmd_topic} at {rate:g} Hz; images via {converter}')
        if 'does not load' in converter:
            self.get_logger().warning(f'images via {converter}')

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # ------------------------------------------------------------------ instruction
    @property
    def instruction(self) -> Optional[str]:
        """The instruction in use (None until one arrives)."""
        return self.runtime.instruction

    def _offer(self, text: Any, source: str) -> Optional[str]:
        """Offer an instruction; returns an error text (nothing changed) or None."""
        try:
            change = self.instructions.offer(text, source, time.monotonic())
        except ValueError as exc:
            self.get_logger().error(f'ignoring instruction: {exc}')
            return str(exc)
        if change is None:
            return None
        self.runtime.on_instruction(change.text)
        self.get_logger().info(f'instruction from {change.source}: {change.text!r}')
        if source != self._param_source:   # the parameter follows the topic
            self.set_parameters([Parameter('instruction', Parameter.Type.STRING, change.text)])
        return None

    def _on_set_parameters(self, params: List[Parameter]) -> SetParametersResult:
        for p in params:
            if p.name != 'instruction':
                continue
            if p.value == self.instructions.current:   # includes the node's own sync above
                continue
            error = self._offer(p.value, self._param_source)
            if error is not None:
                return SetParametersResult(successful=False, reason=error)
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ inputs
    def _input_failed(self, what: str, message: str) -> None:
        """Log an error when it starts or changes (an edge), not for every message or tick."""
        if self._input_errors.get(what) != message:
            self.get_logger().error(message)
            self._input_errors[what] = message

    def _input_ok(self, what: str) -> None:
        if self._input_errors.pop(what, None) is not None:
            self.get_logger().info(f'{what}: OK again')

    def _on_image(self, msg: Any) -> None:
        try:
            self.runtime.on_image_msg(msg, source=self._img_topic, bridge=self._bridge)
        except ValueError as exc:
            self._input_failed('image', f'ignoring image: {exc}')
            return
        self._input_ok('image')

    def _on_joints(self, msg: JointState) -> None:
        try:
            self.runtime.on_joint_state_msg(msg, source=self._js_topic)
        except (KeyError, ValueError) as exc:
            self._input_failed('joint state', f'ignoring joint state: {exc}')
            return
        self._input_ok('joint state')

    # ------------------------------------------------------------------ control tick
    def _on_timer(self) -> None:
        try:
            cmd = self.runtime.step(self._now())
        except ValueError as exc:
            self._input_failed('policy step', f'policy step failed, nothing published: {exc}')
            cmd = None
        else:
            self._input_ok('policy step')
        for ev in self.runtime.take_events():
            if ev.kind == 'refusing':
                self.get_logger().warning(f'not acting: {ev.detail}')
            elif ev.kind == 'acting':
                self.get_logger().info(ev.detail)
        if cmd is not None:
            self._pub.publish(cmd.to_msg(self._types))


def main(args: Optional[list] = None) -> None:
    """``ros2 run vla_policy policy_node --ros-args -p checkpoint:=<dir>``."""
    run_node(PolicyNode, args)


if __name__ == '__main__':
    main()
