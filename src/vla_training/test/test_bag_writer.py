"""Tests for vla_training.bag_writer: valid rosbag2 output (compared with a real Jazzy recording's
metadata.yaml), round trips through read_episode, and atomic writing."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from rosbags.rosbag2 import Reader

from robot_drivers import conversions as cv
from robot_drivers.embodiment import FRANKA_PANDA, Embodiment
from vla_training.bag_dataset import BagTopics, read_episode
from vla_training.bag_writer import EpisodeBagWriter, bag_info, qos_profile, write_episode

torch.set_num_threads(1)

DATA = Path(__file__).resolve().parent / 'data' / 'rosbag2_jazzy_sample'
TYPES = cv.rosbags_types()
ARM = Embodiment(name='panda_arm_test', joints=FRANKA_PANDA.joints[:7], control_rate_hz=10.0)
SAMPLE_TOPICS = {
    '/camera/image_raw': 'sensor_msgs/msg/Image',
    '/camera/image_raw/compressed': 'sensor_msgs/msg/CompressedImage',
    '/joint_states': 'sensor_msgs/msg/JointState',
    '/vla/instruction': 'std_msgs/msg/String',
    '/arm_controller/joint_trajectory': 'trajectory_msgs/msg/JointTrajectory',
}


def load_meta(bag: Path) -> dict:
    with open(bag / 'metadata.yaml') as f:
        return yaml.safe_load(f)['rosbag2_bagfile_information']


def episode_messages(n=25, t0=1700000000.0, dt=0.1, seed=0, encoding='rgb8'):
    """(messages, frames, joint positions, commands) of a synthetic 10 Hz episode with random content."""
    rng = np.random.default_rng(seed)
    # random 8x8-pixel blocks (JPEG's block size): distinct per frame, yet easy for JPEG to keep
    frames = rng.integers(0, 256, size=(n, 2, 3, 3), dtype=np.uint8).repeat(8, axis=1).repeat(8, axis=2)  # (T, 16, 24, 3)
    q = rng.uniform(-1, 1, size=(n, 8))  # (T, J), embodiment order
    cmd = q[:, :7] + rng.uniform(-0.1, 0.1, size=(n, 7))  # (T, 7)
    # the message joint order differs from the embodiment's
    perm = rng.permutation(8)
    js_names = [FRANKA_PANDA.joint_names[i] for i in perm]
    cmd_perm = rng.permutation(7)
    cmd_names = [ARM.joint_names[i] for i in cmd_perm]
    msgs = [('/vla/instruction', 'std_msgs/msg/String', cv.string_msg('open the drawer', TYPES), t0 - 1.0)]
    for k in range(n):
        t = t0 + k * dt
        msgs.append(('/camera/image_raw', 'sensor_msgs/msg/Image',
                     cv.numpy_to_image(frames[k], t, TYPES, encoding=encoding), t + 0.004))
        msgs.append(('/camera/image_raw/compressed', 'sensor_msgs/msg/CompressedImage',
                     cv.numpy_to_compressed_image(frames[k], t, TYPES, quality=95), t + 0.005))
        msgs.append(('/joint_states', 'sensor_msgs/msg/JointState',
                      cv.arrays_to_joint_state(js_names, q[k, perm], t, TYPES), t + 0.002))
        traj = np.stack([cmd[k, cmd_perm], cmd[k, cmd_perm] + 0.01])  # (P=2, 7)
        msgs.append(('/arm_controller/joint_trajectory', 'trajectory_msgs/msg/JointTrajectory',
                     cv.arrays_to_trajectory(cmd_names, traj, t, TYPES, dt=dt), t + 0.003))
    return msgs, frames, q, cmd


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_metadata_looks_like_a_jazzy_recording(tmp_path, storage):
    msgs, *_ = episode_messages(n=5)
    bag = write_episode(tmp_path / 'ep', msgs, storage=storage)
    assert bag == tmp_path / 'ep'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ep']  # no temporary left behind
    ours = load_meta(bag)
    sample = load_meta(DATA / f'sample_{storage}')
    assert set(ours) == set(sample)
    assert ours['version'] == 9 and ours['storage_identifier'] == storage
    assert ours['message_count'] == len(msgs)
    for rel in ours['relative_file_paths']:
        assert (bag / rel).is_file()
    assert ours['files'][0]['path'] == ours['relative_file_paths'][0]
    ns = [round(m[3] * 1e9) for m in msgs]
    assert ours['starting_time']['nanoseconds_since_epoch'] == min(ns)
    assert ours['duration']['nanoseconds'] == max(ns) - min(ns)
    sample_topics = {t['topic_metadata']['name']: t for t in sample['topics_with_message_count']}
    our_topics = {t['topic_metadata']['name']: t for t in ours['topics_with_message_count']}
    assert set(our_topics) == set(SAMPLE_TOPICS)
    for name, entry in our_topics.items():
        want = sample_topics[name]['topic_metadata']
        got = entry['topic_metadata']
        assert set(got) == set(want)
        assert got['type'] == want['type'] == SAMPLE_TOPICS[name]
        assert got['serialization_format'] == 'cdr'
        # same QoS that ros2 bag record stored for these publishers, same Jazzy type hashes
        assert got['offered_qos_profiles'] == want['offered_qos_profiles'], name
        assert got['type_description_hash'] == want['type_description_hash'], name
        assert entry['message_count'] == sum(1 for m in msgs if m[0] == name)


def test_explicit_qos_overrides_the_default(tmp_path):
    msgs, *_ = episode_messages(n=3)
    bag = write_episode(tmp_path / 'ep', msgs, qos={'/joint_states': 'reliable', '/camera/image_raw': 'latched'})
    topics = {t['topic_metadata']['name']: t['topic_metadata'] for t in load_meta(bag)['topics_with_message_count']}
    js = topics['/joint_states']['offered_qos_profiles'][0]
    assert (js['reliability'], js['depth'], js['durability']) == ('reliable', 10, 'volatile')
    cam = topics['/camera/image_raw']['offered_qos_profiles'][0]
    assert (cam['reliability'], cam['depth'], cam['durability']) == ('reliable', 1, 'transient_local')
    with pytest.raises(ValueError, match='QoS kind'):
        qos_profile('fast')
    with pytest.raises(ValueError, match='QoS for /x'):
        EpisodeBagWriter(tmp_path / 'other', qos={'/x': 'fast'})


@pytest.mark.parametrize('storage,encoding', [('mcap', 'rgb8'), ('sqlite3', 'bgr8')])
def test_round_trip_through_read_episode(tmp_path, storage, encoding):
    msgs, frames, q, cmd = episode_messages(n=25, encoding=encoding)
    bag = write_episode(tmp_path / 'rt', msgs, storage=storage)
    ep = read_episode(bag, ARM)
    assert len(ep) == 25 and ep.dropped == 0
    np.testing.assert_allclose(ep.stamps, 1700000000.0 + 0.1 * np.arange(25), atol=1e-6)
    np.testing.assert_array_equal(ep.images, frames)
    np.testing.assert_allclose(ep.joint_positions, q[:, :7].astype(np.float32), atol=0)
    np.testing.assert_allclose(ep.actions, cmd.astype(np.float32), atol=0)
    assert ep.instructions == ['open the drawer'] * 25

    jpg = read_episode(bag, ARM, BagTopics(image='/camera/image_raw/compressed'))
    err = np.abs(jpg.images.astype(np.int16) - frames.astype(np.int16)).mean()
    assert 0 < err < 6  # lossy, but the same frames
    shuffled = np.abs(jpg.images.astype(np.int16) - frames[::-1].astype(np.int16)).mean()
    assert shuffled > err + 20


def test_messages_deserialize_back_identically(tmp_path):
    msgs, *_ = episode_messages(n=4)
    bag = write_episode(tmp_path / 'ep', msgs)
    ts = cv.typestore()
    with Reader(bag) as r:
        got = [(c.topic, t, ts.deserialize_cdr(raw, c.msgtype)) for c, t, raw in r.messages()]
    want = sorted(((m[0], round(m[3] * 1e9), m[2]) for m in msgs), key=lambda x: x[1])
    assert [(g[0], g[1]) for g in got] == [(w[0], w[1]) for w in want]
    for (_, _, a), (_, _, b) in zip(got, want):
        assert ts.serialize_cdr(a, a.__msgtype__).tobytes() == ts.serialize_cdr(b, b.__msgtype__).tobytes()


def test_bag_info_of_written_bag(tmp_path):
    msgs, *_ = episode_messages(n=6)
    bag = write_episode(tmp_path / 'ep', msgs, storage='sqlite3')
    info = bag_info(bag)
    assert info['storage'] == 'sqlite3'
    assert info['message_count'] == len(msgs)
    assert info['topics']['/joint_states'] == {'type': 'sensor_msgs/msg/JointState', 'count': 6}
    assert info['topics']['/vla/instruction']['count'] == 1
    assert info['start_s'] == pytest.approx(min(m[3] for m in msgs), abs=1e-6)
    assert info['duration_s'] == pytest.approx(max(m[3] for m in msgs) - min(m[3] for m in msgs), abs=1e-6)


def test_exception_leaves_nothing_behind(tmp_path):
    target = tmp_path / 'sub' / 'ep'
    with pytest.raises(RuntimeError, match='operator stopped'):
        with EpisodeBagWriter(target) as w:
            w.add_topic('/vla/instruction', 'std_msgs/msg/String')
            w.write('/vla/instruction', cv.string_msg('x', TYPES), 1.0)
            raise RuntimeError('operator stopped')
    assert not target.exists()
    assert list((tmp_path / 'sub').iterdir()) == []


def test_bad_message_in_write_episode_leaves_nothing(tmp_path):
    msgs, *_ = episode_messages(n=3)
    bad = msgs + [('/joint_states', 'sensor_msgs/msg/Image', msgs[1][2], 5.0)]
    with pytest.raises(ValueError, match=r'/joint_states given as sensor_msgs/msg/Image'):
        write_episode(tmp_path / 'ep', bad)
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_bad_input(tmp_path):
    (tmp_path / 'exists').mkdir()
    with pytest.raises(FileExistsError, match='exists'):
        EpisodeBagWriter(tmp_path / 'exists')
    with pytest.raises(ValueError, match='storage'):
        EpisodeBagWriter(tmp_path / 'a', storage='rosbag1')
    w = EpisodeBagWriter(tmp_path / 'b')
    with pytest.raises(RuntimeError, match='not open'):
        w.add_topic('/x', 'std_msgs/msg/String')
    with pytest.raises(ValueError) as ei:
        with EpisodeBagWriter(tmp_path / 'c') as w:
            w.add_topic('/joint_states', 'sensor_msgs/msg/JointState')
            with pytest.raises(ValueError, match='already added'):
                w.add_topic('/joint_states', 'sensor_msgs/msg/JointState')
            with pytest.raises(ValueError, match='not in the ROS 2 Jazzy type store'):
                w.add_topic('/odom', 'nav_msgs/Odometry')
            with pytest.raises(ValueError, match='absolute'):
                w.add_topic('joint_states2', 'sensor_msgs/msg/JointState')
            with pytest.raises(KeyError, match='/camera'):
                w.write('/camera', cv.string_msg('x', TYPES), 1.0)
            js = cv.arrays_to_joint_state(['a'], [0.0], 1.0, TYPES)
            with pytest.raises(ValueError, match='>= 0'):
                w.write('/joint_states', js, -1.0)
            w.write('/joint_states', cv.string_msg('x', TYPES), 1.0)  # wrong type: aborts the bag
    assert 'takes sensor_msgs/msg/JointState' in str(ei.value)
    assert not (tmp_path / 'c').exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['exists']
