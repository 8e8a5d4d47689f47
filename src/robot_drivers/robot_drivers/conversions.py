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
    'image_to_numpy', 'compressed_image_to_numpy', 'decode_compressed', 'compressed_size', 'numpy_to_image',
    'numpy_to_compressed_image',
    'joint_state_to_arrays', 'arrays_to_joint_state',
    'trajectory_to_arrays', 'arrays_to_trajectory', 'string_msg',
    'trajectory_fields', 'action_trajectory', 'trajectory_to_actions', 'message_class', 'joint_state_to_state',
    'SUPPORTED_ENCODINGS', 'demosaic_bilinear', 'yuv422_to_rgb', 'image_msg_to_rgb',
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
    flavour: str = 'rosbags'

    def lookup(self, name: str) -> Any:
        """Any message class by its full name (``'std_msgs/msg/Bool'``, ``'unitree_hg/msg/LowCmd'``)."""
        return message_class(self, name)


def message_class(types: MessageTypes, name: str) -> Any:
    """The class of message ``name`` (``'pkg/msg/Name'``) in the flavour of ``types``.

    rosbags: from the Jazzy type store, after registering the machine message packages
    (:func:`robot_drivers.msgs.register_all`); rclpy: ``importlib.import_module('pkg.msg').Name``.

    Raises:
        KeyError: the type store does not know ``name`` (the known machine packages are listed).
        ModuleNotFoundError: (rclpy) the message package is not installed; the text names it.
        ValueError: ``name`` is not of the form ``pkg/msg/Name``.
    """
    parts = name.split('/')
    if len(parts) != 3 or parts[1] != 'msg' or not all(parts):
        raise ValueError(f'message type {name!r} is not of the form pkg/msg/Name')
    if types.flavour == 'rclpy':  # pragma: no cover - needs a ROS 2 installation
        import importlib
        try:
            mod = importlib.import_module(f'{parts[0]}.msg')
        except ModuleNotFoundError:
            raise ModuleNotFoundError(f'message package {parts[0]!r} (for {name}) is not installed in this ROS 2 '
                                      f'environment: build or install it (e.g. apt install ros-$ROS_DISTRO-'
                                      f'{parts[0].replace("_", "-")}) or choose another output',
                                      name=parts[0]) from None
        return getattr(mod, parts[2])
    from robot_drivers.msgs import register_all
    store = typestore()
    register_all(store)
    try:
        return store.types[name]
    except KeyError:
        raise KeyError(f'message type {name!r} is not in the type store') from None


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
        flavour='rclpy',
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
@dataclass(frozen=True)
class _Encoding:
    """How one ``sensor_msgs/Image`` encoding is laid out and turned into RGB.

    kind: ``'color'`` (channels in ``order`` give R, G, B), ``'mono'``, ``'bayer'`` (``pattern`` is
        the 2x2 top-left tile, row-major, e.g. ``'rggb'``), ``'yuv422'`` (``order`` gives the byte
        positions of U, Y0, V, Y1 in each 4-byte pair of pixels).
    bits: 8 or 16 bits per value; channels: values per pixel as stored (YUV 4:2:2: 2 bytes per
        pixel, so 2 channels of 8 bits).
    """

    kind: str
    bits: int
    channels: int
    order: Tuple[int, ...] = ()
    pattern: str = ''


def _encodings() -> dict:
    table = {}
    for bits in (8, 16):
        table[f'rgb{bits}'] = _Encoding('color', bits, 3, (0, 1, 2))
        table[f'bgr{bits}'] = _Encoding('color', bits, 3, (2, 1, 0))
        table[f'rgba{bits}'] = _Encoding('color', bits, 4, (0, 1, 2))
        table[f'bgra{bits}'] = _Encoding('color', bits, 4, (2, 1, 0))
        table[f'mono{bits}'] = _Encoding('mono', bits, 1)
        for pattern in ('rggb', 'bggr', 'gbrg', 'grbg'):
            table[f'bayer_{pattern}{bits}'] = _Encoding('bayer', bits, 1, pattern=pattern)
    table['yuv422'] = _Encoding('yuv422', 8, 2, (0, 1, 2, 3))        # UYVY: U0 Y0 V0 Y1
    table['yuv422_yuy2'] = _Encoding('yuv422', 8, 2, (1, 0, 3, 2))   # YUYV: Y0 U0 Y1 V0
    return table


#: ``sensor_msgs/Image`` encodings :func:`image_to_numpy` converts to RGB: exactly the colour
#: encodings ``cv_bridge`` converts to ``rgb8`` (``cv_bridge.cpp`` ``getEncoding`` /
#: ``getConversionCodes``; names from ``sensor_msgs/image_encodings.hpp``).
SUPPORTED_ENCODINGS = _encodings()

# OpenCV's fixed-point ITU-R BT.601 (video range) YUV -> RGB coefficients, as used by
# cv::cvtColor(COLOR_YUV2RGB_UYVY / _YUY2) (opencv modules/imgproc/src/color_yuv.simd.hpp:
# ITUR_BT_601_CY, _CUB, _CUG, _CVG, _CVR, _SHIFT).
_BT601_SHIFT = 20
_BT601_CY = 1220542
_BT601_CUB = 2116026
_BT601_CUG = -409993
_BT601_CVG = -852492
_BT601_CVR = 1673527


def _as_bytes(data: Any) -> np.ndarray:
    """``uint8[]`` field -> flat uint8 array, a view of the field's buffer where it has one
    (numpy array from rosbags, ``array.array('B')`` / ``bytes`` from rclpy): no copy."""
    if isinstance(data, np.ndarray):
        return data.astype(np.uint8, copy=False).reshape(-1)
    if isinstance(data, (bytes, bytearray, memoryview, array.array)):
        return np.frombuffer(data, dtype=np.uint8)
    return np.asarray(list(data), dtype=np.uint8)


def _to_8bit(x: np.ndarray) -> np.ndarray:
    """uint16 -> uint8 as cv_bridge does: ``convertTo(CV_8U, 255.0 / 65535.0)``, i.e. round(x / 257)."""
    return ((x.astype(np.uint32) + 128) // 257).astype(np.uint8)


def demosaic_bilinear(raw: np.ndarray, pattern: str) -> np.ndarray:
    """Bayer mosaic ``(H, W)`` uint8/uint16 -> RGB ``(H, W, 3)`` of the same dtype.

    Bilinear demosaicing exactly as OpenCV's ``cv::cvtColor(COLOR_Bayer**2RGB)`` (opencv
    ``modules/imgproc/src/demosaicing.cpp``, ``Bayer2RGB_``): at a red/blue site the missing
    green is ``(N + S + E + W + 2) >> 2`` and the other colour ``(four diagonals + 2) >> 2``; at a
    green site each missing colour is the rounded mean ``(a + b + 1) >> 1`` of its two neighbours
    (horizontal or vertical). The outermost rows/columns copy their inner neighbours.

    ``pattern`` is the ROS name of the top-left 2x2 tile (``'rggb'``, ``'bggr'``, ``'gbrg'``,
    ``'grbg'``; ROS ``bayer_rggb8`` is OpenCV's ``COLOR_BayerBG2RGB``, as cv_bridge maps it).

    Raises:
        ValueError: unknown pattern, or an image smaller than 3x3 (OpenCV returns all zeros).
    """
    if pattern not in ('rggb', 'bggr', 'gbrg', 'grbg'):
        raise ValueError(f'unknown Bayer pattern {pattern!r}')
    h, w = raw.shape
    if h < 3 or w < 3:
        raise ValueError(f'a Bayer image must be at least 3x3 pixels to demosaic, got {w}x{h}')
    p = raw.astype(np.int32)
    c = p[1:-1, 1:-1]
    n, s, wst, e = p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]
    cross = (n + s + wst + e + 2) >> 2
    diag = (p[:-2, :-2] + p[:-2, 2:] + p[2:, :-2] + p[2:, 2:] + 2) >> 2
    horiz = (wst + e + 1) >> 1
    vert = (n + s + 1) >> 1
    # colour of each interior site from the 2x2 tile, interior pixel (i, j) is raw (i + 1, j + 1)
    yy, xx = np.mgrid[1:h - 1, 1:w - 1]
    site = np.array(list(pattern)).reshape(2, 2)[yy % 2, xx % 2]
    row_has_red = np.array([('r' in pattern[0:2]), ('r' in pattern[2:4])])[yy % 2]
    r = np.where(site == 'r', c, np.where(site == 'b', diag, np.where(row_has_red, horiz, vert)))
    b = np.where(site == 'b', c, np.where(site == 'r', diag, np.where(row_has_red, vert, horiz)))
    g = np.where(site == 'g', c, cross)
    out = np.empty((h, w, 3), dtype=raw.dtype)
    out[1:-1, 1:-1] = np.stack([r, g, b], axis=-1).astype(raw.dtype)
    out[1:-1, 0] = out[1:-1, 1]
    out[1:-1, -1] = out[1:-1, -2]
    out[0] = out[1]
    out[-1] = out[-2]
    return out


def yuv422_to_rgb(pairs: np.ndarray, order: Tuple[int, int, int, int] = (0, 1, 2, 3)) -> np.ndarray:
    """YUV 4:2:2 ``(H, W / 2, 4)`` uint8 byte groups -> RGB ``(H, W, 3)`` uint8.

    ``order`` gives the positions of U, Y0, V, Y1 in each group: ``(0, 1, 2, 3)`` for UYVY
    (ROS ``yuv422``), ``(1, 0, 3, 2)`` for YUYV (ROS ``yuv422_yuy2``). Integer arithmetic
    identical to OpenCV's ``COLOR_YUV2RGB_UYVY`` / ``_YUY2`` (BT.601 video range, 20-bit fixed
    point; see the ``_BT601_*`` constants): ``R = (CY * max(Y - 16, 0) + 2^19 + CVR * (V - 128)) >> 20``
    and likewise for G and B, saturated to [0, 255].
    """
    g32 = pairs.astype(np.int64)
    u, y0, v, y1 = (g32[..., i] - d for i, d in zip(order, (128, 0, 128, 0)))
    half = 1 << (_BT601_SHIFT - 1)
    ruv = half + _BT601_CVR * v
    guv = half + _BT601_CVG * v + _BT601_CUG * u
    buv = half + _BT601_CUB * u
    ys = np.stack([y0, y1], axis=-1)                      # (H, W/2, 2)
    yv = np.maximum(ys - 16, 0) * _BT601_CY
    rgb = np.stack([(yv + ruv[..., None]) >> _BT601_SHIFT, (yv + guv[..., None]) >> _BT601_SHIFT,
                    (yv + buv[..., None]) >> _BT601_SHIFT], axis=-1)  # (H, W/2, 2, 3)
    h = pairs.shape[0]
    return np.clip(rgb, 0, 255).astype(np.uint8).reshape(h, -1, 3)


def image_to_numpy(msg: Any, *, source: str = 'image') -> np.ndarray:
    """``sensor_msgs/Image`` -> ``uint8 (H, W, 3)`` RGB, the same pixels as cv_bridge's
    ``imgmsg_to_cv2(msg, desired_encoding='rgb8')``.

    Encodings (:data:`SUPPORTED_ENCODINGS`): ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8``, ``mono8``,
    their 16-bit forms (``rgb16`` ... ``mono16``), ``bayer_{rggb,bggr,gbrg,grbg}{8,16}``
    (bilinear demosaic, :func:`demosaic_bilinear`), ``yuv422`` (UYVY) and ``yuv422_yuy2`` (YUYV)
    (:func:`yuv422_to_rgb`). 16-bit values honour ``is_bigendian`` and become 8-bit as in
    cv_bridge: colour conversion first, then ``round(v * 255 / 65535)``. Alpha is dropped; mono is
    replicated into R, G and B. Row padding (``step`` larger than the packed row) is removed.
    Generic encodings (``8UC3``, ``16UC1``, ...) carry no colour order and are refused, as cv_bridge
    refuses to convert them to ``rgb8``; names are case-sensitive (``RGB8`` is refused), as there.

    Returns a C-contiguous array. For ``rgb8`` without row padding it is a **read-only view of
    ``msg.data``** (no copy; cv_bridge likewise returns a view of the buffer when no conversion is
    needed); copy it before writing into it. Every other case returns a new array.

    Raises:
        ValueError: unsupported encoding, zero size, odd width for YUV 4:2:2, a Bayer image under
            3x3, ``step`` smaller than the packed row, or ``data`` shorter than ``step * height``;
            the message names ``source`` (e.g. the topic) and the encoding.
    """
    enc_name = str(msg.encoding)
    enc = SUPPORTED_ENCODINGS.get(enc_name)   # case-sensitive, as in cv_bridge
    if enc is None:
        raise ValueError(
            f'{source}: unsupported image encoding {msg.encoding!r}; supported: {sorted(SUPPORTED_ENCODINGS)}')
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ValueError(f'{source}: image has zero size ({w}x{h})')
    nbytes = enc.bits // 8
    row = w * enc.channels * nbytes
    if step < row:
        raise ValueError(f'{source}: step {step} is smaller than width*channels*bytes = {row} for {enc_name}')
    buf = _as_bytes(msg.data)
    if buf.size < step * h:
        raise ValueError(
            f'{source}: image data has {buf.size} bytes, expected step*height = {step * h} ({w}x{h} {enc_name})')
    rows = buf[: step * h].reshape(h, step)[:, :row]
    if nbytes == 2:
        dtype = np.dtype('>u2' if int(msg.is_bigendian) else '<u2')
        px = np.ascontiguousarray(rows).view(dtype).astype(np.uint16).reshape(h, w, enc.channels)
    else:
        px = rows.reshape(h, w, enc.channels)
    try:
        if enc.kind == 'color':
            # slices, not fancy indexing: rgb8 stays a view, the others are copied once below
            rgb = px[:, :, :3] if enc.order == (0, 1, 2) else px[:, :, 2::-1]
        elif enc.kind == 'mono':
            rgb = np.repeat(px, 3, axis=2)
        elif enc.kind == 'bayer':
            rgb = demosaic_bilinear(px[:, :, 0], enc.pattern)
        else:
            if w % 2:
                raise ValueError(f'YUV 4:2:2 needs an even width, got {w}')
            rgb = yuv422_to_rgb(px.reshape(h, w // 2, 4), enc.order)
    except ValueError as exc:
        raise ValueError(f'{source}: {enc_name} image: {exc}') from None
    if rgb.dtype == np.uint16:
        rgb = _to_8bit(rgb)
    if rgb.base is not None and rgb.flags.c_contiguous and np.may_share_memory(rgb, buf):
        rgb = rgb.view()                 # rgb8 without row padding: the message's bytes, not a copy
        rgb.flags.writeable = False
        return rgb
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def compressed_image_to_numpy(msg: Any, *, source: str = 'compressed image') -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (JPEG/PNG, as cv_bridge writes) -> ``uint8 (H, W, 3)`` RGB.

    Raises:
        ValueError: the bytes are not a decodable image (names ``source`` and ``format``).
    """
    return decode_compressed(_as_bytes(msg.data).tobytes(), source=source, fmt=msg.format)


def decode_compressed(buf: bytes, *, source: str = 'compressed image', fmt: str = '') -> np.ndarray:
    """JPEG / PNG bytes (the ``data`` of a ``sensor_msgs/CompressedImage``) -> ``uint8 (H, W, 3)`` RGB
    (read-only).

    The one decoder of compressed frames: run-time conversion (:func:`compressed_image_to_numpy`)
    and the training data cache (``vla_training.dataset_cache``) both call it, so a model trains on
    the pixels it will see (Pillow, libjpeg-turbo / zlib).

    Raises:
        ValueError: the bytes are not a decodable image (names ``source`` and ``fmt``).
    """
    from PIL import Image as PILImage
    try:
        with PILImage.open(io.BytesIO(buf)) as im:
            if im.mode != 'RGB':
                im = im.convert('RGB')
            w, h = im.size
            # one copy (the decoded pixels' bytes); the array is a read-only view of them
            return np.frombuffer(im.tobytes(), dtype=np.uint8).reshape(h, w, 3)
    except Exception as exc:  # PIL raises several types for bad data
        raise ValueError(f'{source}: cannot decode {fmt!r} image ({len(buf)} bytes): {exc}') from exc


def compressed_size(buf: bytes, *, source: str = 'compressed image', fmt: str = '') -> Tuple[int, int]:
    """``(height, width)`` of JPEG / PNG bytes from the header alone (nothing is decoded).

    Raises:
        ValueError: not a JPEG / PNG / other Pillow-readable image (names ``source`` and ``fmt``).
    """
    from PIL import Image as PILImage
    try:
        with PILImage.open(io.BytesIO(buf)) as im:
            w, h = im.size
            kind = im.format
    except Exception as exc:
        raise ValueError(f'{source}: cannot read {fmt!r} image header ({len(buf)} bytes): {exc}') from exc
    if kind not in ('JPEG', 'PNG'):
        raise ValueError(f'{source}: {fmt!r} image is {kind}, expected JPEG or PNG')
    return int(h), int(w)


def image_msg_to_rgb(msg: Any, *, source: str = 'image', bridge: Any = None) -> np.ndarray:
    """``sensor_msgs/Image`` or ``CompressedImage`` -> ``uint8 (H, W, 3)`` RGB.

    With ``bridge`` (a ``cv_bridge.CvBridge``, on a ROS 2 machine) the conversion is cv_bridge's
    ``imgmsg_to_cv2`` / ``compressed_imgmsg_to_cv2`` with ``desired_encoding='rgb8'``; without it,
    the built-in :func:`image_to_numpy` / :func:`compressed_image_to_numpy`, which give the same
    pixels for every encoding cv_bridge converts (JPEG decoders may differ by a few levels).

    Raises:
        ValueError: the message cannot be converted (names ``source`` and the encoding/format;
            cv_bridge's own error text is kept).
    """
    compressed = not hasattr(msg, 'encoding')
    if bridge is None:
        return compressed_image_to_numpy(msg, source=source) if compressed else image_to_numpy(msg, source=source)
    what = f'format {msg.format!r}' if compressed else f'encoding {msg.encoding!r}'
    try:
        img = (bridge.compressed_imgmsg_to_cv2(msg, desired_encoding='rgb8') if compressed
               else bridge.imgmsg_to_cv2(msg, desired_encoding='rgb8'))
    except Exception as exc:  # CvBridgeError, cv2.error, TypeError on malformed buffers
        raise ValueError(f'{source}: cv_bridge cannot convert {what} to rgb8: {exc}') from exc
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f'{source}: cv_bridge returned {getattr(img, "dtype", None)} '
                         f'{getattr(img, "shape", None)} for {what}, expected uint8 (H, W, 3)')
    return np.ascontiguousarray(img)


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
                              frame_id: str = 'camera_optical_frame', quality: int = 90, fmt: str = 'jpeg') -> Any:
    """``uint8 (H, W, 3)`` RGB -> ``sensor_msgs/CompressedImage``: JPEG at ``quality`` (``fmt='jpeg'``)
    or lossless PNG (``fmt='png'``); ``format`` is ``'jpeg'`` / ``'png'``.

    Raises:
        ValueError: ``fmt`` other than ``jpeg`` / ``png``.
    """
    from PIL import Image as PILImage
    if fmt not in ('jpeg', 'png'):
        raise ValueError(f"compressed image format must be 'jpeg' or 'png', got {fmt!r}")
    out = io.BytesIO()
    kw = {'quality': quality} if fmt == 'jpeg' else {'compress_level': 1}
    PILImage.fromarray(np.asarray(img, dtype=np.uint8)).save(out, format=fmt.upper(), **kw)
    return types.CompressedImage(header=header(stamp, frame_id, types), format=fmt,
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


def joint_state_to_state(msg: Any, embodiment: Any, *, source: str = 'joint_states'
                         ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """``sensor_msgs/JointState`` -> the policy's state vector ``(J,)`` and velocities, for any machine.

    A DOF's state is its measured position. A velocity DOF without a position sensor (a track, a
    base velocity: absent from the message, or NaN) contributes its measured velocity instead, 0
    when that is unknown too, so the state stays finite and means the same in training and at run
    time. For an embodiment of position DOFs only this is :func:`joint_state_to_arrays`.

    Returns:
        ``(state (J,) float64, velocities (J,) or None)`` in embodiment order.

    Raises:
        KeyError: a position DOF is missing (names ``source``).
        ValueError: length mismatches, or a non-finite position of a position DOF.
    """
    is_vel = np.asarray(embodiment.is_velocity, dtype=bool)
    if not is_vel.any():
        return joint_state_to_arrays(msg, embodiment.joint_names, source=source)
    names = [str(n) for n in msg.name]
    pos = np.asarray(msg.position, dtype=np.float64).reshape(-1)
    if pos.shape[0] != len(names):
        raise ValueError(f'{source}: {len(names)} names but {pos.shape[0]} positions')
    vel = np.asarray(msg.velocity, dtype=np.float64).reshape(-1)
    has_vel = vel.shape[0] == len(names)
    lookup = {n: i for i, n in enumerate(names)}
    missing = [n for n, v in zip(embodiment.joint_names, is_vel) if not v and n not in lookup]
    if missing:
        raise KeyError(f'{source}: missing joints {missing} (message has {names})')
    state = np.zeros(len(is_vel))
    out_vel = np.full(len(is_vel), np.nan)
    for j, n in enumerate(embodiment.joint_names):
        i = lookup.get(n)
        p = pos[i] if i is not None else np.nan
        v = vel[i] if (i is not None and has_vel) else np.nan
        out_vel[j] = v
        if is_vel[j] and not np.isfinite(p):
            state[j] = v if np.isfinite(v) else 0.0
        else:
            state[j] = p
    _check_finite(state[~is_vel], f'{source} positions')
    _check_finite(state, f'{source} state')
    return state, (out_vel if has_vel else None)


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


_NO_VALUES = np.zeros(0, dtype=np.float64)   # the unused per-point fields (zero-size: nothing to share)


def arrays_to_trajectory(names: Sequence[str], positions: np.ndarray, stamp: float, types: MessageTypes, *,
                         dt: Optional[float] = None, times: Optional[np.ndarray] = None,
                         frame_id: str = '') -> Any:
    """``positions (P, J)`` -> ``trajectory_msgs/JointTrajectory``, one point per row.

    Point ``k`` gets ``time_from_start = (k + 1) * dt`` unless ``times (P,)`` is given (s, rounded
    to the nanosecond as :func:`sec_to_duration`). Velocities, accelerations and efforts are empty.

    Raises:
        ValueError: positions not ``(P, len(names))``, no ``dt > 0`` and no ``times``, or ``times``
            not of length ``P``.
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
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    if times.shape[0] != positions.shape[0]:
        raise ValueError(f'{positions.shape[0]} trajectory points but {times.shape[0]} times')
    seq, point, duration = types.float64_seq, types.JointTrajectoryPoint, types.Duration
    empty = seq(_NO_VALUES)
    # a zero-size numpy array (rosbags) cannot change, so the points share one; other sequence
    # types (rclpy's array.array can grow) get their own per field
    shared = isinstance(empty, np.ndarray)
    pts = []
    for row, t in zip(positions, times.tolist()):
        sec, nsec = divmod(int(round(t * 1e9)), 1_000_000_000)     # as sec_to_duration
        pts.append(point(positions=seq(row), velocities=empty if shared else seq(_NO_VALUES),
                         accelerations=empty if shared else seq(_NO_VALUES),
                         effort=empty if shared else seq(_NO_VALUES),
                         time_from_start=duration(sec=sec, nanosec=nsec)))
    return types.JointTrajectory(header=header(stamp, frame_id, types), joint_names=list(names), points=pts)


def trajectory_fields(msg: Any, *, source: str = 'joint_trajectory'
                      ) -> Tuple[List[str], Optional[np.ndarray], Optional[np.ndarray], np.ndarray]:
    """``JointTrajectory`` -> ``(joint_names, positions (P, J) or None, velocities (P, J) or None,
    time_from_start (P,) s)``. A field that is empty in every point is None; NaN/Inf are kept (the
    driver's validation decides which entries are used, see :func:`action_trajectory`).

    Raises:
        ValueError: no points, a field filled in some points only or of the wrong length (point and
            field named), duplicate joint names, decreasing ``time_from_start``.
    """
    names = [str(n) for n in msg.joint_names]
    if len(set(names)) != len(names):
        raise ValueError(f'{source}: duplicate joint names {names}')
    points = list(msg.points)
    if not points:
        raise ValueError(f'{source}: trajectory has no points')
    out = {}
    for fname in ('positions', 'velocities'):
        rows = [np.asarray(getattr(p, fname), dtype=np.float64).reshape(-1) for p in points]
        sizes = {r.shape[0] for r in rows}
        if sizes == {0}:
            out[fname] = None
            continue
        for k, r in enumerate(rows):
            if r.shape[0] != len(names):
                raise ValueError(f'{source}: point {k} has {r.shape[0]} {fname} for {len(names)} joints')
        out[fname] = np.stack(rows)
    t = np.asarray([duration_to_sec(p.time_from_start) for p in points])
    if np.any(np.diff(t) < 0):
        raise ValueError(f'{source}: time_from_start decreases: {t.tolist()}')
    return names, out['positions'], out['velocities'], t


def action_trajectory(embodiment: Any, actions: np.ndarray, stamp: float, types: MessageTypes, *,
                      dt: Optional[float] = None, times: Optional[np.ndarray] = None, frame_id: str = '') -> Any:
    """An action chunk as the policy's ``trajectory_msgs/JointTrajectory``, for any machine.

    ``joint_names`` are the embodiment's DOFs; each point carries ``positions[i]`` for position DOFs
    and ``velocities[i]`` for velocity DOFs. A field no DOF uses stays empty (an all-position arm
    sends positions only, exactly as :func:`arrays_to_trajectory`; an all-velocity machine
    velocities only); in a mixed machine both fields have one entry per DOF and the entry of the
    field a DOF does not use is NaN ("not commanded"), as ``JointTrajectoryPoint`` requires equal
    lengths.

    Args:
        embodiment: :class:`~robot_drivers.embodiment.Embodiment`.
        actions: ``(P, J)`` or ``(J,)`` action rows in embodiment order (rad, m, rad/s, m/s).
        stamp, dt, times, frame_id: as :func:`arrays_to_trajectory`.

    Raises:
        ValueError: as :func:`arrays_to_trajectory`.
    """
    actions = np.asarray(actions, dtype=np.float64)
    if actions.ndim == 1:
        actions = actions[None]
    is_vel = np.asarray(embodiment.is_velocity, dtype=bool)
    if actions.shape[1] != is_vel.shape[0]:
        raise ValueError(f'embodiment {embodiment.name!r} has {is_vel.shape[0]} DOFs but actions of shape '
                         f'{actions.shape}')
    names = list(embodiment.joint_names)
    if not is_vel.any():
        return arrays_to_trajectory(names, actions, stamp, types, dt=dt, times=times, frame_id=frame_id)
    msg = arrays_to_trajectory(names, np.where(is_vel[None], np.nan, actions), stamp, types, dt=dt, times=times,
                               frame_id=frame_id)
    seq = types.float64_seq
    for pt, row in zip(msg.points, actions):
        pt.velocities = seq(np.where(is_vel, row, np.nan))
        if is_vel.all():
            pt.positions = seq(_NO_VALUES)
    return msg


def trajectory_to_actions(msg: Any, embodiment: Any, *, source: str = 'joint_trajectory'
                          ) -> Tuple[np.ndarray, np.ndarray]:
    """The inverse of :func:`action_trajectory`: ``(actions (P, J) float64 embodiment order,
    time_from_start (P,) s)``.

    Raises:
        robot_drivers.safety.CommandRejected (a ValueError): unknown, forbidden, missing or duplicate
            joints, a field a DOF needs missing, a non-finite used entry (joint and point named).
        ValueError: an unreadable message (see :func:`trajectory_fields`).
    """
    from robot_drivers.machine import validate_command
    names, pos, vel, t = trajectory_fields(msg, source=source)
    return validate_command(embodiment, names, pos, vel, source=source), t


def string_msg(text: str, types: MessageTypes) -> Any:
    return types.String(data=str(text))
