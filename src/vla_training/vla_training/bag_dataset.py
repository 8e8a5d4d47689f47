"""rosbag2 recordings -> time-aligned training episodes (ROS-free; reads MCAP and sqlite3 bags).

A demonstration recorded with ``ros2 bag record`` holds a camera, the joint states, the language
instruction and the commands the teleoperator (or expert) sent, each at its own rate and with its own
delays. :func:`read_episode` puts them on one control-rate grid in three stages, one module each:

1. :mod:`vla_training.bag_reader`: bag -> per-topic stamp series (header stamps parsed from the CDR
   bytes; zstd-compressed and split bags as ``ros2 bag record`` writes them), then only the messages
   the grid uses are deserialized, and each selected image is decoded once.
2. :mod:`vla_training.alignment`: series -> control-rate ticks. At grid time ``t`` each topic
   contributes its latest message stamped ``<= t + period / 2``; a tick where a topic's message is
   older than ``max_age_s`` (default two periods) is excluded and counted per topic in
   :attr:`Episode.stale`. The instruction is latched (``transient_local``) state, so it never goes stale.
3. :mod:`vla_training.targets`: the action at ``t`` is point 0 of the selected JointTrajectory (the
   position the command asked the joints to reach ``time_from_start`` later), or the next measured
   joint state for joints (or whole recordings) without a command; :func:`chunk_targets` for chunks.

Array conventions: images ``uint8 (T, H, W, 3)`` RGB; joints ``float32 (T, J)`` in embodiment order,
REP-103 units (rad, m); stamps ``float64`` seconds since the epoch.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from robot_drivers import conversions
from robot_drivers.embodiment import Embodiment

from .alignment import NoTickError, align, latest_at
from .bag_reader import (DEFAULT_CAMERA, IMAGE_TYPES, TRAJECTORY_TYPE, BagError, BagTopics, bag_info, find_bags,
                         open_bag, read_selected, read_stamps)
from .targets import TargetError, check_finite, chunk_targets, command_actions, fill_from_state

__all__ = [
    'BagError',
    'BagTopics',
    'Episode',
    'EncodedFrames',
    'read_episode',
    'read_episodes',
    'find_bags',
    'chunk_targets',
    'bag_info',
    'IMAGE_TYPES',
]

log = logging.getLogger(__name__)

PathLike = Union[str, Path]


@dataclass
class Episode:
    """One demonstration on the control-rate grid.

    Attributes:
        source: bag path.
        stamps: ``float64 (T,)`` seconds since the epoch, strictly increasing grid times.
        images: ``uint8 (T, H, W, 3)`` RGB (resized to ``image_size`` if given) of the first camera.
        joint_positions: ``float32 (T, J)`` measured positions, embodiment order (rad / m).
        actions: ``float32 (T, A)`` commanded positions (trajectory point 0), embodiment order.
        instructions: ``(T,)`` language instruction in force at each tick.
        dropped: grid ticks excluded because a topic was stale.
        joint_names: ``(J,)`` names of the columns of ``joint_positions`` and ``actions``.
        rate_hz: the grid rate (Hz); consecutive kept ticks are ``1 / rate_hz`` apart except at drops.
        stale: ``{topic: ticks}`` how many grid ticks each topic was stale at (a dropped tick may count
            for several topics); empty when nothing was dropped.
        camera_images: ``{camera name: uint8 (T, H, W, 3)}`` every camera, in camera order (the first
            is ``images``); empty for an episode built without names (then ``images`` is its one
            camera, see :meth:`cameras`).
    """

    source: str
    stamps: np.ndarray
    images: np.ndarray
    joint_positions: np.ndarray
    actions: np.ndarray
    instructions: List[str]
    dropped: int = 0
    joint_names: Tuple[str, ...] = ()
    rate_hz: Optional[float] = None
    stale: Dict[str, int] = field(default_factory=dict)
    camera_images: Dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        t = int(np.shape(self.stamps)[0])
        lens = {'images': len(self.images), 'joint_positions': len(self.joint_positions),
                'actions': len(self.actions), 'instructions': len(self.instructions)}
        lens.update({f'camera_images[{c!r}]': len(v) for c, v in self.camera_images.items()})
        bad = {k: n for k, n in lens.items() if n != t}
        if bad:
            raise ValueError(f'Episode {self.source}: {t} stamps but lengths {bad}')

    def __len__(self) -> int:
        return int(self.stamps.shape[0])

    def cameras(self) -> Dict[str, np.ndarray]:
        """``{camera name: uint8 (T, H, W, 3)}``: :attr:`camera_images`, or ``{DEFAULT_CAMERA: images}``
        for an episode built with one unnamed camera."""
        return dict(self.camera_images) if self.camera_images else {DEFAULT_CAMERA: self.images}

    def chunk_targets(self, chunk_size: int) -> Tuple[np.ndarray, np.ndarray]:
        """:func:`chunk_targets` of this episode's actions, not crossing dropped ticks (needs ``rate_hz``)."""
        if self.rate_hz is None:
            return chunk_targets(self.actions, chunk_size)
        return chunk_targets(self.actions, chunk_size, stamps=self.stamps, period_s=1.0 / self.rate_hz)


# ----------------------------------------------------------------------------- arguments
def _as_image_size(image_size) -> Optional[Tuple[int, int]]:
    if image_size is None:
        return None
    if isinstance(image_size, (int, np.integer)):
        image_size = (int(image_size), int(image_size))
    hw = tuple(int(v) for v in image_size)
    if len(hw) != 2 or min(hw) <= 0:
        raise ValueError(f'image_size must be a positive int or (height, width), got {image_size!r}')
    return hw  # type: ignore[return-value]


def _resize(img: np.ndarray, hw: Tuple[int, int]) -> np.ndarray:
    """``uint8 (H, W, 3)`` -> ``uint8 (h, w, 3)`` with PIL bilinear (antialiased when shrinking)."""
    if img.shape[:2] == hw:
        return img
    from PIL import Image as PILImage
    return np.asarray(PILImage.fromarray(img).resize((hw[1], hw[0]), resample=PILImage.BILINEAR), dtype=np.uint8)


# ----------------------------------------------------------------------------- message -> array pieces
def _joint_rows(msgs: Dict[int, Any], use: np.ndarray, emb: Embodiment, source: str) -> np.ndarray:
    """``float64 (len(use), J)`` state of the selected joint states, embodiment order: measured positions
    (a velocity DOF without a position sensor: its velocity, see
    :func:`robot_drivers.conversions.joint_state_to_state`)."""
    cache: Dict[int, np.ndarray] = {}
    rows = []
    for s in use:
        s = int(s)
        if s not in cache:
            try:
                cache[s], _ = conversions.joint_state_to_state(msgs[s], emb, source=source)
            except (KeyError, ValueError) as exc:
                raise BagError(exc.args[0] if exc.args else str(exc)) from exc
        rows.append(cache[s])
    return np.stack(rows)


class EncodedFrames:
    """A camera's frames kept as the bag stored them (JPEG / PNG bytes of ``sensor_msgs/CompressedImage``).

    Behaves like the ``uint8 (T, H, W, 3)`` array it decodes to: ``len``, ``shape``, ``dtype``,
    ``frames[i]`` (one decoded ``(H, W, 3)`` frame) and ``np.asarray(frames)`` (all of them, decoded
    with :func:`robot_drivers.conversions.decode_compressed`, the run-time decoder). ``data[i]`` is
    frame ``i``'s bytes; a frame repeated on consecutive ticks is the same ``bytes`` object.

    Attributes:
        data: ``(T,)`` bytes per tick. fmt: the messages' ``format`` text (e.g. ``'jpeg'``,
            ``'rgb8; jpeg compressed bgr8'``). height, width: pixels (every frame has them).
    """

    def __init__(self, data: Sequence[bytes], fmt: str, height: int, width: int) -> None:
        self.data, self.fmt, self.height, self.width = list(data), str(fmt), int(height), int(width)

    def __len__(self) -> int:
        return len(self.data)

    @property
    def shape(self) -> Tuple[int, int, int, int]:
        return (len(self.data), self.height, self.width, 3)

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __getitem__(self, i: int) -> np.ndarray:
        return conversions.decode_compressed(self.data[int(i)], fmt=self.fmt)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        if not self.data:
            return np.zeros((0, self.height, self.width, 3), np.uint8)
        decoded: Dict[int, np.ndarray] = {}
        out = np.stack([decoded.setdefault(id(b), conversions.decode_compressed(b, fmt=self.fmt)) for b in self.data])
        return out if dtype is None else out.astype(dtype)


def _image_rows(msgs: Dict[int, Any], use: np.ndarray, stamps_ns: np.ndarray,
                hw: Optional[Tuple[int, int]], source: str, decode: bool = True):
    """``uint8 (len(use), H, W, 3)`` RGB frames, each distinct frame decoded (and resized) once; with
    ``decode=False`` and compressed messages, an :class:`EncodedFrames` of their bytes instead."""
    frames: Dict[int, Any] = {}
    first_shape: Optional[Tuple[int, int]] = None
    keep = not decode and hw is None
    fmt = ''
    for s in np.unique(use):
        msg = msgs[int(s)]
        compressed = not hasattr(msg, 'encoding')
        try:
            if keep and compressed:
                img = conversions._as_bytes(msg.data).tobytes()
                fmt = msg.format
                shape = conversions.compressed_size(img, source=source, fmt=fmt)
            else:
                img = conversions.image_msg_to_rgb(msg, source=source)
                shape = img.shape[:2]
        except ValueError as exc:
            raise BagError(str(exc)) from exc
        if first_shape is None:
            first_shape = shape
        elif shape != first_shape:
            raise BagError(f'{source}: frame stamped {stamps_ns[int(s)] * 1e-9:.9f} s is '
                           f'{shape[1]}x{shape[0]}, other frames are '
                           f'{first_shape[1]}x{first_shape[0]} (width x height)')
        if isinstance(img, np.ndarray):
            frames[int(s)] = _resize(img, hw) if hw is not None else img
        else:
            frames[int(s)] = img
    if any(isinstance(v, bytes) for v in frames.values()):
        return EncodedFrames([frames[int(s)] for s in use], fmt, *first_shape)
    return np.stack([frames[int(s)] for s in use])


# ----------------------------------------------------------------------------- reading
def _command_adapters(embodiment: Embodiment) -> Dict[str, Any]:
    """``{message type: output adapter}`` of the embodiment's groups whose native command message is
    not a JointTrajectory and is published by exactly one group (an ambiguous type is left out:
    such a recording needs the policy's JointTrajectory command topic)."""
    from robot_drivers.adapters import build_adapters
    by_type: Dict[str, List[Any]] = {}
    for ad in build_adapters(embodiment):
        if ad.msg_type != TRAJECTORY_TYPE:
            by_type.setdefault(ad.msg_type, []).append(ad)
    return {t: ads[0] for t, ads in by_type.items() if len(ads) == 1}


def read_episode(path: PathLike, embodiment: Embodiment, topics: Optional[BagTopics] = None, *,
                 rate_hz: Optional[float] = None, image_size=None, max_age_s: Optional[float] = None,
                 action_from_state: Sequence[str] = (), decode_images: bool = True) -> Episode:
    """Read one rosbag2 recording (MCAP or sqlite3, compressed or split) into an :class:`Episode`.

    Args:
        path: bag directory (the one holding ``metadata.yaml``).
        embodiment: defines the joint order ``(J,)`` of ``joint_positions`` and ``actions``.
        topics: topic names (default :class:`BagTopics`); ``topics.command = None`` when no command
            was recorded: every action is then the next measured joint state (see below).
            ``topics.images`` reads several cameras, each aligned to the grid like the joint
            states (a tick where any camera is stale is dropped and counted under its topic);
            :attr:`Episode.camera_images` holds them by camera name.
        rate_hz: grid rate in Hz (default ``embodiment.control_rate_hz``).
        image_size: ``(height, width)`` or an int for square; frames are resized with PIL bilinear.
        max_age_s: a tick is dropped when a topic's selected message is older than this (s);
            default two grid periods.
        action_from_state: embodiment joints that the command topic does not carry (e.g. a gripper
            driven through its own action server). Their action at ``t`` is the measured position in
            the latest joint state stamped ``<= t + period``, i.e. where the joint got to one period
            later. Any other embodiment joint missing from a command is an error.
        decode_images: ``False`` keeps a ``sensor_msgs/CompressedImage`` camera as the bag stored it:
            its :attr:`Episode.camera_images` entry is an :class:`EncodedFrames` (JPEG / PNG bytes,
            only the header read) instead of decoded pixels (the training cache stores it so).
            With ``image_size`` (frames resized) or a raw ``sensor_msgs/Image`` camera, frames are decoded.

    Returns:
        :class:`Episode` with ``T >= 1`` ticks; the grid ends at the last command, or without a
        command one period before the last joint state.

    Raises:
        BagError: path missing / not a rosbag2 directory / truncated or corrupt storage; a topic
            absent (the text lists the bag's topics), of the wrong type, or empty; a header stamp
            of zero on a sensor topic; an unsupported image encoding or a frame size different from
            the first frame; a joint state or command lacking an embodiment joint; no tick surviving.
        ValueError: bad ``rate_hz``, ``max_age_s``, ``image_size`` or ``action_from_state``.
    """
    path = Path(path)
    topics = topics if topics is not None else BagTopics()
    rate = float(embodiment.control_rate_hz if rate_hz is None else rate_hz)
    if not np.isfinite(rate) or rate <= 0:
        raise ValueError(f'rate_hz must be > 0, got {rate_hz}')
    period_ns = 1e9 / rate
    max_age_ns = 2.0 * period_ns if max_age_s is None else float(max_age_s) * 1e9
    if not np.isfinite(max_age_ns) or max_age_ns <= 0:
        raise ValueError(f'max_age_s must be > 0, got {max_age_s}')
    hw = _as_image_size(image_size)
    names = list(embodiment.joint_names)
    has_command = topics.command is not None
    from_state = list(action_from_state) if has_command else list(names)
    unknown = embodiment.unknown_joints(list(action_from_state))
    if unknown:
        raise ValueError(f'action_from_state names joints {unknown} that embodiment {embodiment.name!r} lacks')

    adapters = _command_adapters(embodiment)
    if has_command:
        topics = dataclasses.replace(topics, native_command_types=tuple(sorted(adapters)))
    reader = open_bag(path)
    try:
        # 1. reading: stamps of every message
        series = read_stamps(reader, path, topics)
        st = {r: s.stamps for r, s in series.series.items()}
        topic_of = {r: s.topic for r, s in series.series.items()}
        # 2. alignment
        end_ns = int(st['command'][-1]) if has_command else int(st['joint_states'][-1] - round(period_ns))
        try:
            al = align(st, topic_of, rate_hz=rate, max_age_ns=max_age_ns, end_ns=end_ns, latched=('instruction',))
        except NoTickError as exc:
            end = f'the last command on {topics.command}' if has_command else \
                f'one period before the last joint state on {topics.joint_states}'
            raise BagError(f'bag {path}: {exc} (grid end: {end})') from exc
        ticks = al.ticks  # (T,) ns
        use_future_js = latest_at(st['joint_states'], ticks + int(round(period_ns))) if from_state \
            else np.zeros(0, dtype=np.int64)
        # ... then only the messages the kept ticks use
        cam_roles = topics.camera_roles()   # {camera: role}
        wanted = {**{r: al.index[r] for r in cam_roles.values()},
                  'joint_states': np.concatenate([al.index['joint_states'], use_future_js])}
        if has_command:
            wanted['command'] = al.index['command']
        msgs = read_selected(reader, series, wanted)
    finally:
        reader.close()
    if al.dropped:
        detail = ', '.join(f'{t}: {n} ticks stale' for t, n in al.stale.items())
        log.warning('bag %s: dropped %d of %d grid ticks at %g Hz because a topic was older than %.3f s (%s)',
                    path, al.dropped, al.grid.size, rate, max_age_ns * 1e-9, detail)

    # 3. training targets
    js_src = f'bag {path}: topic {topics.joint_states}'
    joint_positions = _joint_rows(msgs['joint_states'], al.index['joint_states'], embodiment,
                                  js_src).astype(np.float32)
    cmd_src = f'bag {path}: topic {topics.command}' if has_command else js_src
    try:
        decode = None
        if has_command and series['command'].msgtype != TRAJECTORY_TYPE:
            ad = adapters[series['command'].msgtype]
            decode = functools.partial(ad.decode, source=topics.command)
        actions = command_actions(msgs['command'], al.index['command'], names, from_state=from_state,
                                  source=cmd_src, decode=decode,
                                  velocity_joints=[j.name for j in embodiment.joints if j.interface == 'velocity']
                                  ) if has_command else None
        if from_state:
            future = _joint_rows(msgs['joint_states'], use_future_js, embodiment, js_src)  # (T, J)
            actions = fill_from_state(actions, future, [names.index(j) for j in from_state])
        check_finite(actions, names, cmd_src)
    except TargetError as exc:
        raise BagError(str(exc)) from exc

    camera_images: Dict[str, np.ndarray] = {}
    for cam, role in cam_roles.items():
        img = series[role]
        camera_images[cam] = _image_rows(msgs[role], al.index[role], img.stamps, hw,
                                         f'bag {path}: topic {img.topic}', decode=decode_images)
    instr = series['instruction']
    instructions = [instr.text_at(s) for s in al.index['instruction']]

    return Episode(source=str(path), stamps=ticks.astype(np.float64) * 1e-9,
                   images=next(iter(camera_images.values())),
                   joint_positions=joint_positions, actions=actions.astype(np.float32), instructions=instructions,
                   dropped=al.dropped, joint_names=tuple(names), rate_hz=rate, stale=dict(al.stale),
                   camera_images=camera_images)


def read_episodes(paths: Union[PathLike, Iterable[PathLike]], embodiment: Embodiment,
                  topics: Optional[BagTopics] = None, **kwargs) -> List[Episode]:
    """:func:`read_episode` for each bag of :func:`find_bags` ``(paths)``, in that order.

    ``kwargs`` go to :func:`read_episode`. Raises :class:`BagError` for the first bad bag.
    """
    return [read_episode(p, embodiment, topics, **kwargs) for p in find_bags(paths)]
