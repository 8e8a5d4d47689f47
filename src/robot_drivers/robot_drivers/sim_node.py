"""ROS 2 node: the MuJoCo Franka cube scene standing in for the robot and its camera (Humble and Jazzy).

Graph::

    /arm_controller/joint_trajectory (JointTrajectory) --> sim_node --> /joint_states (JointState)
                                                                    --> /camera/image_raw (Image, rgb8)
                                                                    --> /wrist_camera/image_raw (Image, rgb8)
                                                                    --> /vla/instruction (String, latched)

It plays the part of ros2_control's JointTrajectoryController + the hardware: trajectories are
executed by :class:`robot_drivers.hardware.ArmDriverCore` (linear interpolation between points,
datasheet limits) on :class:`robot_drivers.sim.franka_cubes.FrankaCubeSim`. Each timer tick
(``rate_hz``) advances the physics by one tick period and publishes the joint state; the camera is
rendered at ``camera_rate_hz``. Stamps come from the node clock (``use_sim_time`` is not needed:
the scene runs in real time when the timer keeps up).

Parameters: ``seed`` (cube placement), ``image_size`` (px), ``rate_hz`` (50.0), ``camera_rate_hz``
(10.0), ``command_topic``, ``joint_states_topic``, ``image_topic`` (the ``front`` camera, frame
``camera_optical_frame``), ``wrist_image_topic`` (the hand camera, frame
``wrist_camera_optical_frame``; empty publishes none), ``instruction_topic``, ``instruction``
(published once, latched; empty publishes nothing).
"""
from __future__ import annotations

import robot_drivers.quiet_start  # noqa: F401,I001  (first: Ctrl-C during start-up exits quietly)

import os
from typing import Any, Optional

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from robot_drivers import cli
from robot_drivers import conversions as conv
from robot_drivers.arm_driver_node import qos_profile
from robot_drivers.embodiment import FRANKA_PANDA
from robot_drivers.hardware import ArmDriverCore
from robot_drivers.spin_node import log_edge, run_node
from robot_drivers.qos import COMMANDS, LATCHED, SENSOR_DATA
from robot_drivers.safety import REJECTED, CommandRejected

__all__ = ['SimNode', 'main']


class SimNode(Node):
    def __init__(self, node_name: str = 'sim_node', **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        os.environ.setdefault('MUJOCO_GL', 'egl')
        from robot_drivers.sim.franka_cubes import FrankaCubeSim, SimConfig

        num = ParameterDescriptor(dynamic_typing=True)
        seed = int(self.declare_parameter('seed', 0).value)
        size = int(self.declare_parameter('image_size', 96).value)
        rate = float(self.declare_parameter('rate_hz', 50.0, num).value)
        cam_rate = float(self.declare_parameter('camera_rate_hz', 10.0, num).value)
        self._cmd_topic = self.declare_parameter('command_topic', '/arm_controller/joint_trajectory').value
        js_topic = self.declare_parameter('joint_states_topic', '/joint_states').value
        img_topic = self.declare_parameter('image_topic', '/camera/image_raw').value
        wrist_topic = str(self.declare_parameter('wrist_image_topic', '/wrist_camera/image_raw').value)
        instr_topic = self.declare_parameter('instruction_topic', '/vla/instruction').value
        instruction = str(self.declare_parameter('instruction', 'reach the red cube').value)
        if rate <= 0 or cam_rate <= 0 or cam_rate > rate:
            raise ValueError(f'need 0 < camera_rate_hz ({cam_rate}) <= rate_hz ({rate})')

        self.sim = FrankaCubeSim(SimConfig(image_size=size))
        self.cubes = self.sim.reset(seed)
        # safety edges (start/end of a condition) as one /rosout line each, as arm_driver_node does
        self.core = ArmDriverCore(FRANKA_PANDA, self.sim, on_event=lambda ev: log_edge(self.get_logger(), ev))
        self._types = conv.rclpy_types()
        self._period = 1.0 / rate
        self._camera_every = max(1, int(round(rate / cam_rate)))
        self._ticks = 0
        self._js_pub = self.create_publisher(JointState, js_topic, qos_profile(SENSOR_DATA))
        self._img_pub = self.create_publisher(Image, img_topic, qos_profile(SENSOR_DATA))
        self._wrist_pub = (self.create_publisher(Image, wrist_topic, qos_profile(SENSOR_DATA))
                           if wrist_topic.strip() else None)
        self._instr_pub = self.create_publisher(String, instr_topic, qos_profile(LATCHED))
        self.create_subscription(JointTrajectory, self._cmd_topic, self._on_command, qos_profile(COMMANDS))
        if instruction:
            self._instr_pub.publish(conv.string_msg(instruction, self._types))
        self._timer = self.create_timer(self._period, self._on_timer)
        self.get_logger().info(
            f'MuJoCo Franka scene (seed {seed}, cubes ' +
            ', '.join(f'{c} at ({p[0]:.2f}, {p[1]:.2f})' for c, p in self.cubes.items()) +
            f'); commands on {self._cmd_topic}; instruction {instruction!r}')

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_command(self, msg: JointTrajectory) -> None:
        now = self._now()
        try:
            names, pos, tfs = conv.trajectory_to_arrays(msg, source=self._cmd_topic)
            self.core.on_trajectory(names, pos, tfs, conv.stamp_to_sec(msg.header.stamp), now,
                                    source=self._cmd_topic)
        except CommandRejected:                 # the core logged the edge (if any): see log_edge
            pass
        except (KeyError, ValueError) as exc:   # a message the conversion cannot read: same condition
            self.core.set_condition(REJECTED, True, cli.error_message(exc), tag='malformed')

    def _on_timer(self) -> None:
        now = self._now()
        self.core.tick(now)
        self.sim.step(self._period)
        s = self.sim.read()
        self._js_pub.publish(conv.arrays_to_joint_state(FRANKA_PANDA.joint_names, s.positions, now, self._types,
                                                        velocities=s.velocities))
        if self._ticks % self._camera_every == 0:
            self._img_pub.publish(conv.numpy_to_image(self.sim.render(), now, self._types))
            if self._wrist_pub is not None:
                self._wrist_pub.publish(conv.numpy_to_image(self.sim.render('wrist'), now, self._types,
                                                            frame_id='wrist_camera_optical_frame'))
        self._ticks += 1

    def destroy_node(self) -> None:
        self.sim.close()
        super().destroy_node()


def main(args: Optional[list] = None) -> None:
    """``ros2 run robot_drivers sim_node [--ros-args -p seed:=3 -p instruction:='pick up the red cube']``."""
    run_node(SimNode, args)


if __name__ == '__main__':
    main()
