"""Every registered model family on real data: each backbone x structure x head a preset uses, and each
backbone with the default head, built tiny, trained on bags the MuJoCo Franka recorded, saved and loaded,
and driven closed loop through PolicyRuntime.

Per combination: the loss on a fixed batch (fixed noise) falls after 15 optimizer steps on sim data;
save -> load gives identical outputs; ``VLAPolicy.infer`` returns a chunk of the configured shape; the
runtime accepts the policy and publishes joint trajectories within the Franka's limits.
"""
import copy
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault('MUJOCO_GL', 'egl')

import torch  # noqa: E402
import yaml  # noqa: E402

from robot_drivers import conversions as conv  # noqa: E402
from robot_drivers.embodiment import FRANKA_PANDA  # noqa: E402
from vla_policy.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from vla_policy.models import VLA, VLAConfig, WordTokenizer  # noqa: E402
from vla_policy.models.config import HF_ARCHS  # noqa: E402
from vla_policy.policy import VLAPolicy  # noqa: E402
from vla_policy.runtime import RuntimeConfig  # noqa: E402
from vla_training import train_cli  # noqa: E402
from vla_training.experts import Task  # noqa: E402
from vla_training.record import RecordConfig, record_demos  # noqa: E402
from vla_training.rollout import RuntimeController, run_episode  # noqa: E402
from vla_training.train import _Data, build_arrays, compute_stats  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
CAMERAS = ('front', 'wrist')

# tiny sizes: every family builds and trains in about a second on one thread
TINY_BACKBONE = dict(image_size=32, patch_size=8, vision_hidden=32, vision_layers=1, text_hidden=32, text_layers=1,
                     num_heads=2, channels=[8, 8], feature_dim=32, word_dim=8, octo_dim=32, octo_layers=1,
                     octo_heads=2, octo_stem_channels=[8, 8])
TINY_HEAD = dict(hidden=32, n_layers=1, num_heads=2, num_steps=2, num_inference_steps=2)


def _preset_cases():
    out = []
    for path in sorted((ROOT / 'config' / 'models').glob('*.yaml')):
        m = yaml.safe_load(path.read_text())['model']
        out.append((f'preset-{path.stem}', m))
    return out


def _backbone_cases():
    out = [('film_cnn-mlp', {'backbone': {'name': 'film_cnn'}}), ('octo-mlp', {'backbone': {'name': 'octo'}})]
    for arch in HF_ARCHS:
        out.append((f'hf_vlm-{arch}-mlp', {'backbone': {'name': 'hf_vlm', 'hf_arch': arch}}))
    # the structure and the head no preset uses, so every registered name runs here
    out.append(('interleaved-idefics3-mlp', {'structure': 'interleaved', 'backbone': {'name': 'hf_vlm', 'hf_arch': 'idefics3'},
                                             'chunk': {'n_obs_steps': 2}}))
    out.append(('policy_head-film_cnn-gpt', {'structure': 'policy_head', 'backbone': {'name': 'film_cnn'},
                                             'head': {'name': 'gpt'}, 'chunk': {'n_obs_steps': 2}}))
    return out


CASES = _preset_cases() + _backbone_cases()


def _tiny_config(model: dict, cameras=CAMERAS) -> VLAConfig:
    """The robot part of config/train_franka_2cam.yaml + ``model`` (a preset's architecture), at tiny size."""
    base, _, _ = train_cli.load_train_yaml(str(ROOT / 'config' / 'train_franka_2cam.yaml'))
    d = train_cli._overlay(base.to_dict(), copy.deepcopy(model))
    d['camera_names'] = list(cameras)
    d['backbone'] = dict(d['backbone'], **TINY_BACKBONE)
    d['head'] = dict(d['head'], **TINY_HEAD)
    n_obs = d['chunk']['n_obs_steps']
    d['chunk'] = {'n_obs_steps': n_obs, 'chunk_size': 2, 'n_action_steps': 2}
    d['max_tokens'] = 8
    return VLAConfig.from_dict(d)


@pytest.fixture(scope='module')
def episodes(tmp_path_factory):
    from robot_drivers.embodiment import get_embodiment  # noqa: F401
    from vla_training.bag_dataset import BagTopics, read_episode
    out = tmp_path_factory.mktemp('zoo_demos')
    bags = record_demos(RecordConfig(episodes=2, output=str(out), workers=1, tasks=('reach',)), progress=False)
    _, _, data = train_cli.load_train_yaml(str(ROOT / 'config' / 'train_franka_2cam.yaml'))
    topics = BagTopics.from_dict(data.topics)
    return [read_episode(str(b), FRANKA_PANDA, topics) for b in bags]


@pytest.fixture(scope='module')
def sim():
    from robot_drivers.sim.franka_cubes import FrankaCubeSim
    s = FrankaCubeSim()
    yield s
    s.close()


def test_every_registered_family_is_covered():
    from vla_policy.models import STRUCTURES, available_backbones, available_heads
    used_backbones = {m['backbone']['name'] for _, m in CASES}
    assert used_backbones == set(available_backbones())
    archs = {m['backbone'].get('hf_arch') for _, m in CASES} - {None}
    assert archs == set(HF_ARCHS)
    presets = {name for name, _ in _preset_cases()}
    assert {'preset-film_cnn', 'preset-rt2', 'preset-octo', 'preset-pi0', 'preset-groot', 'preset-robovlms'} <= presets
    assert {m.get('structure', 'one_step_continuous') for _, m in CASES} == set(STRUCTURES)
    assert {m.get('head', {}).get('name', 'mlp') for _, m in CASES} == set(available_heads()) | {'none'}


@pytest.mark.parametrize('name,model', CASES, ids=[c[0] for c in CASES])
def test_family_trains_saves_loads_and_drives_the_runtime(name, model, episodes, sim, tmp_path):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = _tiny_config(model)
    arrays = build_arrays(episodes, cfg)
    stats = compute_stats(episodes, cfg)
    tok = WordTokenizer.build([s for e in episodes for s in e.instructions], cfg.max_tokens)
    cfg.backbone.vocab_size = tok.vocab_size
    data = _Data(arrays, np.arange(len(arrays['obs_index'])), stats, tok, cfg, torch.device('cpu'))
    batch = data.batch(torch.arange(0, len(data), max(1, len(data) // 8))[:8])
    model_ = VLA(cfg).train()

    def fixed_loss():
        torch.manual_seed(123)            # the same diffusion / flow noise and times before and after
        with torch.no_grad():
            return float(model_.loss(batch)[0])

    before = fixed_loss()
    opt = torch.optim.Adam([p for p in model_.parameters() if p.requires_grad], lr=2e-3)
    for _ in range(15):
        loss, _ = model_.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = fixed_loss()
    assert np.isfinite(before) and after < before, (name, before, after)

    model_.eval()
    save_checkpoint(tmp_path / 'ckpt', model_, cfg, stats, tok, {})
    loaded, lcfg, lstats, ltok = load_checkpoint(tmp_path / 'ckpt')[:4]
    assert lcfg == cfg
    with torch.no_grad():
        torch.manual_seed(7)
        a = model_(batch)
        torch.manual_seed(7)
        b = loaded(batch)
    assert a.shape == (batch['images'].shape[0], cfg.chunk.chunk_size, cfg.action_dim)
    torch.testing.assert_close(a, b, rtol=0, atol=0)

    policy = VLAPolicy.from_checkpoint(tmp_path / 'ckpt', seed=0)
    published = []

    class Spy(RuntimeController):
        def __call__(self, *args, **kw):
            msg = super().__call__(*args, **kw)
            if msg is not None:
                published.append(msg)
            return msg

    rcfg = RuntimeConfig(n_obs_steps=cfg.chunk.n_obs_steps, n_action_steps=2, camera='front',
                         cameras={'front': '/camera/image_raw', 'wrist': '/wrist_camera/image_raw'})
    spy = Spy.build(policy, FRANKA_PANDA, rcfg)
    run_episode(sim, Task('reach', 'red'), 1_000_000, spy, steps=6)
    assert len(published) >= 2 and spy.runtime.inferences >= 2
    for msg in published:
        names, pos, _ = conv.trajectory_to_arrays(msg)
        assert names == FRANKA_PANDA.joint_names and pos.shape == (2, 8) and np.all(np.isfinite(pos))
        assert np.all(pos >= FRANKA_PANDA.lower - 1e-6) and np.all(pos <= FRANKA_PANDA.upper + 1e-6)
