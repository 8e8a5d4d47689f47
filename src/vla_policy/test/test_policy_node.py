"""rclpy graph tests of policy_node (needs a sourced ROS 2; skipped elsewhere).

The lifecycle: configure -> activate -> deactivate -> cleanup through the ``change_state``
service (what ``ros2 lifecycle set`` calls), commands only while active, ``/diagnostics`` carrying
the measured inference latencies, a rollout bag per activation that the training reader reads.

A user changes the instruction three ways, and each one must reach the running node:
``ros2 topic pub`` (a plain, volatile publisher), a latched publisher that published before the
node started (transient local, like sim_node), and ``ros2 param set`` (the SetParameters service).
The instruction logic itself is tested ROS-free in test_node_core.py, the diagnostics rules in
test_diagnostics.py, the recorder in test_rollout_recorder.py.
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

    def make(configure=True, **params):
        params = dict({'checkpoint': str(checkpoint), 'instruction_topic': topic,
                       'image_topic': f'/test_policy_node/image_{tag}',
                       'joint_states_topic': f'/test_policy_node/joints_{tag}',
                       'command_topic': f'/test_policy_node/command_{tag}'}, **params)
        node = PolicyNode(f'policy_node_{tag}', parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        ex.add_node(node)
        made.append(node)
        if configure:
            node.trigger_configure()
            assert node.configure_error is None, node.configure_error
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


def test_missing_checkpoint_fails_configure_with_one_line(graph, tmp_path):
    _, _, make, _ = graph
    node = make(configure=False, checkpoint=str(tmp_path / 'nope'))
    node.trigger_configure()
    assert isinstance(node.configure_error, FileNotFoundError)
    assert str(node.configure_error) == (f"checkpoint '{tmp_path / 'nope'}' not found: run `make demo` "
                                         'or pass checkpoint:=<dir>')
    assert node.lifecycle_state == 'unconfigured' and node.runtime is None


def _change_state(ex, probe, node, transition_id):
    """What `ros2 lifecycle set <node> <transition>` does: call the node's change_state service."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    client = probe.create_client(ChangeState, f'{node.get_fully_qualified_name()}/change_state')
    assert _spin_until(ex, client.service_is_ready), 'no change_state service'
    fut = client.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
    assert _spin_until(ex, fut.done)
    probe.destroy_client(client)
    return fut.result().success


def test_lifecycle_configure_activate_deactivate_cleanup(graph, tmp_path):
    """Commands only while active; /diagnostics with the measured latencies; a rollout per
    activation; cleanup stops the inference worker and frees the runtime."""
    from diagnostic_msgs.msg import DiagnosticArray
    from lifecycle_msgs.msg import Transition
    from sensor_msgs.msg import Image, JointState
    from trajectory_msgs.msg import JointTrajectory

    from robot_drivers import conversions as conv
    from robot_drivers.arm_driver_node import qos_profile
    from robot_drivers.qos import COMMANDS, SENSOR_DATA
    ex, probe, make, topic = graph
    node = make(configure=False, instruction='reach the red cube', inference='thread', control_rate_hz=10.0,
                diagnostics_period_s=0.2, record_rollouts=str(tmp_path / 'rollouts'))
    name = node.get_name()
    cmds, diags, status = [], [], []
    probe.create_subscription(JointTrajectory, node.get_parameter('command_topic').value, cmds.append,
                              qos_profile(COMMANDS))
    probe.create_subscription(DiagnosticArray, '/diagnostics',
                              lambda m: diags.extend(s for s in m.status if s.name.startswith(name + ':')),
                              qos_profile(COMMANDS))
    probe.create_subscription(String, f'{node.get_fully_qualified_name()}/status', lambda m: status.append(m.data),
                              qos_profile(COMMANDS))
    img_pub = probe.create_publisher(Image, node.get_parameter('image_topic').value, qos_profile(SENSOR_DATA))
    js_pub = probe.create_publisher(JointState, node.get_parameter('joint_states_topic').value,
                                    qos_profile(SENSOR_DATA))
    types = conv.rclpy_types()
    q = FRANKA_PANDA.lower + 0.5 * (FRANKA_PANDA.upper - FRANKA_PANDA.lower)

    def sensors():   # camera + joint states, stamped now (10 Hz from a probe timer)
        t = node.get_clock().now().nanoseconds * 1e-9
        img_pub.publish(conv.numpy_to_image(np.full((32, 32, 3), 120, np.uint8), t, types))
        js_pub.publish(conv.arrays_to_joint_state(FRANKA_PANDA.joint_names, q, t, types))
    timer = probe.create_timer(0.1, sensors)

    def diag_values(s):
        return {kv.key: kv.value for kv in s.values}

    # unconfigured: diagnostics say so, nothing is published
    assert _spin_until(ex, lambda: any(diag_values(s)['state'] == 'unconfigured' for s in diags))
    assert _change_state(ex, probe, node, Transition.TRANSITION_CONFIGURE)
    assert node.lifecycle_state == 'inactive' and node.runtime is not None
    worker_runtime = node.runtime
    n = len(diags)
    assert _spin_until(ex, lambda: any(diag_values(s)['state'] == 'inactive' for s in diags[n:]))
    assert cmds == [], 'an inactive lifecycle node must not publish commands'

    assert _change_state(ex, probe, node, Transition.TRANSITION_ACTIVATE)
    assert node.lifecycle_state == 'active'
    assert _spin_until(ex, lambda: len(cmds) >= 10), f'{len(cmds)} commands while active'

    def measured(s):
        v = diag_values(s)
        return v['state'] == 'active' and v['inference latency p50 (ms)'] != 'none' and int(v['inferences']) >= 3
    assert _spin_until(ex, lambda: any(measured(s) for s in diags))
    last = [s for s in diags if measured(s)][-1]
    v = diag_values(last)
    p50, p99 = float(v['inference latency p50 (ms)']), float(v['inference latency p99 (ms)'])
    assert 0 < p50 <= p99
    snap = node.runtime.snapshot(node.get_clock().now().nanoseconds * 1e-9)
    assert snap.latency_ms['p50'] is not None and snap.inferences >= int(v['inferences'])
    assert v['backend'] == 'thread' and v['instruction'] == 'reach the red cube'
    assert last.level in (b'\x00', b'\x01'), (last.level, last.message)   # OK, or WARN for a late tick
    assert any(line.startswith(('OK acting', 'WARN acting')) for line in status), status[-3:]

    assert _change_state(ex, probe, node, Transition.TRANSITION_DEACTIVATE)
    assert node.lifecycle_state == 'inactive'
    rollout = node.last_rollout
    assert rollout is not None and (rollout / 'metadata.yaml').is_file()
    for _ in range(5):   # let commands in flight arrive
        ex.spin_once(timeout_sec=0.05)
    n_cmds = len(cmds)
    for _ in range(30):
        ex.spin_once(timeout_sec=0.05)
    assert len(cmds) == n_cmds, 'commands published after deactivate'

    assert _change_state(ex, probe, node, Transition.TRANSITION_CLEANUP)
    assert node.lifecycle_state == 'unconfigured' and node.runtime is None
    assert not worker_runtime.backend.alive, 'the inference worker thread still runs after cleanup'
    probe.destroy_timer(timer)

    from rosbags.rosbag2 import Reader
    with Reader(rollout) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    executed = node.get_parameter('record_command_topic').value
    assert counts[executed] >= 5 and counts[topic] == 1, counts   # a row per tick; the instruction once
    assert counts[node.get_parameter('image_topic').value] >= 5
    import importlib.util
    if importlib.util.find_spec('vla_training') is None:   # `colcon test` of this package alone
        return
    from vla_training import bag_dataset
    topics = bag_dataset.BagTopics(image=node.get_parameter('image_topic').value,
                                   joint_states=node.get_parameter('joint_states_topic').value, instruction=topic,
                                   command=node.get_parameter('record_command_topic').value)
    ep = bag_dataset.read_episode(rollout, FRANKA_PANDA, topics)
    assert len(ep) >= 5 and set(ep.instructions) == {'reach the red cube'}
    assert ep.images.shape[1:] == (32, 32, 3)


def test_remote_policy_server_killed_mid_run_holds_and_recovers(graph, checkpoint):
    """policy_endpoint: the node takes the model's metadata from the server at configure; when
    the server dies the node publishes nothing and /diagnostics says why (ERROR); when a server
    is back on the same port, commands resume by themselves."""
    pytest.importorskip('websockets', reason='websockets is needed for the policy server')
    pytest.importorskip('msgpack', reason='msgpack is needed for the policy server')
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image, JointState
    from trajectory_msgs.msg import JointTrajectory

    from robot_drivers import conversions as conv
    from robot_drivers.arm_driver_node import qos_profile
    from robot_drivers.qos import COMMANDS, SENSOR_DATA
    from vla_policy.policy import VLAPolicy
    from vla_policy.policy_server import serve_policy
    ex, probe, make, topic = graph
    policy = VLAPolicy.from_checkpoint(checkpoint)
    server = serve_policy(policy, metadata=policy.metadata())
    port = server.port
    try:
        node = make(checkpoint='', policy_endpoint=f'ws://127.0.0.1:{port}', policy_timeout_s=0.5,
                    instruction='reach the red cube', inference='thread', diagnostics_period_s=0.2)
        name = node.get_name()
        cmds, diags = [], []
        probe.create_subscription(JointTrajectory, node.get_parameter('command_topic').value,
                                  lambda m: cmds.append(time.monotonic()), qos_profile(COMMANDS))
        probe.create_subscription(DiagnosticArray, '/diagnostics',
                                  lambda m: diags.extend(s for s in m.status if s.name.startswith(name + ':')),
                                  qos_profile(COMMANDS))
        img_pub = probe.create_publisher(Image, node.get_parameter('image_topic').value, qos_profile(SENSOR_DATA))
        js_pub = probe.create_publisher(JointState, node.get_parameter('joint_states_topic').value,
                                        qos_profile(SENSOR_DATA))
        types = conv.rclpy_types()
        q = FRANKA_PANDA.lower + 0.5 * (FRANKA_PANDA.upper - FRANKA_PANDA.lower)

        def sensors():
            t = node.get_clock().now().nanoseconds * 1e-9
            img_pub.publish(conv.numpy_to_image(np.full((32, 32, 3), 120, np.uint8), t, types))
            js_pub.publish(conv.arrays_to_joint_state(FRANKA_PANDA.joint_names, q, t, types))
        probe.create_timer(0.1, sensors)
        assert node.runtime.cfg.n_obs_steps == policy.metadata()['n_obs_steps']
        node.trigger_activate()
        assert _spin_until(ex, lambda: len(cmds) >= 5), 'no commands from the remote policy'

        server.stop()
        assert _spin_until(ex, lambda: diags and diags[-1].level == b'\x02'), 'no ERROR after the server died'
        assert 'not acting' in diags[-1].message, diags[-1].message
        held = len(cmds)
        for _ in range(20):
            ex.spin_once(timeout_sec=0.05)
        assert len(cmds) == held, 'commands published while the policy server is down'
        assert node.runtime.refusal is not None

        server = serve_policy(policy, port=port, metadata=policy.metadata())
        assert _spin_until(ex, lambda: len(cmds) >= held + 5), 'commands did not resume when the server returned'
        assert _spin_until(ex, lambda: diags[-1].level in (b'\x00', b'\x01') and 'acting' in diags[-1].message)
    finally:
        server.stop()
