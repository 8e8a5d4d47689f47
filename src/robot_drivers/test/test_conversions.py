"""Message conversions on rosbags (Jazzy) messages, including a real CDR round trip."""
import numpy as np
import pytest

from robot_drivers import conversions as conv
from robot_drivers.embodiment import FRANKA_PANDA

T = conv.rosbags_types()


def _cdr_roundtrip(msg):
    ts = conv.typestore()
    raw = ts.serialize_cdr(msg, msg.__msgtype__)
    return ts.deserialize_cdr(raw, msg.__msgtype__)


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8'])
def test_image_round_trip_through_cdr(encoding):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (6, 5, 3), dtype=np.uint8)
    msg = _cdr_roundtrip(conv.numpy_to_image(img, 12.5, T, encoding=encoding))
    assert msg.encoding == encoding and msg.step == 15
    assert conv.stamp_to_sec(msg.header.stamp) == pytest.approx(12.5)
    np.testing.assert_array_equal(conv.image_to_numpy(msg), img)


def test_image_with_row_padding_and_mono8():
    img = np.arange(2 * 3, dtype=np.uint8).reshape(2, 3)
    padded = np.zeros((2, 4), np.uint8)
    padded[:, :3] = img
    msg = T.Image(header=conv.header(0.0, '', T), height=2, width=3, encoding='mono8', is_bigendian=0,
                  step=4, data=padded.reshape(-1))
    out = conv.image_to_numpy(msg)
    assert out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out[..., 0], img)
    np.testing.assert_array_equal(out[..., 2], img)


def test_image_errors_name_the_problem():
    img = np.zeros((4, 4, 3), np.uint8)
    msg = conv.numpy_to_image(img, 0.0, T)
    msg.encoding = '16UC1'
    with pytest.raises(ValueError, match=r"/cam: unsupported image encoding '16UC1'"):
        conv.image_to_numpy(msg, source='/cam')
    msg = conv.numpy_to_image(img, 0.0, T)
    msg.data = msg.data[:-5]
    with pytest.raises(ValueError, match='expected step\\*height = 48'):
        conv.image_to_numpy(msg, source='/cam')


def test_compressed_image_round_trip():
    img = np.zeros((16, 16, 3), np.uint8)
    img[4:12, 4:12] = (200, 20, 20)
    msg = _cdr_roundtrip(conv.numpy_to_compressed_image(img, 1.0, T, quality=95))
    out = conv.compressed_image_to_numpy(msg)
    assert np.abs(out.astype(int) - img).mean() < 6
    msg.data = msg.data[:20]
    with pytest.raises(ValueError, match='cannot decode'):
        conv.compressed_image_to_numpy(msg)


def test_joint_state_reorders_and_rejects():
    names = FRANKA_PANDA.joint_names
    shuffled = names[::-1] + ['panda_finger_joint2']
    vals = np.arange(9, dtype=float)
    msg = _cdr_roundtrip(conv.arrays_to_joint_state(shuffled, vals, 3.0, T, velocities=vals * 2))
    pos, vel = conv.joint_state_to_arrays(msg, names)
    np.testing.assert_array_equal(pos, vals[:8][::-1])
    np.testing.assert_array_equal(vel, 2 * vals[:8][::-1])
    with pytest.raises(KeyError, match='panda_joint3'):
        conv.joint_state_to_arrays(conv.arrays_to_joint_state(['panda_joint1'], [0.0], 0.0, T), names)
    nan = conv.arrays_to_joint_state(names, np.r_[np.nan, np.zeros(7)], 0.0, T)
    with pytest.raises(ValueError, match='non-finite'):
        conv.joint_state_to_arrays(nan, names)


def test_trajectory_round_trip_and_errors():
    names = FRANKA_PANDA.joint_names
    pos = np.linspace(0, 1, 24).reshape(3, 8)
    msg = _cdr_roundtrip(conv.arrays_to_trajectory(names, pos, 7.0, T, dt=0.1))
    n, p, t = conv.trajectory_to_arrays(msg)
    assert n == names
    np.testing.assert_allclose(p, pos)
    np.testing.assert_allclose(t, [0.1, 0.2, 0.3])
    msg.points[1].positions = msg.points[1].positions[:5]
    with pytest.raises(ValueError, match='point 1 has 5 positions for 8 joints'):
        conv.trajectory_to_arrays(msg)
    empty = conv.arrays_to_trajectory(names, pos, 0.0, T, dt=0.1)
    empty.points = []
    with pytest.raises(ValueError, match='no points'):
        conv.trajectory_to_arrays(empty)


def test_stamps():
    s = conv.sec_to_stamp(1795330838.297890861, T)
    assert s.sec == 1795330838 and abs(s.nanosec - 297890861) <= 256
    with pytest.raises(ValueError):
        conv.sec_to_stamp(-1.0, T)
