"""ROS message <-> numpy conversions, duck-typed on message fields.

Every function here reads messages only through their field names, so the same code serves
rclpy messages (on a ROS 2 machine) and ``rosbags`` messages (bags, tests, the embedded sim).
Building a message needs its classes: pass a :class:`MessageTypes` from :func:`rosbags_types`
or :func:`rclpy_types`.

Conventions: images are ``uint8 (H, W, 3)`` RGB; joint values ``float64 (J,)`` in REP-103 units;
a trajectory is ``positions (P, J)`` plus ``time_from_start (P,)`` in seconds; stamps are float
seconds since the epoch (``builtin_interfaces/Time``).
"""
from __future__ import annotations

import array
import io
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    'MessageTypes', 'rosbags_types', 'rclpy_types', 'typestore',
    'stamp_to_sec', 'sec_to_stamp', 'duration_to_sec', 'sec_to_duration', 'header',
    'image_to_numpy', 'compressed_image_to_numpy', 'numpy_to_image', 'numpy_to_compressed_image',
    'joint_state_to_arrays', 'arrays_to_joint_state',
    'trajectory_to_arrays', 'arrays_to_trajectory', 'string_msg',
    'SUPPORTED_ENCODINGS',
]


@dataclass(frozen=True)
class MessageTypes:
    """The message classes conversions build, and how each one wants array fields filled."""

    Time: Any
    Duration: Any
    Header: Any
    String: Any
    Image: Any
    CompressedImage: Any
    JointState: Any
    JointTrajectory: Any
    JointTrajectoryPoint: Any
    uint8_seq: Callable[[np.ndarray], Any]
    float64_seq: Callable[[np.ndarray], Any]


_TYPESTORE = None


def typestore():
    """The rosbags ROS 2 Jazzy type store (cached)."""
    global _TYPESTORE
    if _TYPESTORE is None:
        from rosbags.typesys import Stores, get_typestore
        _TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
    return _TYPESTORE


def rosbags_types() -> MessageTypes:
    """Message classes from the rosbags Jazzy type store (no ROS needed)."""
    t = typestore().types
    return MessageTypes(
        Time=t['builtin_interfaces/msg/Time'],
        Duration=t['builtin_interfaces/msg/Duration'],
        Header=t['std_msgs/msg/Header'],
        String=t['std_msgs/msg/String'],
        Image=t['sensor_msgs/msg/Image'],
        CompressedImage=t['sensor_msgs/msg/CompressedImage'],
        JointState=t['sensor_msgs/msg/JointState'],
        JointTrajectory=t['trajectory_msgs/msg/JointTrajectory'],
        JointTrajectoryPoint=t['trajectory_msgs/msg/JointTrajectoryPoint'],
        uint8_seq=lambda a: np.ascontiguousarray(a, dtype=np.uint8).reshape(-1),
        float64_seq=lambda a: np.ascontiguousarray(a, dtype=np.float64).reshape(-1),
    )


def rclpy_types() -> MessageTypes:  # pragma: no cover - needs a ROS 2 installation
    """Message classes from a sourced ROS 2 installation (rclpy's generated Python types)."""
    from builtin_interfaces.msg import Duration, Time
    from sensor_msgs.msg import CompressedImage, Image, JointState
    from std_msgs.msg import Header, String
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
    return MessageTypes(
        Time=Time, Duration=Duration, Header=Header, String=String, Image=Image,
        CompressedImage=CompressedImage, JointState=JointState, JointTrajectory=JointTrajectory,
        JointTrajectoryPoint=JointTrajectoryPoint,
        uint8_seq=lambda a: array.array('B', np.ascontiguousarray(a, dtype=np.uint8).tobytes()),
        float64_seq=lambda a: array.array('d', np.ascontiguousarray(a, dtype=np.float64).tobytes()),
    )


# ----------------------------------------------------------------------------- time
def stamp_to_sec(stamp: Any) -> float:
    """``builtin_interfaces/Time`` (fields ``sec``, ``nanosec``) -> float seconds."""
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def sec_to_stamp(t: float, types: MessageTypes) -> Any:
    """Float seconds (>= 0) -> ``builtin_interfaces/Time``; raises ValueError on negative/NaN."""
    if not np.isfinite(t) or t < 0:
        raise ValueError(f'stamp must be a finite, non-negative time in seconds, got {t}')
    ns = int(round(t * 1e9))
    return types.Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def duration_to_sec(d: Any) -> float:
    return float(d.sec) + float(d.nanosec) * 1e-9


def sec_to_duration(t: float, types: MessageTypes) -> Any:
    ns = int(round(t * 1e9))
    return types.Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def header(t: float, frame_id: str, types: MessageTypes) -> Any:
    return types.Header(stamp=sec_to_stamp(t, types), frame_id=frame_id)


# ----------------------------------------------------------------------------- images
# encoding -> (channels, channel order to get RGB). REP-104 / sensor_msgs image_encodings.h names.
SUPPORTED_ENCODINGS = {
    'rgb8': (3, (0, 1, 2)),
    'bgr8': (3, (2, 1, 0)),
    'rgba8': (4, (0, 1, 2)),
    'bgra8': (4, (2, 1, 0)),
    'mono8': (1, (0, 0, 0)),
}


def _as_bytes(data: Any) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return data.astype(np.uint8, copy=False).reshape(-1)
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, dtype=np.uint8)
    if isinstance(data, array.array):
        return np.frombuffer(data.tobytes(), dtype=np.uint8)
    return np.asarray(list(data), dtype=np.uint8)


def image_to_numpy(msg: Any, *, source: str = 'image') -> np.ndarray:
    """``sensor_msgs/Image`` -> ``uint8 (H, W, 3)`` RGB.

    Supports the 8-bit encodings in :data:`SUPPORTED_ENCODINGS`; row padding (``step`` larger than
    ``width * channels``) is removed.

    Raises:
        ValueError: unsupported encoding, zero size, or ``data`` shorter than ``step * height``;
            the message names ``source`` (e.g. the topic).
    """
    enc = str(msg.encoding).lower()
    if enc not in SUPPORTED_ENCODINGS:
        raise ValueError(
            f'{source}: unsupported image encoding {msg.encoding!r}; supported: {sorted(SUPPORTED_ENCODINGS)}')
    ch, order = SUPPORTED_ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ValueError(f'{source}: image has zero size ({w}x{h})')
    if step < w * ch:
        raise ValueError(f'{source}: step {step} is smaller than width*channels = {w * ch} for {enc}')
    buf = _as_bytes(msg.data)
    if buf.size < step * h:
        raise ValueError(
            f'{source}: image data has {buf.size} bytes, expected step*height = {step * h} ({w}x{h} {enc})')
    rows = buf[: step * h].reshape(h, step)[:, : w * ch].reshape(h, w, ch)
    return np.ascontiguousarray(rows[:, :, list(order)])


def compressed_image_to_numpy(msg: Any, *, source: str = 'compressed image') -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (JPEG/PNG, as cv_bridge writes) -> ``uint8 (H, W, 3)`` RGB.

    Raises:
        ValueError: the bytes are not a decodable image (names ``source`` and ``format``).
    """
    from PIL import Image as PILImage
    buf = _as_bytes(msg.data).tobytes()
    try:
        with PILImage.open(io.BytesIO(buf)) as im:
            return np.asarray(im.convert('RGB'), dtype=np.uint8).copy()
    except Exception as exc:  # PIL raises several types for bad data
        raise ValueError(f'{source}: cannot decode {msg.format!r} image ({len(buf)} bytes): {exc}') from exc


def numpy_to_image(img: np.ndarray, stamp: float, types: MessageTypes, *, frame_id: str = 'camera_optical_frame',
                   encoding: str = 'rgb8') -> Any:
    """``uint8 (H, W, 3)`` RGB -> ``sensor_msgs/Image`` with ``encoding`` ``rgb8`` or ``bgr8``."""
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f'expected uint8 (H, W, 3) RGB, got {img.dtype} {img.shape}')
    if encoding == 'bgr8':
        img = img[:, :, ::-1]
    elif encoding != 'rgb8':
        raise ValueError(f"numpy_to_image writes 'rgb8' or 'bgr8', not {encoding!r}")
    h, w, _ = img.shape
    return types.Image(header=header(stamp, frame_id, types), height=h, width=w, encoding=encoding,
                       is_bigendian=0, step=w * 3, data=types.uint8_seq(np.ascontiguousarray(img)))


def numpy_to_compressed_image(img: np.ndarray, stamp: float, types: MessageTypes, *,
                              frame_id: str = 'camera_optical_frame', quality: int = 90) -> Any:
    """``uint8 (H, W, 3)`` RGB -> JPEG ``sensor_msgs/CompressedImage`` (format ``'jpeg'``)."""
    from PIL import Image as PILImage
    out = io.BytesIO()
    PILImage.fromarray(np.asarray(img, dtype=np.uint8)).save(out, format='JPEG', quality=quality)
    return types.CompressedImage(header=header(stamp, frame_id, types), format='jpeg',
                                 data=types.uint8_seq(np.frombuffer(out.getvalue(), dtype=np.uint8)))


# ----------------------------------------------------------------------------- joints
def _check_finite(values: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(f'{what} has non-finite values at indices {np.flatnonzero(bad).tolist()}')


def joint_state_to_arrays(msg: Any, joint_names: Sequence[str], *, source: str = 'joint_states'
                          ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """``sensor_msgs/JointState`` -> ``(positions (J,), velocities (J,) or None)`` in ``joint_names`` order.

    Extra joints in the message are ignored. Velocities are returned only when the message
    carries one per name.

    Raises:
        KeyError: a joint of ``joint_names`` is missing (names ``source``).
        ValueError: ``position`` length differs from ``name`` length, or a value is NaN/Inf.
    """
    names = list(msg.name)
    pos = np.asarray(msg.position, dtype=np.float64)
    if pos.shape[0] != len(names):
        raise ValueError(f'{source}: {len(names)} names but {pos.shape[0]} positions')
    lookup = {n: i for i, n in enumerate(names)}
    missing = [n for n in joint_names if n not in lookup]
    if missing:
        raise KeyError(f'{source}: missing joints {missing} (message has {names})')
    idx = np.array([lookup[n] for n in joint_names], dtype=np.int64)
    out_pos = pos[idx]
    _check_finite(out_pos, f'{source} positions')
    vel = np.asarray(msg.velocity, dtype=np.float64)
    out_vel = vel[idx] if vel.shape[0] == len(names) else None
    return out_pos, out_vel


def arrays_to_joint_state(names: Sequence[str], positions: np.ndarray, stamp: float, types: MessageTypes,
                          velocities: Optional[np.ndarray] = None, frame_id: str = '') -> Any:
    positions = np.asarray(positions, dtype=np.float64).reshape(-1)
    if positions.shape[0] != len(names):
        raise ValueError(f'{len(names)} names but {positions.shape[0]} positions')
    vel = np.zeros(0) if velocities is None else np.asarray(velocities, dtype=np.float64).reshape(-1)
    return types.JointState(header=header(stamp, frame_id, types), name=list(names),
                            position=types.float64_seq(positions), velocity=types.float64_seq(vel),
                            effort=types.float64_seq(np.zeros(0)))


def trajectory_to_arrays(msg: Any, *, source: str = 'joint_trajectory'
                         ) -> Tuple[List[str], np.ndarray, np.ndarray]:
    """``trajectory_msgs/JointTrajectory`` -> ``(joint_names, positions (P, J), time_from_start (P,) s)``.

    Raises:
        ValueError: no points, a point whose ``positions`` length differs from ``joint_names``,
            duplicate joint names, or decreasing ``time_from_start``. NaN/Inf are *not* rejected
            here: the safety filter does that and logs it.
    """
    names = list(msg.joint_names)
    if len(set(names)) != len(names):
        raise ValueError(f'{source}: duplicate joint names {names}')
    points = list(msg.points)
    if not points:
        raise ValueError(f'{source}: trajectory has no points')
    rows, times = [], []
    for k, p in enumerate(points):
        row = np.asarray(p.positions, dtype=np.float64).reshape(-1)
        if row.shape[0] != len(names):
            raise ValueError(f'{source}: point {k} has {row.shape[0]} positions for {len(names)} joints')
        rows.append(row)
        times.append(duration_to_sec(p.time_from_start))
    t = np.asarray(times)
    if np.any(np.diff(t) < 0):
        raise ValueError(f'{source}: time_from_start decreases: {t.tolist()}')
    return names, np.stack(rows), t


def arrays_to_trajectory(names: Sequence[str], positions: np.ndarray, stamp: float, types: MessageTypes, *,
                         dt: Optional[float] = None, times: Optional[np.ndarray] = None,
                         frame_id: str = '') -> Any:
    """``positions (P, J)`` -> ``trajectory_msgs/JointTrajectory``, one point per row.

    Point ``k`` gets ``time_from_start = (k + 1) * dt`` unless ``times (P,)`` is given.
    """
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim == 1:
        positions = positions[None]
    if positions.shape[1] != len(names):
        raise ValueError(f'{len(names)} joint names but positions of shape {positions.shape}')
    if times is None:
        if dt is None or dt <= 0:
            raise ValueError('arrays_to_trajectory needs dt > 0 or times')
        times = (np.arange(positions.shape[0]) + 1) * dt
    pts = [types.JointTrajectoryPoint(positions=types.float64_seq(row), velocities=types.float64_seq(np.zeros(0)),
                                      accelerations=types.float64_seq(np.zeros(0)),
                                      effort=types.float64_seq(np.zeros(0)),
                                      time_from_start=sec_to_duration(float(t), types))
           for row, t in zip(positions, times)]
    return types.JointTrajectory(header=header(stamp, frame_id, types), joint_names=list(names), points=pts)


def string_msg(text: str, types: MessageTypes) -> Any:
    return types.String(data=str(text))
