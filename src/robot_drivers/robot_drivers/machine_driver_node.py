"""ROS 2 node: the safety gate between the VLA policy and any machine (Humble and Jazzy).

Graph (every name is a parameter)::

    /vla/joint_trajectory (policy, JointTrajectory)  --+
    <state_topic> (sensor_msgs/JointState)           --+--> machine_driver --> each group's native output
    ~/emergency_stop (std_msgs/Bool, latched)        --+        |              (JTC trajectory, forward controller
    <machine inputs> (e.g. TwistStamped)             --+        |               Float64MultiArray, /cmd_vel,
                                                                |               com3 JointCmd, unitree LowCmd ...)
                                                                +--> ~/events (std_msgs/String)

All behaviour is :class:`robot_drivers.machine.MachineDriverCore` (ROS-free, tested without ROS):
validation, interpolation to ``rate_hz``, watchdog, latched e-stop, interlocks, position /
velocity / acceleration limits, then the groups' output adapters (:mod:`robot_drivers.adapters`).
This module only moves messages.

Parameters: ``machine`` (registry name, :func:`robot_drivers.machine.available_machines`),
``input_topic``, ``state_topic`` (default the embodiment's), ``rate_hz`` (0 = the machine's),
``watchdog_timeout_s`` (0 = the machine's), ``velocity_scale`` (1.0), ``position_margin`` (0.0 rad),
``state_timeout_s`` (0.5 s), ``outputs.<group>`` (topic of each group's output; default the group's),
``output_adapters.<group>`` (adapter key, default the group's: e.g. ``operasim_joint_cmd`` to drive the
excavator in OperaSim instead of COM3), ``inputs.<name>`` (topic of each extra command input).
Publish ``true`` on ``~/emergency_stop`` to latch the e-stop, ``false`` to re-arm.

A group whose message package is not installed (``unitree_hg``, ``com3_msgs``) stops the node at
start with one line naming the package. Joint states must carry every position-commanded DOF;
velocity DOFs absent from them (a base velocity) are unknown (NaN) to the driver.

Events are edges, as in :mod:`robot_drivers.arm_driver_node`: one ``~/events`` message and one rosout
line when a condition starts and when it ends, never per tick.
"""
from __future__ import annotations

import robot_drivers.quiet_start  # noqa: F401,I001  (first: Ctrl-C during start-up exits quietly)

from typing import Any, Dict, Optional

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, String
from trajectory_msgs.msg import JointTrajectory

from robot_drivers import cli
from robot_drivers import conversions as conv
from robot_drivers.arm_driver_node import qos_profile
from robot_drivers.machine import MachineDriverCore, MachineState, get_machine
from robot_drivers.qos import COMMANDS, LATCHED, SENSOR_DATA
from robot_drivers.safety import (JOINT_STATE_INVALID, JOINT_STATE_MISSING, JOINT_STATE_STALE, REJECTED,
                                  TICK_FAILED, CommandRejected, SafetyConfig, SafetyEvent)
from robot_drivers.spin_node import log_edge, run_node

__all__ = ['joint_state_to_machine_state', 'MachineDriverNode', 'main']


def joint_state_to_machine_state(msg: Any, emb: Any, *, source: str = 'joint_states') -> MachineState:
    """``sensor_msgs/JointState`` -> :class:`~robot_drivers.machine.MachineState` (embodiment order).

    DOFs absent from the message, and absent velocities, are NaN.

    Raises:
        KeyError: a position-commanded DOF is absent (the DOFs are named).
        ValueError: position / velocity arrays of the wrong length.
    """
    names = [str(n) for n in msg.name]
    pos = np.asarray(msg.position, dtype=np.float64).reshape(-1)
    vel = np.asarray(msg.velocity, dtype=np.float64).reshape(-1)
    if pos.shape[0] != len(names):
        raise ValueError(f'{source}: {pos.shape[0]} positions for {len(names)} names')
    if vel.shape[0] not in (0, len(names)):
        raise ValueError(f'{source}: {vel.shape[0]} velocities for {len(names)} names')
    lookup = {n: i for i, n in enumerate(names)}
    missing = [j.name for j in emb.joints if j.interface == 'position' and j.name not in lookup]
    if missing:
        raise KeyError(f'{source} lacks position-commanded joints {missing} of {emb.name!r}')
    idx = [lookup.get(n, -1) for n in emb.joint_names]
    P = np.array([pos[i] if i >= 0 else np.nan for i in idx])
    V = np.array([vel[i] if (i >= 0 and vel.size) else np.nan for i in idx])
    return MachineState(P, V, conv.stamp_to_sec(msg.header.stamp))


class MachineDriverNode(Node):
    """See the module docstring. ``kwargs`` go to ``rclpy.node.Node``.

    Raises:
        KeyError: unknown ``machine`` (the machines are listed) or output group.
        ModuleNotFoundError: an output's message package is not installed (named).
        ValueError: a parameter out of range (named).
    """

    def __init__(self, node_name: str = 'machine_driver_node', **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        num = ParameterDescriptor(dynamic_typing=True)
        machine = get_machine(str(self.declare_parameter('machine', 'franka_panda').value))
        emb = machine.embodiment
        self.machine = machine
        self._input_topic = self.declare_parameter('input_topic', '/vla/joint_trajectory').value
        self._state_topic = self.declare_parameter('state_topic', emb.state_topic).value
        rate_hz = float(self.declare_parameter('rate_hz', 0.0, num).value) or machine.control_rate_hz
        watchdog = float(self.declare_parameter('watchdog_timeout_s', 0.0, num).value) or \
            machine.safety.watchdog_timeout_s
        vscale = float(self.declare_parameter('velocity_scale', 1.0, num).value)
        margin = float(self.declare_parameter('position_margin', 0.0, num).value)
        self._state_timeout = float(self.declare_parameter('state_timeout_s', 0.5, num).value)
        if not np.isfinite(rate_hz) or rate_hz <= 0:
            raise ValueError(f'parameter rate_hz must be > 0, got {rate_hz}')
        base = machine.safety
        config = SafetyConfig(position_margin=margin or base.position_margin, velocity_scale=vscale,
                              max_step=base.max_step, watchdog_timeout_s=watchdog,
                              prismatic_margin=base.prismatic_margin, condition_clear_s=base.condition_clear_s)
        self._types = conv.rclpy_types()
        self.core = MachineDriverCore(machine, config, on_event=self._on_event, max_tick_dt=4.0 / rate_hz)

        from robot_drivers.adapters import build_adapters
        topics = {g.name: str(self.declare_parameter(f'outputs.{g.name}', g.topic).value)
                  for g in emb.groups_or_default()}
        kinds = {g.name: str(self.declare_parameter(f'output_adapters.{g.name}', g.output).value)
                 for g in emb.groups_or_default()}
        self.core._adapters = build_adapters(emb, topics, kinds)
        self._pubs: Dict[str, Any] = {}
        for ad in self.core.adapters:
            for topic, msg_type in ad.topics():
                self._pubs[topic] = self.create_publisher(conv.message_class(self._types, msg_type), topic,
                                                          qos_profile(COMMANDS))
            for topic, msg_type in getattr(ad, 'estop_topics', lambda: [])():
                self._pubs[topic] = self.create_publisher(conv.message_class(self._types, msg_type), topic,
                                                          qos_profile(LATCHED))
        self._events_pub = self.create_publisher(String, '~/events', qos_profile(COMMANDS))
        self._state: Optional[MachineState] = None
        self._state_received: Optional[float] = None
        self.create_subscription(JointTrajectory, self._input_topic, self._on_trajectory, qos_profile(COMMANDS))
        self.create_subscription(JointState, self._state_topic, self._on_joint_state, qos_profile(SENSOR_DATA))
        self.create_subscription(Bool, '~/emergency_stop', self._on_estop, qos_profile(LATCHED))
        for inp in machine.inputs:
            topic = str(self.declare_parameter(f'inputs.{inp.name}', inp.topic).value)
            self.create_subscription(conv.message_class(self._types, inp.msg_type), topic,
                                     lambda msg, inp=inp, topic=topic: self._on_input(inp, topic, msg),
                                     qos_profile(COMMANDS))
        self.create_timer(1.0 / rate_hz, self._on_timer)
        self.get_logger().info(
            f'machine_driver for {emb.name}: {self._input_topic} -> '
            f'{", ".join(f"{g}: {t}" for g, t in topics.items())} at {rate_hz:g} Hz, state {self._state_topic}, '
            f'watchdog {watchdog:g} s')

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_event(self, ev: SafetyEvent) -> None:
        self._events_pub.publish(conv.string_msg(str(ev), self._types))
        log_edge(self.get_logger(), ev)

    def _publish(self, msgs) -> None:
        for topic, msg in msgs:
            self._pubs[topic].publish(msg)

    def _on_joint_state(self, msg: JointState) -> None:
        try:
            self._state = joint_state_to_machine_state(msg, self.machine.embodiment, source=self._state_topic)
        except (KeyError, ValueError) as exc:
            self.core.set_condition(JOINT_STATE_INVALID, True, f'ignoring joint states: {cli.error_message(exc)}',
                                    tag=type(exc).__name__)
            return
        self._state_received = self._now()
        self.core.set_condition(JOINT_STATE_INVALID, False, f'valid joint state on {self._state_topic} again')

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        try:
            self.core.on_command_msg(msg, self._now(), source=self._input_topic)
        except CommandRejected:
            pass                                # the core recorded the edge

    def _on_input(self, inp: Any, topic: str, msg: Any) -> None:
        try:
            names, pos, vel, tfs = inp.to_command(msg, self._state, self.machine.embodiment)
            self.core.on_trajectory(names, pos, vel, tfs, self._now(), self._now(), source=topic)
        except CommandRejected:
            pass
        except (KeyError, ValueError) as exc:
            self.core.set_condition(REJECTED, True, f'{topic}: {cli.error_message(exc)}', tag='malformed')

    def _on_estop(self, msg: Bool) -> None:
        if bool(msg.data):
            self.core.estop()
        else:
            self.core.rearm()
        self._publish(self.core.pending_messages(self._now(), self._types))

    def _on_timer(self) -> None:
        now, core, topic = self._now(), self.core, self._state_topic
        ready = self._state is not None
        core.set_condition(JOINT_STATE_MISSING, not ready,
                           f'no joint state received on {topic} yet: not commanding' if not ready
                           else f'first joint state received on {topic}')
        if not ready:
            return
        age = now - self._state_received
        stale = age > self._state_timeout
        core.set_condition(JOINT_STATE_STALE, stale,
                           f'joint states on {topic} are {age:.2f} s old (> {self._state_timeout:g} s): '
                           'not commanding' if stale else f'joint states on {topic} are fresh again ({age:.3f} s old)')
        if stale:
            return
        try:
            msgs = core.outputs(now, self._state, self._types)
        except ValueError as exc:
            core.set_condition(TICK_FAILED, True, f'driver tick failed, nothing sent: {exc}')
            return
        core.set_condition(TICK_FAILED, False, 'driver ticks again')
        self._publish(msgs)


def main(args: Optional[list] = None) -> None:
    """``ros2 run robot_drivers machine_driver_node --ros-args -p machine:=excavator_zx200 ...``."""
    run_node(MachineDriverNode, args)


if __name__ == '__main__':
    main()
