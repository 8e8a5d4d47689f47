"""The Meta-World harness end to end at tiny size: expert demonstrations recorded as rosbag2 in Meta-World's own
venv, read by the standard training config, a policy trained by ``train``, served by ``policy_server`` on
loopback, and evaluated by the client in Meta-World's venv (one task, two episodes).

Needs ``.venv-metaworld`` (``make .venv-metaworld/.installed``; ``make test`` builds it): metaworld 3.1.1 pins
mujoco 3.3.0, which cannot share the workspace's venv. Skipped with that reason when it is absent.
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]
MW_PY = Path(os.environ.get('VLA_METAWORLD_PYTHON', ROOT / '.venv-metaworld' / 'bin' / 'python'))
PYPATH = os.pathsep.join(str(ROOT / 'src' / p) for p in ('robot_drivers', 'vla_policy', 'vla_training'))

pytestmark = pytest.mark.skipif(not MW_PY.is_file(), reason=f'Meta-World venv absent: no {MW_PY} '
                                '(make .venv-metaworld/.installed, or set VLA_METAWORLD_PYTHON)')


def mw(*args, timeout=900):
    env = dict(os.environ, PYTHONPATH=PYPATH, MUJOCO_GL='egl', OMP_NUM_THREADS='1')
    r = subprocess.run([str(MW_PY)] + list(args), capture_output=True, text=True, env=env, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_meta_world_constants_are_the_embodiments():
    from robot_drivers.machines.sawyer_metaworld import METAWORLD_DT, METAWORLD_EE_LIMITS, METAWORLD_EE_SPEED
    out = mw('-c', """
import json, warnings, numpy as np
warnings.filterwarnings('ignore')
from metaworld.env_dict import ALL_V3_ENVIRONMENTS
lo, hi, scale, dt = np.full(3, np.inf), np.full(3, -np.inf), set(), set()
for name, cls in ALL_V3_ENVIRONMENTS.items():
    e = cls()
    lo, hi = np.minimum(lo, e.mocap_low), np.maximum(hi, e.mocap_high)
    scale.add(e.action_scale); dt.add(e.frame_skip * e.model.opt.timestep)
print(json.dumps({'lo': lo.tolist(), 'hi': hi.tolist(), 'scale': sorted(scale), 'dt': sorted(dt)}))
""")
    got = json.loads(out.strip().splitlines()[-1])
    assert got['dt'] == [pytest.approx(METAWORLD_DT)] and got['scale'] == [pytest.approx(0.01)]
    assert METAWORLD_EE_SPEED == pytest.approx(got['scale'][0] / got['dt'][0])
    np.testing.assert_allclose(np.array(METAWORLD_EE_LIMITS), np.stack([got['lo'], got['hi']], 1))


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_harness_records_trains_serves_and_evaluates(tmp_path):
    from robot_drivers.embodiment import get_embodiment
    from vla_training import train_cli
    from vla_training.bag_dataset import read_episode
    from vla_training.bag_reader import BagTopics
    demos = tmp_path / 'demos'
    out = json.loads(mw('-m', 'vla_training.metaworld_env', 'record', '--tasks', 'reach-v3', '--episodes', '2',
                        '--output', str(demos), '--image-size', '64').strip().splitlines()[-1])
    assert out['episodes'] == 2
    bags = sorted((demos / 'reach-v3').glob('episode_*'))
    assert [b.name for b in bags] == ['episode_000000', 'episode_000001']       # the expert solved both seeds
    # the bags are read with the standard Meta-World training config's topics
    model_cfg, _, data = train_cli.load_train_yaml(str(ROOT / 'config' / 'train_metaworld.yaml'))
    ep = read_episode(bags[0], get_embodiment('sawyer_metaworld'), BagTopics.from_dict(data.topics), rate_hz=data.rate_hz)
    assert ep.instructions[0] == 'Reach a goal position' and ep.camera_images['corner2'].shape[1:] == (64, 64, 3)
    assert ep.joint_names == ('ee_x', 'ee_y', 'ee_z', 'gripper')
    assert np.all(np.abs(ep.actions[:, :3]) <= 0.8 + 1e-6)                      # hand velocity, m/s
    assert np.all((ep.joint_positions[:, 3] >= 0) & (ep.joint_positions[:, 3] <= 1.0))   # gripper opening
    # the hand moves as the commanded velocity says (one 12.5 ms step per tick)
    moved = np.diff(ep.joint_positions[:, :3], axis=0)
    assert np.corrcoef(moved.ravel(), (ep.actions[:-1, :3] * 0.0125).ravel())[0, 1] > 0.8
    cfg = tmp_path / 'cfg.yaml'
    cfg.write_text((ROOT / 'config' / 'train_metaworld.yaml').read_text().replace('warmup_steps: 200', 'warmup_steps: 2'))
    env = dict(os.environ, OMP_NUM_THREADS='1', VLA_CACHE_DIR=str(tmp_path / 'cache'))
    env['PYTHONPATH'] = os.pathsep.join(p for p in sys.path if p)
    r = subprocess.run([sys.executable, '-m', 'vla_training.train_cli', '--bags', str(demos / 'reach-v3'), '--config',
                        str(cfg), '--output', str(tmp_path / 'run'), '--steps', '10', '--batch-size', '8',
                        '--no-progress'], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    port = _free_port()
    server = subprocess.Popen([sys.executable, '-m', 'vla_policy.policy_server', '--checkpoint',
                               str(tmp_path / 'run' / 'checkpoint'), '--port', str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        res_file = tmp_path / 'eval.json'
        mw('-m', 'vla_training.metaworld_env', 'evaluate', '--endpoint', f'ws://127.0.0.1:{port}', '--tasks', 'reach-v3',
           '--episodes', '2', '--max-steps', '12', '--image-size', '64', '--output', str(res_file))
    finally:
        server.terminate()
        server.wait(timeout=30)
    res = json.loads(res_file.read_text())
    assert set(res['tasks']) == {'reach-v3'} and 0.0 <= res['tasks']['reach-v3'] <= 1.0
    assert [e['seed'] for e in res['episodes']] == [1000, 1001]                 # LeRobot's held-out seeds
    n_act = res['metadata']['n_action_steps']
    for e in res['episodes']:
        assert 1 <= e['steps'] <= 12 and e['inferences'] == -(-e['steps'] // n_act)
    assert res['metadata']['embodiment'] == 'sawyer_metaworld' and res['metadata']['camera_names'] == ['corner2']
