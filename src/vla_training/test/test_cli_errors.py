"""The console scripts (train, record, evaluate, demo) report bad input as one line on stderr.

Each case runs the script's real ``main([...])`` on real input (the ROS 2 Jazzy sample bag, a
truncated copy of it, YAML configs) and checks: exit status (1 = what the command line names does
not work, 2 = the command line is malformed), exactly one stderr line ``<prog>: error: ...`` naming
the problem, no traceback; and with ``--debug`` the traceback is there. Two cases run the module as
a subprocess, the way ``ros2 run`` does. Nothing here trains a model: every case fails before.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from vla_training import demo, evaluate, record, train_cli

DATA = Path(__file__).resolve().parent / 'data' / 'rosbag2_jazzy_sample'
BAG = DATA / 'sample_mcap'


def call(main, argv, capsys):
    """``(exit status, stderr lines)`` of ``main(argv)`` (argparse errors raise SystemExit)."""
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err
    return rc, err.splitlines()


def one_line(lines, prog):
    assert len(lines) == 1, lines
    assert lines[0].startswith(f'{prog}: error: '), lines
    assert 'Traceback' not in lines[0]
    return lines[0]


def write_yaml(path, text):
    path.write_text(text, encoding='utf-8')
    return str(path)


# --- train -------------------------------------------------------------------------------------

def subprocess_env():
    env = dict(os.environ, OMP_NUM_THREADS='1')
    env['PYTHONPATH'] = os.pathsep.join(p for p in sys.path if p)
    env.pop('VLA_DEBUG', None)
    return env


def test_train_missing_bags_as_console_script():
    cmd = [sys.executable, '-m', 'vla_training.train_cli', '--bags', '/nonexistent/bags', '--no-progress']
    r = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert r.returncode == 1, r.stderr
    line = one_line(r.stderr.splitlines(), 'train')
    assert '/nonexistent/bags' in line and 'does not exist' in line
    assert 'Traceback' not in r.stderr

    r = subprocess.run(cmd + ['--debug'], capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert r.returncode == 1
    assert r.stderr.startswith('Traceback (most recent call last):'), r.stderr
    assert r.stderr.splitlines()[-1] == line


def test_train_debug_env_var_prints_traceback():
    cmd = [sys.executable, '-m', 'vla_training.train_cli', '--bags', '/nonexistent/bags']
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(subprocess_env(), VLA_DEBUG='1'),
                       timeout=300)
    assert r.returncode == 1
    assert 'Traceback (most recent call last):' in r.stderr
    assert r.stderr.splitlines()[-1].startswith('train: error: bag /nonexistent/bags')


def test_train_truncated_mcap(tmp_path, capsys):
    bag = tmp_path / 'truncated'
    shutil.copytree(BAG, bag)
    f = bag / 'sample_mcap_0.mcap'
    with open(f, 'r+b') as fh:
        fh.truncate(f.stat().st_size // 2)
    rc, lines = call(train_cli.main, ['--bags', str(bag), '--steps', '200', '--no-progress'], capsys)
    assert rc == 1
    assert str(bag) in one_line(lines, 'train')

    rc, lines = call(train_cli.main, ['--bags', str(bag), '--steps', '200', '--no-progress', '--debug'], capsys)
    assert rc == 1
    assert lines[0] == 'Traceback (most recent call last):'
    assert lines[-1].startswith('train: error: ') and str(bag) in lines[-1]


def test_train_unknown_backbone_in_yaml(tmp_path, capsys):
    cfg = write_yaml(tmp_path / 'cfg.yaml', 'model:\n  backbone:\n    name: no_such_backbone\n')
    rc, lines = call(train_cli.main, ['--bags', str(BAG), '--config', cfg, '--no-progress'], capsys)
    assert rc == 1
    line = one_line(lines, 'train')
    assert cfg in line and 'model.backbone.name' in line and "'no_such_backbone'" in line
    assert 'film_cnn' in line   # the known names are listed


def test_train_unknown_backbone_flag(capsys):
    rc, lines = call(train_cli.main, ['--bags', str(BAG), '--backbone', 'resnet9000', '--no-progress'], capsys)
    assert rc == 1
    line = one_line(lines, 'train')
    assert '--backbone' in line and "'resnet9000'" in line


def test_train_unknown_key_and_missing_config(tmp_path, capsys):
    cfg = write_yaml(tmp_path / 'cfg.yaml', 'train:\n  stepz: 10\n')
    rc, lines = call(train_cli.main, ['--bags', str(BAG), '--config', cfg], capsys)
    assert rc == 1
    line = one_line(lines, 'train')
    assert cfg in line and "'stepz'" in line

    missing = str(tmp_path / 'nope.yaml')
    rc, lines = call(train_cli.main, ['--bags', str(BAG), '--config', missing], capsys)
    assert rc == 1
    assert one_line(lines, 'train') == f'train: error: No such file or directory: {missing}'


def test_train_malformed_yaml(tmp_path, capsys):
    cfg = write_yaml(tmp_path / 'cfg.yaml', 'model:\n  backbone: [film_cnn\n')
    rc, lines = call(train_cli.main, ['--bags', str(BAG), '--config', cfg], capsys)
    assert rc == 1
    assert cfg in one_line(lines, 'train')


def test_train_steps_below_warmup(tmp_path, capsys):
    cfg = write_yaml(tmp_path / 'cfg.yaml', 'train:\n  warmup_steps: 20\n')
    rc, lines = call(train_cli.main, ['--bags', str(BAG), '--config', cfg, '--steps', '10', '--no-progress'],
                     capsys)
    assert rc == 1
    line = one_line(lines, 'train')
    assert cfg in line and 'steps=10' in line and 'warmup_steps (20)' in line


def test_train_chunk_longer_than_every_episode(tmp_path, capsys):
    # the sample bag is 4 s: 40 ticks at the Franka's 10 Hz; a 64-step chunk would be all end padding
    cfg = write_yaml(tmp_path / 'cfg.yaml', 'model:\n  chunk: {chunk_size: 64, n_action_steps: 8}\ndata:\n  action_from_state: [panda_finger_joint1]\n')
    rc, lines = call(train_cli.main, ['--bags', str(BAG), '--config', cfg, '--no-progress', '--steps', '200'], capsys)
    assert rc == 1
    line = one_line(lines, 'train')
    assert 'model.chunk.chunk_size (64) is longer than the longest episode' in line, line
    assert str(BAG) in line and 'chunk_size <= ' in line


def test_train_usage_errors(capsys):
    rc, lines = call(train_cli.main, ['--bags', str(BAG), '--steps', '0'], capsys)
    assert rc == 2
    line = one_line(lines, 'train')
    assert '--steps' in line and "'0'" in line
    rc, lines = call(train_cli.main, ['--steps', '10'], capsys)   # --bags missing
    assert rc == 2
    assert '--bags' in one_line(lines, 'train')
    rc, lines = call(train_cli.main, ['--bags', str(BAG), '--no-such-flag'], capsys)
    assert rc == 2
    assert '--no-such-flag' in one_line(lines, 'train')


# --- record ------------------------------------------------------------------------------------

def test_record_bad_arguments(tmp_path, capsys):
    out = tmp_path / 'demos'
    for argv, named in ((['--tasks', 'reach,fly'], "'fly'"), (['--episodes', '0'], '--episodes'),
                        (['--storage', 'zip'], 'zip'), (['--workers', 'two'], '--workers')):
        rc, lines = call(record.main, argv + ['--output', str(out)], capsys)
        assert rc == 2, argv
        assert named in one_line(lines, 'record'), argv
    assert not out.exists()   # rejected before anything was written


def test_record_existing_bag(tmp_path, capsys):
    out = tmp_path / 'demos'
    (out / 'episode_000000').mkdir(parents=True)
    rc, lines = call(record.main, ['--episodes', '1', '--workers', '1', '--output', str(out)], capsys)
    assert rc == 1
    line = one_line(lines, 'record')
    assert str(out / 'episode_000000') in line and 'already exists' in line


# --- evaluate ----------------------------------------------------------------------------------

def test_evaluate_missing_checkpoint(tmp_path, capsys):
    ckpt = tmp_path / 'runs' / 'checkpoint'
    rc, lines = call(evaluate.main, ['--policy', str(ckpt), '--episodes', '1'], capsys)
    assert rc == 1
    line = one_line(lines, 'evaluate')
    assert str(ckpt) in line and 'not found' in line

    ckpt.mkdir(parents=True)
    (ckpt / 'config.json').write_text('{}')
    rc, lines = call(evaluate.main, ['--policy', str(ckpt), '--episodes', '1'], capsys)
    assert rc == 1
    line = one_line(lines, 'evaluate')
    assert str(ckpt) in line and 'model.safetensors' in line and 'config.json' not in line

    rc, lines = call(evaluate.main, ['--policy', str(ckpt), '--episodes', '1', '--debug'], capsys)
    assert rc == 1
    assert lines[0] == 'Traceback (most recent call last):' and lines[-1] == line


def test_evaluate_usage_errors(capsys):
    rc, lines = call(evaluate.main, ['--policy', 'expert', '--episodes', '-3'], capsys)
    assert rc == 2
    assert '--episodes' in one_line(lines, 'evaluate')
    rc, lines = call(evaluate.main, ['--policy', 'expert', '--tasks', 'stack'], capsys)
    assert rc == 2
    assert "'stack'" in one_line(lines, 'evaluate')


# --- demo --------------------------------------------------------------------------------------

def test_demo_bad_arguments(tmp_path, capsys):
    out = tmp_path / 'demo'
    rc, lines = call(demo.main, ['--episodes', '0', '--output', str(out)], capsys)
    assert rc == 2
    assert '--episodes' in one_line(lines, 'demo')

    # --cnn-steps not above the config's warm-up: rejected before anything is recorded
    warm = train_cli.load_train_yaml(demo._config_path('train_franka.yaml'))[1].warmup_steps
    assert warm >= 1
    rc, lines = call(demo.main, ['--cnn-steps', str(warm), '--output', str(out)], capsys)
    assert rc == 1
    line = one_line(lines, 'demo')
    assert f'--cnn-steps {warm}' in line and 'train_franka.yaml' in line and 'warmup_steps' in line
    assert not out.exists()
