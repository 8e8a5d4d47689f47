"""rclpy graph tests of policy_node's instruction sources (needs a sourced ROS 2; skipped elsewhere).

A user changes the instruction three ways, and each one must reach the running node:
``ros2 topic pub`` (a plain, volatile publisher), a latched publisher that published before the
node started (transient local, like sim_node), and ``ros2 param set`` (the SetParameters service).
The instruction logic itself is tested ROS-free in test_node_core.py.
"""
import os
import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy', reason='rclpy (ROS 2) is not installed; node tests run on a ROS 2 machine')

from rcl_interfaces.msg import Log  # noqa: E402
from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rcl_interfaces.msg import ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from robot_drivers.embodiment import FRANKA_PANDA  # noqa: E402
from vla_policy.policy_node import PolicyNode  # noqa: E402

# `ros2 topic pub` defaults: reliable, volatile, keep last 10; sim_node's latched publisher.
PLAIN = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
SPIN_LIMIT_S = 20.0   # upper bound on waiting for discovery + delivery; nothing asserts on time


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """A tiny random-weight film_cnn checkpoint (the node's wiring is under test, not the skill)."""
    import torch
    from vla_policy.checkpoint import save_checkpoint
    from vla_policy.models.config import VLAConfig
    from vla_policy.models.tokenizer import WordTokenizer
    from vla_policy.models.vla import VLA
    from vla_policy.normalization import NormalizationStats
    torch.manual_seed(0)
    tok = WordTokenizer.build(['reach the red cube'], 16)
    cfg = VLAConfig.from_dict({'backbone': {'name': 'film_cnn', 'image_size': 32, 'channels': [8, 8],
                                            'vocab_size': tok.vocab_size}})
    q = FRANKA_PANDA.lower + (FRANKA_PANDA.upper - FRANKA_PANDA.lower) * \
        np.random.default_rng(0).uniform(0.3, 0.7, (100, 8))
    stats = {'state': NormalizationStats.from_data(q.astype('float32')),
             'action': NormalizationStats.from_data(q.astype('float32'))}
    path = tmp_path_factory.mktemp('ckpt') / 'checkpoint'
    save_checkpoint(path, VLA(cfg).eval(), cfg, stats, tok, {})
    return path


@pytest.fixture
def graph(request, checkpoint):
    """(executor, probe node, make_policy_node(**params), instruction topic) with unique names."""
    rclpy.init()
    tag = f'{os.getpid()}_{request.node.name}'.replace('[', '_').replace(']', '_').replace('-', '_')
    topic = f'/test_policy_node/instruction_{tag}'
    probe = rclpy.create_node(f'probe_{tag}')
    ex = SingleThreadedExecutor()
    ex.add_node(probe)
    made = []

    def make(**params):
        params = dict({'checkpoint': str(checkpoint), 'instruction_topic': topic,
                       'image_topic': f'/test_policy_node/image_{tag}',
                       'joint_states_topic': f'/test_policy_node/joints_{tag}',
                       'command_topic': f'/test_policy_node/command_{tag}'}, **params)
        node = PolicyNode(f'policy_node_{tag}', parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        ex.add_node(node)
        made.append(node)
        return node

    yield ex, probe, make, topic
    for n in made + [probe]:
        ex.remove_node(n)
        n.destroy_node()
    rclpy.shutdown()


def _spin_until(ex, cond):
    end = time.monotonic() + SPIN_LIMIT_S
    while not cond() and time.monotonic() < end:
        ex.spin_once(timeout_sec=0.05)
    return cond()


def _instruction_events(node):
    return [e.detail for e in node.runtime.events if e.kind == 'instruction']


def test_plain_volatile_publisher_changes_the_instruction(graph):
    ex, probe, make, topic = graph
    node = make()
    rosout = []
    probe.create_subscription(
        Log, '/rosout', lambda m: rosout.append(m.msg) if m.name.endswith(node.get_name()) else None,
        QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    pub = probe.create_publisher(String, topic, PLAIN)
    assert _spin_until(ex, lambda: pub.get_subscription_count() >= 1), 'the node never matched a volatile publisher'
    pub.publish(String(data='reach the green cube'))
    assert _spin_until(ex, lambda: node.instruction == 'reach the green cube')
    # the parameter follows the topic, so `ros2 param get` shows the instruction in use
    assert node.get_parameter('instruction').value == 'reach the green cube'
    assert _instruction_events(node) == ['reach the green cube']
    # The transient-local subscription's rejection of this publisher is by design, not a warning
    # (rclpy's default: "offering incompatible QoS. No messages will be received from it"). Matching
    # precedes delivery, so a warning would be on /rosout before the instruction's own line.
    assert _spin_until(ex, lambda: any('instruction from topic' in m for m in rosout)), rosout
    assert not [m for m in rosout if 'incompatible QoS' in m], rosout


def test_latched_value_published_before_the_node_started(graph):
    ex, probe, make, topic = graph
    pub = probe.create_publisher(String, topic, LATCHED)
    pub.publish(String(data='pick up the blue cube'))
    node = make()
    assert _spin_until(ex, lambda: node.instruction == 'pick up the blue cube')
    # A live latched message reaches both subscriptions and is one change, not two.
    assert _spin_until(ex, lambda: pub.get_subscription_count() >= 2), 'both subscriptions should match'
    pub.publish(String(data='reach the red cube'))
    assert _spin_until(ex, lambda: node.instruction == 'reach the red cube')
    for _ in range(20):
        ex.spin_once(timeout_sec=0.05)
    assert _instruction_events(node) == ['pick up the blue cube', 'reach the red cube']


def test_ros2_param_set_changes_the_instruction_and_rejects_empty(graph):
    ex, probe, make, topic = graph
    node = make(instruction='reach the red cube')
    assert node.instruction == 'reach the red cube'
    client = probe.create_client(SetParameters, f'{node.get_fully_qualified_name()}/set_parameters')
    assert _spin_until(ex, lambda: client.service_is_ready()), 'no set_parameters service'

    def set_instruction(text):
        req = SetParameters.Request(parameters=[ParameterMsg(
            name='instruction', value=ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=text))])
        fut = client.call_async(req)
        assert _spin_until(ex, fut.done)
        return fut.result().results[0]

    res = set_instruction('reach the blue cube')
    assert res.successful and node.instruction == 'reach the blue cube'
    res = set_instruction('   ')
    assert not res.successful and 'is empty' in res.reason
    assert node.instruction == 'reach the blue cube'
    assert node.get_parameter('instruction').value == 'reach the blue cube'
    # and a topic message still wins afterwards: the latest from any source
    pub = probe.create_publisher(String, topic, PLAIN)
    assert _spin_until(ex, lambda: pub.get_subscription_count() >= 1)
    pub.publish(String(data='pick up the green cube'))
    assert _spin_until(ex, lambda: node.instruction == 'pick up the green cube')
    assert _instruction_events(node) == ['reach the red cube', 'reach the blue cube', 'pick up the green cube']


def test_missing_checkpoint_fails_at_start_up_with_one_line(graph, tmp_path):
    _, _, make, _ = graph
    with pytest.raises(FileNotFoundError) as err:
        make(checkpoint=str(tmp_path / 'nope'))
    assert str(err.value) == (f"checkpoint '{tmp_path / 'nope'}' not found: run `make demo` "
                              'or pass checkpoint:=<dir>')
