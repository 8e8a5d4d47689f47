"""Checkpoint save/load (atomic, strict) and the VLAPolicy wrapper on the Policy contract."""
import json
import os

import numpy as np
import pytest
import torch

from robot_drivers.embodiment import FRANKA_PANDA
from vla_policy.checkpoint import load_checkpoint, save_checkpoint
from vla_policy.contracts import ActionChunk, Observation, Policy
from vla_policy.images import preprocess_image
from vla_policy.models import VLA, BackboneConfig, ChunkConfig, VLAConfig, WordTokenizer
from vla_policy.normalization import NormalizationStats
from vla_policy.policy import VLAPolicy

torch.set_num_threads(1)

INSTR = ['pick the red cube', 'reach the blue cube']


def make(tmp_path, n_obs=2, name='ckpt'):
    tok = WordTokenizer.build(INSTR, max_len=8)
    cfg = VLAConfig(backbone=BackboneConfig(vocab_size=tok.vocab_size, image_size=32),
                    chunk=ChunkConfig(n_obs, 6, 3), action_dim=8, state_dim=8, embodiment='franka_panda')
    torch.manual_seed(0)
    model = VLA(cfg).eval()
    rng = np.random.default_rng(0)
    lo, hi = FRANKA_PANDA.lower, FRANKA_PANDA.upper
    q = rng.uniform(lo, hi, size=(500, 8)).astype(np.float32)
    stats = {'state': NormalizationStats.from_data(q), 'action': NormalizationStats.from_data(q)}
    path = save_checkpoint(tmp_path / name, model, cfg, stats, tok, {'note': 'test'})
    return path, model, cfg, stats, tok


def obs(rng, stamp, instr=INSTR[0], size=(48, 40)):
    img = rng.integers(0, 256, size=size + (3,), dtype=np.uint8)
    q = rng.uniform(FRANKA_PANDA.lower, FRANKA_PANDA.upper).astype(np.float32)
    return Observation(images={'front': img}, joint_positions=q, instruction=instr, stamp=stamp)


def test_round_trip_bit_identical(tmp_path):
    path, model, cfg, stats, tok = make(tmp_path)
    assert sorted(p.name for p in path.iterdir()) == sorted(
        ['config.json', 'meta.json', 'model.safetensors', 'stats.safetensors', 'tokenizer.json'])
    m2, cfg2, stats2, tok2, meta = load_checkpoint(path)
    assert cfg2 == cfg and tok2.vocab == tok.vocab and meta['note'] == 'test'
    for k in ('state', 'action'):
        np.testing.assert_array_equal(stats2[k].q01, stats[k].q01)
        np.testing.assert_array_equal(stats2[k].q99, stats[k].q99)
    g = torch.Generator().manual_seed(1)
    b = {'images': torch.rand(4, 2, 3, 32, 32, generator=g), 'token_ids': torch.randint(0, tok.vocab_size, (4, 8), generator=g),
         'attention_mask': torch.ones(4, 8, dtype=torch.long), 'state': torch.rand(4, 2, 8, generator=g)}
    with torch.no_grad():
        assert torch.equal(model(b), m2(b))


def test_replace_is_atomic_and_leaves_no_temp(tmp_path):
    path, *_ = make(tmp_path)
    before = json.loads((path / 'meta.json').read_text())['created']
    path2, *_ = make(tmp_path)
    assert path2 == path
    assert json.loads((path / 'meta.json').read_text())['created'] >= before
    assert sorted(os.listdir(tmp_path)) == ['ckpt']  # no .tmp / .old leftovers
    # a failure while writing leaves the old checkpoint intact
    model, cfg = VLA(VLAConfig(backbone=BackboneConfig(vocab_size=10))), VLAConfig(backbone=BackboneConfig(vocab_size=10))
    with pytest.raises(TypeError):
        save_checkpoint(path, model, cfg, {}, WordTokenizer.build(['a']), {'bad': object()})
    load_checkpoint(path)
    assert sorted(os.listdir(tmp_path)) == ['ckpt']


def test_clear_errors(tmp_path):
    path, *_ = make(tmp_path)
    (path / 'stats.safetensors').rename(path / 'x')
    with pytest.raises(FileNotFoundError, match='stats.safetensors'):
        load_checkpoint(path)
    (path / 'x').rename(path / 'stats.safetensors')
    d = json.loads((path / 'config.json').read_text())
    (path / 'config.json').write_text(json.dumps(dict(d, backbone=dict(d['backbone'], name='octo_like'))))
    with pytest.raises(KeyError, match="unknown backbone 'octo_like'"):
        load_checkpoint(path)
    (path / 'config.json').write_text(json.dumps(dict(d, extra_field=1)))
    with pytest.raises(ValueError, match='extra_field'):
        load_checkpoint(path)
    (path / 'config.json').write_text(json.dumps(dict(d, backbone=dict(d['backbone'], channels=[32, 64, 32]))))
    with pytest.raises(ValueError, match=r"backbone\.blocks\.2\.conv1\.weight.*\(64, 64, 3, 3\).*\(32, 64, 3, 3\)"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match='not found'):
        load_checkpoint(tmp_path / 'missing')


def test_policy_infer_contract(tmp_path):
    path, model, cfg, stats, tok = make(tmp_path)
    pol = VLAPolicy.from_checkpoint(path)
    assert isinstance(pol, Policy) and pol.camera == 'front'
    rng = np.random.default_rng(3)
    h = [obs(rng, 1.0), obs(rng, 1.1)]
    chunk = pol.infer(h)
    assert isinstance(chunk, ActionChunk)
    assert chunk.actions.shape == (6, 8) and chunk.joint_names == tuple(FRANKA_PANDA.joint_names)
    assert chunk.dt == pytest.approx(0.1) and chunk.stamp == 1.1
    lo, hi = stats['action'].q01, stats['action'].q99
    assert np.all(chunk.actions >= lo - 1e-5) and np.all(chunk.actions <= hi + 1e-5)
    # same as running the model by hand on the same preprocessing
    b = {'images': torch.stack([preprocess_image(o.images['front'], 32) for o in h])[None],
         'token_ids': torch.from_numpy(tok.encode(INSTR[0])[0])[None],
         'attention_mask': torch.from_numpy(tok.encode(INSTR[0])[1])[None],
         'state': torch.from_numpy(stats['state'].normalize(np.stack([o.joint_positions for o in h])))[None]}
    with torch.no_grad():
        ref = stats['action'].unnormalize(model(b)[0].numpy())
    np.testing.assert_allclose(chunk.actions, ref, atol=1e-6)
    # short history at episode start = oldest repeated
    np.testing.assert_array_equal(pol.infer([h[0]]).actions, pol.infer([h[0], h[0]]).actions)
    pol.reset()
    bad_q = Observation(images={'front': h[0].images['front']}, joint_positions=np.zeros(7), instruction='x', stamp=0.0)
    with pytest.raises(ValueError, match='7 joints.*expects 8'):
        pol.infer([bad_q])
    no_cam = Observation(images={'wrist': h[0].images['front']}, joint_positions=h[0].joint_positions,
                         instruction='x', stamp=0.0)
    with pytest.raises(ValueError, match="lacks camera 'front'"):
        pol.infer([no_cam])
    with pytest.raises(ValueError, match='at least one'):
        pol.infer([])


def test_preprocess_image():
    img = np.zeros((40, 60, 3), np.uint8)
    img[:, :, 0] = 255
    x = preprocess_image(img, 32)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert torch.allclose(x[0], torch.ones(32, 32)) and torch.all(x[1:] == 0)
    with pytest.raises(ValueError, match='uint8'):
        preprocess_image(img.astype(np.float32), 32)
