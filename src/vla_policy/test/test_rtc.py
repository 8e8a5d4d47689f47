"""Real-time chunking (Black et al. 2025, arXiv 2506.07339): guided flow sampling through VLAPolicy."""
import json

import numpy as np
import pytest
import torch

from robot_drivers.embodiment import FRANKA_PANDA
from vla_policy.checkpoint import save_checkpoint
from vla_policy.contracts import ChunkGuide, Observation
from vla_policy.models import VLA, BackboneConfig, ChunkConfig, HeadConfig, VLAConfig, WordTokenizer
from vla_policy.normalization import NormalizationStats
from vla_policy.policy import VLAPolicy
from vla_policy.rtc import GuidedVelocity, guidance_weight, sample_guided

torch.set_num_threads(1)

INSTR = ['reach the red cube', 'pick the blue cube']
H, A = 8, 8
ARM = list(range(7))


def make_policy(tmp_path, head='flow', seed=1, name='ckpt'):
    """An untrained film_cnn + head checkpoint with Franka stats (arm deltas, binary finger)."""
    tok = WordTokenizer.build(INSTR, max_len=8)
    cfg = VLAConfig(backbone=BackboneConfig(vocab_size=tok.vocab_size, image_size=32, channels=(16, 16, 16)),
                    head=HeadConfig(name=head, hidden=64), chunk=ChunkConfig(1, H, 4),
                    delta_action_dims=tuple(ARM), binary_action_dims=(7,))
    torch.manual_seed(0)
    model = VLA(cfg).eval()
    rng = np.random.default_rng(0)
    q = rng.uniform(FRANKA_PANDA.lower, FRANKA_PANDA.upper, size=(500, 8)).astype(np.float32)
    act = np.concatenate([rng.uniform(-0.2, 0.2, size=(500, 7)), rng.choice([0.0, 0.04], size=(500, 1))], 1)
    stats = {'state': NormalizationStats.from_data(q), 'action': NormalizationStats.from_data(act)}
    path = save_checkpoint(tmp_path / name, model, cfg, stats, tok)
    return VLAPolicy.from_checkpoint(path, seed=seed)


@pytest.fixture(scope='module')
def flow(tmp_path_factory):
    return make_policy(tmp_path_factory.mktemp('rtc'))


def history(seed=0):
    rng = np.random.default_rng(seed)
    q = rng.uniform(FRANKA_PANDA.lower, FRANKA_PANDA.upper).astype(np.float32)
    img = rng.integers(0, 256, size=(48, 48, 3), dtype=np.uint8)
    return [Observation(images={'front': img}, joint_positions=q, instruction=INSTR[0], stamp=12.5)]


def test_guidance_weight_is_the_paper_formula_clipped_at_beta():
    for tau in np.linspace(0.05, 0.95, 19):
        r2 = (1 - tau) ** 2 / (tau ** 2 + (1 - tau) ** 2)
        assert guidance_weight(tau, 1e9) == pytest.approx((1 - tau) / (tau * r2))
        assert guidance_weight(tau, 5.0) == pytest.approx(min(5.0, (1 - tau) / (tau * r2)))
    assert guidance_weight(0.0, 5.0) == 5.0           # limit +inf, clipped
    assert guidance_weight(0.5, 10.0) == pytest.approx(2.0)
    with pytest.raises(ValueError, match='max_guidance_weight'):
        guidance_weight(0.5, 0.0)


def test_vector_jacobian_product_goes_through_the_velocity_network():
    # linear field v(x) = x M (flattened): A_hat = x (I - (1 - tau) M), so g = e (I - (1 - tau) M)^T
    g = torch.Generator().manual_seed(0)
    M = torch.randn(6, 6, generator=g) * 0.5
    x = torch.randn(1, 2, 3, generator=g)
    Y = torch.randn(2, 3, generator=g)
    W = torch.tensor([1.0, 0.5])
    tau, beta = 0.3, 10.0
    field = lambda z, t: (z.reshape(1, 6) @ M).reshape(1, 2, 3)  # noqa: E731
    out = GuidedVelocity(field, Y, W, beta)(x, tau)
    v = field(x, tau)
    e = ((Y - (x - (1 - tau) * v)) * W[:, None]).reshape(1, 6)
    J = torch.eye(6) - (1 - tau) * M
    expect = v - guidance_weight(tau, beta) * (e @ J.T).reshape(1, 2, 3)
    assert torch.allclose(out, expect, atol=1e-5)
    # an identity Jacobian (g = e) would give a different answer for this field
    assert not torch.allclose(out, v - guidance_weight(tau, beta) * e.reshape(1, 2, 3), atol=1e-3)
    with pytest.raises(ValueError, match='weights'):
        GuidedVelocity(field, Y, torch.ones(3), beta)
    with pytest.raises(ValueError, match='NaN'):
        GuidedVelocity(field, torch.full((2, 3), float('nan')), W, beta)


def test_guided_prefix_follows_the_guide_and_zero_weights_change_nothing(flow):
    hist = history(0)
    flow.reset()
    free = flow.infer(hist).actions                           # the unguided sample (seed 1)
    guide_rows = flow.infer(history(1)).actions              # another plausible chunk as the previous plan
    d = 3
    w = np.array([1, 1, 1, 0.6, 0.3, 0, 0, 0], np.float32)
    flow.reset()                                             # same noise as `free`
    guided = flow.infer_guided(hist, ChunkGuide(guide_rows, w, inference_delay=d, max_guidance_weight=10.0))
    err_guided = np.abs(guided.actions[:d, ARM] - guide_rows[:d, ARM]).mean()
    err_free = np.abs(free[:d, ARM] - guide_rows[:d, ARM]).mean()
    assert err_free > 0.05                                   # the two chunks really differ (rad)
    assert err_guided < 0.1 * err_free, (err_guided, err_free)
    # the reported prefix error is the weighted error in the model's space, far below the free sample's
    q = hist[-1].joint_positions
    free_err = (np.abs(flow.to_normalized(free, q) - flow.to_normalized(guide_rows, q)).mean(-1) * w).sum() / w.sum()
    assert guided.info['rtc_guided_rows'] == 5.0 and guided.info['rtc_prefix_error'] < 0.2 * free_err
    assert np.all(np.isin(guided.actions[:, 7], np.float32([FRANKA_PANDA.lower[7], FRANKA_PANDA.upper[7]])))
    assert guided.stamp == 12.5 and guided.joint_names == tuple(FRANKA_PANDA.joint_names)

    flow.reset()
    zero = flow.infer_guided(hist, ChunkGuide(guide_rows, np.zeros(H, np.float32), inference_delay=0))
    np.testing.assert_array_equal(zero.actions, free)        # W = 0: the unguided sample, bit for bit

    # the same in the model's space, straight through rtc.sample_guided
    batch = flow.make_batch(hist)
    with torch.no_grad():
        feat, last = flow.model.features(batch)
    noise = flow.model.head.initial_noise(1, 'cpu', torch.Generator().manual_seed(3))
    with torch.no_grad():
        unguided = flow.model.head(feat, last, noise=noise)
    target = torch.zeros(1, H, A)
    assert torch.equal(sample_guided(flow.model.head, feat, last, target, torch.zeros(H), noise=noise), unguided)


def test_guide_maps_absolute_to_normalized_and_back_as_infer_does(flow):
    hist = history(2)
    q = hist[-1].joint_positions
    rng = np.random.default_rng(5)
    absolute = (q[None] + rng.uniform(-0.5, 0.5, size=(H, A))).astype(np.float32)  # beyond the 0.2 quantiles too
    norm = flow.to_normalized(absolute, q)
    assert np.abs(norm[:, ARM]).max() > 1.0                  # not clipped: the exact inverse
    np.testing.assert_allclose(flow.to_absolute(norm, q), absolute, atol=1e-5)
    # delta dims are relative to the newest joint positions
    shift = np.zeros(A, np.float32)
    shift[ARM] = 0.1
    np.testing.assert_allclose(flow.to_normalized(absolute + shift, q + shift), norm, atol=1e-5)
    # the chain is infer's: the model's raw sample, unnormalized and shifted by infer, maps back onto it
    flow.reset()
    with torch.no_grad():
        raw = flow.model(flow.make_batch(hist), generator=torch.Generator().manual_seed(1))[0].numpy()
    chunk = flow.infer(hist).actions
    np.testing.assert_allclose(flow.to_normalized(chunk, q)[:, ARM], raw[:, ARM], atol=1e-5)
    with pytest.raises(ValueError, match='action_dim=8'):
        flow.to_normalized(absolute[:, :5], q)


def test_guide_shapes_are_checked_and_a_short_guide_is_padded(flow):
    hist = history(0)
    prev = flow.infer(hist).actions
    with pytest.raises(ValueError, match=r'do not fit the model chunk \(8, 8\)'):
        flow.infer_guided(hist, ChunkGuide(prev[:, :5], np.ones(H), inference_delay=2))
    with pytest.raises(ValueError, match='do not fit'):
        flow.infer_guided(hist, ChunkGuide(np.concatenate([prev, prev]), np.ones(2 * H), inference_delay=2))
    bad = prev.copy()
    bad[1] = np.nan
    with pytest.raises(ValueError, match='NaN'):
        flow.infer_guided(hist, ChunkGuide(bad, np.ones(H), inference_delay=2))
    bad_free = bad.copy()   # NaN in a row with weight 0 is ignored
    ok = flow.infer_guided(hist, ChunkGuide(bad_free, np.array([1, 0, 0, 0, 0, 0, 0, 0]), inference_delay=1))
    assert np.all(np.isfinite(ok.actions))
    short = flow.infer_guided(hist, ChunkGuide(prev[:3], np.ones(3), inference_delay=3))
    assert short.actions.shape == (H, A) and short.info['rtc_guided_rows'] == 3.0


def test_mlp_policy_refuses_guidance_and_metadata_describes_both(flow, tmp_path):
    mlp = make_policy(tmp_path, head='mlp', name='mlp_ckpt')
    assert not mlp.supports_guidance and flow.supports_guidance
    hist = history(0)
    guide = ChunkGuide(mlp.infer(hist).actions, np.ones(H), inference_delay=2)
    with pytest.raises(ValueError, match="head is 'mlp'"):
        mlp.infer_guided(hist, guide)
    keys = {'embodiment', 'joint_names', 'camera_names', 'n_obs_steps', 'n_action_steps', 'chunk_size', 'dt',
            'supports_guidance', 'checkpoint', 'backbone', 'head', 'protocol_version'}
    for pol, head in ((flow, 'flow'), (mlp, 'mlp')):
        meta = json.loads(json.dumps(pol.metadata()))       # plain JSON/msgpack types only
        assert keys <= set(meta)
        assert meta['head'] == head and meta['backbone'] == 'film_cnn' and meta['protocol_version'] == 1
        assert meta['supports_guidance'] is (head == 'flow')
        assert meta['joint_names'] == list(FRANKA_PANDA.joint_names) and meta['camera_names'] == ['front']
        assert (meta['chunk_size'], meta['n_action_steps'], meta['n_obs_steps']) == (H, 4, 1)
        assert meta['dt'] == pytest.approx(FRANKA_PANDA.dt) and meta['checkpoint'].endswith('ckpt')
    assert VLAPolicy(mlp.model, mlp.config, mlp.stats, mlp.tokenizer).metadata()['checkpoint'] is None
