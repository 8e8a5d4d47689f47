"""Action heads (mlp with gripper BCE, lstm, gpt, diffusion mlp/dit) on a learnable synthetic task.

The task: a history of T features (B, T, D) and a state (B, S) determine a smooth chunk (B, H, A):
``y_h = start + (h / (H - 1)) * velocity``, both linear in every history step and the state;
continuous dims are ``tanh(y)``, the last dim is binary (``sign(y)``, a gripper). Each head trains
a few hundred Adam steps on CPU and must predict held-out chunks far better than at init.
"""
import pytest
import torch
import torch.nn.functional as F

from vla_policy.models import HeadConfig, VLAConfig, available_heads
from vla_policy.models.heads.diffusion import DiffusionHead
from vla_policy.models.heads.gpt import GPTHead
from vla_policy.models.heads.losses import ChunkLoss
from vla_policy.models.heads.lstm import LSTMHead
from vla_policy.models.heads.mlp import MLPHead

torch.set_num_threads(1)

D, H, A, S, T = 8, 4, 3, 2, 2
BIN = 2   # the binary (gripper) action dim
CLASSES = {'mlp': MLPHead, 'lstm': LSTMHead, 'gpt': GPTHead, 'diffusion': DiffusionHead}

_g = torch.Generator().manual_seed(0)
_W = torch.randn(T, D, 2 * A, generator=_g) / D ** 0.5   # history step t -> (start, velocity)
_WS = torch.randn(S, 2 * A, generator=_g) * 0.3          # state -> (start, velocity)
_RAMP = torch.linspace(0.0, 1.0, H)[:, None]             # (H, 1)


def target(f, s):
    """f (N, T, D), s (N, S) -> chunk (N, H, A) in [-1, 1], dim BIN in {-1, +1}."""
    y = torch.einsum('ntd,tdk->nk', f, _W) + s @ _WS      # (N, 2A)
    y = y[:, None, :A] + _RAMP * y[:, None, A:]           # (N, H, A)
    a = torch.tanh(y)
    a[..., BIN] = torch.where(y[..., BIN] > 0, 1.0, -1.0)
    return a


def data(n, seed):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(n, T, D, generator=g)
    s = torch.randn(n, S, generator=g)
    return f, s, target(f, s)


def make(name, n_obs_steps=T, binary=(BIN,), **head):
    cfg = VLAConfig.from_dict({'head': dict(name=name, hidden=64, **head), 'action_dim': A, 'state_dim': S,
                               'chunk': {'n_obs_steps': n_obs_steps, 'chunk_size': H, 'n_action_steps': 1},
                               'binary_action_dims': list(binary)})
    cls = CLASSES[name]
    torch.manual_seed(0)
    return cls(cfg, D if cls.sequence_input else T * D)


def inputs(head, f):
    return f if head.sequence_input else f.reshape(f.shape[0], -1)   # non-sequence heads: flattened history


def predict(head, f, s):
    head.eval()
    with torch.no_grad():
        if head.samples:
            return head(inputs(head, f), s, generator=torch.Generator().manual_seed(0))
        return head(inputs(head, f), s)


def eval_loss(head, f, s, a):
    head.eval()
    with torch.no_grad():
        torch.manual_seed(123)   # diffusion draws t and eps: same draws before and after training
        return float(head.loss(inputs(head, f), s, a)[0])


def fit(head, steps=300, lr=3e-3):
    f, s, a = data(2048, 1)
    opt = torch.optim.AdamW(head.parameters(), lr=lr)
    torch.manual_seed(1)
    head.train()
    for _ in range(steps):
        i = torch.randint(0, 2048, (64,))
        loss, _ = head.loss(inputs(head, f[i]), s[i], a[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head


def cont_err(pred, a):
    return float((pred - a)[..., :BIN].abs().mean())


def grip_acc(pred, a):
    return float(((pred[..., BIN] > 0) == (a[..., BIN] > 0)).float().mean())


SPECS = {
    'mlp_bce': ('mlp', dict(gripper_loss='bce')),
    'lstm': ('lstm', {}),
    'gpt': ('gpt', {}),
    'diffusion_mlp': ('diffusion', {}),
    'diffusion_dit': ('diffusion', dict(diffusion_net='dit', n_layers=1)),
}


@pytest.fixture(scope='module')
def trained():
    """{spec: (head, before: (loss, cont_err, grip_acc), after: (...))} on held-out data."""
    fe, se, ae = data(512, 2)
    out = {}
    for key, (name, kw) in SPECS.items():
        head = make(name, **kw)
        p = predict(head, fe, se)
        before = (eval_loss(head, fe, se, ae), cont_err(p, ae), grip_acc(p, ae))
        fit(head)
        p = predict(head, fe, se)
        out[key] = (head, before, (eval_loss(head, fe, se, ae), cont_err(p, ae), grip_acc(p, ae)))
    return out


@pytest.mark.parametrize('key', list(SPECS))
def test_head_learns_the_conditional_task(trained, key):
    _, (l0, e0, _), (l1, e1, acc) = trained[key]
    assert l1 < 0.5 * l0, (key, l0, l1)          # training loss (eps-MSE for diffusion) falls clearly
    assert e1 < 0.45 * e0 and e1 < 0.35, (key, e0, e1)   # predictions approach the held-out targets
    assert acc > 0.6, (key, acc)                  # gripper side mostly right (chance: 0.5, 2048 rows)


def test_bce_gripper_trains_a_classifier_with_bounded_outputs(trained):
    head, (_, _, acc0), (_, _, acc) = trained['mlp_bce']
    fe, se, ae = data(512, 2)
    p = predict(head, fe, se)
    assert acc0 < 0.7 and acc > 0.9, (acc0, acc)
    assert float(p[..., BIN].abs().max()) <= 1.0   # tanh(logit / 2): in [-1, 1] (saturates in float32)
    with torch.no_grad():
        raw = head.raw(inputs(head, fe), se)
    assert torch.allclose(p[..., BIN], torch.tanh(raw[..., BIN] / 2))
    assert torch.equal(p[..., :BIN], raw[..., :BIN])   # continuous dims untouched


@pytest.mark.parametrize('name', ['lstm', 'gpt'])
def test_sequence_heads_use_the_older_history_steps(trained, name):
    head = trained[name][0]
    fe, se, ae = data(512, 2)
    f2 = fe.clone()
    f2[:, 0] = fe[torch.randperm(512, generator=torch.Generator().manual_seed(3)), 0]   # new oldest step
    a2 = target(f2, se)
    p2 = predict(head, f2, se)
    # the head follows the changed history: close to the new targets, not to the old ones
    assert cont_err(p2, a2) < 0.6 * cont_err(p2, ae), (cont_err(p2, a2), cont_err(p2, ae))
    assert float((p2 - predict(head, fe, se)).abs().mean()) > 0.1


@pytest.mark.parametrize('name', ['lstm', 'gpt'])
def test_sequence_heads_accept_a_single_feature_as_t1(name):
    head = make(name, n_obs_steps=1)
    assert head.sequence_input is True
    f, s, _ = data(5, 4)
    with torch.no_grad():
        a = head(f[:, -1], s)
        b = head(f[:, -1:], s)
    assert a.shape == (5, H, A) and torch.equal(a, b)


def test_sequence_input_flags():
    assert {'mlp', 'flow', 'lstm', 'gpt', 'diffusion'} <= set(available_heads())
    from vla_policy.models.heads.flow import FlowHead
    assert (MLPHead.sequence_input, FlowHead.sequence_input, DiffusionHead.sequence_input) == (False,) * 3
    assert (LSTMHead.sequence_input, GPTHead.sequence_input) == (True, True)
    assert (MLPHead.samples, LSTMHead.samples, GPTHead.samples) == (False,) * 3
    assert (FlowHead.samples, DiffusionHead.samples) == (True, True)


@pytest.mark.parametrize('key', list(SPECS))
def test_state_dict_round_trip_gives_identical_outputs(trained, key, tmp_path):
    from safetensors.torch import load_file, save_file   # the checkpoint format (vla_policy.checkpoint)
    head = trained[key][0]
    name, kw = SPECS[key]
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(tmp_path / 'h.safetensors'))
    fresh = make(name, **kw)
    fresh.load_state_dict(load_file(str(tmp_path / 'h.safetensors')), strict=True)
    fe, se, _ = data(8, 9)
    assert torch.equal(predict(fresh, fe, se), predict(head, fe, se))


@pytest.mark.parametrize('head', [dict(name='lstm'), dict(name='gpt', n_layers=1),
                                  dict(name='diffusion', n_layers=1, num_inference_steps=3),
                                  dict(name='diffusion', diffusion_net='dit', n_layers=1, num_inference_steps=3)])
def test_heads_plug_into_the_vla(head):
    from vla_policy.models import VLA
    cfg = VLAConfig.from_dict({'backbone': {'name': 'film_cnn', 'image_size': 16, 'channels': [8, 8],
                                            'feature_dim': 32, 'vocab_size': 12},
                               'head': dict(hidden=32, **head), 'chunk': {'chunk_size': 3, 'n_action_steps': 1}})
    m = VLA(cfg)
    g = torch.Generator().manual_seed(0)
    batch = {'images': torch.rand(2, cfg.n_images, 3, 16, 16, generator=g),
             'token_ids': torch.randint(1, 12, (2, cfg.max_tokens), generator=g),
             'attention_mask': torch.ones(2, cfg.max_tokens, dtype=torch.long),
             'state': torch.rand(2, 1, cfg.state_dim, generator=g) * 2 - 1,
             'actions': torch.rand(2, 3, cfg.action_dim, generator=g) * 2 - 1,
             'action_is_pad': torch.zeros(2, 3, dtype=torch.bool)}
    loss, _ = m.loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in m.head.parameters())   # the whole head is trained
    m.eval()
    with torch.no_grad():
        kw = {'generator': torch.Generator().manual_seed(1)} if m.head.samples else {}
        assert m(batch, **kw).shape == (2, 3, cfg.action_dim)


# ---- padding ----

PAD = torch.tensor([[False] * H, [False, False, True, True], [False, True, True, True]])


@pytest.mark.parametrize('name,kw', [('mlp', {}), ('mlp', dict(gripper_loss='bce', gripper_loss_weight=3.0)),
                                     ('lstm', dict(loss='mse')), ('gpt', {})])
def test_padded_rows_do_not_enter_the_regression_loss(name, kw):
    head = make(name, **kw).eval()
    f, s, a = data(3, 5)
    junk = a.clone()
    junk[PAD] = 50.0
    with torch.no_grad():
        la, _ = head.loss(inputs(head, f), s, a, PAD)
        lj, _ = head.loss(inputs(head, f), s, junk, PAD)
        lf, _ = head.loss(inputs(head, f), s, junk, None)   # no mask: the junk counts
    assert torch.equal(la, lj)
    assert float(lf) > 2 * float(la)


def test_diffusion_eps_mse_is_over_non_padded_rows():
    head = make('diffusion').eval()
    f, s, a = data(3, 5)
    x = inputs(head, f)
    torch.manual_seed(7)
    with torch.no_grad():
        loss, info = head.loss(x, s, a, PAD)
    torch.manual_seed(7)   # the same t and eps draws, by hand (Ho et al. 2020 eq. 14)
    t = torch.randint(0, head.num_train_timesteps, (3,))
    eps = torch.randn_like(a)
    abar = head.train_scheduler.alphas_cumprod[t][:, None, None]
    x_t = abar.sqrt() * a + (1 - abar).sqrt() * eps
    with torch.no_grad():
        err = (head.predict_noise(x_t, t, x, s) - eps) ** 2
    assert abs(float(loss) - float(err[~PAD].mean())) < 1e-5
    assert set(info) == {'eps_mse'}
    with torch.no_grad():
        assert float(head.loss(x, s, a, torch.ones(3, H, dtype=torch.bool))[0]) == 0.0


# ---- the shared loss: defaults are the old mlp loss ----

def test_same_mode_is_the_plain_masked_mean_and_weights_scale_the_gripper():
    torch.manual_seed(0)
    pred, act = torch.randn(3, H, A), torch.rand(3, H, A) * 2 - 1
    keep = ~PAD
    plain = (pred - act).abs()[keep].mean()
    loss, info = ChunkLoss('l1', A, (BIN,))(pred, act, PAD)
    assert torch.allclose(loss, plain) and set(info) == {'l1'}
    w, _ = ChunkLoss('l1', A, (BIN,), 'same', 4.0)(pred, act, PAD)
    e = (pred - act).abs()
    e[..., BIN] *= 4.0
    assert torch.allclose(w, e[keep].sum() / (keep.sum() * A))
    mse, info = ChunkLoss('mse', A)(pred, act, None)
    assert torch.allclose(mse, F.mse_loss(pred, act)) and set(info) == {'mse'}


def test_bce_mode_combines_l1_and_bce_on_the_upper_half_target():
    torch.manual_seed(0)
    raw, act = torch.randn(3, H, A), torch.rand(3, H, A) * 2 - 1
    loss, info = ChunkLoss('l1', A, (BIN,), 'bce', 2.0)(raw, act, PAD)
    keep = ~PAD
    l1 = (raw - act)[..., :BIN].abs()[keep]                                               # (n, A-1)
    bce = F.binary_cross_entropy_with_logits(raw[..., BIN], (act[..., BIN] > 0).float(), reduction='none')[keep]
    assert torch.allclose(loss, (l1.sum() + 2.0 * bce.sum()) / (keep.sum() * A))
    assert abs(info['gripper_bce'] - float(bce.mean())) < 1e-5 and abs(info['l1'] - float(l1.mean())) < 1e-5


def test_default_mlp_keeps_its_parameters_and_output():
    cfg_old = VLAConfig.from_dict({'head': {'name': 'mlp', 'hidden': 32, 'n_layers': 2, 'loss': 'l1',
                                            'use_state': True, 'dropout': 0.0}, 'binary_action_dims': [7]})
    assert cfg_old.head.gripper_loss == 'same' and cfg_old.head.gripper_loss_weight == 1.0
    assert VLAConfig.from_dict(cfg_old.to_dict()) == cfg_old
    head = MLPHead(cfg_old, 16)
    assert sorted(head.state_dict()) == ['net.0.bias', 'net.0.weight', 'net.2.bias', 'net.2.weight',
                                         'net.4.bias', 'net.4.weight']
    f, s = torch.randn(2, 16), torch.randn(2, 8)
    with torch.no_grad():
        assert torch.equal(head(f, s), head.net(torch.cat([f, s], -1)).reshape(2, 8, 8))


# ---- sampling ----

@pytest.mark.parametrize('net', ['mlp', 'dit'])
def test_diffusion_sampling_is_deterministic_given_noise_or_generator(net):
    head = make('diffusion', diffusion_net=net, n_layers=1).eval()
    with torch.no_grad():   # perturb the zero-initialised DiT output layers so eps depends on x
        for p in head.parameters():
            p.add_(0.05 * torch.randn_like(p))
    f, s, _ = data(4, 6)
    x = inputs(head, f)
    noise = head.initial_noise(4, 'cpu', torch.Generator().manual_seed(11))
    with torch.no_grad():
        torch.manual_seed(0)
        a = head(x, s, noise=noise)
        torch.manual_seed(99)   # the global generator is not used when noise is given
        b = head(x, s, noise=noise.clone())
        c = head(x, s, generator=torch.Generator().manual_seed(11))
        d = head(x, s, generator=torch.Generator().manual_seed(12))
        e = head(x, s, noise=noise, num_steps=2)
    assert a.shape == (4, H, A)
    assert torch.equal(a, b) and torch.equal(a, c)
    assert not torch.allclose(a, d) and not torch.allclose(a, e)
    assert float(a.abs().max()) <= 1.0 + 1e-6   # clip_sample keeps x0 in the normalized range


# ---- bad configs ----

@pytest.mark.parametrize('kw,match', [
    (dict(gripper_loss='focal'), 'gripper_loss'),
    (dict(name='diffusion', gripper_loss='bce'), 'gripper_loss'),
    (dict(name='flow', gripper_loss='bce'), 'gripper_loss'),
    (dict(gripper_loss_weight=-1.0), 'gripper_loss_weight'),
    (dict(beta_schedule='cosine'), "'squaredcos_cap_v2'"),
    (dict(diffusion_net='unet'), "'mlp' or 'dit'"),
    (dict(num_inference_steps=200), 'num_train_timesteps'),
    (dict(num_train_timesteps=0), 'num_train_timesteps'),
    (dict(max_history=0), 'max_history'),
    (dict(name='gpt', hidden=30, num_heads=4), 'num_heads'),
    (dict(name='diffusion', diffusion_net='dit', hidden=30, num_heads=4), 'num_heads'),
])
def test_bad_head_config_is_rejected(kw, match):
    with pytest.raises(ValueError, match=match):
        HeadConfig(**kw)


def test_bad_head_builds_and_inputs_are_rejected():
    with pytest.raises(ValueError, match='binary_action_dims'):
        make('mlp', binary=(), gripper_loss='bce')
    with pytest.raises(ValueError, match='max_history'):
        make('gpt', n_obs_steps=4, max_history=2)
    gpt = make('gpt', max_history=2)
    with pytest.raises(ValueError, match='max_history'):
        gpt(torch.randn(1, 3, D), torch.randn(1, S))
    mlp = make('mlp')
    with pytest.raises(ValueError, match='sequence_input'):
        mlp(torch.randn(1, T, T * D), torch.randn(1, S))
    diff = make('diffusion')
    with pytest.raises(ValueError, match='sequence_input'):
        diff(torch.randn(1, T, T * D), torch.randn(1, S))
    with pytest.raises(ValueError, match='num_steps'):
        diff(torch.randn(1, T * D), torch.randn(1, S), num_steps=101)
    with pytest.raises(ValueError, match='use_state'):
        make('lstm')(torch.randn(1, T, D), None)
