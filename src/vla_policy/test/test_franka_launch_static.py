"""franka.launch.py without running ROS: its structure (AST), its agreement with config/franka.yaml
and the node's defaults; on a ROS 2 machine also the bare headline command on a missing checkpoint.

The launch_testing test (test_franka_launch.py) runs the whole graph on a ROS 2 machine; these
tests guard what a user meets first: ``ros2 launch vla_policy franka.launch.py`` without a
checkpoint ends the launch after one clear line instead of leaving the driver running.
"""
import ast
import os
import pathlib
import shutil
import subprocess

import pytest
import yaml

from vla_policy.node_core import DEFAULT_CHECKPOINT

PKG = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = PKG / 'launch' / 'franka.launch.py'
CONFIG = PKG / 'config' / 'franka.yaml'
REQUIRED_NODES = ('policy_node', 'arm_driver_node', 'sim_node')


def _tree():
    return ast.parse(LAUNCH.read_text(encoding='utf-8'), filename=str(LAUNCH))


def _calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, 'id', getattr(n.func, 'attr', None)) == name]


def _kw(call, name):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _literal(node):
    return ast.literal_eval(node) if node is not None else None


def _nodes(tree):
    return {_literal(_kw(c, 'name')): c for c in _calls(tree, 'Node') + _calls(tree, 'LifecycleNode')}


def _first_arg_names(tree, func):
    return {_literal(c.args[0]) for c in _calls(tree, func) if c.args and isinstance(c.args[0], ast.Constant)}


def _function(tree, name):
    return next(f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name == name)


def test_every_required_node_ends_the_launch_when_it_exits():
    tree = _tree()
    nodes = _nodes(tree)
    assert set(nodes) == set(REQUIRED_NODES)
    # _required / _end_on_failure make the Shutdown(reason=...) actions.
    for helper in ('_required', '_end_on_failure'):
        shutdowns = _calls(_function(tree, helper), 'Shutdown')
        assert len(shutdowns) == 1 and _kw(shutdowns[0], 'reason') is not None, helper
    expected = {'policy_node': '_end_on_failure', 'arm_driver_node': '_required', 'sim_node': '_required'}
    for name, call in nodes.items():
        on_exit = _kw(call, 'on_exit')
        assert isinstance(on_exit, ast.Call), f'{name} lacks on_exit'
        assert (on_exit.func.id, _literal(on_exit.args[0])) == (expected[name], name)


def test_arguments_are_declared_described_and_passed_to_every_node():
    tree = _tree()
    declared = {}
    for c in _calls(tree, 'DeclareLaunchArgument'):
        desc = _kw(c, 'description')
        assert desc is not None, f'launch argument {_literal(c.args[0])} has no description'
        declared[_literal(c.args[0])] = c
    assert {'checkpoint', 'sim', 'use_sim_time', 'params_file', 'instruction', 'policy_endpoint',
            'autostart'} <= set(declared)
    assert _literal(_kw(declared['autostart'], 'default_value')) == 'true'
    assert _literal(_kw(declared['policy_endpoint'], 'default_value')) == ''
    # topic names come from params_file only (one robot config for record, train and deploy)
    assert not {'image_topic', 'command_topic'} & set(declared)
    assert _literal(_kw(declared['use_sim_time'], 'default_value')) == 'false'
    assert _literal(_kw(declared['sim'], 'default_value')) == 'false'
    used = _first_arg_names(tree, 'LaunchConfiguration') | _first_arg_names(tree, '_text')
    assert used <= set(declared), f'undeclared launch arguments: {used - set(declared)}'
    for name, call in _nodes(tree).items():
        dicts = [d for d in ast.walk(_kw(call, 'parameters')) if isinstance(d, ast.Dict)]
        keys = {_literal(k) for d in dicts for k in d.keys}
        assert 'use_sim_time' in keys, f'{name} does not get use_sim_time'


def test_node_parameters_set_by_the_launch_exist_in_franka_yaml():
    params = yaml.safe_load(CONFIG.read_text(encoding='utf-8'))
    for name, call in _nodes(_tree()).items():
        section = params[name]['ros__parameters']
        dicts = [d for d in ast.walk(_kw(call, 'parameters')) if isinstance(d, ast.Dict)]
        for key in {_literal(k) for d in dicts for k in d.keys} - {'use_sim_time'}:
            assert key in section, f'launch sets {name}.{key}, which config/franka.yaml does not declare'


def test_default_checkpoint_is_the_demo_checkpoint_everywhere():
    tree = _tree()
    const = next(n for n in tree.body if isinstance(n, ast.Assign)
                 and getattr(n.targets[0], 'id', '') == 'DEFAULT_CHECKPOINT')
    assert _literal(const.value) == DEFAULT_CHECKPOINT
    declared = {_literal(c.args[0]): c for c in _calls(tree, 'DeclareLaunchArgument')}
    assert getattr(_kw(declared['checkpoint'], 'default_value'), 'id', None) == 'DEFAULT_CHECKPOINT'
    params = yaml.safe_load(CONFIG.read_text(encoding='utf-8'))
    assert params['policy_node']['ros__parameters']['checkpoint'] == DEFAULT_CHECKPOINT
    # make demo: --output outputs/demo, film_cnn trained into <output>/film_cnn, checkpoint/ inside.
    assert pathlib.PurePosixPath(DEFAULT_CHECKPOINT).parts == ('outputs', 'demo', 'film_cnn', 'checkpoint')


def test_the_launch_description_builds_with_launch_ros():
    pytest.importorskip('launch_ros', reason='launch_ros (ROS 2) is not installed')
    from launch.actions import DeclareLaunchArgument
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from launch_ros.actions import Node
    ld = PythonLaunchDescriptionSource(str(LAUNCH)).try_get_launch_description_without_context()
    args = [e for e in ld.entities if isinstance(e, DeclareLaunchArgument)]
    assert {a.name for a in args} >= {'checkpoint', 'sim', 'use_sim_time'}
    assert next(a for a in args if a.name == 'checkpoint').default_value[0].text == DEFAULT_CHECKPOINT
    assert len([e for e in ld.entities if isinstance(e, Node)]) == 3
    from launch_ros.actions import LifecycleNode
    assert len([e for e in ld.entities if isinstance(e, LifecycleNode)]) == 1   # policy_node (a Node too)


def test_policy_node_is_a_lifecycle_node_configured_then_activated():
    """AST: policy_node is a launch_ros LifecycleNode; with autostart a configure ChangeState is
    emitted at start, activate only on configuring -> inactive (not after a deactivate), and a
    failed configure (configuring -> unconfigured) ends the launch."""
    tree = _tree()
    assert _calls(tree, 'LifecycleNode') and _literal(_kw(_calls(tree, 'LifecycleNode')[0], 'name')) == 'policy_node'
    handlers = _calls(_function(tree, '_lifecycle'), 'OnStateTransition')
    got = {(_literal(_kw(h, 'start_state')), _literal(_kw(h, 'goal_state'))): h for h in handlers}
    assert set(got) == {('configuring', 'inactive'), ('configuring', 'unconfigured')}
    activate = [a.attr for a in ast.walk(got[('configuring', 'inactive')]) if isinstance(a, ast.Attribute)]
    assert 'TRANSITION_ACTIVATE' in activate
    assert _calls(got[('configuring', 'unconfigured')], 'Shutdown')
    emitted = [a.attr for a in ast.walk(_function(tree, '_lifecycle')) if isinstance(a, ast.Attribute)
               and a.attr.startswith('TRANSITION_')]
    assert sorted(emitted) == ['TRANSITION_ACTIVATE', 'TRANSITION_CONFIGURE']
    # every lifecycle action is conditional on autostart
    for c in _calls(_function(tree, '_lifecycle'), 'RegisterEventHandler') + \
            [c for c in _calls(_function(tree, '_lifecycle'), '_transition') if _kw(c, 'condition') is not None]:
        cond = _kw(c, 'condition')
        assert isinstance(cond, ast.Call) and cond.func.id == 'IfCondition'
    assert len([c for c in _calls(_function(tree, '_lifecycle'), '_transition') if _kw(c, 'condition')]) == 1


def test_policy_node_failure_ends_the_launch_but_a_kill_leaves_the_watchdog_to_hold():
    pytest.importorskip('launch_ros', reason='launch_ros (ROS 2) is not installed')
    import importlib.util

    from launch.actions import Shutdown
    spec = importlib.util.spec_from_file_location('franka_launch_under_test', str(LAUNCH))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    on_exit = module._end_on_failure('policy_node')

    class Exited:   # the field of launch.events.process.ProcessExited the handler reads
        def __init__(self, returncode):
            self.returncode = returncode
    class Context:   # launch.LaunchContext.is_shutdown
        def __init__(self, is_shutdown):
            self.is_shutdown = is_shutdown
    running, ending = Context(False), Context(True)
    actions = on_exit(Exited(1), running)
    assert len(actions) == 1 and isinstance(actions[0], Shutdown)
    for code in (0, -2, -9, -15):
        assert on_exit(Exited(code), running) is None
    required = module._required('arm_driver_node')
    for code in (0, 1, -2):
        actions = required(Exited(code), running)
        assert len(actions) == 1 and isinstance(actions[0], Shutdown)
    # while the launch is ending already, no second Shutdown (launch_ros's ROS adapter would be shut twice)
    assert on_exit(Exited(1), ending) is None and required(Exited(1), ending) is None


def test_bare_launch_without_a_checkpoint_ends_after_one_clear_line(tmp_path):
    """On a sourced ROS 2 machine with this workspace built: the headline command in a directory
    without ``outputs/demo`` must end by itself (not leave arm_driver_node running)."""
    pytest.importorskip('launch_ros', reason='launch_ros (ROS 2) is not installed')
    ament = pytest.importorskip('ament_index_python.packages', reason='ament_index_python (ROS 2) is not installed')
    if shutil.which('ros2') is None:
        pytest.skip('the ros2 command is not on PATH (source the ROS 2 setup and install/setup.bash)')
    try:
        ament.get_package_share_directory('vla_policy')
    except ament.PackageNotFoundError:
        pytest.skip('vla_policy is not installed in the sourced workspace (colcon build first)')
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    try:
        proc = subprocess.run(['ros2', 'launch', 'vla_policy', 'franka.launch.py'], cwd=str(tmp_path), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f'the launch did not end by itself after policy_node failed:\n{exc.output}')
    expected = (f"configure failed: checkpoint '{tmp_path / DEFAULT_CHECKPOINT}' not found: run `make demo` "
                'or pass checkpoint:=<dir>')
    assert expected in proc.stdout, proc.stdout
    assert 'Caught exception' not in proc.stdout, proc.stdout
    assert 'Traceback' not in proc.stdout, proc.stdout
