"""Training that scales and survives: torchrun DDP on CPU (gloo), gradient accumulation, kill -9 + resume.

On bags the MuJoCo Franka recorded, through the real ``train`` entry point:
- 2 processes under torchrun with batch B follow the loss curve of 1 process with batch 2B (and of 1
  process accumulating 2 micro-batches of B), step by step within a tolerance: the per-process
  loss is a masked mean, so the mean of two halves differs from the mean of the whole by rounding
  and by the padding counts (the measured gap is ~1e-3 relative);
- a run SIGKILLed mid-way and resumed with ``--resume`` continues on exactly the uninterrupted run's
  loss curve (a flow-matching head: the loss depends on the restored RNG; random-shift augmentation;
  a loader worker), losing only the steps after the last training state;
- a resume with another recipe is refused naming the field; bf16 autocast + EMA train and deploy.
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

os.environ.setdefault('MUJOCO_GL', 'egl')

from vla_training import train_cli  # noqa: E402
from vla_training.record import RecordConfig, record_demos  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]


def _yaml(tmp_path, name='cfg.yaml', **train):
    cfg = {
        'model': {'embodiment': 'franka_panda', 'action_dim': 8, 'state_dim': 8, 'camera_names': ['front', 'wrist'],
                  'delta_action_dims': [0, 1, 2, 3, 4, 5, 6], 'binary_action_dims': [7],
                  'backbone': {'name': 'film_cnn', 'image_size': 32, 'channels': [8, 16]},
                  'chunk': {'n_obs_steps': 1, 'chunk_size': 4, 'n_action_steps': 2}},
        'train': dict({'steps': 16, 'batch_size': 8, 'lr': 1e-3, 'warmup_steps': 2, 'log_every': 1,
                       'checkpoint_every': 0, 'eval_fraction': 0.2}, **train),
        'data': {'topics': {'images': {'front': '/camera/image_raw', 'wrist': '/wrist_camera/image_raw'}}, 'workers': 1}}
    p = tmp_path / name
    p.write_text(yaml.safe_dump(cfg))
    return p


def _losses(run: Path):
    return {r['step']: r['loss'] for r in map(json.loads, (run / 'train_log.jsonl').read_text().splitlines())
            if 'loss' in r}


def _env(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='1', VLA_CACHE_DIR=str(tmp_path / 'cache'))
    env['PYTHONPATH'] = os.pathsep.join(p for p in sys.path if p)
    return env


@pytest.fixture(scope='module')
def bags(tmp_path_factory):
    out = tmp_path_factory.mktemp('demos')
    record_demos(RecordConfig(episodes=6, output=str(out), workers=1, tasks=('reach',), image_size=32), progress=False)
    return out


def test_two_processes_follow_one_process_with_the_doubled_batch(bags, tmp_path):
    cfg = _yaml(tmp_path)
    env = _env(tmp_path)
    base = [sys.executable, '-m', 'vla_training.train_cli', '--bags', str(bags), '--config', str(cfg), '--no-progress']
    r = subprocess.run(base + ['--output', str(tmp_path / 'two'), '--nproc-per-node', '2'], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count('checkpoint:') == 1                       # the main process alone reports and writes
    for out, extra in (('one', ['--batch-size', '16']), ('accum', [])):
        c = cfg if out == 'one' else _yaml(tmp_path, 'accum.yaml', grad_accum=2)
        base_c = [a if a != str(cfg) else str(c) for a in base]
        r = subprocess.run(base_c + ['--output', str(tmp_path / out)] + extra, env=env, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
    two, one, accum = (_losses(tmp_path / n) for n in ('two', 'one', 'accum'))
    assert sorted(two) == sorted(one) == sorted(accum) == list(range(1, 17))
    a, b, c = (np.array([d[s] for s in range(1, 17)]) for d in (two, one, accum))
    np.testing.assert_allclose(a, b, rtol=1e-2)
    np.testing.assert_allclose(c, b, rtol=1e-2)
    assert a[-1] < a[0]                                             # and it learns
    meta = json.loads((tmp_path / 'two' / 'checkpoint' / 'meta.json').read_text())
    assert meta['world_size'] == 2 and meta['global_batch'] == 16


KILL_DRIVER = """
import os, signal, sys
import vla_training.train as T
at = int(os.environ['KILL_AT_STEP'])
orig = T._log
def _log(rec, *a, **k):
    orig(rec, *a, **k)
    if rec.get('step') == at:
        os.kill(os.getpid(), signal.SIGKILL)       # no clean-up, no atexit: what kill -9 does
T._log = _log
from vla_training.train_cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_then_resume_continues_the_same_loss_curve(bags, tmp_path):
    cfg = _yaml(tmp_path, steps=30, checkpoint_every=10, num_workers=1)
    raw = yaml.safe_load(cfg.read_text())
    raw['model']['head'] = {'name': 'flow', 'hidden': 32, 'n_layers': 1, 'num_steps': 2}
    cfg.write_text(yaml.safe_dump(raw))
    env = _env(tmp_path)
    args = ['--bags', str(bags), '--config', str(cfg), '--no-progress']
    ref = subprocess.run([sys.executable, '-m', 'vla_training.train_cli'] + args + ['--output', str(tmp_path / 'ref')],
                         env=env, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]
    run = tmp_path / 'run'
    killed = subprocess.run([sys.executable, '-c', KILL_DRIVER] + args + ['--output', str(run)],
                            env=dict(env, KILL_AT_STEP='25'), capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    state = json.loads((run / 'training_state' / 'state.json').read_text())
    assert state['step'] == 20                                     # the last state before the kill
    assert not (run / 'checkpoint').exists()
    assert max(_losses(run)) == 25
    resumed = subprocess.run([sys.executable, '-m', 'vla_training.train_cli'] + args + ['--output', str(run), '--resume'],
                             env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    want, got = _losses(tmp_path / 'ref'), _losses(run)
    assert sorted(got) == list(range(1, 31))                       # steps 21-25 were rerun, the log rewritten
    np.testing.assert_allclose([got[s] for s in range(1, 31)], [want[s] for s in range(1, 31)], rtol=0, atol=1e-6)
    assert (run / 'checkpoint' / 'model.safetensors').is_file()


def test_resume_with_another_recipe_is_refused(bags, tmp_path, capsys):
    cfg = _yaml(tmp_path, steps=12, checkpoint_every=5)
    out = tmp_path / 'run'
    os.environ['VLA_CACHE_DIR'] = str(tmp_path / 'cache')
    args = ['--bags', str(bags), '--no-progress', '--output', str(out)]
    assert train_cli.main(args + ['--config', str(cfg)]) == 0
    capsys.readouterr()
    other = _yaml(tmp_path, 'other.yaml', steps=12, checkpoint_every=5, lr=5e-4)
    assert train_cli.main(args + ['--config', str(other), '--resume']) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'train.lr=0.001' in err[0] and 'now 0.0005' in err[0], err


def test_bf16_autocast_and_ema_train_and_deploy(bags, tmp_path):
    from vla_policy.policy import VLAPolicy
    cfg = _yaml(tmp_path, steps=8, mixed_precision='bf16', ema_decay=0.9)
    os.environ['VLA_CACHE_DIR'] = str(tmp_path / 'cache')
    res = train_cli.run([str(bags)], str(cfg), str(tmp_path / 'run'), progress=False)
    assert all(np.isfinite(v) for _, v in res.losses)
    meta = json.loads((res.checkpoint_dir / 'meta.json').read_text())
    assert meta['ema_decay'] == 0.9 and meta['train_config']['mixed_precision'] == 'bf16'
    state = VLAPolicy.from_checkpoint(res.checkpoint_dir)
    assert state.config.chunk.chunk_size == 4
