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


def test_rgb8_image_is_a_read_only_view_of_the_message_buffer():
    """Packed rgb8 is returned without a copy (a view of msg.data), read-only so that a consumer
    cannot change the message; the pixels are those of the image that was sent."""
    img = np.random.default_rng(3).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    msg = _cdr_roundtrip(conv.numpy_to_image(img, 1.0, T))      # as a subscriber / bag reader gets it
    out = conv.image_to_numpy(msg)
    np.testing.assert_array_equal(out, img)
    assert out.flags.c_contiguous and np.shares_memory(out, msg.data)
    assert not out.flags.writeable
    with pytest.raises(ValueError):
        out[0, 0, 0] = 1
    np.testing.assert_array_equal(conv.image_msg_to_rgb(msg), img)


def test_rclpy_style_array_buffer_is_viewed_without_a_copy():
    """rclpy holds uint8[] in an ``array.array('B')``: converted through the buffer protocol."""
    import array
    img = np.random.default_rng(4).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    msg = conv.numpy_to_image(img, 0.0, T)
    msg.data = array.array('B', img.tobytes())
    out = conv.image_to_numpy(msg)
    np.testing.assert_array_equal(out, img)
    assert np.shares_memory(out, np.frombuffer(msg.data, dtype=np.uint8))


@pytest.mark.parametrize('encoding,pad', [('bgr8', 0), ('rgb8', 2), ('rgba8', 0)])
def test_converted_or_padded_images_are_new_arrays(encoding, pad):
    """Whenever the bytes must be rearranged (channel order, alpha, row padding) the result is a new,
    writable, contiguous array; the message is left as it was."""
    img = np.random.default_rng(5).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    order = {'bgr8': [2, 1, 0], 'rgb8': [0, 1, 2], 'rgba8': [0, 1, 2, 0]}[encoding]
    stored = img[:, :, order]
    ch = stored.shape[2]
    rows = np.zeros((4, 5 * ch + pad), np.uint8)
    rows[:, :5 * ch] = stored.reshape(4, -1)
    msg = T.Image(header=conv.header(0.0, '', T), height=4, width=5, encoding=encoding, is_bigendian=0,
                  step=5 * ch + pad, data=rows.reshape(-1).copy())
    before = msg.data.copy()
    out = conv.image_to_numpy(msg)
    np.testing.assert_array_equal(out, img)
    assert out.flags.c_contiguous and out.flags.writeable and not np.shares_memory(out, msg.data)
    out[:] = 0
    np.testing.assert_array_equal(msg.data, before)


def test_trajectory_times_round_like_sec_to_duration_and_are_checked():
    names = list(FRANKA_PANDA.joint_names)
    pos = np.random.default_rng(6).normal(size=(5, 8))
    times = np.array([0.1, 0.2, 1.0000000005, 2.5e-10, 3.3333333333])
    msg = _cdr_roundtrip(conv.arrays_to_trajectory(names, pos, 2.0, T, times=times))
    for p_, t, row in zip(msg.points, times, pos):
        ref = conv.sec_to_duration(float(t), T)
        assert (p_.time_from_start.sec, p_.time_from_start.nanosec) == (ref.sec, ref.nanosec)
        np.testing.assert_array_equal(p_.positions, row)
        assert len(p_.velocities) == len(p_.accelerations) == len(p_.effort) == 0
    with pytest.raises(ValueError, match='5 trajectory points but 4 times'):
        conv.arrays_to_trajectory(names, pos, 2.0, T, times=times[:4])


def test_trajectory_points_own_their_growable_sequences():
    """With rclpy-style ``array.array`` fields no two points share a sequence object."""
    import array
    import dataclasses
    types = dataclasses.replace(T, float64_seq=lambda a: array.array('d', np.asarray(a, np.float64).tobytes()))
    msg = conv.arrays_to_trajectory(list(FRANKA_PANDA.joint_names), np.zeros((3, 8)), 0.0, types, dt=0.1)
    seqs = [s for p_ in msg.points for s in (p_.positions, p_.velocities, p_.accelerations, p_.effort)]
    assert len({id(s) for s in seqs}) == len(seqs)
    msg.points[0].velocities.append(1.0)
    assert len(msg.points[1].velocities) == 0
