"""The whole loop at small size on real data: sim -> rosbag2 -> train -> runtime + driver -> sim.

Records a few scripted episodes as MCAP bags with the MuJoCo scene, reads them back through the
bag reader, trains film_cnn for a few hundred steps, then drives the sim closed loop through
PolicyRuntime and ArmDriverCore, checking every published JointTrajectory.
"""
import os

import numpy as np
import pytest

os.environ.setdefault('MUJOCO_GL', 'egl')

import torch  # noqa: E402

from robot_drivers import conversions as conv  # noqa: E402
from robot_drivers.embodiment import FRANKA_PANDA  # noqa: E402
from robot_drivers.sim.franka_cubes import FrankaCubeSim  # noqa: E402
from vla_policy.models.config import VLAConfig  # noqa: E402
from vla_policy.policy import VLAPolicy  # noqa: E402
from vla_policy.runtime import PolicyRuntime, RuntimeConfig  # noqa: E402
from vla_training.bag_dataset import bag_info, read_episodes  # noqa: E402
from vla_training.experts import Task  # noqa: E402
from vla_training.record import RecordConfig, record_demos  # noqa: E402
from vla_training.rollout import RuntimeController, run_episode  # noqa: E402
from vla_training.train import TrainConfig, train  # noqa: E402


@pytest.fixture(scope='module')
def bags(tmp_path_factory):
    out = tmp_path_factory.mktemp('demos')
    return record_demos(RecordConfig(episodes=6, output=str(out), workers=1, tasks=('reach',)), progress=False)


def test_recorded_bags_have_the_franka_topics_and_stamps(bags):
    assert len(bags) == 6
    info = bag_info(bags[0])
    assert info['storage'] == 'mcap'
    topics = info['topics']
    for t, ty in (('/camera/image_raw', 'sensor_msgs/msg/Image'), ('/joint_states', 'sensor_msgs/msg/JointState'),
                  ('/vla/instruction', 'std_msgs/msg/String'),
                  ('/arm_controller/joint_trajectory', 'trajectory_msgs/msg/JointTrajectory')):
        assert topics[t]['type'] == ty
    assert topics['/camera/image_raw']['count'] == 40 == topics['/arm_controller/joint_trajectory']['count']
    eps = read_episodes(bags, FRANKA_PANDA)
    for e in eps:
        assert e.images.shape == (40, 96, 96, 3) and e.dropped == 0
        np.testing.assert_allclose(np.diff(e.stamps), 0.1, atol=1e-6)
        assert e.instructions[0].startswith('reach the ')
        # the expert ends within reach of a cube: the arm moved (not a constant recording)
        assert np.abs(e.joint_positions[-1] - e.joint_positions[0]).max() > 0.2


def test_small_loop_trains_and_drives_the_sim_within_limits(bags, tmp_path):
    torch.set_num_threads(1)
    eps = read_episodes(bags, FRANKA_PANDA)
    cfg = VLAConfig.from_dict({'backbone': {'name': 'film_cnn', 'image_size': 48, 'channels': [16, 32, 32]},
                               'chunk': {'chunk_size': 4, 'n_action_steps': 2},
                               'delta_action_dims': [0, 1, 2, 3, 4, 5, 6], 'binary_action_dims': [7]})
    res = train(eps, cfg, TrainConfig(steps=250, batch_size=16, warmup_steps=10, log_every=25, eval_fraction=0.2,
                                      output_dir=str(tmp_path / 'run')), progress=False)
    first = np.mean([l for _, l in res.losses[:10]])
    last = np.mean([l for _, l in res.losses[-10:]])
    assert last < 0.65 * first, (first, last)

    policy = VLAPolicy.from_checkpoint(res.checkpoint_dir)
    rt = PolicyRuntime(policy, FRANKA_PANDA, RuntimeConfig(n_action_steps=2, camera=policy.camera))
    published = []

    class Spy(RuntimeController):
        def __call__(self, now, image_msg, joint_msg, types):
            msg = super().__call__(now, image_msg, joint_msg, types)
            if msg is not None:
                published.append(msg)
            return msg

    spy = Spy(rt)

    sim = FrankaCubeSim()
    r = run_episode(sim, Task('reach', 'red'), 1_000_000, spy, steps=12)
    sim.close()
    assert len(published) == 6 and rt.inferences == 6          # one inference per 2 ticks
    lo, hi = FRANKA_PANDA.lower, FRANKA_PANDA.upper
    for msg in published:
        names, pos, tfs = conv.trajectory_to_arrays(msg)
        assert names == FRANKA_PANDA.joint_names and pos.shape == (2, 8)
        np.testing.assert_allclose(tfs, [0.1, 0.2])
        assert np.all(np.isfinite(pos))
        assert np.all(pos >= lo - 1e-6) and np.all(pos <= hi + 1e-6)
        assert set(np.round(pos[:, 7], 6)) <= {0.0, 0.04}      # binary gripper
    assert r.steps == 12
