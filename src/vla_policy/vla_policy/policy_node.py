"""ROS 2 lifecycle node: camera + joint states + instruction -> VLA -> JointTrajectory (Humble and Jazzy).

Graph::

    /camera/image_raw (Image | CompressedImage) --+   (one image topic per model camera,
                                                  |    e.g. + /wrist_camera/image_raw)
    /joint_states (JointState)                    +--> policy_node --> /vla/joint_trajectory (JointTrajectory)
    /vla/instruction (String, latched or not)     --+        +-------> /diagnostics, ~/status

All behaviour is :class:`vla_policy.runtime.PolicyRuntime` + the policy (a local
:class:`vla_policy.policy.VLAPolicy` or a :class:`vla_policy.remote.RemotePolicy`),
:mod:`vla_policy.node_core`, :mod:`vla_policy.diagnostics` and :mod:`vla_policy.rollout_recorder`
(ROS-free, tested without ROS); this node declares parameters, converts messages at the edge,
ticks the runtime at ``control_rate_hz`` and publishes.

Lifecycle (``rclpy.lifecycle``, the managed-node states of nav2 and ros2_control;
``ros2 lifecycle set /policy_node configure|activate|deactivate|cleanup|shutdown``):

* **configure**: reads the parameters, loads the model (``checkpoint``), or with ``policy_endpoint``
  connects to a policy server and takes ``n_obs_steps``, the camera and the embodiment from its
  metadata; builds the runtime (its inference worker thread with ``inference: thread``), the
  command publisher (a lifecycle publisher) and the camera / joint-state subscriptions. A bad
  parameter, a missing checkpoint or an unreachable server fails the transition with one
  ``/rosout`` error line; the node stays unconfigured.
* **activate**: starts the control timer and publishing; a new episode (history and plan cleared);
  the input watchdog is armed: the runtime refuses to act -- publishes nothing and says why on
  ``/diagnostics`` (ERROR) and once in ``/rosout`` -- while the image or the joint state is older
  than ``max_obs_age_s`` (or missing), and resumes when they are fresh again. With
  ``record_rollouts`` a rollout bag is opened.
* **deactivate**: stops the timer; no command is published, so the arm driver's own watchdog
  (``arm_driver_node.watchdog_timeout_s``) holds the arm in place. The rollout bag is closed.
* **cleanup**: releases the runtime (``runtime.close()`` stops its worker), the model or the
  server connection, the publisher and the subscriptions.
* **shutdown** (from any state) and node destruction (Ctrl-C) do the same and close an open bag.

``/diagnostics`` (``diagnostic_msgs/DiagnosticArray``, every ``diagnostics_period_s``, in every
state) and ``~/status`` (``std_msgs/String``, the same as one line): input ages, inference latency
last/p50/p99, queue depth, plan rows left, dropped and missed ticks, instruction, status and level
(:func:`vla_policy.diagnostics.assess` gives the rules).

The instruction: the latest from any source wins (:class:`vla_policy.node_core.InstructionSelector`):
``ros2 topic pub`` (volatile), a latched publisher (transient local, also one that published
before this node started), or ``ros2 param set /policy_node instruction "..."``. The parameter
follows the topic, so ``ros2 param get`` shows the instruction in use. It is tracked in every
lifecycle state.

Parameters (see ``config/franka.yaml``; :func:`vla_policy.node_core.parameter_defaults`): one per
:class:`vla_policy.runtime.RuntimeConfig` field, same name, type and default (declared from the
dataclass), except that ``n_action_steps`` 0 (the default here) means the model's and
``n_obs_steps`` / ``camera`` are the model's (a value set to something else is refused;
``cameras``: ``name=topic`` pairs, one per model camera, or "" = the first camera on
``image_topic`` and any other camera ``c`` on ``/<c>_camera/image_raw``,
:func:`vla_policy.node_core.camera_topics`; one subscription per camera, each must be fresh;
:func:`vla_policy.node_core.runtime_config`); ``control_rate_hz`` (0 = the embodiment's) is also the
control timer's rate; plus ``checkpoint`` (default ``outputs/demo/film_cnn/checkpoint``,
what ``make demo`` trains), ``embodiment``, ``device``, ``image_topic``, ``joint_states_topic``,
``instruction_topic``, ``instruction`` ("" = wait for the topic), ``command_topic``,
``policy_endpoint`` ("" = the local checkpoint, ``ws://host:port`` = a ``policy_server``),
``policy_token``, ``policy_timeout_s``, ``record_rollouts`` ("" = off, else a directory),
``record_command_topic``, ``diagnostics_period_s``, ``autostart`` (configure and activate at
start-up, for ``ros2 run``; ``franka.launch.py`` drives the transitions itself).

Images go through ``cv_bridge`` (``imgmsg_to_cv2(msg, desired_encoding='rgb8')``) where it is
installed, else through the built-in :mod:`robot_drivers.conversions` (same pixels, same
encodings). An image topic whose name ends in ``/compressed`` is subscribed as
``sensor_msgs/CompressedImage``.
"""
from __future__ import annotations

import robot_drivers.quiet_start  # noqa: F401,I001  (first: Ctrl-C during start-up exits quietly)

import dataclasses
import gc
import time
from typing import Any, Dict, List, Optional, Tuple

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.serialization import serialize_message
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
#: Errors that fail a transition with one log line (a user's parameter, file or server, not a bug).
CONFIGURE_ERRORS: Tuple[type, ...] = (ValueError, TypeError, KeyError, FileNotFoundError, OSError, RuntimeError)


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


def _metadata(policy: Any) -> Dict[str, Any]:
    """``policy.metadata`` (a property on RemotePolicy, a method on VLAPolicy) as a dict."""
    meta = getattr(policy, 'metadata', None)
    meta = meta() if callable(meta) else meta
    if not isinstance(meta, dict):
        raise ValueError(f'{type(policy).__name__} gives no metadata dict')
    return meta


class PolicyNode(LifecycleNode):
    """See the module docstring.

    After a failed ``configure`` the reason is in ``configure_error`` (and ``/rosout``).
    """

    def __init__(self, node_name: str = 'policy_node', **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        from vla_policy.node_core import (LATCHED_TOPIC, PARAMETER, VOLATILE_TOPIC, InstructionSelector,
                                          parameter_defaults)

        descriptions = {
            'instruction': 'task for the policy; set at run time with `ros2 param set`; "" = wait for the topic',
            'policy_endpoint': '"" = load checkpoint here; ws://host:port = a policy_server',
            'record_rollouts': '"" = off; a directory: one rosbag2 (MCAP) per activation'}
        for name, default in parameter_defaults().items():   # RuntimeConfig fields + node parameters
            self.declare_parameter(name, default, ParameterDescriptor(
                dynamic_typing=isinstance(default, float), description=descriptions.get(name, '')))
        instr_topic = self._param('instruction_topic')
        instruction = self._param('instruction')
        period = float(self._param('diagnostics_period_s'))
        if not period > 0:
            raise ValueError(f'parameter diagnostics_period_s must be > 0, got {period}')

        self.policy: Any = None
        self.runtime: Any = None
        self.recorder: Any = None
        self.configure_error: Optional[BaseException] = None
        self.last_rollout: Any = None
        self._state = 'unconfigured'
        self._pub: Any = None
        self._timer: Any = None
        self._subs: List[Any] = []
        self._last_cmd: Any = None
        self._diag_report: Any = None
        self._types = conv.rclpy_types()
        self._bridge, self._converter = _cv_bridge()
        self._input_errors: Dict[str, str] = {}
        self.instructions = InstructionSelector()
        self._param_source = PARAMETER
        self._instr_topic = instr_topic

        # The instruction is tracked in every state. Two subscriptions on one topic: transient
        # local gets a latched value published before this node started; volatile accepts plain
        # publishers (`ros2 topic pub`), which a transient-local subscription rejects as
        # incompatible QoS. That rejection is expected (the volatile subscription receives those
        # messages), so it is not logged: rclpy's default callback would warn 'offering
        # incompatible QoS. No messages will be received from it'.
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

        from vla_policy.diagnostics import DiagnosticTypes
        from builtin_interfaces.msg import Time
        from std_msgs.msg import Header
        self._diag_types = DiagnosticTypes(DiagnosticArray, DiagnosticStatus, KeyValue, Header, Time)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', qos_profile(COMMANDS))
        self._status_pub = self.create_publisher(String, '~/status', qos_profile(COMMANDS))
        self._diag_timer = self.create_timer(period, self.publish_diagnostics)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    # ------------------------------------------------------------------ lifecycle
    @property
    def lifecycle_state(self) -> str:
        """``'unconfigured'``, ``'inactive'``, ``'active'`` or ``'finalized'``."""
        return self._state

    def _runtime_config(self, meta: Dict[str, Any]) -> Any:
        """RuntimeConfig from the parameters and the model's metadata; raises ValueError/TypeError."""
        from vla_policy.node_core import runtime_config
        from vla_policy.runtime import RuntimeConfig
        params = {f.name: self._param(f.name) for f in dataclasses.fields(RuntimeConfig)}
        params['image_topic'] = self._param('image_topic')
        return runtime_config(params, meta)

    def _load_policy(self) -> Tuple[Any, Dict[str, Any], str]:
        """(policy, metadata, description) from ``policy_endpoint`` or ``checkpoint``."""
        endpoint = str(self._param('policy_endpoint')).strip()
        if endpoint:
            from vla_policy.remote import RemotePolicy
            token = str(self._param('policy_token')) or None
            policy = RemotePolicy(endpoint, token=token, timeout_s=float(self._param('policy_timeout_s')))
            try:
                meta = policy.connect()   # PolicyUnavailable (a RuntimeError) when unreachable
            except BaseException:
                policy.close()
                raise
            return policy, meta, f'policy server {endpoint} ({meta.get("checkpoint")})'
        from vla_policy.node_core import resolve_checkpoint
        ckpt = resolve_checkpoint(str(self._param('checkpoint')))   # before torch: a wrong path fails at once
        from vla_policy.policy import VLAPolicy
        policy = VLAPolicy.from_checkpoint(ckpt, device=str(self._param('device')))
        return policy, _metadata(policy), f'{ckpt} ({policy.config.backbone.name})'

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except CONFIGURE_ERRORS as exc:
            self.configure_error = exc
            self.get_logger().error(f'configure failed: {exc}')
            self._release()
            return TransitionCallbackReturn.FAILURE
        self.configure_error = None
        self._state = 'inactive'
        # The model and its tensors live as long as the node: move them out of the collector's
        # view, so a full garbage collection no longer walks them in the middle of a control tick
        # (measured in benchmarks/runtime_bench.py: a 100 ms pause and a command 56 ms late in
        # 20 s without this; no pause over about 1 ms with it).
        gc.freeze()
        return TransitionCallbackReturn.SUCCESS

    def _configure(self) -> None:
        from vla_policy.runtime import PolicyRuntime
        embodiment = get_embodiment(str(self._param('embodiment')))
        self.embodiment = embodiment
        self.policy, meta, what = self._load_policy()
        if meta.get('embodiment') != embodiment.name:
            raise ValueError(f'{what} was trained for embodiment {meta.get("embodiment")!r}, '
                             f'parameter embodiment is {embodiment.name!r}')
        cfg = self._runtime_config(meta)
        self.runtime = PolicyRuntime(self.policy, embodiment, cfg)
        if self.instructions.current is not None:
            self.runtime.on_instruction(self.instructions.current)
        self._rate = cfg.control_rate_hz if cfg.control_rate_hz > 0 else float(embodiment.control_rate_hz)
        self._cam_topics = dict(cfg.camera_topics)      # {camera: topic}, the model's order
        self._img_topic = next(iter(self._cam_topics.values()))
        self._js_topic = str(self._param('joint_states_topic'))
        self._cmd_topic = str(self._param('command_topic'))
        self._pub = self.create_lifecycle_publisher(JointTrajectory, self._cmd_topic, qos_profile(COMMANDS))
        self._subs = []
        for cam, topic in self._cam_topics.items():   # one subscription per camera
            img_type = CompressedImage if topic.rstrip('/').endswith('/compressed') else Image
            self._subs.append(self.create_subscription(
                img_type, topic, lambda msg, cam=cam: self._on_image(msg, cam), qos_profile(SENSOR_DATA)))
        self._subs.append(
            self.create_subscription(JointState, self._js_topic, self._on_joints, qos_profile(SENSOR_DATA)))
        record = str(self._param('record_rollouts')).strip()
        if record:
            from vla_policy.rollout_recorder import RolloutRecorder, RolloutTopics
            topics = RolloutTopics(cameras=self._cam_topics, joint_states=self._js_topic,   # every camera read
                                   instruction=self._instr_topic,
                                   executed=str(self._param('record_command_topic')), command=self._cmd_topic)
            self.recorder = RolloutRecorder(record, topics, serialize=serialize_message)
        self.get_logger().info(
            f'configured: VLA {what} for {embodiment.name}: '
            f'{", ".join(f"{t} ({c})" for c, t in self._cam_topics.items())}, {self._js_topic}, {self._instr_topic} '
            f'-> {self._cmd_topic} at {self._rate:g} Hz; handover {cfg.handover}, inference {cfg.inference}; '
            f'images via {self._converter}' + (f'; recording rollouts to {record}' if record else ''))
        if 'does not load' in self._converter:
            self.get_logger().warning(f'images via {self._converter}')

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.runtime.reset()   # a new episode: no history, no plan from before
        self._last_cmd = None
        if self.recorder is not None:
            try:
                path = self.recorder.start(self._now(), self.runtime.instruction)
            except OSError as exc:
                self.get_logger().error(f'activate failed: cannot record rollouts: {exc}')
                return TransitionCallbackReturn.FAILURE
            self.get_logger().info(f'recording this activation to {path}')
        self._timer = self.create_timer(1.0 / self._rate, self._on_timer)
        self._state = 'active'
        self.get_logger().info(
            f'activated: publishing on {self._cmd_topic}; input watchdog armed '
            f'(max_obs_age_s = {self.runtime.cfg.max_obs_age_s:g})')
        return super().on_activate(state)

    def _stop(self) -> None:
        """Stop the control timer and close the rollout bag (deactivate, shutdown, destruction)."""
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None
        self._last_cmd = None
        if self.recorder is not None and self.recorder.recording:
            try:
                self.last_rollout = self.recorder.stop()
            except Exception as exc:  # noqa: BLE001 - a failed bag must not keep the node from stopping
                self.get_logger().error(f'rollout not saved: {exc}')
            else:
                self.get_logger().info(f'rollout saved: {self.last_rollout}' if self.last_rollout else
                                       'rollout discarded: no command was executed')

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop()
        if self.runtime is not None:
            self.runtime.reset()
        self._state = 'inactive'
        self.get_logger().info('deactivated: no command is published; the arm driver\'s watchdog holds the arm')
        return super().on_deactivate(state)

    def _release(self) -> None:
        """Free the runtime (its worker thread), the policy (model or connection), publisher and subscriptions."""
        self._stop()
        if self.runtime is not None:
            self.runtime.close()
            self.runtime = None
        if self.policy is not None:
            close = getattr(self.policy, 'close', None)
            if callable(close):
                close()
            self.policy = None
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        if self._pub is not None:
            self.destroy_lifecycle_publisher(self._pub)
            self._pub = None
        self.recorder = None

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self._state = 'unconfigured'
        self.get_logger().info('cleaned up: model and runtime released')
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self._state = 'finalized'
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f'error in state {state.label}: releasing the model; the node is unconfigured')
        self._release()
        self._state = 'unconfigured'
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        """Ctrl-C / launch shutdown: close an open rollout bag and stop the worker first."""
        self._release()
        super().destroy_node()

    # ------------------------------------------------------------------ instruction
    @property
    def instruction(self) -> Optional[str]:
        """The instruction in use (None until one arrives)."""
        return self.instructions.current

    def _offer(self, text: Any, source: str) -> Optional[str]:
        """Offer an instruction; returns an error text (nothing changed) or None."""
        try:
            change = self.instructions.offer(text, source, time.monotonic())
        except ValueError as exc:
            self.get_logger().error(f'ignoring instruction: {exc}')
            return str(exc)
        if change is None:
            return None
        if self.runtime is not None:
            self.runtime.on_instruction(change.text)
        if self.recorder is not None:
            self.recorder.instruction(change.text, self._now(), String)
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

    def _record(self, topic: str, msg: Any) -> None:
        if self.recorder is not None and self.recorder.recording:
            try:
                self.recorder.write(topic, msg, self._now())
            except (ValueError, KeyError, OSError) as exc:
                self._input_failed('recording', f'rollout recording failed: {exc}')

    def _on_image(self, msg: Any, camera: Optional[str] = None) -> None:
        if self.runtime is None:
            return
        camera = camera or next(iter(self._cam_topics))
        topic = self._cam_topics[camera]
        what = 'image' if len(self._cam_topics) == 1 else f'camera {camera} image'
        try:
            self.runtime.on_image_msg(msg, camera=camera, source=topic, bridge=self._bridge)
        except ValueError as exc:
            self._input_failed(what, f'ignoring image: {exc}')
            return
        self._input_ok(what)
        self._record(topic, msg)       # the rollout bag holds every camera (RolloutTopics.cameras)

    def _on_joints(self, msg: JointState) -> None:
        if self.runtime is None:
            return
        try:
            self.runtime.on_joint_state_msg(msg, source=self._js_topic)
        except (KeyError, ValueError) as exc:
            self._input_failed('joint state', f'ignoring joint state: {exc}')
            return
        self._input_ok('joint state')
        self._record(self._js_topic, msg)

    # ------------------------------------------------------------------ control tick
    def _on_timer(self) -> None:
        if self.runtime is None:
            return
        now = self._now()
        try:
            cmd = self.runtime.step(now)
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
            msg = cmd.to_msg(self._types)
            self._pub.publish(msg)
            self._last_cmd = cmd
            if self.recorder is not None and self.recorder.recording and self.recorder.topics.command:
                self._record(self._cmd_topic, msg)
        elif self.runtime.refusal is not None:
            self._last_cmd = None   # refusing: nothing is executed (the driver holds)
        if self.recorder is not None and self.recorder.recording:
            try:
                self.recorder.executed(self._last_cmd, now, self._types)
            except (ValueError, KeyError, OSError) as exc:
                self._input_failed('recording', f'rollout recording failed: {exc}')

    # ------------------------------------------------------------------ diagnostics
    def publish_diagnostics(self) -> Any:
        """Publish ``/diagnostics`` and ``~/status`` now; returns the :class:`DiagnosticReport`."""
        from vla_policy.diagnostics import assess, status_line, to_diagnostic_array
        now = self._now()
        snap = self.runtime.snapshot(now) if self.runtime is not None else None
        max_age = self.runtime.cfg.max_obs_age_s if self.runtime is not None else 1.0
        report = assess(snap, state=self._state, max_obs_age_s=max_age, previous=self._diag_report)
        self._diag_report = report
        self._diag_pub.publish(to_diagnostic_array(report, max(now, 0.0), self._diag_types,
                                                   name=f'{self.get_name()}: policy runtime',
                                                   hardware_id=str(self._param('embodiment'))))
        self._status_pub.publish(String(data=status_line(report)))
        return report


def _autostarted(**kwargs: Any) -> PolicyNode:
    """The node; with ``autostart:=true`` configured and activated (a failure raises the configure error)."""
    node = PolicyNode(**kwargs)
    if node.get_parameter('autostart').value:
        node.trigger_configure()
        if node.configure_error is not None:
            error = node.configure_error
            node.destroy_node()
            raise error
        node.trigger_activate()
    return node


def main(args: Optional[list] = None) -> None:
    """``ros2 run vla_policy policy_node --ros-args -p checkpoint:=<dir> -p autostart:=true``
    (without ``autostart`` the node waits unconfigured for ``ros2 lifecycle set``)."""
    run_node(_autostarted, args)


if __name__ == '__main__':
    main()
