"""Reading rosbag2 recordings: bag -> per-topic time series (ROS-free; MCAP and sqlite3).

This is the first of the three stages of :func:`vla_training.bag_dataset.read_episode`:

1. **reading** (this module): open the bag, check its topics, and read each topic's stamps
   (:func:`read_stamps`); later fetch only the messages a grid uses (:func:`read_selected`).
2. **alignment** (:mod:`vla_training.alignment`): time series -> control-rate ticks.
3. **training targets** (:mod:`vla_training.targets`): commands / joint states -> actions, chunks.

What real recordings bring is handled by ``rosbags.rosbag2.Reader`` underneath:

* zstd compression in each of the forms ``ros2 bag record`` writes: MCAP chunk compression
  (``--storage-preset-profile zstd_fast`` / ``zstd_small``), whole-file compression
  (``--compression-mode file --compression-format zstd``: ``<bag>_0.mcap.zstd``) and, for sqlite3,
  per-message compression (``--compression-mode message``). rosbags decompresses with its own zstd
  dependency (``backports.zstd`` / Python 3.14's ``compression.zstd``).
* an episode split over several files by ``--max-bag-duration`` / ``--max-bag-size``: one directory
  with ``<bag>_0.mcap``, ``<bag>_1.mcap``, ... listed in one ``metadata.yaml``. Messages are read
  file after file, and every pass reads them in the same order, so a message is identified by its
  receive time and how many messages of its topic shared that receive time before it.

Stamps are ``header.stamp`` for every type with a header, parsed straight from the CDR bytes; a
``std_msgs/String`` (the instruction) has none, so its receive time is used. A JointTrajectory with a
zero stamp means "start on receipt" (ros2_control ``joint_trajectory_controller``), so its receive
time is used too; a zero stamp on a sensor topic is an error.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np

from robot_drivers import conversions

__all__ = [
    'BagError',
    'BagTopics',
    'TopicSeries',
    'BagStamps',
    'IMAGE_TYPES',
    'ROLES',
    'DEFAULT_CAMERA',
    'open_bag',
    'resolve_topics',
    'read_stamps',
    'read_selected',
    'find_bags',
    'bag_info',
]

PathLike = Union[str, Path]

IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')
JOINT_STATE_TYPE = 'sensor_msgs/msg/JointState'
STRING_TYPE = 'std_msgs/msg/String'
TRAJECTORY_TYPE = 'trajectory_msgs/msg/JointTrajectory'

# role -> accepted message types
EXPECTED_TYPES: Dict[str, Tuple[str, ...]] = {
    'image': IMAGE_TYPES,
    'joint_states': (JOINT_STATE_TYPE,),
    'instruction': (STRING_TYPE,),
    'command': (TRAJECTORY_TYPE,),
}
ROLES = ('image', 'joint_states', 'instruction', 'command')
#: Camera name of the single ``image`` topic (``VLAConfig.camera_names`` default).
DEFAULT_CAMERA = 'front'


def expected_types(role: str) -> Tuple[str, ...]:
    """Accepted message types of ``role`` (a camera role ``image/<camera>`` is an image role)."""
    return EXPECTED_TYPES['image' if role.startswith('image/') else role]


def describe_role(role: str) -> str:
    """``role`` as error messages say it: ``image``, ``camera 'wrist' image``, ``joint_states``, ..."""
    if role.startswith('image/'):
        return f"camera {role.split('/', 1)[1]!r} image"
    return role


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
            ``None`` when no command was recorded (kinesthetic teaching, a leader arm driving the
            follower's controller directly): every action is then the next measured joint state.
        images: several cameras, ``{camera name: image topic}`` in the model's camera order (e.g.
            ``{front: /camera/image_raw, wrist: /wrist_camera/image_raw}``); each topic is aligned
            to the control ticks like ``image``. ``None`` (default): one camera, ``image``, named
            :data:`DEFAULT_CAMERA`. Give ``image`` or ``images``, not both.
    """

    image: str = '/camera/image_raw'
    joint_states: str = '/joint_states'
    instruction: str = '/vla/instruction'
    command: Optional[str] = '/arm_controller/joint_trajectory'
    images: Optional[Dict[str, str]] = None
    #: message types accepted on ``command`` besides JointTrajectory: the output types of the
    #: embodiment's groups (set by :func:`vla_training.bag_dataset.read_episode`, not from YAML)
    native_command_types: Tuple[str, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: Optional[Dict[str, Any]]) -> 'BagTopics':
        """Build from a YAML mapping (``command: null`` = no command topic).

        ``images`` is a mapping ``{camera name: topic}`` (several cameras, see the class).

        Raises:
            ValueError: unknown keys, a value that is not an absolute topic name, both ``image`` and
                ``images``, or ``images`` that is not a non-empty mapping of names to topics.
        """
        d = dict(d or {})
        known = set(cls.__dataclass_fields__) - {'native_command_types'}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f'unknown bag topic keys {unknown}; expected some of {sorted(known)}')
        if d.get('images') is None:
            d.pop('images', None)
        elif 'image' in d:
            raise ValueError(f"bag topics: give either image ({d['image']!r}) or images ({d['images']!r}), not both")
        for k, v in d.items():
            if k == 'command' and v is None:
                continue
            if k == 'images':
                if not isinstance(v, dict) or not v:
                    raise ValueError(f'bag topic images must map camera names to topics, e.g. '
                                     f'{{front: /camera/image_raw, wrist: /wrist_camera/image_raw}}, got {v!r}')
                for cam, t in v.items():
                    if not isinstance(cam, str) or not cam or not isinstance(t, str) or not t.startswith('/'):
                        raise ValueError(f'bag topic images[{cam!r}] must be an absolute topic name like "/x", '
                                         f'got {t!r}')
                continue
            if not isinstance(v, str) or not v.startswith('/'):
                raise ValueError(f'bag topic {k!r} must be an absolute topic name like "/x", got {v!r}')
        return cls(**d)

    def __post_init__(self) -> None:
        if self.images is not None:
            self.images = {str(k): str(v) for k, v in dict(self.images).items()}
            if not self.images:
                raise ValueError('bag topics: images is empty; name at least one camera (or use image)')
            topics = list(self.images.values())
            dup = sorted({t for t in topics if topics.count(t) > 1})
            if dup:
                raise ValueError(f'bag topics: cameras {self.images} share the topic(s) {dup}; '
                                 f'each camera needs its own topic')

    def cameras(self) -> Dict[str, str]:
        """``{camera name: image topic}`` in camera order (one camera, :data:`DEFAULT_CAMERA`, without ``images``)."""
        return dict(self.images) if self.images else {DEFAULT_CAMERA: self.image}

    def camera_roles(self) -> Dict[str, str]:
        """``{camera name: role}``: the role is ``'image'`` for the single ``image`` topic (as
        before several cameras existed), ``'image/<camera>'`` for each of ``images``."""
        if not self.images:
            return {DEFAULT_CAMERA: 'image'}
        return {c: f'image/{c}' for c in self.images}

    def topic(self, role: str) -> Optional[str]:
        """The topic of ``role`` (a name of :data:`ROLES` or a camera role ``image/<camera>``)."""
        if role.startswith('image/'):
            return self.cameras()[role.split('/', 1)[1]]
        return getattr(self, role)

    @classmethod
    def from_robot_config(cls, path: PathLike) -> 'BagTopics':
        """The topics a robot's parameter file (``config/<robot>.yaml``) deploys with.

        image / joint states / instruction are ``policy_node``'s; the command is ``arm_driver_node``'s
        ``output_topic`` (what the controller executed; see
        :class:`robot_drivers.robot_config.RobotTopics`). When ``policy_node``'s ``cameras``
        parameter is set (``name=topic`` pairs, see ``vla_policy.runtime.RuntimeConfig.cameras``),
        those cameras are ``images`` (the model's cameras as deployed), else ``image_topic`` is ``image``.

        Raises:
            FileNotFoundError: no such file. ValueError: a missing section or parameter, or nodes
                that disagree on a topic (see ``RobotTopics.from_params_file``).
        """
        from robot_drivers.robot_config import RobotTopics
        rt = RobotTopics.from_params_file(path)
        if rt.cameras:
            return cls(images=dict(rt.cameras), joint_states=rt.joint_states, instruction=rt.instruction,
                       command=rt.controller_command)
        return cls(image=rt.image, joint_states=rt.joint_states, instruction=rt.instruction,
                   command=rt.controller_command)

    def as_dict(self) -> Dict[str, Any]:
        """The YAML mapping (:meth:`from_dict` reads it back): ``image`` for one camera, ``images`` for several."""
        d: Dict[str, Any] = {r: getattr(self, r) for r in ROLES}
        if self.images:
            del d['image']
            d['images'] = dict(self.images)
        return d

    def roles(self) -> Tuple[str, ...]:
        """The roles with a topic, in :data:`ROLES` order (``command`` left out when ``None``); the
        image role is one per camera (:meth:`camera_roles`)."""
        out: List[str] = []
        for r in ROLES:
            if r == 'image':
                out.extend(self.camera_roles().values())
            elif getattr(self, r) is not None:
                out.append(r)
        return tuple(out)


@dataclass
class TopicSeries:
    """One topic's messages, in bag (receive) order and sorted by stamp.

    Attributes:
        topic, msgtype: as in the bag.
        connections: the rosbags connections of the topic.
        stamps: ``int64 (N,)`` ns, sorted ascending (header stamp, or receive time, see the module).
        order: ``int64 (N,)``: ``stamps[i]`` is the ``order[i]``-th message in bag order.
        recv: ``(N,)`` receive times in ns, in bag order.
        texts: the ``data`` strings in bag order (instruction only, else empty).
    """

    topic: str
    msgtype: str
    connections: list
    stamps: np.ndarray
    order: np.ndarray
    recv: List[int] = field(default_factory=list)
    texts: List[str] = field(default_factory=list)

    def text_at(self, sorted_index: int) -> str:
        """The instruction text of the ``sorted_index``-th message by stamp."""
        return self.texts[int(self.order[int(sorted_index)])]


@dataclass
class BagStamps:
    """Result of :func:`read_stamps`: ``{role: TopicSeries}`` for the roles that have a topic."""

    path: Path
    series: Dict[str, TopicSeries]

    def __getitem__(self, role: str) -> TopicSeries:
        return self.series[role]


# ----------------------------------------------------------------------------- bag access
def check_bag_dir(path: Path) -> None:
    """Raise :class:`BagError` unless ``path`` is a rosbag2 directory (holds ``metadata.yaml``)."""
    if not path.exists():
        raise BagError(f'bag {path}: path does not exist')
    if not path.is_dir():
        hint = ' (pass the bag directory, not the file inside it)' if (path.parent / 'metadata.yaml').is_file() else ''
        raise BagError(f'bag {path}: not a rosbag2 directory{hint}')
    if not (path / 'metadata.yaml').is_file():
        raise BagError(f'bag {path}: not a rosbag2 directory (no metadata.yaml)')


def open_bag(path: Path):
    """Open a ``rosbags.rosbag2.Reader``; every failure (bad metadata, truncated MCAP, corrupt sqlite) -> BagError."""
    from rosbags.rosbag2 import Reader
    check_bag_dir(path)
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # rosbags raises ReaderError, OSError, YAML, zstd and storage errors
        raise BagError(f'bag {path}: cannot open ({type(exc).__name__}: {exc})') from exc
    return reader


def iter_messages(reader, path: Path, connections, **kw) -> Iterator[Tuple[Any, int, bytes]]:
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


def header_stamp_ns(raw: bytes, path: Path, topic: str) -> int:
    """``header.stamp`` in ns read straight from CDR bytes.

    Every type with a header here starts with ``std_msgs/Header``, whose first field is
    ``builtin_interfaces/Time {int32 sec, uint32 nanosec}``, right after the 4-byte CDR
    encapsulation header (byte 1: 0 = big endian, 1 = little endian; OMG DDS-XTypes 7.6.3.1.2).
    """
    if len(raw) < 12 or raw[0] != 0 or raw[1] not in (0, 1):
        raise BagError(f'bag {path}: topic {topic}: message is not CDR-encoded or too short ({len(raw)} bytes)')
    sec, nsec = struct.unpack_from('<iI' if raw[1] == 1 else '>iI', raw, 4)
    return int(sec) * 1_000_000_000 + int(nsec)


def has_header(ts: Any, msgtype: str) -> bool:
    """Whether ``msgtype``'s first field is a ``std_msgs/Header`` named ``header`` (type store lookup)."""
    fields = ts.fielddefs[msgtype][1]
    return bool(fields) and fields[0][0] == 'header'


def resolve_topics(reader, path: Path, topics: BagTopics) -> Dict[str, Tuple[str, str, list]]:
    """role -> (topic, msgtype, connections) for :meth:`BagTopics.roles`.

    Raises:
        BagError: a topic absent (the text lists the bag's topics), of the wrong type, or empty.
    """
    by_topic: Dict[str, list] = {}
    for c in reader.connections:
        by_topic.setdefault(c.topic, []).append(c)
    available = ', '.join(f'{t} [{by_topic[t][0].msgtype}]' for t in sorted(by_topic)) or 'none'
    out = {}
    for role in topics.roles():
        topic = topics.topic(role)
        what = describe_role(role)
        conns = by_topic.get(topic)
        if not conns:
            raise BagError(f'bag {path}: {what} topic {topic} is not in the bag; it has: {available}')
        types = sorted({c.msgtype for c in conns})
        native_command = role == 'command' and len(types) == 1 and types[0] in topics.native_command_types
        if len(types) != 1 or (types[0] not in expected_types(role) and not native_command):
            raise BagError(f'bag {path}: {what} topic {topic} has type {" / ".join(types)}, '
                           f'expected {" or ".join(expected_types(role))}')
        if sum(int(c.msgcount) for c in conns) == 0:
            raise BagError(f'bag {path}: {what} topic {topic} has no messages')
        out[role] = (topic, types[0], conns)
    return out


# ----------------------------------------------------------------------------- the two passes
def read_stamps(reader, path: Path, topics: BagTopics) -> BagStamps:
    """Pass 1: every message's stamp per role (and the instruction texts, which are tiny).

    Nothing but the header bytes of images, joint states and commands is parsed here.

    Raises:
        BagError: as :func:`resolve_topics`; a message that is not CDR; a zero ``header.stamp`` on a
            sensor topic; an instruction that does not deserialize; corrupt storage.
    """
    ts = conversions.typestore()
    roles = resolve_topics(reader, path, topics)
    conn_role = {c.id: role for role, (_, _, conns) in roles.items() for c in conns}
    stamps: Dict[str, List[int]] = {r: [] for r in roles}
    recv: Dict[str, List[int]] = {r: [] for r in roles}
    texts: List[str] = []
    all_conns = [c for _, _, conns in roles.values() for c in conns]
    for con, t_recv, raw in iter_messages(reader, path, all_conns):
        role = conn_role[con.id]
        topic = roles[role][0]
        if role == 'instruction':
            try:
                texts.append(str(ts.deserialize_cdr(raw, con.msgtype).data))
            except Exception as exc:
                raise BagError(f'bag {path}: topic {topic}: cannot deserialize message at '
                               f'{t_recv * 1e-9:.9f} s ({exc})') from exc
            stamp = int(t_recv)
        elif not has_header(ts, roles[role][1]):
            stamp = int(t_recv)  # a native command without a header (Float64MultiArray): receive time
        else:
            stamp = header_stamp_ns(raw, path, topic)
            if stamp == 0:
                if role != 'command':
                    raise BagError(f'bag {path}: topic {topic}: header.stamp is zero at receive time '
                                   f'{t_recv * 1e-9:.9f} s; sensor messages need a stamp to be aligned')
                stamp = int(t_recv)  # ros2_control: zero stamp = start on receipt
        stamps[role].append(stamp)
        recv[role].append(int(t_recv))

    series: Dict[str, TopicSeries] = {}
    for r, (topic, msgtype, conns) in roles.items():
        raw_st = np.asarray(stamps[r], dtype=np.int64)
        if raw_st.size == 0:
            raise BagError(f'bag {path}: {describe_role(r)} topic {topic} has no messages')
        order = np.argsort(raw_st, kind='stable')  # bag order is receive order; sort by stamp
        series[r] = TopicSeries(topic=topic, msgtype=msgtype, connections=conns, stamps=raw_st[order],
                                order=order, recv=recv[r], texts=texts if r == 'instruction' else [])
    return BagStamps(path=path, series=series)


def _occurrence_keys(recv: List[int]) -> List[Tuple[int, int]]:
    """(receive ns, how many earlier messages of the topic shared that receive time), per message."""
    seen: Dict[int, int] = {}
    keys = []
    for t in recv:
        k = seen.get(t, 0)
        seen[t] = k + 1
        keys.append((int(t), k))
    return keys


def read_selected(reader, stamps: BagStamps, wanted: Dict[str, Iterable[int]]) -> Dict[str, Dict[int, Any]]:
    """Pass 2: deserialize only the messages ``wanted[role]`` (indices into the stamp-sorted series).

    Returns:
        ``{role: {sorted index: deserialized message}}``.

    Raises:
        BagError: a message that does not deserialize, or one seen in pass 1 that is gone now.
    """
    path = stamps.path
    ts = conversions.typestore()
    needed: Dict[str, Dict[Tuple[int, int], int]] = {}
    for r, ids in wanted.items():
        s = stamps[r]
        sorted_ids = np.unique(np.asarray(list(ids), dtype=np.int64))
        keys = _occurrence_keys(s.recv)
        needed[r] = {keys[int(o)]: int(i) for o, i in zip(s.order[sorted_ids], sorted_ids)}
    msgs: Dict[str, Dict[int, Any]] = {r: {} for r in needed}
    all_keys = [k for r in needed for k in needed[r]]
    if not all_keys:
        return msgs
    lo = min(k[0] for k in all_keys)
    hi = max(k[0] for k in all_keys)
    conn_role = {c.id: r for r in needed for c in stamps[r].connections}
    seen: Dict[Tuple[str, int], int] = {}
    conns = [c for r in needed for c in stamps[r].connections]
    for con, t_recv, raw in iter_messages(reader, path, conns, start=lo, stop=hi + 1):
        r = conn_role[con.id]
        k = seen.get((r, t_recv), 0)
        seen[(r, t_recv)] = k + 1
        i = needed[r].get((int(t_recv), k))
        if i is None:
            continue
        try:
            msgs[r][i] = ts.deserialize_cdr(raw, con.msgtype)
        except Exception as exc:
            raise BagError(f'bag {path}: topic {stamps[r].topic}: cannot deserialize message at '
                           f'{t_recv * 1e-9:.9f} s ({exc})') from exc
    for r in needed:
        if len(msgs[r]) != len(needed[r]):
            raise BagError(f'bag {path}: topic {stamps[r].topic}: {len(needed[r]) - len(msgs[r])} messages seen '
                           f'in the first pass could not be read again (storage changed or corrupt)')
    return msgs


# ----------------------------------------------------------------------------- finding and describing bags
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
            check_bag_dir(p)
    return out


def bag_info(path: PathLike) -> Dict[str, Any]:
    """Summary of a rosbag2 directory, like ``ros2 bag info``.

    Returns:
        ``{'path', 'storage', 'ros_distro', 'message_count', 'start_s', 'end_s', 'duration_s',
        'files', 'compression', 'topics': {topic: {'type': str, 'count': int}}}``; times in seconds
        since the epoch / seconds; ``files`` the storage file names, ``compression`` e.g.
        ``'zstd (file)'`` or ``''`` (MCAP chunk compression is inside the file and not shown here).

    Raises:
        BagError: missing path, not a rosbag2 directory, or unreadable storage.
    """
    path = Path(path)
    reader = open_bag(path)
    try:
        topics: Dict[str, Dict[str, Any]] = {}
        for c in reader.connections:
            entry = topics.setdefault(c.topic, {'type': c.msgtype, 'count': 0})
            entry['count'] += int(c.msgcount)
        count = int(reader.message_count)
        start = int(reader.start_time) if count else 0
        duration = int(reader.duration) if count else 0
        meta = _metadata(path)
        mode = str(meta.get('compression_mode', '') or '')
        fmt = str(meta.get('compression_format', '') or '')
        return {
            'path': str(path),
            'storage': str(meta.get('storage_identifier', '')),
            'ros_distro': str(getattr(reader, 'ros_distro', '') or ''),
            'message_count': count,
            'start_s': start * 1e-9,
            'end_s': (start + duration) * 1e-9,
            'duration_s': duration * 1e-9,
            'files': [str(Path(p).name) for p in meta.get('relative_file_paths', [])],
            'compression': f'{fmt} ({mode.lower()})' if mode and mode.lower() != 'none' else '',
            'topics': {t: topics[t] for t in sorted(topics)},
        }
    finally:
        reader.close()


def _metadata(path: Path) -> Dict[str, Any]:
    import yaml
    with open(path / 'metadata.yaml', encoding='utf8') as f:
        meta = yaml.safe_load(f) or {}
    return dict(meta.get('rosbag2_bagfile_information', {}) or {})
