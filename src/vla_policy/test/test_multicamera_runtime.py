"""PolicyRuntime and policy_node parameters with several cameras (rosbags messages, no ROS)."""
import numpy as np
import pytest

from robot_drivers import conversions as conv
from robot_drivers.embodiment import FRANKA_PANDA
from vla_policy.contracts import ActionChunk
from vla_policy.node_core import camera_topics, runtime_config
from vla_policy.runtime import PolicyRuntime, RuntimeConfig

T = conv.rosbags_types()
NAMES = FRANKA_PANDA.joint_names
FRONT, WRIST = '/camera/image_raw', '/wrist_camera/image_raw'
TWO = f'front={FRONT},wrist={WRIST}'


class EchoPolicy:
    """Chunk row k = joints + 0.01 (k + 1); remembers the images of each history it saw."""

    def __init__(self):
        self.seen = []

    def infer(self, history):
        self.seen.append([{c: int(im[0, 0, 0]) for c, im in o.images.items()} for o in history])
        q = history[-1].joint_positions
        return ActionChunk(q[None] + 0.01 * (np.arange(4)[:, None] + 1), NAMES, 0.1, history[-1].stamp)

    def reset(self):
        pass


def _img(value, t, frame):
    return conv.numpy_to_image(np.full((8, 8, 3), value, np.uint8), t, T, frame_id=frame)


def _feed(rt, t, wrist_age=0.0, wrist=True):
    rt.on_image_msg(_img(10, t, 'camera_optical_frame'), camera='front')
    if wrist:
        rt.on_image_msg(_img(200, t - wrist_age, 'wrist_camera_optical_frame'), camera='wrist')
    rt.on_joint_state_msg(conv.arrays_to_joint_state(NAMES, np.zeros(8), t, T))


def _runtime(pol):
    rt = PolicyRuntime(pol, FRANKA_PANDA, RuntimeConfig(n_action_steps=1, max_obs_age_s=0.3, cameras=TWO))
    rt.on_instruction_msg(T.String(data='pick up the red cube'))
    return rt


def test_acts_only_when_every_camera_is_fresh():
    pol = EchoPolicy()
    rt = _runtime(pol)
    assert rt.cfg.camera_names == ('front', 'wrist') and rt.cfg.camera == 'front'
    # only the front camera so far: waiting, and the refusal names the missing camera and topic
    _feed(rt, 10.0, wrist=False)
    assert rt.step(10.0) is None
    assert f"camera 'wrist' image ({WRIST})" in rt.status and 'front' not in rt.status
    # both fresh: acts, and the policy gets both images of the tick
    _feed(rt, 10.1)
    assert rt.step(10.1) is not None
    assert pol.seen[-1][-1] == {'front': 10, 'wrist': 200}
    # the wrist camera goes stale while the front one and the joints stay fresh: refuse, one edge
    n_events = len(rt.events)
    for k in range(2, 6):
        t = 10.0 + 0.1 * k
        rt.on_image_msg(_img(10, t, 'camera_optical_frame'), camera='front')
        rt.on_joint_state_msg(conv.arrays_to_joint_state(NAMES, np.zeros(8), t, T))
        cmd = rt.step(t)
        if t - 10.1 > 0.3 + 1e-9:
            assert cmd is None and 'wrist' in rt.status and WRIST in rt.status and 'old' in rt.status
    new = list(rt.events)[n_events:]
    assert [e.kind for e in new] == ['refusing']
    assert "camera 'wrist' image" in new[0].detail and WRIST in new[0].detail
    snap = rt.snapshot(10.5)
    assert snap.input_ages_s['image/wrist'] == pytest.approx(0.4)
    assert snap.input_ages_s['image/front'] == pytest.approx(0)
    assert snap.input_ages_s['image'] == pytest.approx(0.4)          # the oldest camera
    # the wrist camera is fresh again: acting resumes (an 'acting' edge)
    _feed(rt, 10.6)
    assert rt.step(10.6) is not None
    assert rt.events[-1].kind == 'acting' and rt.refusal is None


def test_unknown_camera_and_bad_cameras_parameter():
    rt = _runtime(EchoPolicy())
    with pytest.raises(ValueError, match=r"camera 'top'.*\['front', 'wrist'\]"):
        rt.on_image_msg(_img(1, 1.0, 'x'), camera='top')
    with pytest.raises(ValueError, match='name=/topic pairs'):
        RuntimeConfig(cameras='front:/camera/image_raw')
    with pytest.raises(ValueError, match='two cameras'):
        RuntimeConfig(cameras=f'front={FRONT},wrist={FRONT}')
    assert RuntimeConfig(cameras={'front': FRONT, 'wrist': WRIST}).cameras == TWO
    assert RuntimeConfig().camera_topics == {'front': FRONT}      # one camera, as before


def test_node_parameters_follow_the_model_cameras():
    meta = {'n_obs_steps': 1, 'n_action_steps': 4, 'camera_names': ['front', 'wrist']}
    cfg = runtime_config({}, meta)
    assert cfg.camera_topics == {'front': FRONT, 'wrist': WRIST}
    cfg = runtime_config({'image_topic': '/cam/compressed', 'cameras': ''}, meta)
    assert cfg.camera_topics == {'front': '/cam/compressed', 'wrist': WRIST}
    cfg = runtime_config({'cameras': f'wrist=/hand/image,front={FRONT}'}, meta)
    assert list(cfg.camera_topics.items()) == [('front', FRONT), ('wrist', '/hand/image')]   # model order
    with pytest.raises(ValueError, match=r"names cameras \['front'\] but the model reads \['front', 'wrist'\]"):
        runtime_config({'cameras': f'front={FRONT}'}, meta)
    with pytest.raises(ValueError, match='share the image topic'):
        camera_topics({'image_topic': WRIST}, ['front', 'wrist'])
    # a one-camera model: image_topic, as before several cameras existed
    assert runtime_config({}, dict(meta, camera_names=['front'])).camera_topics == {'front': FRONT}
