"""ROS 2 node: the safety gate between the VLA policy and ros2_control (Humble and Jazzy).

Graph::

    /vla/joint_trajectory (policy, JointTrajectory)  --+
    /joint_states (JointState)                       --+--> arm_driver --> /arm_controller/joint_trajectory
    ~/emergency_stop (std_msgs/Bool, latched)        --+         |              (JointTrajectoryController)
                                                                  +--> ~/events (std_msgs/String)

All behaviour is :class:`robot_drivers.hardware.ArmDriverCore` (ROS-free, tested without ROS);
this module only moves messages. At ``rate_hz`` the node ticks the core, and the core's
setpoint ``(J,)`` is published as a one-point trajectory with ``time_from_start = 1 / rate_hz``
and a zero header stamp (ros2_control starts such a trajectory on receipt). Messages are
converted only through :mod:`robot_drivers.conversions` with :func:`~robot_drivers.conversions.rclpy_types`.

Parameters: ``embodiment`` (``'franka_panda'``), ``input_topic``, ``output_topic``,
``state_topic``, ``rate_hz`` (100.0), ``watchdog_timeout_s`` (0.5 s), ``velocity_scale`` (1.0),
``position_margin`` (0.0 rad), ``rate_limit_reference`` (``'command'``). QoS: see
:mod:`robot_drivers.qos`. Publish ``true`` on ``~/emergency_stop`` (transient local, so the
node sees it even if it starts later) to hold, ``false`` to re-arm.

Events are edges of conditions (:mod:`robot_drivers.safety`, :mod:`robot_drivers.hardware`): when
a condition starts and when it ends, the node publishes one ``std_msgs/String`` on ``~/events``
(``"<kind>[ <joint>] start|end: <detail>"``, e.g. ``"estop start: emergency stop engaged ..."``)
and writes one rosout line (start at the kind's severity, end at info). Nothing is published
or logged per tick: an e-stop held for minutes, fingers resting at their limit, a policy
streaming rejected commands or joint states going stale are each one line when they begin and
one when they clear. The node's own checks (``joint_state_missing``, ``joint_state_stale``,
``joint_state_invalid``, ``tick_failed``) go through the same tracker via
:meth:`~robot_drivers.hardware.ArmDriverCore.set_condition`.
"""
from __future__ import annotations

import robot_drivers.quiet_start  # noqa: F401,I001  (first: Ctrl-C during start-up exits quietly)

from typing import Any, Optional

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, String
from trajectory_msgs.msg import JointTrajectory

from robot_drivers import cli
from robot_drivers import conversions as conv
from robot_drivers.embodiment import Embodiment, get_embodiment
from robot_drivers.hardware import ArmDriverCore, JointSample
from robot_drivers.spin_node import log_edge, run_node
from robot_drivers.qos import COMMANDS, LATCHED, SENSOR_DATA, QosSpec
from robot_drivers.safety import (JOINT_STATE_INVALID, JOINT_STATE_MISSING, JOINT_STATE_STALE, REJECTED,
                                  TICK_FAILED, CommandRejected, SafetyConfig, SafetyEvent)

__all__ = ['qos_profile', 'TopicHardware', 'ArmDriverNode', 'main']


def qos_profile(spec: QosSpec) -> QoSProfile:
    """:class:`robot_drivers.qos.QosSpec` -> ``rclpy.qos.QoSProfile`` (keep-last history)."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=int(spec.depth),
        reliability=(ReliabilityPolicy.RELIABLE if spec.reliability == 'reliable'
                     else ReliabilityPolicy.BEST_EFFORT),
        durability=(DurabilityPolicy.TRANSIENT_LOCAL if spec.durability == 'transient_local'
                    else DurabilityPolicy.VOLATILE),
    )


class TopicHardware:
    """:class:`robot_drivers.hardware.Hardware` over topics.

    ``read()`` returns the latest ``JointState`` (embodiment order); ``write(positions (J,))``
    publishes a one-point ``JointTrajectory`` due ``1 / rate_hz`` s after receipt.
    """

    def __init__(self, embodiment: Embodiment, publisher: Any, types: conv.MessageTypes, rate_hz: float,
                 state_topic: str) -> None:
        self.joint_names = embodiment.joint_names
        self._pub = publisher
        self._types = types
        self._period = 1.0 / rate_hz
        self._state_topic = state_topic
        self._sample: Optional[JointSample] = None
        self.received_at: Optional[float] = None   # receive time of the latest joint state, s

    @property
    def ready(self) -> bool:
        return self._sample is not None

    def on_joint_state(self, msg: Any, now: float) -> None:
        """Store a ``sensor_msgs/JointState``; raises KeyError/ValueError (naming the topic) if unusable."""
        pos, vel = conv.joint_state_to_arrays(msg, self.joint_names, source=self._state_topic)
        self._sample = JointSample(pos, vel if vel is not None else np.zeros_like(pos),
                                   conv.stamp_to_sec(msg.header.stamp))
        self.received_at = now

    def read(self) -> JointSample:
        if self._sample is None:
            raise RuntimeError(f'no joint state received on {self._state_topic} yet')
        return self._sample

    def write(self, positions: np.ndarray) -> None:
        msg = conv.arrays_to_trajectory(self.joint_names, np.asarray(positions)[None], 0.0, self._types,
                                        times=np.array([self._period]))
        self._pub.publish(msg)


class ArmDriverNode(Node):
    """See the module docstring. ``kwargs`` go to ``rclpy.node.Node`` (e.g. ``parameter_overrides``).

    Raises:
        KeyError: unknown ``embodiment`` (the known names are listed).
        ValueError: ``rate_hz`` <= 0 or a safety parameter out of range (named).
    """

    def __init__(self, node_name: str = 'arm_driver_node', **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        num = ParameterDescriptor(dynamic_typing=True)   # accept 100 as well as 100.0
        emb_name = self.declare_parameter('embodiment', 'franka_panda').value
        self._input_topic = self.declare_parameter('input_topic', '/vla/joint_trajectory').value
        self._output_topic = self.declare_parameter('output_topic', '/arm_controller/joint_trajectory').value
        self._state_topic = self.declare_parameter('state_topic', '/joint_states').value
        rate_hz = float(self.declare_parameter('rate_hz', 100.0, num).value)
        watchdog = float(self.declare_parameter('watchdog_timeout_s', 0.5, num).value)
        vscale = float(self.declare_parameter('velocity_scale', 1.0, num).value)
        margin = float(self.declare_parameter('position_margin', 0.0, num).value)
        reference = self.declare_parameter('rate_limit_reference', 'command').value
        if not np.isfinite(rate_hz) or rate_hz <= 0:
            raise ValueError(f'parameter rate_hz must be > 0, got {rate_hz}')

        self.embodiment = get_embodiment(emb_name)
        self._types = conv.rclpy_types()

        cmd_pub = self.create_publisher(JointTrajectory, self._output_topic, qos_profile(COMMANDS))
        self._events_pub = self.create_publisher(String, '~/events', qos_profile(COMMANDS))
        self.hardware = TopicHardware(self.embodiment, cmd_pub, self._types, rate_hz, self._state_topic)
        self.core = ArmDriverCore(self.embodiment, self.hardware, SafetyConfig(
            position_margin=margin, velocity_scale=vscale, watchdog_timeout_s=watchdog,
            rate_limit_reference=reference), on_event=self._on_event)
        # joint states older than this (receive time) stop the output: ros2_control then holds
        self._state_timeout = watchdog

        self.create_subscription(JointState, self._state_topic, self._on_joint_state, qos_profile(SENSOR_DATA))
        self.create_subscription(JointTrajectory, self._input_topic, self._on_trajectory, qos_profile(COMMANDS))
        self.create_subscription(Bool, '~/emergency_stop', self._on_estop, qos_profile(LATCHED))
        self._timer = self.create_timer(1.0 / rate_hz, self._on_timer)
        self.get_logger().info(
            f'arm_driver for {self.embodiment.name}: {self._input_topic} -> {self._output_topic} at {rate_hz:g} Hz, '
            f'state {self._state_topic}, watchdog {watchdog:g} s, velocity_scale {vscale:g}, '
            f'rate limit from {reference}')

    # ------------------------------------------------------------------ helpers
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_event(self, ev: SafetyEvent) -> None:
        """Every edge the core records: one message on ``~/events`` and one rosout line."""
        self._events_pub.publish(conv.string_msg(str(ev), self._types))
        log_edge(self.get_logger(), ev)

    # ------------------------------------------------------------------ callbacks
    def _on_joint_state(self, msg: JointState) -> None:
        try:
            self.hardware.on_joint_state(msg, self._now())
        except (KeyError, ValueError) as exc:
            self.core.set_condition(JOINT_STATE_INVALID, True, f'ignoring joint states: {cli.error_message(exc)}',
                                    tag=type(exc).__name__)
            return
        self.core.set_condition(JOINT_STATE_INVALID, False, f'valid joint state on {self._state_topic} again')

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        now = self._now()
        try:
            names, pos, tfs = conv.trajectory_to_arrays(msg, source=self._input_topic)
            self.core.on_trajectory(names, pos, tfs, conv.stamp_to_sec(msg.header.stamp), now,
                                    source=self._input_topic)
        except CommandRejected:                 # the core has recorded the edge (if any): see _on_event
            pass
        except (KeyError, ValueError) as exc:   # a message the conversion cannot read: same condition
            self.core.set_condition(REJECTED, True, cli.error_message(exc), tag='malformed')

    def _on_estop(self, msg: Bool) -> None:
        if bool(msg.data):
            self.core.estop()
        else:
            self.core.rearm()

    def _on_timer(self) -> None:
        now = self._now()
        topic, core = self._state_topic, self.core
        ready = self.hardware.ready
        core.set_condition(JOINT_STATE_MISSING, not ready,
                           f'no joint state received on {topic} yet: not commanding' if not ready
                           else f'first joint state received on {topic}')
        if not ready:
            return
        age = now - self.hardware.received_at
        stale = age > self._state_timeout
        core.set_condition(JOINT_STATE_STALE, stale,
                           f'joint states on {topic} are {age:.2f} s old (> {self._state_timeout:g} s): '
                           'not commanding' if stale else f'joint states on {topic} are fresh again ({age:.3f} s old)')
        if stale:
            return
        try:
            core.tick(now)                      # its edges reach _on_event
        except ValueError as exc:
            core.set_condition(TICK_FAILED, True, f'driver tick failed, nothing sent: {exc}')
            return
        core.set_condition(TICK_FAILED, False, 'driver ticks again')


def main(args: Optional[list] = None) -> None:
    """``ros2 run robot_drivers arm_driver_node [--ros-args -p rate_hz:=100.0 ...]``."""
    run_node(ArmDriverNode, args)


if __name__ == '__main__':
    main()
