"""``octo`` backbone: Octo-style block attention, language use, learning, checkpoint round trip."""
import json

import numpy as np
import pytest
import torch

from vla_policy.checkpoint import load_checkpoint, save_checkpoint
from vla_policy.models import VLA, BackboneConfig, ChunkConfig, HeadConfig, VLAConfig, WordTokenizer
from vla_policy.models.backbones.octo import OBS, READOUT, TASK, octo_attention_mask, sincos_2d
from vla_policy.normalization import NormalizationStats

torch.set_num_threads(1)

COLOURS = ('red', 'green', 'blue')
RGB = torch.eye(3)
INSTR = [f'reach the {c} cube' for c in COLOURS]


def tiny_cfg(vocab, n_obs=1, cameras=('front',), **bb):
    kw = dict(name='octo', vocab_size=vocab, image_size=32, octo_dim=32, octo_layers=1, octo_heads=2,
              octo_stem_channels=(8, 16), octo_mlp_ratio=2.0)
    kw.update(bb)
    return VLAConfig(backbone=BackboneConfig(**kw), head=HeadConfig(hidden=64), chunk=ChunkConfig(n_obs, 4, 2),
                     action_dim=2, state_dim=2, embodiment='franka_panda', camera_names=cameras, max_tokens=6)


def cube_batch(tok, cfg, n, seed):
    """Three coloured 6 px squares at random places; the target is the named square's (x, y) in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    s = cfg.backbone.image_size
    imgs = torch.zeros(n, cfg.n_images, 3, s, s)
    target = torch.zeros(n, 2)
    which = torch.randint(0, 3, (n,), generator=g)
    for i in range(n):
        for c in range(3):
            x, y = (int(v) for v in torch.randint(0, s - 6, (2,), generator=g))
            imgs[i, :, :, y:y + 6, x:x + 6] = RGB[c][:, None, None]
            if c == which[i]:
                target[i] = torch.tensor([x, y], dtype=torch.float32) / (s - 6) * 2 - 1
    ids, mask = tok.encode_batch([INSTR[int(w)] for w in which])
    return {'images': imgs, 'token_ids': torch.from_numpy(ids), 'attention_mask': torch.from_numpy(mask),
            'state': torch.zeros(n, cfg.chunk.n_obs_steps, 2),
            'actions': target[:, None].expand(n, cfg.chunk.chunk_size, 2).contiguous(),
            'action_is_pad': torch.zeros(n, cfg.chunk.chunk_size, dtype=torch.bool)}


@pytest.fixture(scope='module')
def tok():
    return WordTokenizer.build(INSTR, max_len=6)


def test_block_attention_rule():
    kinds = torch.tensor([TASK, TASK, OBS, OBS, READOUT, OBS, OBS, READOUT])
    steps = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1])
    a = octo_attention_mask(kinds, steps)
    obs, ro, task = kinds == OBS, kinds == READOUT, kinds == TASK
    assert not a[obs][:, ro].any() and not a[task][:, ~task].any()   # nobody but readouts reads readouts
    assert a[ro][:, task].all() and a[obs][:, task].all()
    assert a[4, [2, 3]].all() and not a[4, [5, 6, 7]].any()           # readout_0: obs_0 only (causal)
    assert a[7, [2, 3, 4, 5, 6]].all()                                # readout_1: all earlier obs + readout_0
    assert a[5, [2, 3, 6]].all() and not a[2, [5, 6]].any()           # obs causal over steps
    pe = sincos_2d(4, 4, 16)
    assert pe.shape == (16, 16) and len({tuple(r.tolist()) for r in pe}) == 16
    with pytest.raises(ValueError, match='divisible by 4'):
        sincos_2d(2, 2, 6)


def test_obs_tokens_never_see_readouts_and_padding_is_ignored(tok):
    cfg = tiny_cfg(tok.vocab_size, n_obs=2, cameras=('front', 'wrist'), octo_keypoints=2, octo_state_token=True,
                   octo_readouts=2)
    torch.manual_seed(0)
    bb = VLA(cfg).backbone.eval()
    b = cube_batch(tok, cfg, 2, seed=0)
    b['state'] = torch.randn(2, 2, 2)
    args = (b['images'], b['token_ids'], b['attention_mask'], b['state'])
    h, kinds = bb.tokens(*args)
    n = 6 + 2 * (2 * (64 + 2) + 1 + 2)
    assert h.shape == (2, n, 32) and (kinds == READOUT).sum() == 4
    with torch.no_grad():
        bb.readouts.add_(torch.randn_like(bb.readouts))          # change only the readout tokens
    h2, _ = bb.tokens(*args)
    assert torch.allclose(h[:, kinds != READOUT], h2[:, kinds != READOUT], atol=1e-6)
    assert not torch.allclose(h[:, kinds == READOUT], h2[:, kinds == READOUT], atol=1e-3)
    out = bb(*args)
    ids = b['token_ids'].clone()
    ids[b['attention_mask'] == 0] = 1                            # garbage in padded positions
    assert torch.allclose(out, bb(b['images'], ids, b['attention_mask'], b['state']), atol=1e-6)
    other = tok.encode_batch([INSTR[2], INSTR[2]])               # another colour -> another feature
    assert not torch.allclose(out, bb(b['images'], torch.from_numpy(other[0]), torch.from_numpy(other[1]),
                                      b['state']), atol=1e-4)
    with pytest.raises(ValueError, match='expects 4 images'):
        bb(b['images'][:, :2], b['token_ids'], b['attention_mask'], b['state'])


@pytest.mark.parametrize('mode,per_image', [('tokens', 3), ('flat', 1)])
def test_keypoint_only_tokens(tok, mode, per_image):
    cfg = tiny_cfg(tok.vocab_size, cameras=('front', 'wrist'), octo_keypoints=3, octo_patch_tokens=False,
                   octo_keypoint_mode=mode, octo_state_token=True, octo_readouts=2, octo_readout_pool='concat')
    torch.manual_seed(0)
    model = VLA(cfg).eval()
    b = cube_batch(tok, cfg, 2, seed=3)
    h, kinds = model.backbone.tokens(b['images'], b['token_ids'], b['attention_mask'], b['state'])
    assert (kinds == OBS).sum() == 2 * per_image + 1 and h.shape[1] == 6 + 2 * per_image + 1 + 2
    assert model.backbone(b['images'], b['token_ids'], b['attention_mask'], b['state']).shape == (2, 64)
    moved = dict(b, state=b['state'] + 0.5)      # the proprio token reaches the readouts
    assert not torch.allclose(model(b), model(moved), atol=1e-5)


def test_obs_skip_carries_the_observation_token_past_the_trunk(tok):
    cfg = tiny_cfg(tok.vocab_size, octo_keypoints=3, octo_patch_tokens=False, octo_keypoint_mode='flat',
                   octo_obs_skip=True)
    torch.manual_seed(0)
    model = VLA(cfg).eval()
    b = cube_batch(tok, cfg, 2, seed=4)
    bb = model.backbone
    with torch.no_grad():
        out = bb(b['images'], b['token_ids'], b['attention_mask'], b['state'])  # (B, 2D): readout | obs token
        d = cfg.backbone.octo_dim
        assert out.shape == (2, 2 * d) and bb.out_dim == 2 * d
        for prm in bb.blocks.parameters():       # another trunk: the readout half moves, the skip half does not
            prm.add_(0.1 * torch.randn_like(prm))
        out2 = bb(b['images'], b['token_ids'], b['attention_mask'], b['state'])
    assert torch.equal(out[:, d:], out2[:, d:])
    assert not torch.allclose(out[:, :d], out2[:, :d], atol=1e-4)
    moved = dict(b, images=b['images'].flip(-1))  # the skip half is the image token: it sees the scene
    with torch.no_grad():
        out3 = bb(moved['images'], b['token_ids'], b['attention_mask'], b['state'])
    assert not torch.allclose(out2[:, d:], out3[:, d:], atol=1e-4)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match='octo_dim'):
        BackboneConfig(name='octo', octo_dim=30, octo_heads=4)
    with pytest.raises(ValueError, match='octo_pos'):
        BackboneConfig(name='octo', octo_pos='rope')
    with pytest.raises(ValueError, match='octo_stem_strides'):
        BackboneConfig(name='octo', octo_stem_channels=(8, 16), octo_stem_strides=(2,))
    with pytest.raises(ValueError, match='total stride'):
        VLA(tiny_cfg(10, image_size=34))
    with pytest.raises(ValueError, match='octo_keypoint_mode'):
        BackboneConfig(name='octo', octo_keypoint_mode='grid')
    with pytest.raises(ValueError, match='octo_patch_tokens false needs octo_keypoints'):
        VLA(tiny_cfg(10, octo_patch_tokens=False))
    with pytest.raises(ValueError, match='octo_state_token needs state_dim'):
        VLA(VLAConfig.from_dict(dict(tiny_cfg(10, octo_state_token=True).to_dict(), state_dim=0,
                                     head=dict(HeadConfig(use_state=False).__dict__))))
    with pytest.raises(ValueError, match='vocab_size'):
        VLA(tiny_cfg(0))


def test_trains_on_language_conditioned_cubes_and_round_trips(tok, tmp_path):
    cfg = tiny_cfg(tok.vocab_size)
    torch.manual_seed(0)
    model = VLA(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = cube_batch(tok, cfg, 24, seed=1)
    losses = []
    for _ in range(40):
        loss, _ = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:3]), losses
    model.eval()
    q = np.random.default_rng(0).uniform(-1, 1, size=(100, 2)).astype(np.float32)
    stats = {'state': NormalizationStats.from_data(q), 'action': NormalizationStats.from_data(q)}
    path = save_checkpoint(tmp_path / 'octo', model, cfg, stats, tok, {})
    m2, cfg2, *_ = load_checkpoint(path)
    assert json.loads(json.dumps(cfg2.to_dict())) == json.loads(json.dumps(cfg.to_dict()))
    with torch.no_grad():
        out = model(batch)
        assert out.shape == (24, 4, 2)
        assert torch.equal(out, m2(batch))
