"""The machine launch files (launch/<machine>.launch.py) without running ROS: each is
``vla_policy.launch_common.machine_launch_description`` over its config/<machine>.yaml; the shared
graph's structure (AST), the configs' agreement with the parameters the nodes declare and with the
machine definitions. The real launches: test_machine_launches.py (launch_testing, on a ROS 2 machine).
"""
import ast
import pathlib

import pytest
import yaml

from robot_drivers.adapters import get_adapter
from robot_drivers.machine import get_machine
from vla_policy.node_core import parameter_defaults

PKG = pathlib.Path(__file__).resolve().parents[1]
COMMON = PKG / 'vla_policy' / 'launch_common.py'
DRIVER_NODE_SRC = PKG.parents[0] / 'robot_drivers' / 'robot_drivers' / 'machine_driver_node.py'
#: every machine launch file but the Franka's (franka.launch.py has its own graph and tests)
LAUNCHES = sorted(p.name[:-len('.launch.py')] for p in (PKG / 'launch').glob('*.launch.py')
                  if p.name not in ('franka.launch.py', 'franka_gazebo.launch.py', 'record.launch.py'))
ARGS = {'params_file', 'checkpoint', 'policy_endpoint', 'instruction', 'autostart', 'use_sim_time'}


def _parse(path):
    return ast.parse(path.read_text(encoding='utf-8'), filename=str(path))


def _calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, 'id', getattr(n.func, 'attr', None)) == name]


def _kw(call, name):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _literal(node):
    return ast.literal_eval(node) if node is not None else None


def _function(tree, name):
    return next(f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name == name)


def _flatten(params, prefix=''):
    """ROS 2 parameter files: nested mappings are dotted parameter names (``outputs.arm``)."""
    out = {}
    for k, v in params.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f'{prefix}{k}.'))
        else:
            out[f'{prefix}{k}'] = v
    return out


def _constant(tree, name):
    node = next((n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], 'id', '') == name), None)
    return None if node is None else _literal(node.value)


def _cases():
    """(launch stem, machine, config file) for every machine each launch file starts: a file for one
    machine names its config and MACHINE; a file for several (humanoid.launch.py) has MACHINES and
    selects config/<machine>.yaml with its ``machine`` argument."""
    out = []
    for stem in LAUNCHES:
        tree = _parse(PKG / 'launch' / f'{stem}.launch.py')
        (call,) = _calls(tree, 'machine_launch_description')
        if _constant(tree, 'MACHINES') is not None:
            out += [(stem, m, f'{m}.yaml') for m in _constant(tree, 'MACHINES')]
        else:
            out.append((stem, _constant(tree, 'MACHINE'), _literal(call.args[0])))
    return out


CASES = _cases()
IDS = [f'{stem}-{machine}' for stem, machine, _ in CASES]


def _launch(stem):
    return _parse(PKG / 'launch' / f'{stem}.launch.py')


def _config(cfg_name):
    return yaml.safe_load((PKG / 'config' / cfg_name).read_text(encoding='utf-8'))


def test_there_is_a_launch_file_per_machine_class():
    classes = {get_machine(machine).embodiment.machine_class for _, machine, _ in CASES}
    assert classes == {'arm', 'humanoid', 'excavator', 'wheel_loader', 'articulated_truck'}


def test_shared_graph_ends_the_launch_as_the_franka_launch():
    tree = _parse(COMMON)
    nodes = {_literal(_kw(c, 'name')): c for c in _calls(tree, 'Node') + _calls(tree, 'LifecycleNode')}
    assert set(nodes) == {'policy_node', 'machine_driver_node'}
    assert _literal(_kw(nodes['machine_driver_node'], 'executable')) == 'machine_driver_node'
    assert _literal(_kw(nodes['machine_driver_node'], 'package')) == 'robot_drivers'
    assert _literal(_kw(nodes['policy_node'], 'package')) == 'vla_policy'
    for helper in ('required', 'end_on_failure'):
        shutdowns = _calls(_function(tree, helper), 'Shutdown')
        assert len(shutdowns) == 1 and _kw(shutdowns[0], 'reason') is not None, helper
    expected = {'policy_node': 'end_on_failure', 'machine_driver_node': 'required'}
    for name, call in nodes.items():
        on_exit = _kw(call, 'on_exit')
        assert isinstance(on_exit, ast.Call), f'{name} lacks on_exit'
        assert (on_exit.func.id, _literal(on_exit.args[0])) == (expected[name], name)
    handlers = _calls(_function(tree, 'lifecycle_actions'), 'OnStateTransition')
    assert {(_literal(_kw(h, 'start_state')), _literal(_kw(h, 'goal_state'))) for h in handlers} == \
        {('configuring', 'inactive'), ('configuring', 'unconfigured')}
    declared = {}
    for c in _calls(tree, 'DeclareLaunchArgument'):
        assert _kw(c, 'description') is not None, f'launch argument {_literal(c.args[0])} has no description'
        declared[_literal(c.args[0])] = c
    assert set(declared) == ARGS
    assert _literal(_kw(declared['autostart'], 'default_value')) == 'true'
    assert _literal(_kw(declared['use_sim_time'], 'default_value')) == 'false'
    used = {_literal(c.args[0]) for name in ('LaunchConfiguration', 'text_param') for c in _calls(tree, name)
            if c.args and isinstance(c.args[0], ast.Constant)}
    assert used <= set(declared), f'undeclared launch arguments: {used - set(declared)}'
    for name, call in nodes.items():
        dicts = [d for d in ast.walk(_kw(call, 'parameters')) if isinstance(d, ast.Dict)]
        assert 'use_sim_time' in {_literal(k) for d in dicts for k in d.keys}, f'{name} does not get use_sim_time'


def _driver_declared():
    """(literal parameter names, f-string prefixes) machine_driver_node declares."""
    tree = _parse(DRIVER_NODE_SRC)
    names, prefixes = set(), set()
    for c in _calls(tree, 'declare_parameter'):
        arg = c.args[0]
        if isinstance(arg, ast.Constant):
            names.add(arg.value)
        elif isinstance(arg, ast.JoinedStr) and isinstance(arg.values[0], ast.Constant):
            prefixes.add(arg.values[0].value)
    return names, prefixes


@pytest.mark.parametrize('stem,machine,cfg_name', CASES, ids=IDS)
def test_every_yaml_parameter_is_one_the_node_declares(stem, machine, cfg_name):
    cfg = _config(cfg_name)
    assert {'policy_node', 'machine_driver_node'} <= set(cfg)
    policy = _flatten(cfg['policy_node']['ros__parameters'])
    unknown = set(policy) - set(parameter_defaults())
    assert not unknown, f'{stem}: policy_node sets undeclared parameters {unknown}'
    names, prefixes = _driver_declared()
    driver = _flatten(cfg['machine_driver_node']['ros__parameters'])
    unknown = {k for k in driver if k not in names and not any(k.startswith(p) for p in prefixes)}
    assert not unknown, f'{stem}: machine_driver_node sets undeclared parameters {unknown}'
    # the launch's own policy_node parameters are in the file too (the file documents every parameter)
    common = _parse(COMMON)
    (lifecycle,) = _calls(common, 'LifecycleNode')
    keys = {_literal(k) for d in ast.walk(_kw(lifecycle, 'parameters')) if isinstance(d, ast.Dict) for k in d.keys}
    for key in keys - {'use_sim_time'}:
        assert key in cfg['policy_node']['ros__parameters'], f'launch sets policy_node.{key}, {stem} yaml lacks it'


@pytest.mark.parametrize('stem,machine_name,cfg_name', CASES, ids=IDS)
def test_yaml_agrees_with_the_machine_definition(stem, machine_name, cfg_name):
    cfg = _config(cfg_name)
    policy = cfg['policy_node']['ros__parameters']
    driver = cfg['machine_driver_node']['ros__parameters']
    m = get_machine(driver['machine'])
    emb = m.embodiment
    assert driver['machine'] == policy['embodiment'] == machine_name == emb.name
    assert driver['input_topic'] == policy['command_topic']
    assert driver['state_topic'] == policy['joint_states_topic']
    assert policy.get('control_rate_hz', emb.control_rate_hz) == emb.control_rate_hz
    assert driver.get('rate_hz', m.control_rate_hz) == m.control_rate_hz
    groups = {g.name: g for g in emb.groups_or_default()}
    assert set(driver.get('outputs', {})) <= set(groups)
    for g, key in driver.get('output_adapters', {}).items():
        assert g in groups and get_adapter(key)
    assert set(driver.get('inputs', {})) <= {i.name for i in m.inputs}
    for topic in (policy['image_topic'], policy['instruction_topic'], policy['command_topic'],
                  *driver.get('outputs', {}).values(), *driver.get('inputs', {}).values()):
        assert topic.startswith('/'), topic


@pytest.mark.parametrize('stem,machine,cfg_name', CASES, ids=IDS)
def test_default_checkpoint_is_the_one_in_the_yaml(stem, machine, cfg_name):
    tree = _launch(stem)
    (call,) = _calls(tree, 'machine_launch_description')
    default = _kw(call, 'checkpoint_default')
    ckpt = _config(cfg_name)['policy_node']['ros__parameters'].get('checkpoint', '')
    if default is None:
        assert ckpt == '', f'{stem}: the yaml names checkpoint {ckpt!r} but the launch default is ""'
    else:
        assert _constant(tree, default.id) == ckpt


@pytest.mark.parametrize('stem', LAUNCHES)
def test_the_launch_description_builds_with_launch_ros(stem):
    pytest.importorskip('launch_ros', reason='launch_ros (ROS 2) is not installed')
    from launch.actions import DeclareLaunchArgument
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from launch_ros.actions import LifecycleNode, Node
    ld = PythonLaunchDescriptionSource(str(PKG / 'launch' / f'{stem}.launch.py')
                                       ).try_get_launch_description_without_context()
    assert ARGS <= {e.name for e in ld.entities if isinstance(e, DeclareLaunchArgument)}
    for e in ld.entities:
        if isinstance(e, DeclareLaunchArgument):
            assert e.description and e.description != 'no description given', e.name
    assert len([e for e in ld.entities if isinstance(e, Node)]) == 2
    assert len([e for e in ld.entities if isinstance(e, LifecycleNode)]) == 1
