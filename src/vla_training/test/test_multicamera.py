"""Several cameras end to end: the sim's wrist camera, recording, aligned reading, arrays, training."""
import pathlib

import numpy as np
import pytest
import torch

from robot_drivers.sim.franka_cubes import CAMERAS, FrankaCubeSim, SimConfig
from vla_policy.images import preprocess_images_uint8
from vla_policy.models import BackboneConfig, ChunkConfig, HeadConfig, VLAConfig
from vla_training.bag_dataset import BagError, BagTopics, Episode, read_episode
from vla_training.train import TrainConfig, build_arrays, train

torch.set_num_threads(1)

FRONT, WRIST = '/camera/image_raw', '/wrist_camera/image_raw'
BOTH = BagTopics(images={'front': FRONT, 'wrist': WRIST})
SIZE = 32


@pytest.fixture(scope='module')
def sim():
    s = FrankaCubeSim(SimConfig(image_size=SIZE))
    yield s
    s.close()


@pytest.fixture(scope='module')
def bags(sim, tmp_path_factory):
    """Two reach demonstrations recorded by the ``record`` code path (every camera of the scene)."""
    from vla_training.record import record_episode
    out = tmp_path_factory.mktemp('demos')
    paths = []
    for seed in (0, 1):
        p = out / f'episode_{seed:06d}'
        record_episode(sim, seed, p, ('reach',))
        paths.append(p)
    return paths


def test_wrist_camera_is_fixed_to_the_hand(sim):
    sim.reset(seed=4)
    front0, wrist0 = sim.render('front'), sim.render('wrist')
    assert wrist0.shape == front0.shape == (SIZE, SIZE, 3) and wrist0.dtype == np.uint8
    assert np.abs(front0.astype(int) - wrist0.astype(int)).mean() > 5    # another viewpoint
    q = sim.read().positions.copy()
    q[0] += 0.4                                                         # swing the arm about its base
    sim._set_joints(q)
    sim._mj.mj_forward(sim.model, sim.data)
    wrist1 = sim.render('wrist')
    # the whole wrist view moves with the hand; the fixed front camera sees only the arm move
    assert np.abs(wrist1.astype(int) - wrist0.astype(int)).mean() > \
        np.abs(sim.render('front').astype(int) - front0.astype(int)).mean()
    with pytest.raises(ValueError, match=r"no camera 'top'.*'front', 'wrist'"):
        sim.render('top')
    assert CAMERAS == ('front', 'wrist')


def test_recorded_bags_hold_both_cameras_aligned(bags):
    from vla_training.bag_reader import bag_info
    from robot_drivers.embodiment import FRANKA_PANDA
    topics = bag_info(bags[0])['topics']
    assert topics[FRONT]['type'] == topics[WRIST]['type'] == 'sensor_msgs/msg/Image'
    assert topics[FRONT]['count'] == topics[WRIST]['count'] > 10
    ep = read_episode(bags[0], FRANKA_PANDA, BOTH)
    assert list(ep.camera_images) == ['front', 'wrist']
    t = len(ep)
    for cam in ('front', 'wrist'):
        assert ep.camera_images[cam].shape == (t, SIZE, SIZE, 3)
    np.testing.assert_array_equal(ep.images, ep.camera_images['front'])
    assert not np.array_equal(ep.camera_images['front'], ep.camera_images['wrist'])
    # the front camera read alone (as before several cameras) gives the same ticks and frames
    old = read_episode(bags[0], FRANKA_PANDA)
    np.testing.assert_array_equal(old.stamps, ep.stamps)
    np.testing.assert_array_equal(old.images, ep.camera_images['front'])
    assert list(old.cameras()) == ['front']
    # the wrist view changes as the hand moves over the episode
    w = ep.camera_images['wrist'].astype(int)
    assert np.abs(w[-1] - w[0]).mean() > 1.0


def test_bag_without_the_wrist_topic_is_a_one_line_error(sim, tmp_path):
    from robot_drivers.embodiment import FRANKA_PANDA
    from vla_training.bag_writer import EpisodeBagWriter
    from vla_training.experts import ScriptedExpert, Task
    from vla_training.rollout import ExpertController, Topics, run_episode
    task = Task('reach', 'red')
    expert = ScriptedExpert(sim, task)
    with EpisodeBagWriter(str(tmp_path / 'old'), qos={FRONT: 'sensor', '/joint_states': 'sensor',
                                                       '/vla/instruction': 'latched',
                                                       '/arm_controller/joint_trajectory': 'reliable'}) as w:
        added = set()

        def on_message(topic, msgtype, msg, t):
            if topic not in added:
                w.add_topic(topic, msgtype)
                added.add(topic)
            w.write(topic, msg, t)

        run_episode(sim, task, 3, ExpertController(expert), steps=12, topics=Topics(wrist_image=None),
                    on_message=on_message, reset_hook=expert.reset)
    assert WRIST not in added and FRONT in added
    with pytest.raises(BagError) as info:
        read_episode(tmp_path / 'old', FRANKA_PANDA, BOTH)
    msg = str(info.value)
    assert '\n' not in msg and "camera 'wrist'" in msg and WRIST in msg and 'not in the bag' in msg
    assert len(read_episode(tmp_path / 'old', FRANKA_PANDA)) > 5    # the old single-camera read still works


def test_bag_topics_yaml_mapping():
    t = BagTopics.from_dict({'images': {'front': FRONT, 'wrist': WRIST}, 'command': None})
    assert t.cameras() == {'front': FRONT, 'wrist': WRIST} and t.command is None
    assert BagTopics.from_dict(t.as_dict()) == t
    assert BagTopics().cameras() == {'front': FRONT} and 'images' not in BagTopics().as_dict()
    with pytest.raises(ValueError, match='either image'):
        BagTopics.from_dict({'image': FRONT, 'images': {'wrist': WRIST}})
    with pytest.raises(ValueError, match=r"images\['wrist'\] must be an absolute topic"):
        BagTopics.from_dict({'images': {'front': FRONT, 'wrist': 'wrist_camera'}})
    with pytest.raises(ValueError, match='share the topic'):
        BagTopics(images={'front': FRONT, 'wrist': FRONT})


def _cfg(cams, size=SIZE):
    return VLAConfig(backbone=BackboneConfig(name='film_cnn', image_size=size),
                     head=HeadConfig(hidden=64), chunk=ChunkConfig(2, 4, 2),
                     action_dim=8, state_dim=8, camera_names=tuple(cams), max_tokens=8)


@pytest.fixture(scope='module')
def episodes(bags):
    from robot_drivers.embodiment import FRANKA_PANDA
    return [read_episode(p, FRANKA_PANDA, BOTH) for p in bags]


def test_build_arrays_stacks_cameras_time_major_in_config_order(episodes):
    arr = build_arrays(episodes, _cfg(['front', 'wrist']))
    n = sum(len(e) for e in episodes)
    assert arr['images'].shape == (2 * n, 3, SIZE, SIZE)
    assert arr['obs_index'].shape == (n, 2) and arr['image_index'].shape == (n, 4)
    front = preprocess_images_uint8(episodes[0].camera_images['front'], SIZE).numpy()
    wrist = preprocess_images_uint8(episodes[0].camera_images['wrist'], SIZE).numpy()
    k = 5                                                     # a tick with a full history
    rows = arr['images'][arr['image_index'][k]]   # (To * C, 3, S, S): t-1 front, t-1 wrist, t front, t wrist
    np.testing.assert_array_equal(rows[0], front[k - 1])
    np.testing.assert_array_equal(rows[1], wrist[k - 1])
    np.testing.assert_array_equal(rows[2], front[k])
    np.testing.assert_array_equal(rows[3], wrist[k])
    assert not np.array_equal(rows[2], rows[3])
    # the other order swaps the cameras; state rows do not depend on cameras
    rev = build_arrays(episodes, _cfg(['wrist', 'front']))
    rrows = rev['images'][rev['image_index'][k]]
    np.testing.assert_array_equal(rrows[0], wrist[k - 1])
    np.testing.assert_array_equal(rrows[3], front[k])
    np.testing.assert_array_equal(rev['state'], arr['state'])
    # one camera: as before (image rows = frames)
    one = build_arrays(episodes, _cfg(['front']))
    np.testing.assert_array_equal(one['image_index'], one['obs_index'])
    np.testing.assert_array_equal(one['images'][one['obs_index'][k, -1]], front[k])


def test_build_arrays_names_a_camera_the_episode_lacks(episodes):
    e = episodes[0]
    old = Episode(source='old_bag', stamps=e.stamps, images=e.images, joint_positions=e.joint_positions,
                  actions=e.actions, instructions=e.instructions, rate_hz=e.rate_hz)
    build_arrays([old], _cfg(['front']))                     # an unnamed single camera still trains
    with pytest.raises(ValueError, match=r"old_bag.*camera_names=\['front', 'wrist'\].*missing \['wrist'\]"):
        build_arrays([old], _cfg(['front', 'wrist']))


def test_train_on_both_cameras_and_infer(episodes, tmp_path):
    from vla_policy.contracts import Observation
    from vla_policy.policy import VLAPolicy
    res = train(episodes, _cfg(['front', 'wrist']),
                TrainConfig(steps=4, batch_size=8, warmup_steps=1, log_every=2, eval_fraction=0.0,
                            output_dir=str(tmp_path / 'run')), progress=False)
    assert all(np.isfinite(v) for _, v in res.losses)
    pol = VLAPolicy.from_checkpoint(res.checkpoint_dir)
    assert pol.cameras == ('front', 'wrist') and pol.camera == 'front'
    assert pol.metadata()['camera_names'] == ['front', 'wrist']
    e = episodes[0]
    ob = Observation(images={'front': e.camera_images['front'][3], 'wrist': e.camera_images['wrist'][3]},
                     joint_positions=e.joint_positions[3].astype(np.float64), instruction=e.instructions[3],
                     stamp=float(e.stamps[3]))
    batch = pol.make_batch([ob])
    assert batch['images'].shape == (1, 4, 3, SIZE, SIZE)     # n_obs_steps 2 x 2 cameras
    assert not torch.equal(batch['images'][0, 2], batch['images'][0, 3])
    chunk = pol.infer([ob])
    assert chunk.actions.shape == (4, 8) and np.all(np.isfinite(chunk.actions))
    # the wrist image matters to the model's output
    other = Observation(images={'front': ob.images['front'], 'wrist': e.camera_images['wrist'][-1][::-1].copy()},
                        joint_positions=ob.joint_positions, instruction=ob.instruction, stamp=ob.stamp)
    with torch.no_grad():
        a = pol.model(pol.make_batch([ob]))
        b = pol.model(pol.make_batch([other]))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="lacks camera 'wrist'"):
        pol.infer([Observation(images={'front': ob.images['front']}, joint_positions=ob.joint_positions,
                               instruction=ob.instruction, stamp=ob.stamp)])


def test_closed_loop_runtime_controller_feeds_both_cameras(sim, episodes, tmp_path):
    """A two-camera policy in the sim: the controller renders and feeds both cameras, and it acts."""
    from robot_drivers.embodiment import FRANKA_PANDA
    from vla_policy.policy import VLAPolicy
    from vla_training.evaluate import EvalConfig
    from vla_training.experts import Task
    from vla_training.rollout import RuntimeController, run_episode
    res = train(episodes, _cfg(['front', 'wrist']),
                TrainConfig(steps=2, batch_size=4, warmup_steps=0, log_every=1, eval_fraction=0.0,
                            output_dir=str(tmp_path / 'run')), progress=False)
    pol = VLAPolicy.from_checkpoint(res.checkpoint_dir)
    rcfg = EvalConfig(policy=str(res.checkpoint_dir), episodes=1).runtime_config(2, 2, cameras=pol.cameras)
    assert rcfg.camera_topics == {'front': FRONT, 'wrist': WRIST}
    ctrl = RuntimeController.build(pol, FRANKA_PANDA, rcfg)
    assert ctrl.cameras == ('front', 'wrist')
    r = run_episode(sim, Task('reach', 'red'), 5, ctrl, steps=6)
    assert r.inferences >= 1 and r.commands >= 1
    assert set(ctrl.runtime.history.newest.images) == {'front', 'wrist'}
    ctrl.runtime.close()


def test_train_cli_with_two_camera_topics(bags, tmp_path):
    """The YAML route: ``camera_names: [front, wrist]`` + one data topic per camera trains from the bags."""
    import json
    from vla_training.train_cli import main
    cfg = tmp_path / 'two_cameras.yaml'
    cfg.write_text(f"""
model:
  embodiment: franka_panda
  action_dim: 8
  state_dim: 8
  camera_names: [front, wrist]
  backbone: {{name: film_cnn, image_size: {SIZE}}}
  chunk: {{n_obs_steps: 1, chunk_size: 4, n_action_steps: 2}}
train: {{steps: 2, batch_size: 4, warmup_steps: 0, eval_fraction: 0.0}}
data:
  rate_hz: 10.0
  topics: {{images: {{front: {FRONT}, wrist: {WRIST}}}, joint_states: /joint_states,
           instruction: /vla/instruction, command: /arm_controller/joint_trajectory}}
""")
    out = tmp_path / 'run'
    assert main(['--config', str(cfg), '--bags', *map(str, bags), '--output', str(out), '--no-progress']) == 0
    saved = json.loads((out / 'checkpoint' / 'config.json').read_text())
    assert list(saved['camera_names']) == ['front', 'wrist']


def test_a_stale_camera_drops_ticks_counted_under_its_topic(sim, tmp_path):
    """The wrist camera stops half way: those ticks are dropped and counted under its topic."""
    from robot_drivers.embodiment import FRANKA_PANDA
    from vla_training.bag_writer import EpisodeBagWriter
    from vla_training.experts import ScriptedExpert, Task
    from vla_training.rollout import ExpertController, run_episode
    from vla_training.record import _QOS
    task = Task('reach', 'green')
    expert = ScriptedExpert(sim, task)
    ticks = {'n': 0}
    with EpisodeBagWriter(str(tmp_path / 'hiccup'), qos=_QOS) as w:
        added = set()

        def on_message(topic, msgtype, msg, t):
            if topic == '/joint_states':
                ticks['n'] += 1
            if topic == WRIST and ticks['n'] > 10:
                return                                      # the wrist camera dies after 10 ticks
            if topic not in added:
                w.add_topic(topic, msgtype)
                added.add(topic)
            w.write(topic, msg, t)

        run_episode(sim, task, 8, ExpertController(expert), steps=20, on_message=on_message,
                    reset_hook=expert.reset)
    both = read_episode(tmp_path / 'hiccup', FRANKA_PANDA, BOTH)
    front = read_episode(tmp_path / 'hiccup', FRANKA_PANDA)
    assert set(both.stale) == {WRIST} and both.dropped == both.stale[WRIST] > 0
    assert len(both) == len(front) - both.dropped and not front.stale
    assert len(both) >= 10


def test_robot_config_cameras_parameter_gives_the_training_topics(tmp_path):
    """policy_node's ``cameras`` in the robot config is what training reads (recording = deployment)."""
    import yaml
    franka = pathlib.Path(__file__).resolve().parents[3] / 'config' / 'franka.yaml'
    doc = yaml.safe_load(franka.read_text(encoding='utf-8'))
    assert BagTopics.from_robot_config(franka).cameras() == {'front': FRONT}     # as deployed today
    doc['policy_node']['ros__parameters']['cameras'] = f'front={FRONT},wrist={WRIST}'
    two = tmp_path / 'franka.yaml'
    two.write_text(yaml.safe_dump(doc), encoding='utf-8')
    t = BagTopics.from_robot_config(two)
    assert t.cameras() == {'front': FRONT, 'wrist': WRIST} and t.joint_states == '/joint_states'
    doc['policy_node']['ros__parameters']['cameras'] = 'front:/camera/image_raw'
    two.write_text(yaml.safe_dump(doc), encoding='utf-8')
    with pytest.raises(ValueError, match='policy_node.cameras must be name=/topic'):
        BagTopics.from_robot_config(two)


def test_record_cameras_option(tmp_path):
    """``record --cameras front`` writes bags as before several cameras; the default writes both."""
    from vla_training.bag_reader import bag_info
    from vla_training.record import RecordConfig, record_demos
    (bag,) = record_demos(RecordConfig(episodes=1, output=str(tmp_path / 'front_only'), workers=1, tasks=('reach',),
                                       image_size=SIZE, cameras=('front',)), progress=False)
    topics = bag_info(bag)['topics']
    assert FRONT in topics and WRIST not in topics
    assert RecordConfig().cameras == ('front', 'wrist')
    with pytest.raises(ValueError, match='must include front'):
        RecordConfig(cameras=('wrist',))
