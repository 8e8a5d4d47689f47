"""The ``flow`` head (pi0 flow matching) on real data: sim-recorded rosbag2 demos -> train -> sample."""
import os

import numpy as np
import pytest

os.environ.setdefault('MUJOCO_GL', 'egl')

import torch  # noqa: E402


from robot_drivers.embodiment import FRANKA_PANDA  # noqa: E402
from vla_policy.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from vla_policy.contracts import Observation  # noqa: E402
from vla_policy.models import VLA, VLAConfig  # noqa: E402
from vla_policy.models.heads.flow import euler_integrate, sample_flow_time  # noqa: E402
from vla_policy.policy import VLAPolicy  # noqa: E402
from vla_training.bag_dataset import read_episodes  # noqa: E402
from vla_training.record import RecordConfig, record_demos  # noqa: E402
from vla_training.train import TrainConfig, _Data, build_arrays, train  # noqa: E402

torch.set_num_threads(1)

CFG = {'backbone': {'name': 'film_cnn', 'image_size': 48, 'channels': [16, 32, 32]},
       'head': {'name': 'flow', 'hidden': 128, 'n_layers': 2, 'num_steps': 10},
       'chunk': {'chunk_size': 4, 'n_action_steps': 2},
       'delta_action_dims': [0, 1, 2, 3, 4, 5, 6], 'binary_action_dims': [7]}


@pytest.fixture(scope='module')
def episodes(tmp_path_factory):
    out = tmp_path_factory.mktemp('flow_demos')
    bags = record_demos(RecordConfig(episodes=4, output=str(out), workers=1, tasks=('reach',)), progress=False)
    return read_episodes(bags, FRANKA_PANDA)


@pytest.fixture(scope='module')
def trained(episodes, tmp_path_factory):
    out = tmp_path_factory.mktemp('flow_run')
    cfg = VLAConfig.from_dict(CFG)
    res = train(episodes, cfg, TrainConfig(steps=500, batch_size=32, lr=2e-3, warmup_steps=10, log_every=25,
                                           eval_fraction=0.0, augment_shift=0, output_dir=str(out)),
                progress=False)
    return res


def test_training_times_follow_pi0_beta():
    torch.manual_seed(0)
    tau = sample_flow_time(20000)
    assert float(tau.min()) >= 0.0 and float(tau.max()) <= 0.999
    # tau = s (1 - b), b ~ Beta(1.5, 1): E[b] = 0.6, so E[tau] = 0.999 * 0.4; noisy (low) times dominate
    assert abs(float(tau.mean()) - 0.3996) < 0.01
    assert float((tau < 0.5).float().mean()) > 0.6


def test_euler_integrates_a_known_flow_exactly():
    # a perfect velocity field for a single target chunk A: v = (x - A) / (1 - tau) (= eps - A on the path)
    A = torch.full((1, 4, 3), 0.7)
    noise = torch.randn(1, 4, 3, generator=torch.Generator().manual_seed(0))
    out = euler_integrate(lambda x, t: (x - A) / (1.0 - t), noise, 10)
    assert torch.allclose(out, A, atol=1e-5)
    with pytest.raises(ValueError, match='num_steps'):
        euler_integrate(lambda x, t: x, noise, 0)


def test_flow_head_trains_on_sim_bags_and_samples_the_demonstrated_chunks(trained, episodes):
    res = trained
    first = np.mean([v for _, v in res.losses[:10]])
    last = np.mean([v for _, v in res.losses[-20:]])
    assert last < 0.5 * first, (first, last)

    model, cfg, stats, tok, _ = load_checkpoint(res.checkpoint_dir)
    assert cfg.head.name == 'flow'
    arr = build_arrays(episodes, cfg)
    data = _Data(arr, np.arange(len(arr['actions'])), stats, tok, cfg, 'cpu')
    batch = data.batch(torch.arange(len(data)))
    with torch.no_grad():
        pred = model(batch, generator=torch.Generator().manual_seed(0))  # (N, H, A) normalized
    keep = ~batch['action_is_pad']
    err = (pred - batch['actions']).abs()[keep].mean()
    err_mean = (batch['actions'][keep].mean(0) - batch['actions']).abs()[keep].mean()
    err_noise = (torch.randn_like(pred) - batch['actions']).abs()[keep].mean()
    # sampled chunks follow the demonstrations far better than their mean or an untrained sampler would
    assert err < 0.5 * err_mean, (float(err), float(err_mean))
    assert err < 0.25 * err_noise, (float(err), float(err_noise))


def test_save_load_gives_identical_samples_with_a_fixed_generator(trained, episodes, tmp_path):
    model, cfg, stats, tok, _ = load_checkpoint(trained.checkpoint_dir)
    path = save_checkpoint(tmp_path / 'again', model, cfg, stats, tok)
    model2, cfg2, *_ = load_checkpoint(path)
    assert cfg2 == cfg and cfg2.head.num_steps == 10
    arr = build_arrays(episodes[:1], cfg)
    batch = _Data(arr, np.arange(8), stats, tok, cfg, 'cpu').batch(torch.arange(8))
    with torch.no_grad():
        a = model(batch, generator=torch.Generator().manual_seed(5))
        b = model2(batch, generator=torch.Generator().manual_seed(5))
        c = model2(batch, generator=torch.Generator().manual_seed(6))
        d = model2(batch, generator=torch.Generator().manual_seed(5), num_steps=2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c) and not torch.equal(a, d)

    # the policy: a seeded policy repeats itself after reset(); two loads with one seed agree
    ep = episodes[0]
    hist = [Observation(images={'front': ep.images[3]}, joint_positions=ep.joint_positions[3],
                        instruction=ep.instructions[3], stamp=float(ep.stamps[3]))]
    p1 = VLAPolicy.from_checkpoint(trained.checkpoint_dir, seed=11)
    p2 = VLAPolicy.from_checkpoint(path, seed=11)
    c1, c2 = p1.infer(hist).actions, p2.infer(hist).actions
    np.testing.assert_array_equal(c1, c2)
    c1b = p1.infer(hist).actions            # generator advanced: another sample ...
    assert not np.array_equal(c1, c1b)
    p1.reset()                              # ... until reset re-seeds it
    np.testing.assert_array_equal(p1.infer(hist).actions, c1)
    lo, hi = np.float32(FRANKA_PANDA.lower[7]), np.float32(FRANKA_PANDA.upper[7])
    assert c1.shape == (4, 8) and np.all((c1[:, 7] == lo) | (c1[:, 7] == hi))   # binary finger snapped
    assert p1.supports_guidance and p1.metadata()['head'] == 'flow'


def test_flow_config_is_checked_and_old_configs_load():
    base = VLAConfig.from_dict(dict(CFG, backbone=dict(CFG['backbone'], vocab_size=20))).to_dict()
    for key, bad in (('num_steps', 0), ('time_dim', 7), ('time_alpha', 0.0), ('time_s', 1.5)):
        with pytest.raises(ValueError, match=f'head.{key}'):
            VLAConfig.from_dict(dict(base, head=dict(base['head'], **{key: bad})))
    # a checkpoint config written before the flow fields existed loads with pi0's defaults
    old = dict(base, head={k: v for k, v in base['head'].items()
                           if k not in ('num_steps', 'time_dim', 'time_alpha', 'time_beta', 'time_s')})
    cfg = VLAConfig.from_dict(old)
    assert (cfg.head.num_steps, cfg.head.time_alpha, cfg.head.time_beta, cfg.head.time_s) == (10, 1.5, 1.0, 0.999)
    assert VLA(cfg).head.num_steps == 10
