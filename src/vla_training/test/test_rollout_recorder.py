"""Rollout recording: a runtime run written by RolloutRecorder is a training episode for vla_training's reader."""
import numpy as np
import pytest

from robot_drivers import conversions as conv
from robot_drivers.embodiment import FRANKA_PANDA
from vla_policy.contracts import ActionChunk
from vla_policy.rollout_recorder import RolloutRecorder, RolloutTopics, executed_row
from vla_policy.runtime import PolicyRuntime, RuntimeConfig
from vla_training import bag_dataset
from vla_training.bag_dataset import BagTopics


T0 = 1_700_000_000.0   # an epoch time, as the node clock gives
DT = FRANKA_PANDA.dt


class DriftPolicy:
    """Chunk row k = current joints + (k + 1) * 0.01 rad on the arm joints (a policy with a visible plan)."""

    def __init__(self, horizon=8):
        self.horizon = horizon
        self.calls = 0

    def infer(self, history):
        ob = history[-1]
        rows = np.repeat(ob.joint_positions[None].astype(np.float64), self.horizon, 0)
        rows[:, :7] += 0.01 * (np.arange(self.horizon)[:, None] + 1)
        self.calls += 1
        return ActionChunk(rows, FRANKA_PANDA.joint_names, DT, ob.stamp)

    def reset(self):
        pass


FRONT, WRIST = '/camera/image_raw', '/wrist_camera/image_raw'
TWO_CAMERAS = {'front': FRONT, 'wrist': WRIST}


def _run(tmp_path, ticks, instructions=None, n_action_steps=4, cameras=None):
    """Drive a real PolicyRuntime for ``ticks`` control ticks: the arm reaches each executed row one
    tick later (joint state = the previous tick's executed row); returns what was fed and executed.
    ``cameras`` ``{name: topic}``: the runtime reads (and the recorder records) each; camera ``c``'s
    image at tick ``i`` is filled with ``i + 100 * c_index``, as policy_node records every camera it reads."""
    types = conv.rosbags_types()
    rt = PolicyRuntime(DriftPolicy(), FRANKA_PANDA, RuntimeConfig(n_obs_steps=1, n_action_steps=n_action_steps,
                                                                  camera='front', cameras=cameras or ''))
    rec = RolloutRecorder(tmp_path / 'rollouts', RolloutTopics(cameras=rt.camera_topics if cameras else ()))
    instructions = instructions or {0: 'reach the red cube'}
    rt.on_instruction(instructions[0])
    rec.start(T0 - 0.05, rt.instruction)
    q = FRANKA_PANDA.lower + 0.5 * (FRANKA_PANDA.upper - FRANKA_PANDA.lower)
    fed_q, executed, last = [], [], None
    for i in range(ticks):
        t = T0 + i * DT
        if i in instructions and i:
            rt.on_instruction(instructions[i])
            rec.instruction(instructions[i], t - 0.01)
        for c, (cam, topic) in enumerate(rt.camera_topics.items()):
            img_msg = conv.numpy_to_image(np.full((24, 32, 3), i + 100 * c, np.uint8), t - 0.02, types)
            rt.on_image_msg(img_msg, camera=cam)
            rec.write(topic, img_msg, t - 0.02)
        js_msg = conv.arrays_to_joint_state(FRANKA_PANDA.joint_names, q, t - 0.01, types)
        rt.on_joint_state_msg(js_msg)
        rec.write('/joint_states', js_msg, t - 0.01)
        fed_q.append(q.copy())
        cmd = rt.step(t)
        if cmd is not None:
            rec.write('/vla/joint_trajectory', cmd.to_msg(types), t)
            last = cmd
        k = rec.executed(last, t, types)
        row, _ = executed_row(last.positions, last.stamp, last.dt, t)
        executed.append((row, k))
        q = row.copy()
    path = rec.stop()
    rt.close()
    return path, np.array(fed_q), executed, rec


def test_a_recorded_runtime_run_reads_back_as_a_training_episode(tmp_path):
    ticks = 30
    path, fed_q, executed, rec = _run(tmp_path, ticks)
    assert path == tmp_path / 'rollouts' / 'rollout_0000' and (path / 'metadata.yaml').is_file()
    assert not [p for p in path.parent.iterdir() if p.name.startswith('.')]   # no temporary left
    assert rec.counts['/arm_controller/joint_trajectory'] == ticks
    assert rec.counts['/vla/joint_trajectory'] == ticks // 4 + (ticks % 4 > 0)   # open loop: one per 4 ticks
    ep = bag_dataset.read_episode(path, FRANKA_PANDA, image_size=None)
    assert len(ep) == ticks and ep.dropped == 0
    assert ep.images.shape == (ticks, 24, 32, 3)
    np.testing.assert_array_equal(ep.images[:, 0, 0, 0], np.arange(ticks))
    np.testing.assert_allclose(ep.joint_positions, fed_q.astype(np.float32), atol=1e-6)
    rows = np.array([r for r, _ in executed])
    np.testing.assert_allclose(ep.actions, rows.astype(np.float32), atol=1e-6)
    # the executed row walks through each chunk: 0, 1, 2, 3, 0, 1, ...
    assert [k for _, k in executed] == [i % 4 for i in range(ticks)]
    assert ep.instructions == ['reach the red cube'] * ticks


def test_every_camera_the_runtime_reads_is_recorded_and_reads_back_aligned(tmp_path):
    ticks = 20
    path, fed_q, executed, rec = _run(tmp_path, ticks, cameras=TWO_CAMERAS)
    assert rec.counts[FRONT] == rec.counts[WRIST] == ticks
    from vla_training.bag_reader import bag_info
    topics = bag_info(path)['topics']
    assert topics[FRONT]['type'] == topics[WRIST]['type'] == 'sensor_msgs/msg/Image'
    ep = bag_dataset.read_episode(path, FRANKA_PANDA, BagTopics(images=TWO_CAMERAS), image_size=None)
    assert len(ep) == ticks and ep.dropped == 0 and list(ep.camera_images) == ['front', 'wrist']
    np.testing.assert_array_equal(ep.camera_images['front'][:, 0, 0, 0], np.arange(ticks))
    np.testing.assert_array_equal(ep.camera_images['wrist'][:, 0, 0, 0], np.arange(ticks) + 100)
    np.testing.assert_allclose(ep.joint_positions, fed_q.astype(np.float32), atol=1e-6)
    np.testing.assert_allclose(ep.actions, np.array([r for r, _ in executed]).astype(np.float32), atol=1e-6)
    # read as a one-camera bag (the first camera), as before several cameras existed
    one = bag_dataset.read_episode(path, FRANKA_PANDA, image_size=None)
    np.testing.assert_array_equal(one.images, ep.camera_images['front'])


def test_rollout_topics_of_several_cameras():
    t = RolloutTopics(cameras={'front': FRONT, 'wrist': '/wrist_camera/image_raw/compressed'})
    assert t.image == FRONT and t.image_topics == [FRONT, '/wrist_camera/image_raw/compressed']
    assert t.types()['/wrist_camera/image_raw/compressed'] == ('sensor_msgs/msg/CompressedImage', 'sensor')
    assert t.types()[FRONT] == ('sensor_msgs/msg/Image', 'sensor')
    assert list(t.types())[:3] == [FRONT, '/wrist_camera/image_raw/compressed', '/joint_states']
    assert RolloutTopics(cameras=(('wrist', WRIST), ('front', FRONT))).image == WRIST     # the first camera
    assert RolloutTopics().camera_topics == {'front': FRONT} and RolloutTopics() == RolloutTopics(image=FRONT)
    with pytest.raises(ValueError, match="image /camera/image_raw must be the first camera's topic"):
        RolloutTopics(image=FRONT, cameras={'wrist': WRIST, 'front': FRONT})
    with pytest.raises(ValueError, match="rollout camera 'wrist' topic must be an absolute"):
        RolloutTopics(cameras={'front': FRONT, 'wrist': 'wrist_camera'})
    with pytest.raises(ValueError, match='must differ'):
        RolloutTopics(cameras={'front': FRONT, 'wrist': '/joint_states'})
    with pytest.raises(ValueError, match=r"name \['front'\] twice"):
        RolloutTopics(cameras=(('front', FRONT), ('front', WRIST)))


def test_each_activation_is_a_new_episode_and_an_instruction_change_is_recorded(tmp_path):
    _run(tmp_path, 12)
    path, _, _, _ = _run(tmp_path, 16, instructions={0: 'reach the red cube', 8: 'reach the blue cube'})
    assert path.name == 'rollout_0001'
    ep = bag_dataset.read_episode(path, FRANKA_PANDA)
    assert len(ep) == 16
    assert ep.instructions == ['reach the red cube'] * 8 + ['reach the blue cube'] * 8
    eps = bag_dataset.read_episodes(tmp_path / 'rollouts', FRANKA_PANDA)
    assert [len(e) for e in eps] == [12, 16]


def test_executed_row_is_the_row_due_next():
    pos = np.arange(12, dtype=np.float64).reshape(4, 3)
    assert executed_row(pos, 10.0, 0.1, 10.0)[1] == 0          # published now: heading for row 0
    assert executed_row(pos, 10.0, 0.1, 10.1)[1] == 1
    assert executed_row(pos, 10.0, 0.1, 10.19)[1] == 2   # an early tick
    assert executed_row(pos, 10.0, 0.1, 10.29)[1] == 3   # a late tick
    np.testing.assert_array_equal(executed_row(pos, 10.0, 0.1, 99.0)[0], pos[3])   # past the end: hold the last
    with pytest.raises(ValueError, match='dt must be > 0'):
        executed_row(pos, 0.0, 0.0, 1.0)


def test_abort_and_empty_episodes_leave_nothing(tmp_path):
    types = conv.rosbags_types()
    rec = RolloutRecorder(tmp_path, RolloutTopics())
    rec.start(T0, 'reach the red cube')
    rec.write('/joint_states', conv.arrays_to_joint_state(FRANKA_PANDA.joint_names, FRANKA_PANDA.lower, T0, types), T0)
    with pytest.raises(RuntimeError, match='still open'):
        rec.start(T0)
    rec.abort()
    assert list(tmp_path.iterdir()) == []
    rec.start(T0, 'reach the red cube')   # activated, never acted: no executed command
    assert rec.stop() is None and list(tmp_path.iterdir()) == []


def test_bad_input_names_the_topic(tmp_path):
    types = conv.rosbags_types()
    rec = RolloutRecorder(tmp_path, RolloutTopics())
    rec.start(T0)
    with pytest.raises(KeyError, match='/tf is not recorded'):
        rec.write('/tf', types.String(data='x'), T0)
    with pytest.raises(ValueError, match='/joint_states takes sensor_msgs/msg/JointState'):
        rec.write('/joint_states', types.String(data='x'), T0)

    class NotRosbags:
        pass
    with pytest.raises(ValueError, match='no serialize function'):
        rec.write('/joint_states', NotRosbags(), T0)
    rec.abort()
    with pytest.raises(ValueError, match='rollout topic image must be an absolute'):
        RolloutTopics(image='camera')
    with pytest.raises(ValueError, match='must differ'):
        RolloutTopics(command='/joint_states')
    assert RolloutTopics(image='/cam/image_raw/compressed').image_type == 'sensor_msgs/msg/CompressedImage'
