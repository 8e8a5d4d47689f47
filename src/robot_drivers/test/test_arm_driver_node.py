"""arm_driver_node on a live ROS 2 graph: follows a trajectory, rejects NaN, holds on e-stop, and
publishes (and logs to /rosout) each condition once when it starts and once when it ends.

Needs a sourced ROS 2 (Humble or Jazzy) installation; skipped elsewhere. The ROS-free logic is
covered by test_hardware.py and test_safety.py.
"""
import os
import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy', reason='rclpy (ROS 2) is not installed; node tests run on a ROS 2 machine')

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rcl_interfaces.msg import Log  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Bool, String  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from robot_drivers import conversions as conv  # noqa: E402
from robot_drivers.arm_driver_node import ArmDriverNode, qos_profile  # noqa: E402
from robot_drivers.embodiment import FRANKA_PANDA  # noqa: E402
from robot_drivers.qos import COMMANDS, LATCHED, SENSOR_DATA  # noqa: E402

EMB = FRANKA_PANDA
NAMES = EMB.joint_names
READY = np.array([0.0, -np.pi / 4, 0.0, -3 * np.pi / 4, 0.0, np.pi / 2, np.pi / 4, 0.02])
RATE = 50.0


class FakeArm(Node):
    """Publishes joint states that follow the driver's output exactly; records outputs and events."""

    def __init__(self, prefix, driver_name):
        super().__init__('fake_arm_' + driver_name)
        self.types = conv.rclpy_types()
        self.q = READY.copy()
        self.outputs = []      # (positions (J,), time_from_start s, joint_names)
        self.events = []
        self.rosout = []       # /rosout lines of the driver node
        self.js_pub = self.create_publisher(JointState, prefix + '/joint_states', qos_profile(SENSOR_DATA))
        self.cmd_pub = self.create_publisher(JointTrajectory, prefix + '/vla/joint_trajectory', qos_profile(COMMANDS))
        self.estop_pub = self.create_publisher(Bool, f'/{driver_name}/emergency_stop', qos_profile(LATCHED))
        self.create_subscription(JointTrajectory, prefix + '/arm_controller/joint_trajectory', self._on_out,
                                 qos_profile(COMMANDS))
        self.create_subscription(String, f'/{driver_name}/events', lambda m: self.events.append(m.data),
                                 qos_profile(COMMANDS))
        self.create_subscription(Log, '/rosout', lambda m: self._on_log(m, driver_name), 100)
        self.create_timer(1.0 / RATE, self._publish_state)

    def _on_out(self, msg):
        names, pos, tfs = conv.trajectory_to_arrays(msg, source='output')
        assert pos.shape == (1, len(names))
        q = pos[0][EMB.index_of(names)]
        self.outputs.append((q, float(tfs[0]), names))
        self.q = q                      # perfect tracking

    def _on_log(self, msg, driver_name):
        if msg.name.split('.')[-1] == driver_name:
            self.rosout.append(msg.msg)

    def _publish_state(self):
        now = self.get_clock().now().nanoseconds * 1e-9
        self.js_pub.publish(conv.arrays_to_joint_state(NAMES, self.q, now, self.types))

    def send(self, positions, tfs):
        now = self.get_clock().now().nanoseconds * 1e-9
        self.cmd_pub.publish(conv.arrays_to_trajectory(NAMES, positions, now, self.types, times=np.asarray(tfs)))


@pytest.fixture
def graph():
    rclpy.init()
    prefix = f'/t{os.getpid()}'
    name = f'arm_driver_t{os.getpid()}'
    driver = ArmDriverNode(node_name=name, parameter_overrides=[
        Parameter('input_topic', value=prefix + '/vla/joint_trajectory'),
        Parameter('output_topic', value=prefix + '/arm_controller/joint_trajectory'),
        Parameter('state_topic', value=prefix + '/joint_states'),
        Parameter('rate_hz', value=RATE),
        Parameter('watchdog_timeout_s', value=5.0),
    ])
    arm = FakeArm(prefix, name)
    ex = SingleThreadedExecutor()
    ex.add_node(driver)
    ex.add_node(arm)
    try:
        yield driver, arm, ex
    finally:
        ex.shutdown()
        driver.destroy_node()
        arm.destroy_node()
        rclpy.shutdown()


def spin_until(ex, cond, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ex.spin_once(timeout_sec=0.02)
        if cond():
            return True
    return False


def test_node_follows_trajectory_within_limits(graph):
    driver, arm, ex = graph
    assert spin_until(ex, lambda: len(arm.outputs) >= 5), 'driver published nothing'
    # before any command it holds the measured pose
    np.testing.assert_allclose(arm.outputs[-1][0], READY, atol=1e-9)
    goal = READY + np.array([0.2, -0.1, 0.15, 0.2, -0.2, 0.1, 0.3, 0.01])
    over = goal.copy()
    over[3] = 0.3                        # beyond panda_joint4's upper limit (-0.0698 rad)
    arm.send(np.stack([goal, over]), [1.0, 1.5])
    expected = np.clip(over, EMB.lower, EMB.upper)
    assert spin_until(ex, lambda: np.allclose(arm.outputs[-1][0], expected, atol=1e-6)), \
        f'did not reach the clamped goal: {arm.outputs[-1][0]} vs {expected}'
    q = np.array([o[0] for o in arm.outputs])
    assert np.all(q >= EMB.lower - 1e-12) and np.all(q <= EMB.upper + 1e-12)
    assert all(o[1] == pytest.approx(1.0 / RATE) for o in arm.outputs)
    assert all(o[2] == NAMES for o in arm.outputs)
    # the setpoint sat at panda_joint4's limit for many ticks: one clamp start, no per-tick repeats
    n = len(arm.outputs)
    assert spin_until(ex, lambda: len(arm.outputs) >= n + 25)
    clamps = [e for e in arm.events if e.startswith('position_clamp panda_joint4 ')]
    assert len(clamps) == 1 and clamps[0].startswith('position_clamp panda_joint4 start: ')


def test_node_rejects_nan_and_holds_on_estop(graph):
    driver, arm, ex = graph
    assert spin_until(ex, lambda: len(arm.outputs) >= 5)
    bad = np.tile(READY, (2, 1))
    bad[1, 2] = np.nan
    for _ in range(3):       # repeated identical rejections: published once
        arm.send(bad, [0.5, 1.0])
    assert spin_until(ex, lambda: any(e.startswith('rejected start: ') and 'panda_joint3' in e for e in arm.events))
    n = len(arm.outputs)
    assert spin_until(ex, lambda: len(arm.outputs) >= n + 10)
    np.testing.assert_allclose(arm.outputs[-1][0], READY, atol=1e-9)   # still holding
    assert len([e for e in arm.events if e.startswith('rejected')]) == 1
    arm.estop_pub.publish(Bool(data=True))
    assert spin_until(ex, lambda: driver.core.estopped)
    goal = READY + 0.1
    arm.send(goal[None], [0.5])
    assert spin_until(ex, lambda: any('emergency stop is active' in e for e in arm.events))
    n = len(arm.outputs)
    assert spin_until(ex, lambda: len(arm.outputs) >= n + 20)
    np.testing.assert_allclose(arm.outputs[-1][0], READY, atol=1e-9)
    arm.estop_pub.publish(Bool(data=False))
    assert spin_until(ex, lambda: not driver.core.estopped)
    arm.send(goal[None], [0.5])
    assert spin_until(ex, lambda: np.allclose(arm.outputs[-1][0], np.clip(goal, EMB.lower, EMB.upper), atol=1e-6))
    assert spin_until(ex, lambda: any(e.startswith('rejected end: ') for e in arm.events))
    # (the goal's finger value is beyond the stroke: clamp and rate-limit edges come too, not listed here)
    assert [e.split(':')[0] for e in arm.events if e.startswith(('rejected ', 'estop '))] == [
        'rejected start',            # NaN, 3 times
        'estop start',
        'rejected end', 'rejected start',   # a new reason: emergency stop is active
        'estop end',
        'rejected end']              # the goal accepted


def test_persistent_estop_publishes_one_event_and_one_rosout_line(graph):
    driver, arm, ex = graph
    assert spin_until(ex, lambda: len(arm.outputs) >= 5)
    arm.estop_pub.publish(Bool(data=True))
    assert spin_until(ex, lambda: any(e.startswith('estop start: ') for e in arm.events))
    n = len(arm.outputs)
    ticks = 100                                          # 2 s of e-stop at 50 Hz
    assert spin_until(ex, lambda: len(arm.outputs) >= n + ticks), 'driver stopped publishing while e-stopped'
    for _ in range(10):                                  # let any late message arrive
        ex.spin_once(timeout_sec=0.02)
    events = [e for e in arm.events if not e.startswith('joint_state_')]   # start-up edges may come or not
    assert len(events) == 1 and events[0].startswith('estop start: '), events
    assert len([line for line in arm.rosout if 'estop' in line]) == 1
    np.testing.assert_allclose(arm.outputs[-1][0], READY, atol=1e-9)
    arm.estop_pub.publish(Bool(data=False))
    assert spin_until(ex, lambda: any(e.startswith('estop end: ') for e in arm.events))
    assert spin_until(ex, lambda: len([line for line in arm.rosout if 'estop' in line]) == 2)
