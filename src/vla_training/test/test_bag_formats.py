"""The reader on what real recordings bring: zstd-compressed bags (MCAP chunks, whole files, sqlite3
messages), episodes split over several files, streams at 30/100/200 Hz, no command topic.

Two sources of real data: the bags ROS 2 Jazzy's `ros2 bag record` wrote (data/rosbag2_jazzy_sample),
copied message by message into each form, and a recording of the MuJoCo Franka scene (a real
physics rollout: 200 Hz joint states, a 30 Hz camera, 100 Hz commands).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import Reader

os.environ.setdefault('MUJOCO_GL', 'egl')

from robot_drivers import conversions as cv  # noqa: E402
from robot_drivers.embodiment import FRANKA_PANDA, Embodiment  # noqa: E402
from vla_training.bag_dataset import BagError, BagTopics, bag_info, read_episode  # noqa: E402
from vla_training.bag_writer import EpisodeBagWriter, copy_bag  # noqa: E402

DATA = Path(__file__).resolve().parent / 'data' / 'rosbag2_jazzy_sample'
ARM = Embodiment(name='panda_arm_test', joints=FRANKA_PANDA.joints[:7], control_rate_hz=10.0)
TYPES = cv.rosbags_types()

# name -> copy_bag arguments: the forms `ros2 bag record` writes
FORMS = {
    'mcap_zstd_chunks': dict(storage='mcap', compression='storage'),     # --storage-preset-profile zstd_fast
    'mcap_zstd_file': dict(storage='mcap', compression='file'),          # --compression-mode file
    'mcap_split': dict(storage='mcap', max_bag_duration_s=1.0),          # --max-bag-duration 1
    'mcap_split_zstd_file': dict(storage='mcap', max_bag_duration_s=1.0, compression='file'),
    'mcap_split_zstd_chunks': dict(storage='mcap', max_bag_duration_s=1.0, compression='storage'),
    'sqlite3_zstd_message': dict(storage='sqlite3', compression='message'),  # --compression-mode message
    'sqlite3_split': dict(storage='sqlite3', max_bag_duration_s=0.7),
}


def assert_same_episode(a, b):
    for f in ('stamps', 'images', 'joint_positions', 'actions'):
        x, y = getattr(a, f), getattr(b, f)
        assert x.dtype == y.dtype and x.shape == y.shape, f
        np.testing.assert_array_equal(x, y, err_msg=f)
    assert a.instructions == b.instructions
    assert (a.dropped, a.stale, a.joint_names, a.rate_hz) == (b.dropped, b.stale, b.joint_names, b.rate_hz)


def meta(bag):
    with open(bag / 'metadata.yaml', encoding='utf8') as f:
        return yaml.safe_load(f)['rosbag2_bagfile_information']


# ----------------------------------------------------------------------------- the Jazzy recordings
@pytest.mark.parametrize('src', ['sample_mcap', 'sample_sqlite3'])
@pytest.mark.parametrize('form', sorted(FORMS))
def test_ros_recordings_read_the_same_in_every_form(tmp_path, src, form):
    ref_bag = DATA / src
    bag = copy_bag(ref_bag, tmp_path / form, **FORMS[form])
    m = meta(bag)
    kw = FORMS[form]
    if kw.get('max_bag_duration_s'):
        # rosbag2's layout: <bag>_0.<ext>, <bag>_1.<ext>, ... under one metadata.yaml
        assert len(m['relative_file_paths']) >= 4
        assert [Path(p).name.split('.')[0] for p in m['relative_file_paths']] == \
            [f'{form}_{i}' for i in range(len(m['relative_file_paths']))]
        assert sum(f['message_count'] for f in m['files']) == m['message_count'] == meta(ref_bag)['message_count']
    if kw.get('compression') in ('file', 'message'):
        assert (m['compression_mode'], m['compression_format']) == (kw['compression'], 'zstd')
    if kw.get('compression') == 'file':
        assert all(p.endswith('.mcap.zstd') for p in m['relative_file_paths'])
    if kw.get('compression') == 'storage':  # zstd chunks inside the MCAP file
        assert all(b'zstd' in (bag / p).read_bytes() for p in m['relative_file_paths'])
        plain = copy_bag(ref_bag, tmp_path / 'plain', storage='mcap', max_bag_duration_s=kw.get('max_bag_duration_s'))
        size = sum((bag / p).stat().st_size for p in m['relative_file_paths'])
        assert size < sum((plain / p).stat().st_size for p in meta(plain)['relative_file_paths'])
    for topics in (BagTopics(), BagTopics(image='/camera/image_raw/compressed')):
        ref = read_episode(ref_bag, ARM, topics)
        got = read_episode(bag, ARM, topics)
        assert_same_episode(got, ref)
        assert len(got) >= 35


def test_bag_info_reports_files_and_compression(tmp_path):
    bag = copy_bag(DATA / 'sample_mcap', tmp_path / 'ep', max_bag_duration_s=1.0, compression='file')
    info = bag_info(bag)
    assert info['compression'] == 'zstd (file)'
    assert info['files'] == [f'ep_{i}.mcap.zstd' for i in range(len(info['files']))]
    ref = bag_info(DATA / 'sample_mcap')
    assert info['topics'] == ref['topics'] and info['message_count'] == ref['message_count'] == 244
    assert ref['compression'] == '' and ref['files'] == ['sample_mcap_0.mcap']


def test_split_files_hold_consecutive_time_windows(tmp_path):
    bag = copy_bag(DATA / 'sample_mcap', tmp_path / 'ep', max_bag_duration_s=1.0)
    files = meta(bag)['files']
    starts = [f['starting_time']['nanoseconds_since_epoch'] for f in files]
    assert starts == sorted(starts)
    for f in files:
        assert f['duration']['nanoseconds'] < 1_000_000_000  # each file spans less than the limit
    # every message of the original is in exactly one file, in receive order
    with Reader(DATA / 'sample_mcap') as r:
        want = [(c.topic, t, bytes(raw)) for c, t, raw in r.messages()]
    with Reader(bag) as r:
        got = [(c.topic, t, bytes(raw)) for c, t, raw in r.messages()]
    assert got == want


def test_a_missing_split_file_is_named(tmp_path):
    bag = copy_bag(DATA / 'sample_mcap', tmp_path / 'ep', max_bag_duration_s=1.0)
    (bag / 'ep_2.mcap').unlink()
    with pytest.raises(BagError, match=r'ep_2\.mcap') as ei:
        read_episode(bag, ARM)
    assert str(bag) in str(ei.value)


def test_writer_rejects_compressions_the_storage_lacks(tmp_path):
    with pytest.raises(ValueError, match="'message' needs storage sqlite3"):
        EpisodeBagWriter(tmp_path / 'a', storage='mcap', compression='message')
    with pytest.raises(ValueError, match="'storage' needs storage mcap"):
        EpisodeBagWriter(tmp_path / 'b', storage='sqlite3', compression='storage')
    with pytest.raises(ValueError, match='max_bag_duration_s'):
        EpisodeBagWriter(tmp_path / 'c', max_bag_duration_s=0)


# ----------------------------------------------------------------------------- a simulated Franka recording
BASE = 1_700_000_000.0
JS_HZ, CAM_HZ, CMD_HZ = 200, 30, 100
# Stamp offsets keep every message off the edges of the tick windows (t + half a period), where the
# float seconds this test computes with could round either way: joint states 1 ms after their physics
# step, camera frames 3.2 ms after theirs (the camera is the last stream to start, so the grid starts there).
JS_OFFSET = 0.001
CAM_OFFSET = 0.0032
DURATION = 2.0


@pytest.fixture(scope='module')
def sim_stream():
    """A 2 s rollout of the MuJoCo Franka tracking a 100 Hz joint-space ramp; 1 kHz physics."""
    from robot_drivers.sim.franka_cubes import FrankaCubeSim, SimConfig
    sim = FrankaCubeSim(SimConfig(image_size=32, physics_dt=0.001))
    try:
        sim.reset(seed=3)
        q0 = sim.read().positions.copy()
        q1 = q0 + np.array([0.3, -0.2, 0.2, 0.3, 0.2, 0.3, -0.3, -0.03])
        js, cmds, frames = [], [], []
        n_steps = int(round(DURATION * 1000))
        for step in range(n_steps):
            t = step * 1e-3
            if step % (1000 // CMD_HZ) == 0:
                target = q0 + (q1 - q0) * min(1.0, t / 1.5)
                sim.write(target)
                cmds.append((t, target.copy()))
            if len(frames) * 1000 // CAM_HZ <= step:  # frame k at the first step >= k / 30 s
                frames.append((len(frames) / CAM_HZ + CAM_OFFSET, sim.render()))
            sim.step(1e-3)
            if (step + 1) % (1000 // JS_HZ) == 0 and len(js) < DURATION * JS_HZ:
                js.append((len(js) / JS_HZ + JS_OFFSET, sim.read().positions.copy()))
    finally:
        sim.close()
    moved = np.abs(js[-1][1] - js[0][1])
    assert moved[:7].max() > 0.1  # the arm really moved
    return {'js': js, 'cmd': cmds, 'cam': frames}


def write_sim_bag(path, stream, *, command=True, skip_frames=(), **writer_kw):
    names = FRANKA_PANDA.joint_names
    msgs = [('/vla/instruction', 'std_msgs/msg/String', cv.string_msg('reach the red cube', TYPES), BASE - 0.1)]
    for t, q in stream['js']:
        msgs.append(('/joint_states', 'sensor_msgs/msg/JointState',
                     cv.arrays_to_joint_state(names, q, BASE + t, TYPES), BASE + t + 0.002))
    for k, (t, img) in enumerate(stream['cam']):
        if k not in skip_frames:
            msgs.append(('/camera/image_raw', 'sensor_msgs/msg/Image', cv.numpy_to_image(img, BASE + t, TYPES),
                         BASE + t + 0.008))
    if command:
        for t, q in stream['cmd']:
            msgs.append(('/arm_controller/joint_trajectory', 'trajectory_msgs/msg/JointTrajectory',
                         cv.arrays_to_trajectory(names, q[None, :], BASE + t, TYPES, dt=1.0 / CMD_HZ),
                         BASE + t + 0.001))
    msgs.sort(key=lambda m: m[3])  # a recorder writes in receive order
    with EpisodeBagWriter(path, **writer_kw) as w:
        for topic, msgtype, msg, t in msgs:
            if topic not in w.topics:
                w.add_topic(topic, msgtype)
            w.write(topic, msg, t)
    return path


def latest_index(stamps, t):
    """Index of the latest of ``stamps`` (s, relative) at or before ``t``."""
    return max(i for i, s in enumerate(stamps) if s <= t + 1e-9)


@pytest.mark.parametrize('rate', [10.0, 50.0])
def test_30_100_200_hz_streams_resample_onto_the_control_rate(tmp_path, sim_stream, rate):
    bag = write_sim_bag(tmp_path / 'sim', sim_stream)
    ep = read_episode(bag, FRANKA_PANDA, rate_hz=rate)
    period = 1.0 / rate
    # the grid starts when every topic has a message (the first frame) and ends at the last command
    t_first = CAM_OFFSET
    t_last_cmd = sim_stream['cmd'][-1][0]
    assert ep.stamps[0] == pytest.approx(BASE + t_first, abs=1e-6)
    assert len(ep) == int(np.floor((t_last_cmd - t_first) / period + 1e-6)) + 1
    assert ep.dropped == 0 and ep.stale == {}  # a 30 Hz camera is at most 33 ms old, < 2 periods
    js_t = [t for t, _ in sim_stream['js']]
    cam_t = [t for t, _ in sim_stream['cam']]
    cmd_t = [t for t, _ in sim_stream['cmd']]
    used_frames = set()
    for i, stamp in enumerate(ep.stamps):
        t = stamp - BASE + period / 2  # latest message stamped <= tick + half a period
        np.testing.assert_array_equal(ep.joint_positions[i],
                                      sim_stream['js'][latest_index(js_t, t)][1].astype(np.float32))
        k = latest_index(cam_t, t)
        used_frames.add(k)
        np.testing.assert_array_equal(ep.images[i], sim_stream['cam'][k][1])
        np.testing.assert_array_equal(ep.actions[i], sim_stream['cmd'][latest_index(cmd_t, t)][1].astype(np.float32))
    if rate == 50.0:  # faster than the camera: frames are held, none skipped
        assert len(used_frames) < len(ep) and sorted(used_frames) == list(range(min(used_frames), max(used_frames) + 1))
    assert ep.instructions == ['reach the red cube'] * len(ep)


@pytest.mark.parametrize('form', ['mcap_zstd_chunks', 'mcap_zstd_file', 'mcap_split', 'mcap_split_zstd_chunks',
                                  'sqlite3_zstd_message', 'sqlite3_split'])
def test_sim_recording_reads_the_same_compressed_and_split(tmp_path, sim_stream, form):
    ref = read_episode(write_sim_bag(tmp_path / 'plain', sim_stream), FRANKA_PANDA)
    kw = dict(FORMS[form])
    bag = write_sim_bag(tmp_path / form, sim_stream, **kw)
    if kw.get('max_bag_duration_s'):
        assert len(meta(bag)['relative_file_paths']) >= 2
    assert_same_episode(read_episode(bag, FRANKA_PANDA), ref)


def test_camera_dropout_is_counted_per_topic(tmp_path, sim_stream):
    # frames 15..29 (0.5 s .. 0.97 s) lost: ticks whose latest frame is older than 0.2 s are dropped
    bag = write_sim_bag(tmp_path / 'dropout', sim_stream, skip_frames=range(15, 30))
    ep = read_episode(bag, FRANKA_PANDA)
    full = read_episode(write_sim_bag(tmp_path / 'full', sim_stream), FRANKA_PANDA)
    cam_t = [t for k, (t, _) in enumerate(sim_stream['cam']) if k not in range(15, 30)]
    grid = full.stamps - BASE
    # stale: the frame in force (latest stamped <= t + 50 ms) is more than 0.2 s older than the tick
    stale = [t for t in grid if t - cam_t[latest_index(cam_t, t + 0.05)] > 0.2]
    assert len(stale) == 3  # ticks at 0.703, 0.803, 0.903 s still see frame 14 (0.470 s)
    assert ep.stale == {'/camera/image_raw': len(stale)}
    assert ep.dropped == len(stale) and len(ep) == len(full) - len(stale)
    np.testing.assert_array_equal(np.setdiff1d(full.stamps, ep.stamps), BASE + np.asarray(stale))
    # chunks do not cross the gap
    targets, pad = ep.chunk_targets(8)
    gap = int(np.flatnonzero(np.diff(ep.stamps) > 0.15)[0])
    assert pad[gap, 1:].all() and not pad[gap + 1].any()


def test_actions_from_joint_states_when_no_command_was_recorded(tmp_path, sim_stream):
    bag = write_sim_bag(tmp_path / 'nocmd', sim_stream, command=False)
    with pytest.raises(BagError, match='/arm_controller/joint_trajectory is not in the bag'):
        read_episode(bag, FRANKA_PANDA)
    ep = read_episode(bag, FRANKA_PANDA, BagTopics(command=None))
    js_t = [t for t, _ in sim_stream['js']]
    # the grid ends one period before the last joint state, so every action is a later measurement
    assert ep.stamps[-1] - BASE <= js_t[-1] - 0.1 + 1e-6
    assert ep.dropped == 0
    for i, stamp in enumerate(ep.stamps):
        nxt = sim_stream['js'][latest_index(js_t, stamp - BASE + 0.1)][1]
        np.testing.assert_array_equal(ep.actions[i], nxt.astype(np.float32))
    # the action at tick i is (up to the 50 ms alignment window) the state at tick i + 1
    np.testing.assert_allclose(ep.actions[:-1], ep.joint_positions[1:], atol=0.02)


def test_action_from_state_all_in_the_training_config(tmp_path, sim_stream):
    from vla_training.train_cli import load_train_yaml, read_bags
    bag = write_sim_bag(tmp_path / 'bags' / 'ep0', sim_stream, command=False)
    cfg = tmp_path / 'train.yaml'
    cfg.write_text('model:\n  embodiment: franka_panda\n  action_dim: 8\n  state_dim: 8\n'
                   'data:\n  rate_hz: 10.0\n  action_from_state: all\n  workers: 1\n')
    model_cfg, _, data = load_train_yaml(str(cfg))
    assert data.topics['command'] is None and data.action_from_state == []
    (ep,) = read_bags([str(bag.parent)], model_cfg, data)
    assert_same_episode(ep, read_episode(bag, FRANKA_PANDA, BagTopics(command=None)))
