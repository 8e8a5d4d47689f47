"""Real training runs on a generated language-conditioned reaching task (2 CPU cores, 1 thread)."""

import numpy as np
import pytest
import torch

from vla_policy.checkpoint import load_checkpoint
from vla_policy.models import BackboneConfig, ChunkConfig, HeadConfig, VLAConfig
from vla_training.bag_dataset import Episode
from vla_training.train import TrainConfig, build_arrays, compute_stats, random_shift, train

torch.set_num_threads(1)

COLOURS = {'red': (230, 30, 30), 'green': (30, 200, 40), 'blue': (40, 60, 230)}
SIZE, SQ, STEP = 64, 10, 0.25




def make_episode(rng, i, t_len=8):
    """64x64 image with 3 coloured squares; the 2-D point (state, in [-1, 1]) moves towards the named one."""
    img = np.full((SIZE, SIZE, 3), 120, np.uint8)
    centres = {}
    while len(centres) < 3:
        c = rng.integers(SQ // 2 + 1, SIZE - SQ // 2 - 1, size=2)
        if all(np.abs(c - o).max() > SQ + 2 for o in centres.values()):
            centres[list(COLOURS)[len(centres)]] = c
    for name, (cx, cy) in centres.items():
        img[cy - SQ // 2:cy + SQ // 2, cx - SQ // 2:cx + SQ // 2] = COLOURS[name]
    target_name = list(COLOURS)[rng.integers(3)]
    target = centres[target_name] / (SIZE - 1) * 2 - 1  # pixel (x, y) -> [-1, 1]
    p = rng.uniform(-1, 1, size=2)
    qs, acts = [], []
    for _ in range(t_len):
        d = target - p
        nxt = p + d * min(1.0, STEP / max(np.linalg.norm(d), 1e-9))
        qs.append(p.copy())
        acts.append(nxt.copy())
        p = nxt
    verb = ['move to', 'go to', 'reach'][i % 3]
    return Episode(source=f'gen{i}', stamps=np.arange(t_len) * 0.1, images=np.repeat(img[None], t_len, 0),
              joint_positions=np.array(qs, np.float32), actions=np.array(acts, np.float32),
              instructions=[f'{verb} the {target_name} square'] * t_len), target, centres


def make_dataset(n, seed):
    rng = np.random.default_rng(seed)
    return [make_episode(rng, i) for i in range(n)]


def film_cfg():
    return VLAConfig(backbone=BackboneConfig(name='film_cnn', image_size=64),
                     head=HeadConfig(hidden=128, loss='l1'), chunk=ChunkConfig(1, 4, 2),
                     action_dim=2, state_dim=2, camera_names=('front',), max_tokens=8)


def test_build_arrays_windows_and_padding():
    cfg = VLAConfig.from_dict(dict(film_cfg().to_dict(), chunk={'n_obs_steps': 2, 'chunk_size': 4, 'n_action_steps': 2}))
    eps = [e for e, _, _ in make_dataset(2, 0)]
    arr = build_arrays(eps, cfg)
    assert arr['images'].shape == (16, 3, 64, 64) and arr['images'].dtype == np.uint8
    assert arr['obs_index'][0].tolist() == [0, 0] and arr['obs_index'][8].tolist() == [8, 8]
    assert arr['obs_index'][9].tolist() == [8, 9]
    np.testing.assert_array_equal(arr['actions'][7], np.repeat(eps[0].actions[7:8], 4, 0))
    assert arr['action_is_pad'][7].tolist() == [False, True, True, True]
    np.testing.assert_array_equal(arr['actions'][2], eps[0].actions[2:6])
    bad = Episode('bad', np.arange(3.0), np.zeros((3, 8, 8, 3), np.uint8), np.zeros((3, 2), np.float32),
             np.zeros((3, 5), np.float32), ['x'] * 3)
    with pytest.raises(ValueError, match='bad.*actions'):
        build_arrays([bad], cfg)


def test_random_shift_keeps_content_shifted():
    x = torch.zeros(2, 1, 3, 16, 16)
    x[:, :, :, 8, 8] = 1.0
    y = random_shift(x, 4, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    assert torch.all(y.sum(dim=(1, 2, 3, 4)) == 3.0)  # the dot survives (moved by <= 4 px)
    pos = (y[:, 0, 0] == 1).nonzero()[:, 1:]
    assert torch.all((pos - 8).abs() <= 4)


def test_film_cnn_learns_language_conditioned_reaching(tmp_path):
    data = make_dataset(90, seed=1)
    train_eps = [e for e, _, _ in data[:70]]
    test = data[70:]
    cfg = film_cfg()
    res = train(train_eps, cfg, TrainConfig(steps=220, batch_size=32, lr=2e-3, warmup_steps=20, seed=0,
                                            log_every=20, eval_fraction=0.1, output_dir=str(tmp_path / 'run')),
                progress=False)
    first = np.mean([l for _, l in res.losses[:10]])
    last = np.mean([l for _, l in res.losses[-20:]])
    assert last < first / 3, (first, last)
    assert res.val_loss is not None and np.isfinite(res.val_loss)
    assert (tmp_path / 'run' / 'train_log.jsonl').read_text().count('\n') >= 10
    assert list((tmp_path / 'run' / 'tb').glob('events.out.tfevents*'))

    model, lcfg, stats, tok, meta = load_checkpoint(res.checkpoint_dir)
    test_eps = [e for e, _, _ in test]
    arr = build_arrays(test_eps, lcfg)
    ids, mask = tok.encode_batch(list(arr['instructions']))
    batch = {'images': torch.from_numpy(arr['images'][arr['obs_index']]).float() / 255,
             'token_ids': torch.from_numpy(ids), 'attention_mask': torch.from_numpy(mask),
             'state': torch.from_numpy(stats['state'].normalize(arr['state'][arr['obs_index']]))}
    with torch.no_grad():
        pred = stats['action'].unnormalize(model(batch).numpy())  # (N, H, 2)
    tgt, pad = arr['actions'], arr['action_is_pad']
    err_model = np.abs(pred - tgt)[~pad].mean()
    mean_pred = np.concatenate([e.actions for e in train_eps]).mean(0)
    err_mean = np.abs(mean_pred - tgt)[~pad].mean()
    assert err_model < 0.5 * err_mean, (err_model, err_mean)
    # Language grounding: at the first tick the last predicted point is closer to the named square
    # than to either other square.
    hits = 0
    for k, (ep, target, centres) in enumerate(test):
        end = pred[k * 8, -1]
        dists = {n: np.linalg.norm(end - (c / (SIZE - 1) * 2 - 1)) for n, c in centres.items()}
        hits += min(dists, key=dists.get) == ep.instructions[0].split()[-2]
    assert hits >= 0.7 * len(test), hits

    # Reload gives bit-identical outputs; a config that does not fit the weights is named.
    model2, *_ = load_checkpoint(res.checkpoint_dir)
    with torch.no_grad():
        assert torch.equal(model(batch), model2(batch))
    import json
    p = res.checkpoint_dir / 'config.json'
    d = json.loads(p.read_text())
    d['head']['hidden'] = 64
    p.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r"head\.net\.0\.weight.*\(128, .*\(64, "):
        load_checkpoint(res.checkpoint_dir)


def test_hf_vlm_idefics3_tiny_trains_and_round_trips(tmp_path):
    eps = [e for e, _, _ in make_dataset(12, seed=2)]
    cfg = VLAConfig(backbone=BackboneConfig(name='hf_vlm', hf_arch='idefics3', image_size=32, patch_size=8,
                                            vision_hidden=64, text_hidden=64, vision_layers=2, text_layers=2),
                    head=HeadConfig(hidden=64), chunk=ChunkConfig(1, 4, 2), action_dim=2, state_dim=2, max_tokens=8)
    res = train(eps, cfg, TrainConfig(steps=30, batch_size=16, lr=1e-3, warmup_steps=3, log_every=10,
                                      eval_fraction=0.0, output_dir=str(tmp_path / 'run')), progress=False)
    ls = np.array([l for _, l in res.losses])
    assert np.all(np.isfinite(ls))
    assert ls[-10:].mean() < ls[:5].mean(), (ls[:5], ls[-10:])
    assert res.val_loss is None
    m1, c1, st, tok, _ = load_checkpoint(res.checkpoint_dir)
    m2, *_ = load_checkpoint(res.checkpoint_dir)
    arr = build_arrays(eps[:2], c1)
    ids, mask = tok.encode_batch(list(arr['instructions']))
    batch = {'images': torch.from_numpy(arr['images'][arr['obs_index']]).float() / 255,
             'token_ids': torch.from_numpy(ids), 'attention_mask': torch.from_numpy(mask),
             'state': torch.from_numpy(st['state'].normalize(arr['state'][arr['obs_index']]))}
    with torch.no_grad():
        assert torch.equal(m1(batch), m2(batch))


def test_stats_from_training_episodes_only():
    eps = [e for e, _, _ in make_dataset(4, seed=3)]
    cfg = film_cfg()
    s = compute_stats(eps[:2], cfg)
    allq = np.concatenate([e.actions for e in eps[:2]])
    np.testing.assert_allclose(s['action'].q01, np.quantile(allq, 0.01, axis=0), rtol=1e-5)
    assert set(s) == {'action', 'state'}
