"""rosbag2 recordings -> time-aligned training episodes (ROS-free; reads MCAP and sqlite3 bags).

A demonstration recorded with ``ros2 bag record`` holds a camera, the joint states, the language
instruction and the commands the teleoperator (or expert) sent, each at its own rate and with its own
delays. :func:`read_episode` puts them on one control-rate grid:

* Stamps are ``header.stamp`` for ``sensor_msgs/Image``, ``sensor_msgs/CompressedImage``,
  ``sensor_msgs/JointState`` and ``trajectory_msgs/JointTrajectory``; ``std_msgs/String`` has no header,
  so the instruction uses the bag's receive time. A JointTrajectory with a zero stamp means "start on
  receipt" (ros2_control ``joint_trajectory_controller`` convention), so its receive time is used.
* The grid runs at ``rate_hz`` (default ``embodiment.control_rate_hz``) from the first time every topic
  has a message to the stamp of the last command.
* At grid time ``t`` each topic contributes its latest message with stamp ``<= t + period / 2``. If that
  message is older than ``max_age_s`` (default two periods) the tick is excluded and counted in
  :attr:`Episode.dropped`, with a warning naming the topic. The instruction is latched
  (``transient_local``) state, so it never goes stale.
* The training target (action) at ``t`` is point 0 of the selected JointTrajectory, i.e. the position
  the command asked the joints to reach ``time_from_start`` later, reordered to the embodiment.

Reading is two passes: the first parses only the header stamps straight from the CDR bytes (and
the short instruction strings); the second deserializes just the messages the grid uses and decodes
each selected image once.

Array conventions: images ``uint8 (T, H, W, 3)`` RGB; joints ``float32 (T, J)`` in embodiment order,
REP-103 units (rad, m); stamps ``float64`` seconds since the epoch.
"""
from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from robot_drivers import conversions
from robot_drivers.embodiment import Embodiment

__all__ = [
    'BagError',
    'BagTopics',
    'Episode',
    'read_episode',
    'read_episodes',
    'find_bags',
    'chunk_targets',
    'bag_info',
    'IMAGE_TYPES',
]

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')
JOINT_STATE_TYPE = 'sensor_msgs/msg/JointState'
STRING_TYPE = 'std_msgs/msg/String'
TRAJECTORY_TYPE = 'trajectory_msgs/msg/JointTrajectory'

# role -> accepted message types
_EXPECTED_TYPES: Dict[str, Tuple[str, ...]] = {
    'image': IMAGE_TYPES,
    'joint_states': (JOINT_STATE_TYPE,),
    'instruction': (STRING_TYPE,),
    'command': (TRAJECTORY_TYPE,),
}
_ROLES = ('image', 'joint_states', 'instruction', 'command')


class BagError(ValueError):
    """A rosbag2 recording cannot be turned into an episode; the text names the bag and topic/field."""


@dataclass
class BagTopics:
    """Topic names of one recording; maps 1:1 onto a YAML section. Defaults are REP-144 style names.

    Attributes:
        image: ``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage`` (type detected from the bag).
        joint_states: ``sensor_msgs/JointState``.
        instruction: ``std_msgs/String`` (no header: the bag's receive time is its stamp).
        command: ``trajectory_msgs/JointTrajectory``; the training target is point 0's positions.
    """

    image: str = '/camera/image_raw'
    joint_states: str = '/joint_states'
    instruction: str = '/vla/instruction'
    command: str = '/arm_controller/joint_trajectory'

    @classmethod
    def from_dict(cls, d: Optional[Dict[str, Any]]) -> 'BagTopics':
        """Build from a YAML mapping; raises ValueError naming unknown keys or non-string values."""
        d = dict(d or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f'unknown bag topic keys {unknown}; expected some of {sorted(known)}')
        for k, v in d.items():
            if not isinstance(v, str) or not v.startswith('/'):
                raise ValueError(f'bag topic {k!r} must be an absolute topic name like "/x", got {v!r}')
        return cls(**d)

    def as_dict(self) -> Dict[str, str]:
        return {r: getattr(self, r) for r in _ROLES}


@dataclass
class Episode:
    """One demonstration on the control-rate grid.

    Attributes:
        source: bag path.
        stamps: ``float64 (T,)`` seconds since the epoch, strictly increasing grid times.
        images: ``uint8 (T, H, W, 3)`` RGB (resized to ``image_size`` if given).
        joint_positions: ``float32 (T, J)`` measured positions, embodiment order (rad / m).
        actions: ``float32 (T, A)`` commanded positions (trajectory point 0), embodiment order.
        instructions: ``(T,)`` language instruction in force at each tick.
        dropped: grid ticks excluded because a topic was stale (also logged as a warning).
        joint_names: ``(J,)`` names of the columns of ``joint_positions`` and ``actions``.
        rate_hz: the grid rate (Hz); consecutive kept ticks are ``1 / rate_hz`` apart except at drops.
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

    def __post_init__(self) -> None:
        t = int(np.shape(self.stamps)[0])
        lens = {'images': len(self.images), 'joint_positions': len(self.joint_positions),
                'actions': len(self.actions), 'instructions': len(self.instructions)}
        bad = {k: n for k, n in lens.items() if n != t}
        if bad:
            raise ValueError(f'Episode {self.source}: {t} stamps but lengths {bad}')

    def __len__(self) -> int:
        return int(self.stamps.shape[0])

    def chunk_targets(self, chunk_size: int) -> Tuple[np.ndarray, np.ndarray]:
        """:func:`chunk_targets` of this episode's actions, not crossing dropped ticks (needs ``rate_hz``)."""
        if self.rate_hz is None:
            return chunk_targets(self.actions, chunk_size)
        return chunk_targets(self.actions, chunk_size, stamps=self.stamps, period_s=1.0 / self.rate_hz)


# ----------------------------------------------------------------------------- bag access
def _check_bag_dir(path: Path) -> None:
    if not path.exists():
        raise BagError(f'bag {path}: path does not exist')
    if not path.is_dir():
        hint = ' (pass the bag directory, not the file inside it)' if (path.parent / 'metadata.yaml').is_file() else ''
        raise BagError(f'bag {path}: not a rosbag2 directory{hint}')
    if not (path / 'metadata.yaml').is_file():
        raise BagError(f'bag {path}: not a rosbag2 directory (no metadata.yaml)')


def _open_reader(path: Path):
    """Open a ``rosbags.rosbag2.Reader``; every failure (bad metadata, truncated MCAP, corrupt sqlite) -> BagError."""
    from rosbags.rosbag2 import Reader
    _check_bag_dir(path)
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # rosbags raises ReaderError, OSError, YAML and storage errors
        raise BagError(f'bag {path}: cannot open ({type(exc).__name__}: {exc})') from exc
    return reader


def _iter_messages(reader, path: Path, connections, **kw) -> Iterator[Tuple[Any, int, bytes]]:
    """``reader.messages`` with storage errors (truncated chunks, malformed pages) wrapped in BagError."""
    it = reader.messages(connections=connections, **kw)
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except Exception as exc:
            raise BagError(f'bag {path}: corrupt or truncated storage while reading messages '
                           f'({type(exc).__name__}: {exc})') from exc
        yield item


def _header_stamp_ns(raw: bytes, path: Path, topic: str) -> int:
    """``header.stamp`` in ns read straight from CDR bytes.

    Every type with a header here starts with ``std_msgs/Header``, whose first field is
    ``builtin_interfaces/Time {int32 sec, uint32 nanosec}``, right after the 4-byte CDR
    encapsulation header (byte 1: 0 = big endian, 1 = little endian; OMG DDS-XTypes 7.6.3.1.2).
    """
    if len(raw) < 12 or raw[0] != 0 or raw[1] not in (0, 1):
        raise BagError(f'bag {path}: topic {topic}: message is not CDR-encoded or too short ({len(raw)} bytes)')
    sec, nsec = struct.unpack_from('<iI' if raw[1] == 1 else '>iI', raw, 4)
    return int(sec) * 1_000_000_000 + int(nsec)


def _resolve(reader, path: Path, topics: BagTopics) -> Dict[str, Tuple[str, str, list]]:
    """role -> (topic, msgtype, connections); raises BagError for absent topics or wrong types."""
    by_topic: Dict[str, list] = {}
    for c in reader.connections:
        by_topic.setdefault(c.topic, []).append(c)
    available = ', '.join(f'{t} [{by_topic[t][0].msgtype}]' for t in sorted(by_topic)) or 'none'
    out = {}
    for role in _ROLES:
        topic = getattr(topics, role)
        conns = by_topic.get(topic)
        if not conns:
            raise BagError(f'bag {path}: {role} topic {topic} is not in the bag; it has: {available}')
        types = sorted({c.msgtype for c in conns})
        if len(types) != 1 or types[0] not in _EXPECTED_TYPES[role]:
            raise BagError(f'bag {path}: {role} topic {topic} has type {" / ".join(types)}, '
                           f'expected {" or ".join(_EXPECTED_TYPES[role])}')
        if sum(int(c.msgcount) for c in conns) == 0:
            raise BagError(f'bag {path}: {role} topic {topic} has no messages')
        out[role] = (topic, types[0], conns)
    return out


# ----------------------------------------------------------------------------- reading
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


def read_episode(path: PathLike, embodiment: Embodiment, topics: Optional[BagTopics] = None, *,
                 rate_hz: Optional[float] = None, image_size=None, max_age_s: Optional[float] = None,
                 action_from_state: Sequence[str] = ()) -> Episode:
    """Read one rosbag2 recording (MCAP or sqlite3) into an :class:`Episode` on a control-rate grid.

    Args:
        path: bag directory (the one holding ``metadata.yaml``).
        embodiment: defines the joint order ``(J,)`` of ``joint_positions`` and ``actions``.
        topics: topic names (default :class:`BagTopics`).
        rate_hz: grid rate in Hz (default ``embodiment.control_rate_hz``).
        image_size: ``(height, width)`` or an int for square; frames are resized with PIL bilinear.
        max_age_s: a tick is dropped when a topic's selected message is older than this (s);
            default two grid periods.
        action_from_state: embodiment joints that the command topic does not carry (e.g. a gripper
            driven through its own action server). Their action at ``t`` is the measured position in
            the latest joint state stamped ``<= t + period``, i.e. where the joint got to one period
            later. Any other embodiment joint missing from a command is an error.

    Returns:
        :class:`Episode` with ``T >= 1`` ticks.

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
    from_state = list(action_from_state)
    unknown = embodiment.unknown_joints(from_state)
    if unknown:
        raise ValueError(f'action_from_state names joints {unknown} that embodiment {embodiment.name!r} lacks')

    ts = conversions.typestore()
    reader = _open_reader(path)
    try:
        roles = _resolve(reader, path, topics)
        conn_role = {c.id: role for role, (_, _, conns) in roles.items() for c in conns}

        # Pass 1: stamps only (plus the instruction texts, which are tiny).
        stamps: Dict[str, List[int]] = {r: [] for r in _ROLES}
        recv: Dict[str, List[int]] = {r: [] for r in _ROLES}
        texts: List[str] = []
        all_conns = [c for _, _, conns in roles.values() for c in conns]
        for con, t_recv, raw in _iter_messages(reader, path, all_conns):
            role = conn_role[con.id]
            topic = roles[role][0]
            if role == 'instruction':
                try:
                    texts.append(str(ts.deserialize_cdr(raw, con.msgtype).data))
                except Exception as exc:
                    raise BagError(f'bag {path}: topic {topic}: cannot deserialize message at '
                                   f'{t_recv * 1e-9:.9f} s ({exc})') from exc
                stamp = int(t_recv)
            else:
                stamp = _header_stamp_ns(raw, path, topic)
                if stamp == 0:
                    if role != 'command':
                        raise BagError(f'bag {path}: topic {topic}: header.stamp is zero at receive time '
                                       f'{t_recv * 1e-9:.9f} s; sensor messages need a stamp to be aligned')
                    stamp = int(t_recv)  # ros2_control: zero stamp = start on receipt
            stamps[role].append(stamp)
            recv[role].append(int(t_recv))

        # Sort each topic by its stamp (bag order is receive order). (N_role,) int64 ns
        order = {r: np.argsort(np.asarray(stamps[r], dtype=np.int64), kind='stable') for r in _ROLES}
        st = {r: np.asarray(stamps[r], dtype=np.int64)[order[r]] for r in _ROLES}
        for r in _ROLES:
            if st[r].size == 0:
                raise BagError(f'bag {path}: {r} topic {roles[r][0]} has no messages')

        # Grid from the first time every topic has a message to the last command.
        t0 = max(int(st[r][0]) for r in _ROLES)
        t_end = int(st['command'][-1])
        if t_end < t0:
            raise BagError(
                f'bag {path}: no grid tick survives: the last command on {roles["command"][0]} '
                f'({t_end * 1e-9:.3f} s) precedes the first time all topics have a message ({t0 * 1e-9:.3f} s; '
                + ', '.join(f'{roles[r][0]} from {st[r][0] * 1e-9:.3f} s' for r in _ROLES) + ')')
        n_ticks = int(np.floor((t_end - t0) / period_ns + 1e-6)) + 1
        grid = t0 + np.round(np.arange(n_ticks) * period_ns).astype(np.int64)  # (G,) ns
        half = int(round(period_ns / 2))

        sel: Dict[str, np.ndarray] = {}
        keep = np.ones(n_ticks, dtype=bool)
        stale_counts: Dict[str, int] = {}
        for r in _ROLES:
            idx = np.searchsorted(st[r], grid + half, side='right') - 1  # (G,) index into sorted stamps
            missing = idx < 0
            idx_c = np.clip(idx, 0, None)
            stale = missing.copy()
            if r != 'instruction':
                stale |= (grid - st[r][idx_c]) > max_age_ns
            if stale.any():
                stale_counts[roles[r][0]] = int(stale.sum())
            keep &= ~stale
            sel[r] = idx_c
        n_kept = int(keep.sum())
        dropped = n_ticks - n_kept
        detail = ', '.join(f'{t}: {n} ticks stale' for t, n in stale_counts.items())
        if n_kept == 0:
            raise BagError(f'bag {path}: no grid tick survives at {rate:g} Hz with max age '
                           f'{max_age_ns * 1e-9:.3f} s ({n_ticks} ticks; {detail}); the topics never overlap in time')
        if dropped:
            log.warning('bag %s: dropped %d of %d grid ticks at %g Hz because a topic was older than %.3f s (%s)',
                        path, dropped, n_ticks, rate, max_age_ns * 1e-9, detail)

        grid_k = grid[keep]  # (T,)
        # Which sorted message of each topic each kept tick uses, and for joints filled from the state.
        use = {r: sel[r][keep] for r in ('image', 'joint_states', 'command', 'instruction')}
        if from_state:
            fut = np.searchsorted(st['joint_states'], grid_k + int(round(period_ns)), side='right') - 1
            use_future_js = np.clip(fut, 0, None)
        else:
            use_future_js = np.zeros(0, dtype=np.int64)

        # Pass 2: deserialize only the messages the kept ticks use, keyed by (receive ns, repeat).
        needed: Dict[str, Dict[Tuple[int, int], int]] = {}
        for r in ('image', 'joint_states', 'command'):
            extra = use_future_js if r == 'joint_states' else np.zeros(0, dtype=np.int64)
            sorted_ids = np.unique(np.concatenate([use[r], extra]))
            orig = order[r][sorted_ids]  # positions in pass-1 (bag) order
            keys = _occurrence_keys(recv[r])
            needed[r] = {keys[int(o)]: int(s) for o, s in zip(orig, sorted_ids)}
        lo = min(k[0] for r in needed for k in needed[r])
        hi = max(k[0] for r in needed for k in needed[r])
        msgs: Dict[str, Dict[int, Any]] = {r: {} for r in needed}
        seen: Dict[Tuple[str, int], int] = {}
        pass2_conns = [c for r in needed for c in roles[r][2]]
        for con, t_recv, raw in _iter_messages(reader, path, pass2_conns, start=lo, stop=hi + 1):
            r = conn_role[con.id]
            k = seen.get((r, t_recv), 0)
            seen[(r, t_recv)] = k + 1
            s = needed[r].get((int(t_recv), k))
            if s is None:
                continue
            try:
                msgs[r][s] = ts.deserialize_cdr(raw, con.msgtype)
            except Exception as exc:
                raise BagError(f'bag {path}: topic {roles[r][0]}: cannot deserialize message at '
                               f'{t_recv * 1e-9:.9f} s ({exc})') from exc
        for r in needed:
            if len(msgs[r]) != len(needed[r]):
                raise BagError(f'bag {path}: topic {roles[r][0]}: {len(needed[r]) - len(msgs[r])} messages seen '
                               f'in the first pass could not be read again (storage changed or corrupt)')
    finally:
        reader.close()

    names = embodiment.joint_names
    # Joint states (T, J)
    js_topic = roles['joint_states'][0]
    js_cache: Dict[int, np.ndarray] = {}

    def js_at(s: int) -> np.ndarray:
        if s not in js_cache:
            try:
                js_cache[s], _ = conversions.joint_state_to_arrays(msgs['joint_states'][s], names,
                                                                    source=f'bag {path}: topic {js_topic}')
            except (KeyError, ValueError) as exc:
                raise BagError(exc.args[0] if exc.args else str(exc)) from exc
        return js_cache[s]

    joint_positions = np.stack([js_at(int(s)) for s in use['joint_states']]).astype(np.float32)  # (T, J)

    # Commands -> point 0 positions in embodiment order (T, A)
    cmd_topic = roles['command'][0]
    cmd_cache: Dict[int, np.ndarray] = {}
    fill = [names.index(j) for j in from_state]

    def cmd_at(s: int) -> np.ndarray:
        if s not in cmd_cache:
            src = f'bag {path}: topic {cmd_topic}'
            try:
                jn, pos, _ = conversions.trajectory_to_arrays(msgs['command'][s], source=src)
            except ValueError as exc:
                raise BagError(str(exc)) from exc
            lookup = {n: i for i, n in enumerate(jn)}
            row = np.full(len(names), np.nan)
            for a, n in enumerate(names):
                if n in lookup:
                    row[a] = pos[0, lookup[n]]
                elif n not in from_state:
                    raise BagError(f'{src}: command lacks embodiment joint {n!r} (trajectory joint_names {jn}); '
                                   f'pass action_from_state=[{n!r}] if it is commanded on another interface')
            cmd_cache[s] = row
        return cmd_cache[s]

    actions = np.stack([cmd_at(int(s)) for s in use['command']])  # (T, A) float64
    if fill:
        future = np.stack([js_at(int(s)) for s in use_future_js])  # (T, J)
        actions[:, fill] = future[:, fill]
    if not np.all(np.isfinite(actions)):
        bad = sorted({names[a] for a in np.nonzero(~np.isfinite(actions))[1]})
        raise BagError(f'bag {path}: topic {cmd_topic}: non-finite commanded positions for joints {bad}')
    actions = actions.astype(np.float32)

    # Images (T, H, W, 3)
    img_topic, img_type, _ = roles['image']
    frames: Dict[int, np.ndarray] = {}
    first_shape: Optional[Tuple[int, int]] = None
    for s in np.unique(use['image']):
        msg = msgs['image'][int(s)]
        src = f'bag {path}: topic {img_topic}'
        try:
            if img_type == 'sensor_msgs/msg/Image':
                img = conversions.image_to_numpy(msg, source=src)
            else:
                img = conversions.compressed_image_to_numpy(msg, source=src)
        except ValueError as exc:
            raise BagError(str(exc)) from exc
        if first_shape is None:
            first_shape = img.shape[:2]
        elif img.shape[:2] != first_shape:
            raise BagError(f'{src}: frame stamped {st["image"][int(s)] * 1e-9:.9f} s is {img.shape[1]}x{img.shape[0]}, '
                           f'other frames are {first_shape[1]}x{first_shape[0]} (width x height)')
        frames[int(s)] = _resize(img, hw) if hw is not None else img
    images = np.stack([frames[int(s)] for s in use['image']])  # (T, H, W, 3) uint8

    instr_sorted = [texts[int(i)] for i in order['instruction']]
    instructions = [instr_sorted[int(s)] for s in use['instruction']]

    return Episode(source=str(path), stamps=grid_k.astype(np.float64) * 1e-9, images=images,
                   joint_positions=joint_positions, actions=actions, instructions=instructions,
                   dropped=int(dropped), joint_names=tuple(names), rate_hz=rate)


def _occurrence_keys(recv: List[int]) -> List[Tuple[int, int]]:
    """(receive ns, how many earlier messages of the topic shared that receive time), per message."""
    seen: Dict[int, int] = {}
    keys = []
    for t in recv:
        k = seen.get(t, 0)
        seen[t] = k + 1
        keys.append((int(t), k))
    return keys


def find_bags(paths: Union[PathLike, Iterable[PathLike]]) -> List[Path]:
    """Expand ``paths`` into bag directories.

    A path that holds ``metadata.yaml`` is a bag; any other directory stands for the bags directly
    inside it (sorted by name).

    Raises:
        BagError: a path does not exist, or a directory holds neither a bag nor bag directories.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out: List[Path] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise BagError(f'bag {p}: path does not exist')
        if p.is_dir() and (p / 'metadata.yaml').is_file():
            out.append(p)
        elif p.is_dir():
            bags = sorted(c for c in p.iterdir() if c.is_dir() and (c / 'metadata.yaml').is_file())
            if not bags:
                raise BagError(f'{p}: neither a rosbag2 directory (no metadata.yaml) nor a directory of bags')
            out.extend(bags)
        else:
            _check_bag_dir(p)
    return out


def read_episodes(paths: Union[PathLike, Iterable[PathLike]], embodiment: Embodiment,
                  topics: Optional[BagTopics] = None, **kwargs) -> List[Episode]:
    """:func:`read_episode` for each bag of :func:`find_bags` ``(paths)``, in that order.

    ``kwargs`` go to :func:`read_episode`. Raises :class:`BagError` for the first bad bag.
    """
    return [read_episode(p, embodiment, topics, **kwargs) for p in find_bags(paths)]


# ----------------------------------------------------------------------------- targets
def chunk_targets(actions: np.ndarray, chunk_size: int, *, stamps: Optional[np.ndarray] = None,
                  period_s: Optional[float] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Action-chunk targets ``actions[t : t + H]`` for every tick, padded at the end.

    Padding repeats the last real action and is flagged in ``is_pad`` (LeRobot's ``action_is_pad``).
    With ``stamps (T,)`` and ``period_s``, a chunk also stops at a gap (consecutive stamps more than
    1.5 periods apart, i.e. dropped ticks) so a target never belongs to a later stretch of the episode.

    Args:
        actions: ``(T, A)``.
        chunk_size: ``H >= 1``.

    Returns:
        ``targets (T, H, A)`` (same dtype as ``actions``), ``is_pad (T, H)`` bool.

    Raises:
        ValueError: ``actions`` not 2-D or empty, ``chunk_size < 1``, ``stamps`` of the wrong length,
            or ``stamps`` given without a positive ``period_s``.
    """
    actions = np.asarray(actions)
    if actions.ndim != 2 or actions.shape[0] == 0:
        raise ValueError(f'actions must be (T, A) with T >= 1, got shape {actions.shape}')
    h = int(chunk_size)
    if h < 1:
        raise ValueError(f'chunk_size must be >= 1, got {chunk_size}')
    t = actions.shape[0]
    seg_end = np.full(t, t - 1, dtype=np.int64)  # (T,) last index of each tick's contiguous stretch
    if stamps is not None:
        stamps = np.asarray(stamps, dtype=np.float64).reshape(-1)
        if stamps.shape[0] != t:
            raise ValueError(f'stamps has {stamps.shape[0]} entries for {t} actions')
        if period_s is None or not period_s > 0:
            raise ValueError(f'period_s must be > 0 when stamps are given, got {period_s}')
        gap_after = np.flatnonzero(np.diff(stamps) > 1.5 * period_s)  # indices i with a gap between i, i+1
        ends = np.concatenate([gap_after, [t - 1]])
        seg_end = ends[np.searchsorted(ends, np.arange(t), side='left')]
    want = np.arange(t)[:, None] + np.arange(h)[None, :]  # (T, H)
    is_pad = want > seg_end[:, None]  # (T, H)
    idx = np.minimum(want, seg_end[:, None])  # (T, H)
    return actions[idx], is_pad  # (T, H, A), (T, H)


# ----------------------------------------------------------------------------- info
def bag_info(path: PathLike) -> Dict[str, Any]:
    """Summary of a rosbag2 directory, like ``ros2 bag info``.

    Returns:
        ``{'path', 'storage', 'ros_distro', 'message_count', 'start_s', 'end_s', 'duration_s',
        'topics': {topic: {'type': str, 'count': int}}}``; times in seconds since the epoch / seconds.

    Raises:
        BagError: missing path, not a rosbag2 directory, or unreadable storage.
    """
    path = Path(path)
    reader = _open_reader(path)
    try:
        topics: Dict[str, Dict[str, Any]] = {}
        for c in reader.connections:
            entry = topics.setdefault(c.topic, {'type': c.msgtype, 'count': 0})
            entry['count'] += int(c.msgcount)
        count = int(reader.message_count)
        start = int(reader.start_time) if count else 0
        duration = int(reader.duration) if count else 0
        return {
            'path': str(path),
            'storage': _storage_id(path),
            'ros_distro': str(getattr(reader, 'ros_distro', '') or ''),
            'message_count': count,
            'start_s': start * 1e-9,
            'end_s': (start + duration) * 1e-9,
            'duration_s': duration * 1e-9,
            'topics': {t: topics[t] for t in sorted(topics)},
        }
    finally:
        reader.close()


def _storage_id(path: Path) -> str:
    import yaml
    with open(path / 'metadata.yaml', encoding='utf8') as f:
        meta = yaml.safe_load(f) or {}
    return str(meta.get('rosbag2_bagfile_information', {}).get('storage_identifier', ''))
