"""wheel_loader.launch.py and articulated_truck.launch.py without running ROS: their structure (AST),
their agreement with config/<machine>.yaml, with the parameters the nodes declare and with the
machine definitions (groups, output adapters, the TwistStamped input).
"""
import ast
import pathlib

import pytest
import yaml

from robot_drivers.adapters import build_adapters, get_adapter
from robot_drivers.machine import get_machine
from vla_policy.node_core import parameter_defaults

PKG = pathlib.Path(__file__).resolve().parents[1]
MACHINES = ('wheel_loader', 'articulated_truck')
DRIVER_NODE_SRC = PKG.parents[0] / 'robot_drivers' / 'robot_drivers' / 'machine_driver_node.py'
ARGS = {'params_file', 'checkpoint', 'policy_endpoint', 'autostart', 'use_sim_time'}


def _tree(machine):
    path = PKG / 'launch' / f'{machine}.launch.py'
    return ast.parse(path.read_text(encoding='utf-8'), filename=str(path))


def _config(machine):
    return yaml.safe_load((PKG / 'config' / f'{machine}.yaml').read_text(encoding='utf-8'))


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
    """ROS 2 parameter files: nested mappings are dotted parameter names (``outputs.base``)."""
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


@pytest.mark.parametrize('machine', MACHINES)
def test_both_nodes_end_the_launch_as_in_the_franka_launch(machine):
    tree = _tree(machine)
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
    machine_const = [n for n in ast.walk(tree) if isinstance(n, ast.Assign)
                     and getattr(n.targets[0], 'id', None) == 'MACHINE']
    assert len(machine_const) == 1 and _literal(machine_const[0].value) == machine


@pytest.mark.parametrize('machine', MACHINES)
def test_arguments_are_declared_described_and_the_params_file_is_the_machines(machine):
    tree = _tree(machine)
    declared = {}
    for c in _calls(tree, 'DeclareLaunchArgument'):
        assert _kw(c, 'description') is not None, f'launch argument {_literal(c.args[0])} has no description'
        declared[_literal(c.args[0])] = c
    assert set(declared) == ARGS
    assert _literal(_kw(declared['autostart'], 'default_value')) == 'true'
    assert _literal(_kw(declared['use_sim_time'], 'default_value')) == 'false'
    default = _kw(declared['params_file'], 'default_value')
    assert [_literal(e) for e in default.args[0].elts[1:]] == ['config', f'{machine}.yaml']
    used = {_literal(c.args[0]) for name in ('LaunchConfiguration', '_text') for c in _calls(tree, name)
            if c.args and isinstance(c.args[0], ast.Constant)}
    assert used <= set(declared), f'undeclared launch arguments: {used - set(declared)}'
    for name, call in _nodes(tree).items():
        dicts = [d for d in ast.walk(_kw(call, 'parameters')) if isinstance(d, ast.Dict)]
        assert 'use_sim_time' in {_literal(k) for d in dicts for k in d.keys}, f'{name} does not get use_sim_time'


@pytest.mark.parametrize('machine', MACHINES)
def test_every_yaml_parameter_is_one_the_node_declares(machine):
    cfg = _config(machine)
    assert set(cfg) == {'policy_node', 'machine_driver_node'}
    policy = _flatten(cfg['policy_node']['ros__parameters'])
    unknown = set(policy) - set(parameter_defaults())
    assert not unknown, f'config/{machine}.yaml policy_node sets undeclared parameters {unknown}'
    names, prefixes = _driver_declared()
    assert {'outputs.', 'output_adapters.', 'inputs.'} <= prefixes
    driver = _flatten(cfg['machine_driver_node']['ros__parameters'])
    unknown = {k for k in driver if k not in names and not any(k.startswith(p) for p in prefixes)}
    assert not unknown, f'config/{machine}.yaml machine_driver_node sets undeclared parameters {unknown}'
    for name, call in _nodes(_tree(machine)).items():
        section = cfg[name]['ros__parameters']
        dicts = [d for d in ast.walk(_kw(call, 'parameters')) if isinstance(d, ast.Dict)]
        for key in {_literal(k) for d in dicts for k in d.keys} - {'use_sim_time'}:
            assert key in section, f'launch sets {name}.{key}, which config/{machine}.yaml does not declare'


@pytest.mark.parametrize('machine', MACHINES)
def test_yaml_agrees_with_the_machine_definition(machine):
    m = get_machine(machine)
    emb = m.embodiment
    cfg = _config(machine)
    policy = cfg['policy_node']['ros__parameters']
    driver = cfg['machine_driver_node']['ros__parameters']
    assert driver['machine'] == policy['embodiment'] == machine
    assert driver['input_topic'] == policy['command_topic']
    assert driver['state_topic'] == policy['joint_states_topic'] == emb.state_topic
    assert policy['control_rate_hz'] == emb.control_rate_hz
    assert driver['rate_hz'] == m.control_rate_hz
    assert driver['watchdog_timeout_s'] == m.safety.watchdog_timeout_s
    groups = emb.groups_or_default()
    assert driver['outputs'] == {g.name: g.topic for g in groups}
    assert driver['output_adapters'] == {g.name: g.output for g in groups}
    assert driver['inputs'] == {i.name: i.topic for i in m.inputs}
    # rollouts record JointTrajectory rows only where the output is one: not these machines
    assert 'record_command_topic' not in policy
    # the alternative outputs the file's comments offer build for this machine
    alternatives = {'base': 'articulated_twist', **({'front': 'float64_array'} if 'front' in driver['outputs'] else {})}
    built = build_adapters(emb, outputs=alternatives, topics={g: f'/{machine}/{g}' for g in alternatives})
    assert {a.group.name: a.key for a in built if a.group.name in alternatives} == alternatives
    assert all(get_adapter(k) for k in driver['output_adapters'].values())
    for topic in (policy['image_topic'], policy['instruction_topic'], policy['command_topic'],
                  *driver['outputs'].values(), *driver['inputs'].values()):
        assert topic.startswith('/'), topic


@pytest.mark.parametrize('machine', MACHINES)
def test_the_launch_description_builds_with_launch_ros(machine):
    pytest.importorskip('launch_ros', reason='launch_ros (ROS 2) is not installed')
    from launch.actions import DeclareLaunchArgument
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from launch_ros.actions import LifecycleNode, Node
    ld = PythonLaunchDescriptionSource(str(PKG / 'launch' / f'{machine}.launch.py')
                                       ).try_get_launch_description_without_context()
    args = {e.name for e in ld.entities if isinstance(e, DeclareLaunchArgument)}
    assert args == ARGS
    assert len([e for e in ld.entities if isinstance(e, Node)]) == 2
    assert len([e for e in ld.entities if isinstance(e, LifecycleNode)]) == 1
