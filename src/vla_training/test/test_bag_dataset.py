"""Tests for vla_training.bag_dataset against real ROS 2 Jazzy recordings and synthetic bags.

The fixtures under data/rosbag2_jazzy_sample/ were recorded by a real `ros2 bag record` (see its
README.md): 15 Hz camera (bgr8 + JPEG), joint states, 4-point trajectories and a latched instruction.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from rosbags.rosbag2 import Reader

from robot_drivers import conversions as cv
from robot_drivers.embodiment import FRANKA_PANDA, Embodiment
from vla_training.bag_dataset import (BagError, BagTopics, Episode, bag_info, chunk_targets, find_bags,
                                      read_episode, read_episodes)
from vla_training.bag_writer import EpisodeBagWriter

torch.set_num_threads(1)

DATA = Path(__file__).resolve().parent / 'data' / 'rosbag2_jazzy_sample'
BAGS = {'mcap': DATA / 'sample_mcap', 'sqlite3': DATA / 'sample_sqlite3'}
# The sample's trajectories command the 7 arm joints; the gripper is not on the arm controller.
ARM = Embodiment(name='panda_arm_test', joints=FRANKA_PANDA.joints[:7], control_rate_hz=10.0)
TYPES = cv.rosbags_types()
INSTRUCTION = 'pick up the blue cube'


def decode_by_hand(bag: Path):
    """{topic: [(stamp_s, msg), ...]} sorted by header stamp (receive time for headerless types)."""
    ts = cv.typestore()
    out = {}
    with Reader(bag) as r:
        for con, t, raw in r.messages():
            msg = ts.deserialize_cdr(raw, con.msgtype)
            stamp = cv.stamp_to_sec(msg.header.stamp) if hasattr(msg, 'header') else t * 1e-9
            out.setdefault(con.topic, []).append((stamp, msg))
    for v in out.values():
        v.sort(key=lambda x: x[0])
    return out


def latest(msgs, t):
    """The latest (stamp, msg) with stamp <= t."""
    cands = [m for m in msgs if m[0] <= t + 1e-9]
    return cands[-1]


# ----------------------------------------------------------------------------- real recordings
@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_reads_real_bags_and_matches_hand_decoding(storage):
    bag = BAGS[storage]
    ep = read_episode(bag, ARM)
    hand = decode_by_hand(bag)
    t_len = len(ep)
    assert t_len >= 35  # ~3.9 s at 10 Hz
    assert ep.images.shape == (t_len, 48, 64, 3) and ep.images.dtype == np.uint8
    assert ep.joint_positions.shape == (t_len, 7) and ep.joint_positions.dtype == np.float32
    assert ep.actions.shape == (t_len, 7) and ep.actions.dtype == np.float32
    assert ep.dropped == 0
    assert ep.joint_names == tuple(ARM.joint_names)
    assert ep.source == str(bag)
    assert np.all(np.diff(ep.stamps) > 0)
    np.testing.assert_allclose(np.diff(ep.stamps), 0.1, atol=1e-6)
    assert ep.instructions == [INSTRUCTION] * t_len
    # The grid ends at the last command.
    last_cmd = hand['/arm_controller/joint_trajectory'][-1][0]
    assert last_cmd - 0.1 < ep.stamps[-1] <= last_cmd + 1e-6

    half = 0.05
    for k, t in enumerate(ep.stamps):
        _, js = latest(hand['/joint_states'], t + half)
        lookup = {n: i for i, n in enumerate(js.name)}
        want = [js.position[lookup[n]] for n in ARM.joint_names]
        np.testing.assert_allclose(ep.joint_positions[k], want, rtol=0, atol=1e-6)

        _, cmd = latest(hand['/arm_controller/joint_trajectory'], t + half)
        lookup = {n: i for i, n in enumerate(cmd.joint_names)}
        want = [cmd.points[0].positions[lookup[n]] for n in ARM.joint_names]
        np.testing.assert_allclose(ep.actions[k], want, rtol=0, atol=1e-6)

        _, img = latest(hand['/camera/image_raw'], t + half)
        np.testing.assert_array_equal(ep.images[k], cv.image_to_numpy(img))


def test_real_commands_lead_state_by_the_recorded_offset():
    # In the sample, each trajectory's point 0 is the joint state of the same frame + 0.01 rad on
    # every arm joint; aligning state and command from different frames would break this.
    ep = read_episode(BAGS['mcap'], ARM)
    np.testing.assert_allclose(ep.actions - ep.joint_positions, 0.01, atol=2e-6)


def test_bgr8_and_jpeg_give_the_same_rgb():
    raw = read_episode(BAGS['mcap'], ARM)
    jpg = read_episode(BAGS['mcap'], ARM, BagTopics(image='/camera/image_raw/compressed'))
    np.testing.assert_array_equal(raw.stamps, jpg.stamps)
    diff = np.abs(raw.images.astype(np.int16) - jpg.images.astype(np.int16))
    assert diff.mean() < 4.0  # JPEG error only
    swapped = np.abs(raw.images[..., ::-1].astype(np.int16) - jpg.images.astype(np.int16))
    assert swapped.mean() > 5 * diff.mean() + 10  # channel order matters and was right


def test_colored_square_comes_out_in_its_encoded_color():
    # The README calls it a red square, but the frames carry (B, G, R) = (255, 0, 0) under
    # encoding bgr8, and the cv_bridge JPEG of the same frames decodes to blue as well: by the
    # sensor_msgs encoding the square is blue. Check the pure-color square pixels are blue in RGB.
    ep = read_episode(BAGS['mcap'], ARM)
    img = ep.images.astype(np.int16)  # (T, H, W, 3)
    blue = (img[..., 2] >= 200) & (img[..., 0] < 60) & (img[..., 1] < 60)
    red = (img[..., 0] >= 200) & (img[..., 1] < 60) & (img[..., 2] < 60)
    assert blue.sum(axis=(1, 2)).min() >= 40  # every frame shows the square
    assert red.sum() == 0


def test_message_missing_at_start_is_handled():
    # sample_sqlite3 lost the first /joint_states message: the grid starts at the first joint state.
    hand = decode_by_hand(BAGS['sqlite3'])
    firsts = {t: hand[t][0][0] for t in ('/camera/image_raw', '/joint_states', '/arm_controller/joint_trajectory')}
    firsts['/vla/instruction'] = hand['/vla/instruction'][0][0]
    assert firsts['/joint_states'] > firsts['/camera/image_raw'] + 0.03
    ep = read_episode(BAGS['sqlite3'], ARM)
    assert ep.stamps[0] == pytest.approx(max(firsts.values()), abs=1e-6)
    assert ep.stamps[0] == pytest.approx(firsts['/joint_states'], abs=1e-6)
    # while the complete mcap recording starts with its first frame
    hand_m = decode_by_hand(BAGS['mcap'])
    ep_m = read_episode(BAGS['mcap'], ARM)
    assert ep_m.stamps[0] == pytest.approx(hand_m['/joint_states'][0][0], abs=1e-6)
    assert ep_m.stamps[0] < ep.stamps[0]


def test_full_embodiment_needs_the_gripper_from_somewhere():
    with pytest.raises(BagError, match=r"/arm_controller/joint_trajectory.*'panda_finger_joint1'") as ei:
        read_episode(BAGS['mcap'], FRANKA_PANDA)
    assert 'sample_mcap' in str(ei.value)
    ep = read_episode(BAGS['mcap'], FRANKA_PANDA, action_from_state=['panda_finger_joint1'])
    hand = decode_by_hand(BAGS['mcap'])
    assert ep.actions.shape == (len(ep), 8)
    for k, t in enumerate(ep.stamps):
        _, js = latest(hand['/joint_states'], t + 0.1)  # measured one period later
        assert ep.actions[k, 7] == pytest.approx(js.position[list(js.name).index('panda_finger_joint1')], abs=1e-7)


def test_resize_rate_and_lazy_decoding(monkeypatch):
    calls = []
    real = cv.image_to_numpy

    def counting(msg, **kw):
        calls.append(1)
        return real(msg, **kw)

    monkeypatch.setattr(cv, 'image_to_numpy', counting)
    full = read_episode(BAGS['mcap'], ARM)
    # 60 frames in the bag, only those the 10 Hz grid uses are decoded
    assert len(calls) == len(full) < 60
    small = read_episode(BAGS['mcap'], ARM, image_size=(24, 32))
    assert small.images.shape == (len(full), 24, 32, 3)
    want = np.asarray(PILImage.fromarray(full.images[5]).resize((32, 24), PILImage.BILINEAR))
    np.testing.assert_array_equal(small.images[5], want)
    slow = read_episode(BAGS['mcap'], ARM, rate_hz=5.0)
    np.testing.assert_allclose(np.diff(slow.stamps), 0.2, atol=1e-6)
    assert slow.stamps[0] == full.stamps[0]


def test_read_episodes_from_a_directory_of_bags():
    eps = read_episodes(DATA, ARM)
    assert [Path(e.source).name for e in eps] == ['sample_mcap', 'sample_sqlite3']
    assert find_bags([BAGS['sqlite3'], DATA]) == [BAGS['sqlite3'], BAGS['mcap'], BAGS['sqlite3']]


def test_bag_info_on_real_bag():
    info = bag_info(BAGS['sqlite3'])
    assert info['storage'] == 'sqlite3'
    assert info['topics']['/joint_states'] == {'type': 'sensor_msgs/msg/JointState', 'count': 59}
    assert info['topics']['/camera/image_raw']['count'] == 60
    assert info['message_count'] == sum(t['count'] for t in info['topics'].values())
    assert 3.9 < info['duration_s'] < 4.0


# ----------------------------------------------------------------------------- bad input, real files
def test_missing_topic_lists_the_bag_topics():
    with pytest.raises(BagError, match=r'/camera/front.*not in the bag.*/camera/image_raw') as ei:
        read_episode(BAGS['mcap'], ARM, BagTopics(image='/camera/front'))
    assert 'sample_mcap' in str(ei.value)


def test_wrong_message_type():
    with pytest.raises(BagError, match=r'/vla/instruction.*std_msgs/msg/String.*expected sensor_msgs/msg/Image'):
        read_episode(BAGS['mcap'], ARM, BagTopics(image='/vla/instruction'))


def test_truncated_mcap(tmp_path):
    bag = tmp_path / 'truncated'
    shutil.copytree(BAGS['mcap'], bag)
    f = bag / 'sample_mcap_0.mcap'
    with open(f, 'r+b') as fh:
        fh.truncate(f.stat().st_size // 2)
    with pytest.raises(BagError, match='truncated') as ei:
        read_episode(bag, ARM)
    assert str(bag) in str(ei.value)


def test_corrupt_sqlite(tmp_path):
    bag = tmp_path / 'corrupt'
    shutil.copytree(BAGS['sqlite3'], bag)
    with open(bag / 'sample_sqlite3_0.db3', 'r+b') as fh:
        fh.write(b'this is not an sqlite database' * 4)
    with pytest.raises(BagError, match='cannot open') as ei:
        read_episode(bag, ARM)
    assert str(bag) in str(ei.value)


def test_missing_and_non_bag_paths(tmp_path):
    with pytest.raises(BagError, match='does not exist'):
        read_episode(tmp_path / 'nope', ARM)
    with pytest.raises(BagError, match='no metadata.yaml'):
        read_episode(tmp_path, ARM)
    with pytest.raises(BagError, match='bag directory'):
        read_episode(BAGS['mcap'] / 'sample_mcap_0.mcap', ARM)
    with pytest.raises(BagError, match='neither a rosbag2 directory'):
        read_episodes(tmp_path, ARM)


def test_bad_arguments():
    with pytest.raises(ValueError, match='rate_hz'):
        read_episode(BAGS['mcap'], ARM, rate_hz=0)
    with pytest.raises(ValueError, match='max_age_s'):
        read_episode(BAGS['mcap'], ARM, max_age_s=-1)
    with pytest.raises(ValueError, match='image_size'):
        read_episode(BAGS['mcap'], ARM, image_size=(0, 3))
    with pytest.raises(ValueError, match='action_from_state'):
        read_episode(BAGS['mcap'], ARM, action_from_state=['wrist_cam'])
    with pytest.raises(ValueError, match='unknown bag topic keys'):
        BagTopics.from_dict({'camera': '/x'})
    assert BagTopics.from_dict({'image': '/cam/compressed'}).image == '/cam/compressed'


# ----------------------------------------------------------------------------- synthetic bags
def make_bag(path, *, n=30, dt=0.1, t0=1000.0, image=None, js_names=None, skip_images=(), encoding='bgr8',
             js_offset=0.0, zero_image_stamp=False, storage='mcap'):
    """A bag at 1/dt Hz: frame k stamped t0 + k*dt, recorded 3 ms later; instruction once at t0."""
    names = js_names or ARM.joint_names
    with EpisodeBagWriter(path, storage=storage) as w:
        w.add_topic('/camera/image_raw', 'sensor_msgs/msg/Image')
        w.add_topic('/joint_states', 'sensor_msgs/msg/JointState')
        w.add_topic('/vla/instruction', 'std_msgs/msg/String')
        w.add_topic('/arm_controller/joint_trajectory', 'trajectory_msgs/msg/JointTrajectory')
        w.write('/vla/instruction', cv.string_msg('stack the cups', TYPES), t0 - 0.5)
        for k in range(n):
            t = t0 + k * dt
            if k not in skip_images:
                img = image(k) if image else np.full((6, 8, 3), k, np.uint8)
                msg = cv.numpy_to_image(img, 0.0 if zero_image_stamp else t, TYPES, encoding=encoding)
                w.write('/camera/image_raw', msg, t + 0.003)
            q = np.arange(len(names)) * 0.1 + k * 0.01
            w.write('/joint_states', cv.arrays_to_joint_state(names, q, t + js_offset, TYPES), t + js_offset + 0.003)
            cmd = cv.arrays_to_trajectory(ARM.joint_names, np.stack([q[:7] + 0.5, q[:7] + 1.0]), t, TYPES, dt=dt)
            w.write('/arm_controller/joint_trajectory', cmd, t + 0.003)
    return path


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_stale_image_ticks_are_dropped_and_counted(tmp_path, storage):
    bag = make_bag(tmp_path / 'gap', skip_images=range(10, 16), storage=storage)
    ep = read_episode(bag, ARM)
    # frames 10..15 missing: ticks 10..15 see frame 9 (age 0.1..0.6 s); max age 0.2 s keeps 10, 11
    assert ep.dropped == 4
    assert len(ep) == 26
    assert ep.stale == {'/camera/image_raw': 4}  # the stale topic and its ticks, as returned data
    assert np.all(np.diff(ep.stamps) > 0)
    gap = np.flatnonzero(np.diff(ep.stamps) > 0.15)
    assert gap.tolist() == [11] and ep.stamps[12] - ep.stamps[11] == pytest.approx(0.5, abs=1e-6)
    # images: frame index is encoded in the pixel values; ticks 10, 11 reuse frame 9
    assert ep.images[:, 0, 0, 0].tolist() == list(range(10)) + [9, 9] + list(range(16, 30))
    assert ep.instructions == ['stack the cups'] * 26
    # actions are point 0 (q + 0.5) of the same-stamp command
    np.testing.assert_allclose(ep.actions - ep.joint_positions, 0.5, atol=1e-6)
    # chunks stop at the gap
    targets, pad = ep.chunk_targets(4)
    assert pad[10].tolist() == [False, False, True, True]
    np.testing.assert_array_equal(targets[10, 2], ep.actions[11])
    assert pad[12].tolist() == [False] * 4
    # a larger max age keeps everything
    assert read_episode(bag, ARM, max_age_s=1.0).dropped == 0


def test_gripper_action_from_next_measured_state(tmp_path):
    names = ARM.joint_names + ['panda_finger_joint1']
    bag = make_bag(tmp_path / 'grip', js_names=names)
    ep = read_episode(bag, FRANKA_PANDA, action_from_state=['panda_finger_joint1'])
    assert ep.dropped == 0 and len(ep) == 30
    # finger measured 0.7 + 0.01 k at frame k; its action at tick k is the measurement at k + 1
    np.testing.assert_allclose(ep.actions[:-1, 7], ep.joint_positions[1:, 7], atol=1e-7)
    assert ep.actions[-1, 7] == ep.joint_positions[-1, 7]
    np.testing.assert_allclose(ep.actions[:, :7] - ep.joint_positions[:, :7], 0.5, atol=1e-6)


def test_alignment_uses_header_stamps_not_receive_order(tmp_path):
    # joint states arrive out of order (each pair swapped on the wire, up to 80 ms late):
    # the reader must order by header.stamp.
    bag = tmp_path / 'reordered'
    t0, dt, n = 50.0, 0.05, 40  # 20 Hz joint states, 10 Hz grid
    with EpisodeBagWriter(bag) as w:
        w.add_topic('/camera/image_raw', 'sensor_msgs/msg/Image')
        w.add_topic('/joint_states', 'sensor_msgs/msg/JointState')
        w.add_topic('/vla/instruction', 'std_msgs/msg/String')
        w.add_topic('/arm_controller/joint_trajectory', 'trajectory_msgs/msg/JointTrajectory')
        w.write('/vla/instruction', cv.string_msg('go', TYPES), t0)
        for k in range(n):
            t = t0 + k * dt
            recv = t0 + (k + 1 - 2 * (k % 2)) * dt + 0.03  # k even -> received after k + 1
            w.write('/joint_states', cv.arrays_to_joint_state(ARM.joint_names, np.full(7, float(k)), t, TYPES), recv)
            if k % 2 == 0:
                w.write('/camera/image_raw', cv.numpy_to_image(np.zeros((4, 4, 3), np.uint8), t, TYPES), t + 0.001)
                w.write('/arm_controller/joint_trajectory',
                        cv.arrays_to_trajectory(ARM.joint_names, np.full((1, 7), float(k)), t, TYPES, dt=0.1), t + 0.001)
    ep = read_episode(bag, ARM)
    # tick i at t0 + 0.1 i takes the latest state stamped <= t + 0.05: frame 2 i + 1
    assert ep.joint_positions[:, 0].tolist() == [min(2 * i + 1, n - 1) for i in range(len(ep))]
    assert ep.actions[:, 0].tolist() == [2 * i for i in range(len(ep))]


def test_generic_encoding_image_is_rejected(tmp_path):
    # generic encodings such as 16UC1 carry no colour order: refused, naming encoding and topic
    bag = tmp_path / 'generic16'
    with EpisodeBagWriter(bag) as w:
        for topic, typ in [('/camera/image_raw', 'sensor_msgs/msg/Image'), ('/joint_states', 'sensor_msgs/msg/JointState'),
                           ('/vla/instruction', 'std_msgs/msg/String'),
                           ('/arm_controller/joint_trajectory', 'trajectory_msgs/msg/JointTrajectory')]:
            w.add_topic(topic, typ)
        w.write('/vla/instruction', cv.string_msg('x', TYPES), 10.0)
        for k in range(5):
            t = 10.0 + 0.1 * k
            img = TYPES.Image(header=cv.header(t, 'cam', TYPES), height=4, width=4, encoding='16UC1', is_bigendian=0,
                              step=8, data=np.zeros(32, np.uint8))
            w.write('/camera/image_raw', img, t)
            w.write('/joint_states', cv.arrays_to_joint_state(ARM.joint_names, np.zeros(7), t, TYPES), t)
            w.write('/arm_controller/joint_trajectory',
                    cv.arrays_to_trajectory(ARM.joint_names, np.zeros((1, 7)), t, TYPES, dt=0.1), t)
    with pytest.raises(BagError, match=r"16UC1.*/camera/image_raw|/camera/image_raw.*16UC1") as ei:
        read_episode(bag, ARM)
    assert str(bag) in str(ei.value)


def test_joint_states_missing_an_embodiment_joint(tmp_path):
    bag = make_bag(tmp_path / 'nojoint7', js_names=ARM.joint_names[:6] + ['panda_finger_joint1'])
    with pytest.raises(BagError, match=r"/joint_states.*panda_joint7") as ei:
        read_episode(bag, ARM)
    assert str(bag) in str(ei.value)


def test_frame_size_change_is_rejected(tmp_path):
    bag = make_bag(tmp_path / 'sizes', image=lambda k: np.zeros((6, 8, 3) if k < 5 else (6, 9, 3), np.uint8))
    with pytest.raises(BagError, match=r'/camera/image_raw.*9x6.*8x6'):
        read_episode(bag, ARM)


def test_topics_that_never_overlap(tmp_path):
    # joint states stamped 100 s after everything else: at every tick one topic is stale or absent
    bag = make_bag(tmp_path / 'apart', js_offset=100.0)
    with pytest.raises(BagError, match='no grid tick survives'):
        read_episode(bag, ARM)


def test_zero_sensor_stamp_is_rejected(tmp_path):
    bag = make_bag(tmp_path / 'zero', zero_image_stamp=True)
    with pytest.raises(BagError, match=r'/camera/image_raw.*header.stamp is zero'):
        read_episode(bag, ARM)


# ----------------------------------------------------------------------------- chunk_targets
def test_chunk_targets_pads_with_last_action():
    a = np.arange(10, dtype=np.float32).reshape(5, 2)  # (T=5, A=2)
    targets, pad = chunk_targets(a, 3)
    assert targets.shape == (5, 3, 2) and pad.shape == (5, 3) and pad.dtype == bool
    np.testing.assert_array_equal(targets[0], a[0:3])
    np.testing.assert_array_equal(targets[3], a[[3, 4, 4]])
    np.testing.assert_array_equal(targets[4], a[[4, 4, 4]])
    assert pad[3].tolist() == [False, False, True] and pad[4].tolist() == [False, True, True]
    assert not pad[:3].any()


def test_chunk_targets_respects_gaps():
    a = np.arange(6, dtype=np.float32)[:, None]
    stamps = np.array([0.0, 0.1, 0.2, 0.6, 0.7, 0.8])
    targets, pad = chunk_targets(a, 3, stamps=stamps, period_s=0.1)
    assert targets[1, :, 0].tolist() == [1, 2, 2] and pad[1].tolist() == [False, False, True]
    assert targets[3, :, 0].tolist() == [3, 4, 5] and not pad[3].any()
    with pytest.raises(ValueError, match='period_s'):
        chunk_targets(a, 3, stamps=stamps)
    with pytest.raises(ValueError, match='chunk_size'):
        chunk_targets(a, 0)
    with pytest.raises(ValueError, match=r'\(T, A\)'):
        chunk_targets(np.zeros(4), 2)


def test_episode_checks_lengths():
    with pytest.raises(ValueError, match='lengths'):
        Episode(source='x', stamps=np.zeros(3), images=np.zeros((2, 1, 1, 3), np.uint8),
                joint_positions=np.zeros((3, 1)), actions=np.zeros((3, 1)), instructions=['a'] * 3, dropped=0)
