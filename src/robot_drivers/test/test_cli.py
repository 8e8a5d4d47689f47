"""robot_drivers.cli: one-line errors, exit statuses and debug switches shared by every command.

The first part is ROS-free. The last tests run ``run_node`` (robot_drivers.spin_node) in a
subprocess on a real rclpy and are skipped where ROS 2 is not installed.
"""
import argparse
import io
import os
import subprocess
import sys
import textwrap

import pytest

from robot_drivers import cli
from robot_drivers.safety import CommandRejected


def test_error_message_keeps_detail_on_one_line():
    assert cli.error_message(ValueError('bag /d/ep1: topic /joint_states: no messages')) == \
        'bag /d/ep1: topic /joint_states: no messages'
    # KeyError's str() adds quotes; the message must not
    assert cli.error_message(KeyError("unknown backbone 'x'; available: ['film_cnn']")) == \
        "unknown backbone 'x'; available: ['film_cnn']"
    # open() of a missing file: errno text and the file name, without "[Errno 2]"
    with pytest.raises(FileNotFoundError) as ei:
        open('/nonexistent/config.yaml', encoding='utf-8')
    assert cli.error_message(ei.value) == 'No such file or directory: /nonexistent/config.yaml'
    # multi-line messages (YAML parser, rclpy name validation) become one line
    assert cli.error_message(ValueError('Invalid topic name:\n  \'a b\'\n   ^')) == "Invalid topic name:; 'a b'; ^"
    assert cli.format_error('train', ValueError('x')) == 'train: error: x'


def test_user_errors_and_bugs():
    for exc in (ValueError('v'), KeyError('k'), FileNotFoundError('f'), FileExistsError('e'),
                NotADirectoryError('n'), IsADirectoryError('i'), PermissionError('p'),
                CommandRejected('NaN in panda_joint1')):
        assert cli.is_user_error(exc), exc
    for exc in (RuntimeError('r'), TypeError('t'), AttributeError('a'), IndexError('i'), ZeroDivisionError()):
        assert not cli.is_user_error(exc), exc
    # a dependency missing from the interpreter is the user's to fix, a missing own module is a bug
    assert cli.is_user_error(ModuleNotFoundError("No module named 'torch'", name='torch'))
    assert not cli.is_user_error(ModuleNotFoundError("No module named 'vla_policy.x'", name='vla_policy.x'))
    assert not cli.is_user_error(ImportError('cannot import name y'))


def test_missing_torch_names_the_interpreter():
    msg = cli.error_message(ModuleNotFoundError("No module named 'torch'", name='torch'))
    assert msg.startswith(f'torch is not importable by {sys.executable}')
    assert 'README' in msg


def test_run_main_statuses(capsys):
    assert cli.run_main('p', lambda: None) == cli.EXIT_OK
    assert cli.run_main('p', lambda: 3) == 3

    def bad_bag():
        raise ValueError('bag /data/ep0: path does not exist')
    assert cli.run_main('train', bad_bag) == cli.EXIT_FAILURE
    err = capsys.readouterr().err
    assert err == 'train: error: bag /data/ep0: path does not exist\n'

    def interrupted():
        raise KeyboardInterrupt
    assert cli.run_main('train', interrupted) == cli.EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err == ''

    def bug():
        return [][1]
    with pytest.raises(IndexError):   # a bug keeps its traceback
        cli.run_main('train', bug)
    assert capsys.readouterr().err == ''


def test_run_main_debug_prints_traceback(capsys, monkeypatch):
    def bad():
        raise KeyError('unknown embodiment ur5')

    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    assert cli.run_main('train', bad, debug=True) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == 'Traceback (most recent call last):'
    assert 'KeyError' in lines[-2]
    assert lines[-1] == 'train: error: unknown embodiment ur5'

    monkeypatch.setenv(cli.DEBUG_ENV, '1')
    assert cli.run_main('train', bad) == 1
    assert capsys.readouterr().err.startswith('Traceback (most recent call last):')
    monkeypatch.setenv(cli.DEBUG_ENV, '0')
    assert cli.run_main('train', bad) == 1
    assert capsys.readouterr().err == 'train: error: unknown embodiment ur5\n'


def test_debug_switches():
    assert not cli.debug_from_env({})
    for v in ('', '0', 'false', 'No', 'off'):
        assert not cli.debug_from_env({cli.DEBUG_ENV: v}), v
    for v in ('1', 'true', 'yes'):
        assert cli.debug_from_env({cli.DEBUG_ENV: v}), v
    assert cli.ros_args_request_debug(['policy_node', '--ros-args', '--log-level', 'debug'])
    assert cli.ros_args_request_debug(['n', '--ros-args', '-p', 'a:=1', '--log-level', 'DEBUG', '--'])
    assert cli.ros_args_request_debug(['n', '--ros-args', '--log-level', 'policy_node:=debug'])
    assert not cli.ros_args_request_debug(['n', '--ros-args', '--log-level', 'info'])
    assert not cli.ros_args_request_debug(['n', '--log-level', 'debug'])   # not a ROS argument
    assert not cli.ros_args_request_debug(['n', '--ros-args', '--', '--log-level', 'debug'])
    assert not cli.ros_args_request_debug(None)


def test_report_error_extra_types():
    class ParamError(Exception):
        pass
    buf = io.StringIO()
    assert cli.report_error('arm_driver_node', ParamError('rate_hz: expected double'), stream=buf) is None
    assert buf.getvalue() == ''
    assert cli.report_error('arm_driver_node', ParamError('rate_hz: expected double'), extra=(ParamError,),
                            stream=buf) == 1
    assert buf.getvalue() == 'arm_driver_node: error: rate_hz: expected double\n'


def test_argument_parser_one_line_usage_error(capsys):
    p = cli.ArgumentParser(prog='record')
    p.add_argument('--episodes', type=cli.positive_int, default=1)
    p.add_argument('--tasks', type=cli.comma_list(('reach', 'pick')), default=('reach',))
    assert p.parse_args(['--tasks', 'pick, reach']).tasks == ('pick', 'reach')
    assert p.parse_args([]).debug is False and p.parse_args(['--debug']).debug is True
    for argv, named in ((['--episodes', '0'], "'0'"), (['--episodes', 'many'], "'many'"),
                        (['--tasks', 'reach,fly'], "'fly'"), (['--tasks', ','], "','"), (['--bogus'], '--bogus')):
        with pytest.raises(SystemExit) as ei:
            p.parse_args(argv)
        assert ei.value.code == cli.EXIT_USAGE == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith('record: error: ') and named in err[0], err
        assert err[0].endswith("(see 'record --help')")


def test_number_types():
    assert cli.positive_int('3') == 3 and cli.non_negative_int('0') == 0 and cli.positive_float('0.5') == 0.5
    for f, bad in ((cli.positive_int, '0'), (cli.non_negative_int, '-1'), (cli.positive_float, 'nan'),
                   (cli.positive_float, '0'), (cli.positive_int, '1.5')):
        with pytest.raises(argparse.ArgumentTypeError):
            f(bad)


# --- run_node on a real rclpy (ROS 2 machines) ----------------------------------------------------

NODE_SCRIPT = textwrap.dedent('''
    import sys
    from rclpy.node import Node
    from robot_drivers.spin_node import run_node

    class Failing(Node):
        def __init__(self, node_name='failing_node'):
            super().__init__(node_name)
            self.declare_parameter('checkpoint', '')
            raise {exc}

    run_node(Failing, sys.argv)
''')


def run_script(exc, *ros_args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    env.pop(cli.DEBUG_ENV, None)
    return subprocess.run([sys.executable, '-c', NODE_SCRIPT.format(exc=exc), *ros_args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_run_node_factory_error_is_one_line_and_exit_1():
    pytest.importorskip('rclpy', reason='rclpy (ROS 2) is not installed; node tests run on a ROS 2 machine')
    r = run_script("ValueError('parameter checkpoint is empty: pass checkpoint:=<dir>')")
    assert r.returncode == 1, r.stderr
    assert r.stderr.splitlines() == ['failing_node: error: parameter checkpoint is empty: pass checkpoint:=<dir>']

    r = run_script("FileNotFoundError('checkpoint directory not found: /x')", '--ros-args', '--log-level', 'debug')
    assert r.returncode == 1
    assert 'Traceback (most recent call last):' in r.stderr
    assert 'failing_node: error: checkpoint directory not found: /x' in r.stderr.splitlines()


def test_run_node_bug_keeps_traceback():
    pytest.importorskip('rclpy', reason='rclpy (ROS 2) is not installed; node tests run on a ROS 2 machine')
    r = run_script("RuntimeError('a bug')")
    assert r.returncode == 1
    assert 'Traceback (most recent call last):' in r.stderr and 'RuntimeError: a bug' in r.stderr
    assert 'error: a bug' not in r.stderr


SHUTDOWN_DURING_START = textwrap.dedent('''
    import sys
    import rclpy
    from rclpy.node import Node
    from robot_drivers.spin_node import run_node

    class Slow(Node):
        def __init__(self, node_name='slow_node'):
            # what Ctrl-C (or a launch shutting down) does while a node is still being built: the
            # context is shut down under the constructor, whose next rcl call then fails
            rclpy.shutdown()
            super().__init__(node_name)

    run_node(Slow, sys.argv)
''')


def test_run_node_stopped_during_construction_exits_quietly():
    pytest.importorskip('rclpy', reason='rclpy (ROS 2) is not installed; node tests run on a ROS 2 machine')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    r = subprocess.run([sys.executable, '-c', SHUTDOWN_DURING_START], capture_output=True, text=True,
                       env=env, timeout=120)
    assert (r.returncode, r.stderr) == (0, '')


def test_ctrl_c_while_a_node_module_is_importing_exits_quietly():
    # a launch shutting down at start-up interrupts siblings still importing numpy/rclpy/torch
    code = ('import robot_drivers.quiet_start, os, signal, time\n'
            'os.kill(os.getpid(), signal.SIGINT)\n'
            'time.sleep(30)\n'
            'raise SystemExit(3)  # not reached\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, timeout=60)
    assert (r.returncode, r.stderr) == (0, '')
    # without it: Python's KeyboardInterrupt traceback
    r = subprocess.run([sys.executable, '-c', code.replace('robot_drivers.quiet_start, ', '')],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode != 0 and 'KeyboardInterrupt' in r.stderr
