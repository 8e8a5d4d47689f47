"""excavator.launch.py without running ROS: its structure (AST), its agreement with
config/excavator.yaml, with the parameters the nodes declare and with the excavator machine."""
import ast
import pathlib

import pytest
import yaml

import robot_drivers.machines.excavator  # noqa: F401  (registers excavator_zx200)
from robot_drivers.adapters import build_adapters
from robot_drivers.machine import get_machine
from robot_drivers.robot_config import RobotTopics
from vla_policy.node_core import parameter_defaults

PKG = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = PKG / 'launch' / 'excavator.launch.py'
CONFIG = PKG / 'config' / 'excavator.yaml'
DRIVER_NODE_SRC = PKG.parents[0] / 'robot_drivers' / 'robot_drivers' / 'machine_driver_node.py'


def _tree():
    return ast.parse(LAUNCH.read_text(encoding='utf-8'), filename=str(LAUNCH))


def _config():
    return yaml.safe_load(CONFIG.read_text(encoding='utf-8'))


def _calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, 'id', getattr(n.func, 'attr', None)) == name]


def _kw(call, name):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _literal(node):
    return ast.literal_eval(node) if node is not None else None


def _nodes(tree):
    return {_literal(_kw(c, 'name')): c for c in _calls(tree, 'Node') + _calls(tree, 'LifecycleNode')}


def _function(tree, name):
    return next(f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name == name)


def _flatten(params, prefix=''):
    """ROS 2 parameter files: nested mappings are dotted parameter names (``outputs.front``)."""
    out = {}
    for k, v in params.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f'{prefix}{k}.'))
        else:
            out[f'{prefix}{k}'] = v
    return out


def _driver_declared():
    """(literal parameter names, f-string prefixes) machine_driver_node declares."""
    tree = ast.parse(DRIVER_NODE_SRC.read_text(encoding='utf-8'))
    names, prefixes = set(), set()
    for c in _calls(tree, 'declare_parameter'):
        arg = c.args[0]
        if isinstance(arg, ast.Constant):
            names.add(arg.value)
        elif isinstance(arg, ast.JoinedStr) and isinstance(arg.values[0], ast.Constant):
            prefixes.add(arg.values[0].value)
    return names, prefixes


def test_both_nodes_end_the_launch_as_in_the_franka_launch():
    tree = _tree()
    nodes = _nodes(tree)
    assert set(nodes) == {'policy_node', 'machine_driver_node'}
    assert _literal(_kw(nodes['machine_driver_node'], 'executable')) == 'machine_driver_node'
    assert _literal(_kw(nodes['machine_driver_node'], 'package')) == 'robot_drivers'
    assert _literal(_kw(nodes['policy_node'], 'package')) == 'vla_policy'
    for helper in ('_required', '_end_on_failure'):
        shutdowns = _calls(_function(tree, helper), 'Shutdown')
        assert len(shutdowns) == 1 and _kw(shutdowns[0], 'reason') is not None, helper
    expected = {'policy_node': '_end_on_failure', 'machine_driver_node': '_required'}
    for name, call in nodes.items():
        on_exit = _kw(call, 'on_exit')
        assert isinstance(on_exit, ast.Call), f'{name} lacks on_exit'
        assert (on_exit.func.id, _literal(on_exit.args[0])) == (expected[name], name)
    assert _literal(_kw(_calls(tree, 'LifecycleNode')[0], 'name')) == 'policy_node'
    handlers = _calls(_function(tree, '_lifecycle'), 'OnStateTransition')
    assert {(_literal(_kw(h, 'start_state')), _literal(_kw(h, 'goal_state'))) for h in handlers} == \
        {('configuring', 'inactive'), ('configuring', 'unconfigured')}
    for c in _calls(_function(tree, '_lifecycle'), 'RegisterEventHandler'):
        cond = _kw(c, 'condition')
        assert isinstance(cond, ast.Call) and cond.func.id == 'IfCondition'


def test_arguments_are_declared_described_and_the_params_file_is_the_excavators():
    tree = _tree()
    declared = {}
    for c in _calls(tree, 'DeclareLaunchArgument'):
        assert _kw(c, 'description') is not None, f'launch argument {_literal(c.args[0])} has no description'
        declared[_literal(c.args[0])] = c
    assert set(declared) == {'params_file', 'checkpoint', 'policy_endpoint', 'autostart', 'use_sim_time',
                             'instruction'}
    assert _literal(_kw(declared['autostart'], 'default_value')) == 'true'
    assert _literal(_kw(declared['use_sim_time'], 'default_value')) == 'false'
    assert _literal(_kw(declared['instruction'], 'default_value')) == ''
    default = _kw(declared['params_file'], 'default_value')
    assert [_literal(e) for e in default.args[0].elts[1:]] == ['config', 'excavator.yaml']
    used = {_literal(c.args[0]) for name in ('LaunchConfiguration', '_text') for c in _calls(tree, name)
            if c.args and isinstance(c.args[0], ast.Constant)}
    assert used <= set(declared), f'undeclared launch arguments: {used - set(declared)}'
    for name, call in _nodes(tree).items():
        dicts = [d for d in ast.walk(_kw(call, 'parameters')) if isinstance(d, ast.Dict)]
        assert 'use_sim_time' in {_literal(k) for d in dicts for k in d.keys}, f'{name} does not get use_sim_time'


def test_default_checkpoint_is_the_one_in_the_yaml():
    tree = _tree()
    const = next(n for n in tree.body if isinstance(n, ast.Assign)
                 and getattr(n.targets[0], 'id', '') == 'DEFAULT_CHECKPOINT')
    declared = {_literal(c.args[0]): c for c in _calls(tree, 'DeclareLaunchArgument')}
    assert getattr(_kw(declared['checkpoint'], 'default_value'), 'id', None) == 'DEFAULT_CHECKPOINT'
    assert _config()['policy_node']['ros__parameters']['checkpoint'] == _literal(const.value)


def test_every_yaml_parameter_is_one_the_node_declares():
    cfg = _config()
    assert set(cfg) == {'policy_node', 'machine_driver_node'}
    policy = _flatten(cfg['policy_node']['ros__parameters'])
    unknown = sorted(set(policy) - set(parameter_defaults()))
    assert not unknown, f'policy_node does not declare {unknown}'
    names, prefixes = _driver_declared()
    driver = _flatten(cfg['machine_driver_node']['ros__parameters'])
    unknown = sorted(k for k in driver if k not in names and not any(k.startswith(p) for p in prefixes))
    assert not unknown, f'machine_driver_node does not declare {unknown}'
    # every key the launch sets beside the file exists in the file
    for name, call in _nodes(_tree()).items():
        dicts = [d for d in ast.walk(_kw(call, 'parameters')) if isinstance(d, ast.Dict)]
        section = _flatten(cfg[name]['ros__parameters'])
        for key in {_literal(k) for d in dicts for k in d.keys} - {'use_sim_time'}:
            assert key in section, f'launch sets {name}.{key}, which config/excavator.yaml does not declare'


def test_config_names_the_excavator_and_its_com3_topics():
    cfg = _config()
    pol = cfg['policy_node']['ros__parameters']
    drv = cfg['machine_driver_node']['ros__parameters']
    machine = get_machine(drv['machine'])
    emb = machine.embodiment
    assert pol['embodiment'] == drv['machine'] == 'excavator_zx200' == emb.name
    assert pol['control_rate_hz'] == emb.control_rate_hz
    assert drv['rate_hz'] == machine.control_rate_hz
    assert drv['watchdog_timeout_s'] == machine.safety.watchdog_timeout_s
    assert drv['state_topic'] == pol['joint_states_topic'] == emb.state_topic
    assert drv['input_topic'] == pol['command_topic']
    assert drv['outputs'] == {g.name: g.topic for g in emb.groups}
    assert drv['output_adapters'] == {g.name: g.output for g in emb.groups}
    adapters = build_adapters(emb, drv['outputs'], drv['output_adapters'])
    published = {t: m for ad in adapters for t, m in ad.topics() + ad.estop_topics()}
    assert published['/zx200/front_cmd'] == published['/zx200/tracks_cmd'] == 'com3_msgs/msg/JointCmd'
    assert published['/zx200/emg_stop'] == 'std_msgs/msg/Bool'
    for joint in ('swing', 'boom', 'arm', 'bucket'):
        assert published[f'/zx200/{joint}/cmd'] == 'std_msgs/msg/Float64'
    topics = RobotTopics.from_params_file(CONFIG)   # recording / training read the same file
    assert (topics.image, topics.joint_states, topics.policy_command) == \
        ('/zx200/camera/image_raw', '/zx200/joint_state', '/vla/joint_trajectory')


def test_the_launch_description_builds_with_launch_ros():
    pytest.importorskip('launch_ros', reason='launch_ros (ROS 2) is not installed')
    from launch.actions import DeclareLaunchArgument
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from launch_ros.actions import LifecycleNode, Node
    ld = PythonLaunchDescriptionSource(str(LAUNCH)).try_get_launch_description_without_context()
    args = [e for e in ld.entities if isinstance(e, DeclareLaunchArgument)]
    assert {a.name for a in args} >= {'checkpoint', 'instruction', 'params_file'}
    assert len([e for e in ld.entities if isinstance(e, Node)]) == 2
    assert len([e for e in ld.entities if isinstance(e, LifecycleNode)]) == 1
