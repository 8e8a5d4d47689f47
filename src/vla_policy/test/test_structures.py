"""VLA structures (RoboVLMs taxonomy): one-step continuous / discrete, interleaved, policy head.

Each structure trains a few steps on a fixed synthetic batch whose actions depend on the image
colour (the loss must fall), predicts (B, H, A), and survives save -> load bit for bit. The
discrete action tokenizer round-trips within half a bin; bad combinations name the valid choices.
"""
import json
from typing import Dict

import numpy as np
import pytest
import torch

from robot_drivers.embodiment import FRANKA_PANDA
from vla_policy.checkpoint import load_checkpoint, save_checkpoint
from vla_policy.contracts import ChunkGuide, Observation
from vla_policy.models import VLA, BackboneConfig, ChunkConfig, HeadConfig, VLAConfig, WordTokenizer
from vla_policy.models.action_tokenizer import ActionTokenizer
from vla_policy.models.config import STRUCTURES, DiscreteConfig
from vla_policy.normalization import NormalizationStats
from vla_policy.policy import VLAPolicy

torch.set_num_threads(1)

INSTR = ['pick the red cube', 'reach the blue cube']


def tiny_vlm(**kw) -> BackboneConfig:
    base = dict(name='hf_vlm', hf_arch='idefics3', image_size=32, patch_size=8, vision_hidden=32, vision_layers=1,
                text_hidden=32, text_layers=1, num_heads=2, image_feature_scale=1.0)
    base.update(kw)
    return BackboneConfig(**base)


def make_cfg(structure: str, backbone: BackboneConfig, head: str, n_obs: int = 2, chunk: int = 2,
             cameras=('front', 'wrist'), **kw) -> VLAConfig:
    return VLAConfig(backbone=backbone, head=HeadConfig(name=head, hidden=32, n_layers=1),
                     chunk=ChunkConfig(n_obs, chunk, 1), action_dim=8, state_dim=8, embodiment='franka_panda',
                     camera_names=cameras, max_tokens=6, structure=structure, **kw)


def tokenizer() -> WordTokenizer:
    return WordTokenizer.build(INSTR, max_len=6)


def synthetic_batch(cfg: VLAConfig, tok: WordTokenizer, b: int = 6, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Uniform-colour images; actions a linear map of the newest front image's colour, in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    s = cfg.backbone.image_size
    colour = torch.rand(b, cfg.n_images, 3, 1, 1, generator=g)
    images = colour.expand(b, cfg.n_images, 3, s, s).contiguous()
    w = torch.rand(3, cfg.chunk.chunk_size * cfg.action_dim, generator=g) * 2 - 1
    newest = colour[:, -len(cfg.camera_names), :, 0, 0]  # (B, 3)
    actions = torch.tanh(2 * (newest - 0.5) @ w).reshape(b, cfg.chunk.chunk_size, cfg.action_dim)
    ids, mask = zip(*(tok.encode(INSTR[i % 2]) for i in range(b)))
    return {'images': images, 'token_ids': torch.from_numpy(np.stack(ids)),
            'attention_mask': torch.from_numpy(np.stack(mask)),
            'state': torch.rand(b, cfg.chunk.n_obs_steps, cfg.state_dim, generator=g) * 2 - 1,
            'actions': actions, 'action_is_pad': torch.zeros(b, cfg.chunk.chunk_size, dtype=torch.bool)}


def train(model: VLA, batch, steps: int = 25, lr: float = 3e-3):
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    model.train()
    for _ in range(steps):
        loss, info = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses, info


def stats() -> Dict[str, NormalizationStats]:
    q = np.random.default_rng(0).uniform(FRANKA_PANDA.lower, FRANKA_PANDA.upper, size=(200, 8)).astype(np.float32)
    return {'state': NormalizationStats.from_data(q), 'action': NormalizationStats.from_data(q)}


# ------------------------------------------------------------------ action tokenizer

def test_action_tokenizer_round_trip_within_half_a_bin():
    tok = ActionTokenizer(256, 1000)
    assert tok.id_range == range(744, 1000)   # the last 256 ids (RT-2 / OpenVLA)
    x = torch.cat([torch.rand(5000) * 2 - 1, torch.tensor([-1.0, 1.0, 0.0, -1 + 2 / 256, 1 - 1e-7])])
    ids = tok.encode(x)
    assert int(ids.min()) >= 744 and int(ids.max()) <= 999
    assert int(tok.encode(torch.tensor(-1.0))) == 744 and int(tok.encode(torch.tensor(1.0))) == 999
    err = (tok.decode(ids) - x).abs().max()
    assert float(err) <= tok.bin_width / 2 + 1e-6
    # bins are uniform: centres are equally spaced and symmetric about 0
    c = tok.bin_centers(torch.arange(256))
    assert torch.allclose(c.diff(), torch.full((255,), 2 / 256)) and torch.allclose(c, -c.flip(0))
    # values beyond the quantile range clip to the end bins
    assert tok.to_bins(torch.tensor([-3.0, 7.0])).tolist() == [0, 255]
    t2 = ActionTokenizer(16, 100, vocab_offset=10)
    assert t2.id_range == range(10, 26) and int(t2.encode(torch.tensor(0.99))) == 25


def test_action_tokenizer_errors():
    with pytest.raises(ValueError, match='too small for discrete.n_bins=256'):
        ActionTokenizer(256, 100)
    with pytest.raises(ValueError, match=r'valid offsets: 0\.\.84'):
        ActionTokenizer(16, 100, vocab_offset=90)
    with pytest.raises(ValueError, match=r'\[84, 100\)'):
        ActionTokenizer(16, 100).decode(torch.tensor([83]))


# ------------------------------------------------------------------ config

def test_config_defaults_old_checkpoints_and_static_errors():
    cfg = VLAConfig()
    assert cfg.structure == 'one_step_continuous' and cfg.discrete == DiscreteConfig()
    assert cfg.discrete.n_bins == 256 and cfg.discrete.vocab_offset is None
    old = cfg.to_dict()
    del old['structure'], old['discrete']   # a config.json written before structures existed
    assert VLAConfig.from_dict(old) == cfg
    assert VLAConfig.from_dict(make_cfg('interleaved', tiny_vlm(), 'mlp').to_dict()).structure == 'interleaved'
    two = dict(chunk=ChunkConfig(3, 4, 2), camera_names=('front', 'wrist'))
    assert VLAConfig(**two).images_per_pass == 6 and VLAConfig(structure='interleaved', **two).images_per_pass == 6
    assert VLAConfig(structure='policy_head', **two).images_per_pass == 2
    with pytest.raises(ValueError, match=r"valid: \['one_step_continuous', 'one_step_discrete', 'interleaved', "
                                         r"'policy_head'\]"):
        VLAConfig(structure='two_step')
    with pytest.raises(ValueError, match="head.name must be 'none'"):
        VLAConfig(structure='one_step_discrete')
    with pytest.raises(ValueError, match="only valid with structure 'one_step_discrete'"):
        VLAConfig(head=HeadConfig(name='none'))
    with pytest.raises(ValueError, match=r'largest chunk_size is 4'):
        VLAConfig(structure='one_step_discrete', head=HeadConfig(name='none'), chunk=ChunkConfig(1, 5, 1),
                  discrete=DiscreteConfig(max_action_tokens=32))
    with pytest.raises(ValueError, match='backbone.use_state'):
        VLAConfig(structure='interleaved', backbone=BackboneConfig(use_state=True))
    with pytest.raises(ValueError, match='discrete.n_bins'):
        VLAConfig.from_dict(dict(old, discrete={'n_bins': 1}))
    with pytest.raises(ValueError, match='unknown key'):
        VLAConfig.from_dict(dict(old, discrete={'bins': 8}))
    assert STRUCTURES == ('one_step_continuous', 'one_step_discrete', 'interleaved', 'policy_head')


# ------------------------------------------------------------------ structures train, infer, save / load

FILM = dict(name='film_cnn', image_size=32, channels=(8, 8), feature_dim=32, word_dim=8)
CASES = [('one_step_continuous', 'vlm', 'mlp'), ('one_step_discrete', 'vlm', 'none'), ('interleaved', 'vlm', 'mlp'),
         ('interleaved', 'vlm', 'lstm'), ('policy_head', 'vlm', 'lstm'), ('policy_head', 'vlm', 'gpt'),
         ('policy_head', 'film_cnn', 'lstm')]


def build(structure, kind, head, tok, **kw):
    bb = tiny_vlm(vocab_size=tok.vocab_size) if kind == 'vlm' else BackboneConfig(vocab_size=tok.vocab_size, **FILM)
    cfg = make_cfg(structure, bb, head, **kw)
    torch.manual_seed(0)
    return VLA(cfg), cfg


def observations(rng, n, cameras=('front', 'wrist')):
    return [Observation(images={c: rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for c in cameras},
                        joint_positions=rng.uniform(FRANKA_PANDA.lower, FRANKA_PANDA.upper).astype(np.float32),
                        instruction=INSTR[0], stamp=float(i)) for i in range(n)]


@pytest.mark.parametrize('structure,kind,head', CASES, ids=['-'.join(c) for c in CASES])
def test_structure_trains_infers_and_round_trips(tmp_path, structure, kind, head):
    tok = tokenizer()
    model, cfg = build(structure, kind, head, tok)
    batch = synthetic_batch(cfg, tok)
    losses, info = train(model, batch)
    assert np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < 0.7 * losses[0], losses
    with torch.no_grad():
        pred = model(batch)
    assert pred.shape == (6, cfg.chunk.chunk_size, cfg.action_dim) and torch.isfinite(pred).all()
    if structure == 'one_step_discrete':
        assert set(info) == {'ce', 'token_acc'}
        w = 2 / cfg.discrete.n_bins   # every output is a bin centre
        k = (pred + 1) / w - 0.5
        assert torch.allclose(k, k.round(), atol=1e-4) and k.min() >= 0 and k.max() <= cfg.discrete.n_bins - 1
    path = save_checkpoint(tmp_path / 'ckpt', model, cfg, stats(), tok)
    m2, cfg2, *_ = load_checkpoint(path)
    assert json.dumps(cfg2.to_dict()) == json.dumps(cfg.to_dict()) and cfg2.structure == structure
    with torch.no_grad():
        assert torch.equal(m2(batch), pred)
    policy = VLAPolicy.from_checkpoint(path)
    chunk = policy.infer(observations(np.random.default_rng(0), 3))
    assert chunk.actions.shape == (cfg.chunk.chunk_size, 8) and np.isfinite(chunk.actions).all()


def test_discrete_greedy_decoding_matches_teacher_forcing():
    """Decoded ids are valid bins, and teacher-forcing the decoded chunk gives the same argmax at
    every position: training and decoding read the same positions (no off-by-one)."""
    tok = tokenizer()
    model, cfg = build('one_step_discrete', 'vlm', 'none', tok, chunk=3)
    batch = synthetic_batch(cfg, tok, b=3)
    train(model, batch, steps=10)
    st = model.structure
    assert st.tokenizer.offset == model.backbone.vocab_size - cfg.discrete.n_bins == tok.vocab_size
    with torch.no_grad():
        ids = st.decode_tokens(model, batch)  # (B, N)
        assert ids.shape == (3, 3 * 8)
        assert int(ids.min()) >= st.tokenizer.offset and int(ids.max()) < model.backbone.vocab_size
        forced = dict(batch, actions=st.tokenizer.decode(ids).reshape(3, 3, 8))
        logits = st.teacher_forced_logits(model, forced)  # (B, N, V)
        again = logits[..., st.tokenizer.offset:].argmax(-1) + st.tokenizer.offset
    assert torch.equal(again, ids)
    with pytest.raises(ValueError, match='no continuous feature'):
        model.features(batch)
    with pytest.raises(ValueError, match='takes no sampling arguments'):
        model(batch, generator=torch.Generator())


def test_discrete_loss_ignores_padded_steps():
    tok = tokenizer()
    model, cfg = build('one_step_discrete', 'vlm', 'none', tok)
    batch = synthetic_batch(cfg, tok, b=2)
    pad = torch.zeros(2, cfg.chunk.chunk_size, dtype=torch.bool)
    pad[:, -1] = True
    changed = batch['actions'].clone()
    changed[:, -1] = -changed[:, -1] + 0.3   # different targets on the padded (last) step only
    with torch.no_grad():
        a, _ = model.loss(dict(batch, action_is_pad=pad))
        b, _ = model.loss(dict(batch, action_is_pad=pad, actions=changed))
        c, _ = model.loss(dict(batch, actions=changed))
    assert float(a) == pytest.approx(float(b), abs=1e-6) and float(c) != pytest.approx(float(a), abs=1e-4)


def test_interleaved_readout_sees_its_own_step_only_causally():
    """The feature at step t's [LRN] does not depend on later steps' images (causal interleaving)."""
    tok = tokenizer()
    model, cfg = build('interleaved', 'vlm', 'lstm', tok, n_obs=2)
    batch = synthetic_batch(cfg, tok, b=2)
    later = batch['images'].clone()
    later[:, 2:] = 1.0 - later[:, 2:]   # step 1 (cameras 2, 3) changed
    with torch.no_grad():
        f1, _ = model.features(batch)
        f2, _ = model.features(dict(batch, images=later))
    assert f1.shape == (2, 2, model.backbone.out_dim)
    assert torch.allclose(f1[:, 0], f2[:, 0], atol=1e-6) and not torch.allclose(f1[:, 1], f2[:, 1], atol=1e-4)


def test_rtc_with_interleaved_flow_and_refused_for_discrete(tmp_path):
    tok = tokenizer()
    rng = np.random.default_rng(1)
    hist = observations(rng, 2)
    model, cfg = build('interleaved', 'vlm', 'flow', tok)
    pol = VLAPolicy.from_checkpoint(save_checkpoint(tmp_path / 'flow', model, cfg, stats(), tok), seed=0)
    assert model.supports_guidance and pol.supports_guidance
    guide_rows = pol.infer(hist).actions[:1]
    out = pol.infer_guided(hist, ChunkGuide(actions=guide_rows, weights=np.ones(1, np.float32), inference_delay=1))
    assert out.actions.shape == (2, 8) and out.info['rtc_guided_rows'] == 1.0
    model, cfg = build('one_step_discrete', 'vlm', 'none', tok)
    pol = VLAPolicy.from_checkpoint(save_checkpoint(tmp_path / 'rt2', model, cfg, stats(), tok))
    assert not model.supports_guidance and not pol.supports_guidance
    with pytest.raises(ValueError, match='sampling head'):
        pol.infer_guided(hist, ChunkGuide(actions=guide_rows, weights=np.ones(1, np.float32), inference_delay=1))


# ------------------------------------------------------------------ compatibility errors

def test_incompatible_combinations_list_the_valid_choices():
    tok = tokenizer()
    film = BackboneConfig(vocab_size=tok.vocab_size, **FILM)
    for structure, head in (('one_step_discrete', 'none'), ('interleaved', 'mlp')):
        with pytest.raises(ValueError, match=r"needs a VLM backbone \(valid: \[.*'hf_vlm'.*\]\)"):
            VLA(make_cfg(structure, film, head))
    with pytest.raises(ValueError, match=r"sequence_input \(valid: \['gpt', 'lstm'\]\)"):
        VLA(make_cfg('policy_head', film, 'mlp'))
    with pytest.raises(KeyError, match='available'):
        VLA(make_cfg('policy_head', film, 'transformer_xl'))
    vlm = tiny_vlm(vocab_size=tok.vocab_size)
    with pytest.raises(ValueError, match=r'valid offsets: 0\.\.'):
        VLA(make_cfg('one_step_discrete', vlm, 'none', discrete=DiscreteConfig(vocab_offset=10 ** 6)))
    # an LM whose vocabulary is fixed (here rebuilt from hf_config) and smaller than n_bins
    from vla_policy.models.backbones.hf_vlm import tiny_hf_config
    fixed = tiny_vlm(vocab_size=tok.vocab_size, hf_config=tiny_hf_config(vlm, tok.vocab_size).to_dict())
    with pytest.raises(ValueError, match=r'too small for discrete.n_bins=256'):
        VLA(make_cfg('one_step_discrete', fixed, 'none'))
    # sequences longer than the LM's positions (tiny config: 1024)
    with pytest.raises(ValueError, match=r'more than the LM accepts \(1024 positions\)'):
        VLA(make_cfg('one_step_discrete', vlm, 'none', chunk=128, discrete=DiscreteConfig(max_action_tokens=1024)))
    with pytest.raises(ValueError, match=r'more than the LM accepts \(1024 positions\)'):
        VLA(make_cfg('interleaved', vlm, 'mlp', n_obs=120))
    with pytest.raises(ValueError, match='images per sample'):
        model, cfg = build('interleaved', 'vlm', 'mlp', tok)
        model.loss(dict(synthetic_batch(cfg, tok, b=2), images=torch.rand(2, 3, 3, 32, 32)))


def _archs():
    from vla_policy.models.backbones.hf_vlm import available_hf_archs
    return available_hf_archs()


@pytest.mark.parametrize('arch', _archs())
def test_vlm_sequence_structures_on_every_arch(arch):
    """interleaved and one_step_discrete build their sequences from the VLM contract alone: every arch
    trains (loss falls) and predicts (B, H, A); discrete outputs are bin centres."""
    tok = tokenizer()
    for structure, head in (('interleaved', 'lstm'), ('one_step_discrete', 'none')):
        cfg = make_cfg(structure, tiny_vlm(vocab_size=tok.vocab_size, hf_arch=arch), head, n_obs=2, chunk=1,
                       cameras=('front',))
        torch.manual_seed(0)
        model = VLA(cfg)
        batch = synthetic_batch(cfg, tok, b=3)
        losses, _ = train(model, batch, steps=8)
        assert losses[-1] < losses[0], (structure, losses)
        with torch.no_grad():
            pred = model(batch)
        assert pred.shape == (3, 1, 8) and torch.isfinite(pred).all()
