"""launch_testing: `ros2 launch vla_policy franka.launch.py sim:=true` brings up the whole graph.

Needs a sourced ROS 2 (Humble or Jazzy) with launch_testing; skipped elsewhere (the ROS-free parts
are covered by the other tests). Trains nothing: it builds a tiny film_cnn checkpoint from random
weights (the graph's wiring is under test, not the policy's skill), launches policy_node +
arm_driver_node + sim_node, and waits for a safe JointTrajectory on the controller topic; then a
plain (volatile) `ros2 topic pub`-style message changes the running policy_node's instruction.
The launch without a checkpoint and the launch file's structure: test_franka_launch_static.py.
"""
import os
import pathlib
import time
import unittest

import pytest

pytest.importorskip('rclpy', reason='rclpy (ROS 2) is not installed; launch tests run on a ROS 2 machine')
launch_testing = pytest.importorskip('launch_testing', reason='launch_testing (ROS 2) is not installed')

import launch  # noqa: E402
import launch_ros  # noqa: E402,F401
import rclpy  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from rcl_interfaces.srv import GetParameters  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from robot_drivers import conversions as conv  # noqa: E402
from robot_drivers.arm_driver_node import qos_profile  # noqa: E402
from robot_drivers.embodiment import FRANKA_PANDA  # noqa: E402
from robot_drivers.qos import COMMANDS  # noqa: E402

LAUNCH = pathlib.Path(__file__).resolve().parents[3] / 'launch' / 'franka.launch.py'


def _tiny_checkpoint(path):
    import torch
    from vla_policy.checkpoint import save_checkpoint
    from vla_policy.models.config import VLAConfig
    from vla_policy.models.tokenizer import WordTokenizer
    from vla_policy.models.vla import VLA
    from vla_policy.normalization import NormalizationStats
    import numpy as np
    torch.manual_seed(0)
    tok = WordTokenizer.build(['reach the red cube'], 16)
    cfg = VLAConfig.from_dict({'backbone': {'name': 'film_cnn', 'image_size': 32, 'channels': [8, 8],
                                            'vocab_size': tok.vocab_size}})
    rng = np.random.default_rng(0)
    q = FRANKA_PANDA.lower + (FRANKA_PANDA.upper - FRANKA_PANDA.lower) * rng.uniform(0.3, 0.7, (100, 8))
    stats = {'state': NormalizationStats.from_data(q.astype('float32')),
             'action': NormalizationStats.from_data(q.astype('float32'))}
    save_checkpoint(path, VLA(cfg).eval(), cfg, stats, tok, {})
    return path


@pytest.mark.launch_test
def generate_test_description():
    ckpt = _tiny_checkpoint(os.path.join(os.environ.get('TMPDIR', '/tmp'), 'vla_launch_test_ckpt'))
    return launch.LaunchDescription([
        launch.actions.IncludeLaunchDescription(
            PythonLaunchDescriptionSource(str(LAUNCH)),
            launch_arguments={'checkpoint': str(ckpt), 'sim': 'true'}.items()),
        launch_testing.actions.ReadyToTest(),
    ])


# unittest.TestCase: launch_testing loads the active tests with unittest's loader, which finds no
# tests in a plain class (the launch then passes with 'Ran 0 tests').
class TestGraph(unittest.TestCase):
    def test_safe_trajectory_reaches_the_controller_topic(self):
        rclpy.init()
        node = rclpy.create_node('launch_probe')
        got = []
        node.create_subscription(JointTrajectory, '/arm_controller/joint_trajectory', got.append,
                                 qos_profile(COMMANDS))
        end = time.time() + 60.0
        try:
            while time.time() < end and len(got) < 20:
                rclpy.spin_once(node, timeout_sec=0.1)
        finally:
            node.destroy_node()
            rclpy.shutdown()
        assert len(got) >= 20, 'arm driver published no commands within 60 s'
        names, pos, _ = conv.trajectory_to_arrays(got[-1])
        q = pos[0][FRANKA_PANDA.index_of(names)]
        assert (q >= FRANKA_PANDA.lower - 1e-9).all() and (q <= FRANKA_PANDA.upper + 1e-9).all()

    def test_plain_topic_pub_changes_the_running_policy_instruction(self):
        rclpy.init()
        node = rclpy.create_node('instruction_probe')
        plain = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
        pub = node.create_publisher(String, '/vla/instruction', plain)
        client = node.create_client(GetParameters, '/policy_node/get_parameters')
        text = 'reach the green cube'
        current = None
        end = time.time() + 60.0
        try:
            while time.time() < end and current != text:
                rclpy.spin_once(node, timeout_sec=0.1)
                if pub.get_subscription_count() >= 1 and client.service_is_ready():
                    pub.publish(String(data=text))
                    fut = client.call_async(GetParameters.Request(names=['instruction']))
                    rclpy.spin_until_future_complete(node, fut, timeout_sec=5.0)
                    if fut.done() and fut.result() is not None:
                        current = fut.result().values[0].string_value
        finally:
            node.destroy_node()
            rclpy.shutdown()
        assert current == text, f'policy_node instruction is {current!r} after publishing {text!r}'

    def test_the_launch_activates_policy_node_which_reports_diagnostics(self):
        from diagnostic_msgs.msg import DiagnosticArray
        from lifecycle_msgs.srv import GetState
        rclpy.init()
        node = rclpy.create_node('lifecycle_probe')
        diags = []
        node.create_subscription(DiagnosticArray, '/diagnostics',
                                 lambda m: diags.extend(s for s in m.status if s.name.startswith('policy_node:')),
                                 qos_profile(COMMANDS))
        client = node.create_client(GetState, '/policy_node/get_state')
        label = None
        end = time.time() + 60.0
        try:
            while time.time() < end and (label != 'active' or not diags):
                rclpy.spin_once(node, timeout_sec=0.1)
                if label != 'active' and client.service_is_ready():
                    fut = client.call_async(GetState.Request())
                    rclpy.spin_until_future_complete(node, fut, timeout_sec=5.0)
                    if fut.done() and fut.result() is not None:
                        label = fut.result().current_state.label
        finally:
            node.destroy_node()
            rclpy.shutdown()
        assert label == 'active', f'policy_node is {label!r}, the launch should have activated it'
        assert diags, 'policy_node published nothing on /diagnostics'
        keys = {kv.key for kv in diags[-1].values}
        assert {'state', 'inference latency p99 (ms)', 'image age (s)', 'dropped ticks'} <= keys
