"""Write episodes as rosbag2 directories that ``ros2 bag info`` / ``ros2 bag play`` accept (ROS-free).

:class:`EpisodeBagWriter` wraps ``rosbags.rosbag2.Writer`` (rosbag2 format version 9, the one ROS 2 Jazzy
writes; MCAP or sqlite3 storage; CDR serialization) and records each topic with the QoS a live
``ros2 bag record`` would have stored for its publisher, so a replay with ``ros2 bag play`` offers the same
QoS (rosbag2 re-uses ``offered_qos_profiles``). The bag is built in a hidden temporary directory next to
``path`` and renamed onto ``path`` only when the writer closes without an exception, so a crash never
leaves a half-written bag under the final name.

It also writes what real recordings bring, so the reader can be tested against it: zstd compression
in the three forms ``ros2 bag record`` produces (``compression='storage'``: MCAP chunk compression,
as ``--storage-preset-profile zstd_fast``; ``'file'``: ``--compression-mode file --compression-format
zstd``, files ``<bag>_<i>.mcap.zstd``; ``'message'``: per-message zstd, sqlite3 only, as rosbag2's
MCAP plugin refuses it) and episodes split over several files (``max_bag_duration_s``, as
``--max-bag-duration``: ``<bag>_0.mcap``, ``<bag>_1.mcap``, ... under one ``metadata.yaml``).
``vla_training.bag_writer.copy_bag`` rewrites an existing bag (e.g. one recorded by ROS) message by
message into any of these forms, keeping the raw CDR bytes, receive times and offered QoS. The
writer lives here, beside the message conversions, because both ``vla_training`` (demonstrations)
and ``vla_policy`` (rollout recording in ``policy_node``) write bags.
"""
from __future__ import annotations

import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

from robot_drivers import conversions

__all__ = ['EpisodeBagWriter', 'write_episode', 'QOS_KINDS', 'DEFAULT_QOS_BY_TYPE', 'qos_profile',
           'COMPRESSIONS', 'STORAGES']

PathLike = Union[str, Path]

STORAGES = ('mcap', 'sqlite3')
# compression -> storages it works with (rosbag2: MCAP has no 'message' mode; sqlite3 no chunk compression)
COMPRESSIONS = {'none': STORAGES, 'storage': ('mcap',), 'file': STORAGES, 'message': ('sqlite3',)}

# QoS kinds, as stored by a Jazzy `ros2 bag record` for the publishers of the sample recording
# (test/data/rosbag2_jazzy_sample/*/metadata.yaml): (history, depth, reliability, durability).
# 'sensor' is rclcpp's SensorDataQoS (REP-2003), 'reliable' the rclcpp default (depth 10),
# 'latched' a transient-local depth-1 publisher (e.g. an instruction or a map, REP-2003).
QOS_KINDS: Dict[str, Tuple[str, int, str, str]] = {
    'sensor': ('keep_last', 5, 'best_effort', 'volatile'),
    'reliable': ('keep_last', 10, 'reliable', 'volatile'),
    'latched': ('keep_last', 1, 'reliable', 'transient_local'),
}

# QoS kind used when a topic is not listed in ``qos``, by message type; anything else is 'reliable'.
DEFAULT_QOS_BY_TYPE: Dict[str, str] = {
    'sensor_msgs/msg/Image': 'sensor',
    'sensor_msgs/msg/CompressedImage': 'sensor',
    'sensor_msgs/msg/JointState': 'sensor',
    'std_msgs/msg/String': 'latched',
}


def qos_profile(kind: str):
    """``rosbags.interfaces.Qos`` for a kind of :data:`QOS_KINDS`.

    Deadline, lifespan and liveliness lease are "infinite" (``sec 9223372036, nsec 854775807``, how
    rmw reports ``RMW_DURATION_INFINITE``), liveliness automatic, as in the Jazzy sample's metadata.

    Raises:
        ValueError: unknown kind.
    """
    from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness, QosReliability,
                                    QosTime)
    if kind not in QOS_KINDS:
        raise ValueError(f'unknown QoS kind {kind!r}; expected one of {sorted(QOS_KINDS)}')
    history, depth, reliability, durability = QOS_KINDS[kind]
    inf = QosTime(9223372036, 854775807)
    return Qos(history=QosHistory[history.upper()], depth=depth, reliability=QosReliability[reliability.upper()],
               durability=QosDurability[durability.upper()], deadline=inf, lifespan=inf,
               liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=inf,
               avoid_ros_namespace_conventions=False)


class EpisodeBagWriter:
    """Context manager that writes one rosbag2 directory atomically.

    Example::

        with EpisodeBagWriter('episode_0001', storage='mcap') as w:
            w.add_topic('/joint_states', 'sensor_msgs/msg/JointState')
            w.write('/joint_states', msg, t_sec)

    Args:
        path: the bag directory to create; must not exist (its parent is created if needed).
        storage: ``'mcap'`` or ``'sqlite3'``.
        qos: ``{topic: 'sensor' | 'reliable' | 'latched'}``; unlisted topics get
            :data:`DEFAULT_QOS_BY_TYPE` of their type, else ``'reliable'``.
        compression: ``'none'``, ``'storage'`` (MCAP zstd chunks), ``'file'`` (zstd per file) or
            ``'message'`` (zstd per message, sqlite3); see the module docstring.
        max_bag_duration_s: start a new storage file when a message's time is this many seconds
            after the first message of the current file (rosbag2 ``--max-bag-duration``); files are
            then named ``<bag>_<i>.<ext>``. ``None``: one file, named as rosbags names it.

    Raises:
        FileExistsError: ``path`` exists.
        ValueError: unknown storage, compression or QoS kind, a compression the storage lacks, or a
            non-positive ``max_bag_duration_s``.
    """

    def __init__(self, path: PathLike, *, storage: str = 'mcap', qos: Optional[Dict[str, str]] = None,
                 compression: str = 'none', max_bag_duration_s: Optional[float] = None) -> None:
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f'bag {self.path} exists already; rosbag2 directories are never overwritten')
        if storage not in STORAGES:
            raise ValueError(f'bag {self.path}: storage must be one of {STORAGES}, got {storage!r}')
        if compression not in COMPRESSIONS:
            raise ValueError(f'bag {self.path}: compression must be one of {sorted(COMPRESSIONS)}, got {compression!r}')
        if storage not in COMPRESSIONS[compression]:
            raise ValueError(f'bag {self.path}: compression {compression!r} needs storage '
                             f'{" or ".join(COMPRESSIONS[compression])}, not {storage!r}')
        if max_bag_duration_s is not None and not (math.isfinite(max_bag_duration_s) and max_bag_duration_s > 0):
            raise ValueError(f'bag {self.path}: max_bag_duration_s must be > 0, got {max_bag_duration_s}')
        self.storage = storage
        self.compression = compression
        self.max_bag_duration_ns = None if max_bag_duration_s is None else int(round(max_bag_duration_s * 1e9))
        self.qos = dict(qos or {})
        for topic, kind in self.qos.items():
            if kind not in QOS_KINDS:
                raise ValueError(f'bag {self.path}: QoS for {topic} must be one of {sorted(QOS_KINDS)}, got {kind!r}')
        self._tmp: Optional[Path] = None
        self._writer = None
        self._parts: List[Path] = []          # bag directories of the files written so far
        self._part_start_ns: Optional[int] = None
        self._specs: Dict[str, Dict[str, Any]] = {}   # topic -> add_connection kwargs
        self._conns: Dict[str, Tuple[Any, str]] = {}
        self._closed = False

    # -- lifecycle
    def __enter__(self) -> 'EpisodeBagWriter':
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    def open(self) -> None:
        """Create the temporary bag next to ``path``. Raises RuntimeError if already opened."""
        if self._writer is not None or self._closed:
            raise RuntimeError(f'bag {self.path}: writer already opened')
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The bag is built as <tmp>/<name>/ so its storage file is named after the final bag
        # (rosbags names it <dir name>.mcap / .db3 and lists it in metadata.yaml).
        self._tmp = self.path.parent / f'.{self.path.name}.tmp-{uuid.uuid4().hex[:12]}'
        self._tmp.mkdir()
        try:
            self._open_part()
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise

    def _open_part(self) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.rosbag2.enums import CompressionFormat, CompressionMode
        assert self._tmp is not None
        if self.max_bag_duration_ns is None:
            part = self._tmp / self.path.name
        else:  # rosbag2's split naming: <bag>_<index>.<ext>
            part = self._tmp / 'parts' / f'{self.path.name}_{len(self._parts)}'
            part.parent.mkdir(exist_ok=True)
        plugin = StoragePlugin.MCAP if self.storage == 'mcap' else StoragePlugin.SQLITE3
        writer = Writer(part, version=9, storage_plugin=plugin)
        if self.compression != 'none':
            writer.set_compression(CompressionMode[self.compression.upper()], CompressionFormat.ZSTD)
        writer.open()
        self._writer = writer
        self._parts.append(part)
        self._part_start_ns = None
        for topic, spec in self._specs.items():
            self._conns[topic] = (writer.add_connection(topic, **spec), spec['msgtype'])

    def close(self) -> Path:
        """Finalize (index, ``metadata.yaml``) and rename the temporary bag onto ``path``; returns ``path``.

        Raises:
            RuntimeError: not open. FileExistsError: ``path`` appeared meanwhile (the temp bag is removed).
        """
        w = self._require_open()
        try:
            w.close()
            self._writer = None
            if self.max_bag_duration_ns is not None:
                _merge_parts(self._parts, self._tmp / self.path.name)
            # rename(2) of a directory is atomic and fails if the target is a non-empty directory.
            if self.path.exists():
                raise FileExistsError(f'bag {self.path} appeared while writing; not overwriting it')
            os.rename(self._tmp / self.path.name, self.path)
        except BaseException:
            self.abort()
            raise
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Discard everything written; nothing is left at ``path`` or in the temporary directory."""
        w, self._writer = self._writer, None
        if w is not None:
            try:
                w.abort()
            except Exception:  # the temp dir is removed below either way
                pass
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
        self._closed = True

    def _require_open(self):
        if self._writer is None:
            raise RuntimeError(f'bag {self.path}: writer is not open (use it as a context manager)')
        return self._writer

    # -- content
    def add_topic(self, topic: str, msgtype: str, qos: Optional[str] = None) -> None:
        """Declare ``topic`` of type ``msgtype`` (e.g. ``'sensor_msgs/msg/Image'``).

        ``qos`` overrides the constructor's mapping for this topic.

        Raises:
            ValueError: topic not absolute, already added, type unknown to the Jazzy type store, bad QoS kind.
        """
        self._require_open()
        self._check_new_topic(topic)
        ts = conversions.typestore()
        if msgtype not in ts.types:
            raise ValueError(f'bag {self.path}: topic {topic}: message type {msgtype!r} is not in the ROS 2 '
                             f'Jazzy type store (write it as "pkg/msg/Type")')
        kind = qos or self.qos.get(topic) or DEFAULT_QOS_BY_TYPE.get(msgtype, 'reliable')
        self._add(topic, dict(msgtype=msgtype, typestore=ts, serialization_format='cdr',
                              offered_qos_profiles=[qos_profile(kind)]))

    def add_connection_like(self, connection) -> None:
        """Declare a topic exactly as a ``rosbags`` reader connection has it (type, definition, hash, QoS).

        Raises:
            ValueError: topic already added.
        """
        self._require_open()
        self._check_new_topic(connection.topic)
        msgdef = connection.msgdef
        spec: Dict[str, Any] = dict(msgtype=connection.msgtype,
                                    serialization_format=connection.ext.serialization_format,
                                    offered_qos_profiles=list(connection.ext.offered_qos_profiles))
        if getattr(msgdef, 'data', '') and connection.digest:
            spec.update(msgdef=msgdef.data, rihs01=connection.digest)
        else:
            spec['typestore'] = conversions.typestore()
        self._add(connection.topic, spec)

    def _check_new_topic(self, topic: str) -> None:
        if not isinstance(topic, str) or not topic.startswith('/'):
            raise ValueError(f'bag {self.path}: topic must be an absolute name like "/x", got {topic!r}')
        if topic in self._specs:
            raise ValueError(f'bag {self.path}: topic {topic} already added (type {self._specs[topic]["msgtype"]})')

    def _add(self, topic: str, spec: Dict[str, Any]) -> None:
        self._specs[topic] = spec
        self._conns[topic] = (self._writer.add_connection(topic, **spec), spec['msgtype'])

    def write(self, topic: str, msg: Any, t_sec: float) -> None:
        """Serialize ``msg`` (a rosbags message of the topic's type) as CDR and record it at ``t_sec``.

        ``t_sec`` is the receive/record time in seconds since the epoch (what ``ros2 bag record``
        stores as the message timestamp); header stamps inside ``msg`` are kept as they are.

        Raises:
            KeyError: topic not added. ValueError: ``t_sec`` negative/non-finite, or ``msg`` of another type.
        """
        self._require_open()
        msgtype = self._topic_type(topic)
        got = getattr(msg, '__msgtype__', None)
        if got != msgtype:
            raise ValueError(f'bag {self.path}: topic {topic} takes {msgtype}, got a message of type {got or type(msg)}')
        t = float(t_sec)
        if not math.isfinite(t) or t < 0:
            raise ValueError(f'bag {self.path}: topic {topic}: time must be finite and >= 0 s, got {t_sec}')
        data = conversions.typestore().serialize_cdr(msg, msgtype)
        self.write_raw(topic, data, int(round(t * 1e9)))

    def write_raw(self, topic: str, data: bytes, t_ns: int) -> None:
        """Record already-serialized CDR ``data`` at receive time ``t_ns`` (ns since the epoch).

        Raises:
            KeyError: topic not added. ValueError: negative time.
        """
        self._require_open()
        self._topic_type(topic)
        if int(t_ns) < 0:
            raise ValueError(f'bag {self.path}: topic {topic}: time must be >= 0 ns, got {t_ns}')
        t_ns = int(t_ns)
        if self.max_bag_duration_ns is not None:
            if self._part_start_ns is None:
                self._part_start_ns = t_ns
            elif t_ns - self._part_start_ns >= self.max_bag_duration_ns:
                self._writer.close()
                self._open_part()
                self._part_start_ns = t_ns
        self._writer.write(self._conns[topic][0], t_ns, data)

    def _topic_type(self, topic: str) -> str:
        if topic not in self._conns:
            raise KeyError(f'bag {self.path}: topic {topic} was not added (call add_topic first); '
                           f'added: {sorted(self._conns)}')
        return self._conns[topic][1]

    @property
    def topics(self) -> Dict[str, str]:
        """``{topic: msgtype}`` added so far."""
        return {t: m for t, (_, m) in self._conns.items()}


def _merge_parts(parts: List[Path], dest: Path) -> None:
    """Move the storage files of the part bags into ``dest`` under one ``metadata.yaml``, as rosbag2
    lays out a split recording (files in order, counts summed per topic, overall start and duration)."""
    import yaml
    dest.mkdir()
    metas = []
    for part in parts:
        with open(part / 'metadata.yaml', encoding='utf8') as f:
            metas.append(yaml.safe_load(f)['rosbag2_bagfile_information'])
        for rel in metas[-1]['relative_file_paths']:
            os.rename(part / rel, dest / rel)
    merged = dict(metas[0])
    counted = [m for m in metas if m['message_count']]
    start = min((m['starting_time']['nanoseconds_since_epoch'] for m in counted), default=0)
    end = max((m['starting_time']['nanoseconds_since_epoch'] + m['duration']['nanoseconds'] for m in counted),
              default=0)
    topics: Dict[str, Dict[str, Any]] = {}
    for m in metas:
        for entry in m['topics_with_message_count']:
            name = entry['topic_metadata']['name']
            if name in topics:
                topics[name]['message_count'] += entry['message_count']
            else:
                topics[name] = {'topic_metadata': entry['topic_metadata'], 'message_count': entry['message_count']}
    merged.update(
        relative_file_paths=[r for m in metas for r in m['relative_file_paths']],
        files=[f for m in metas for f in m['files']],
        message_count=sum(m['message_count'] for m in metas),
        starting_time={'nanoseconds_since_epoch': start},
        duration={'nanoseconds': end - start},
        topics_with_message_count=list(topics.values()),
    )
    with open(dest / 'metadata.yaml', 'w', encoding='utf8') as f:
        yaml.safe_dump({'rosbag2_bagfile_information': merged}, f, sort_keys=False)


def write_episode(path: PathLike, messages: Iterable[Tuple[str, str, Any, float]], storage: str = 'mcap',
                  qos: Optional[Dict[str, str]] = None, *, compression: str = 'none',
                  max_bag_duration_s: Optional[float] = None) -> Path:
    """Write ``(topic, msgtype, msg, t_sec)`` tuples into a new bag at ``path``; returns ``path``.

    Topics are added on first appearance. Nothing is left at ``path`` if any message fails.
    ``compression`` and ``max_bag_duration_s`` as :class:`EpisodeBagWriter`.

    Raises:
        FileExistsError: ``path`` exists. ValueError: a topic appears with two types, or as in
            :meth:`EpisodeBagWriter.write`.
    """
    with EpisodeBagWriter(path, storage=storage, qos=qos, compression=compression,
                          max_bag_duration_s=max_bag_duration_s) as w:
        for topic, msgtype, msg, t_sec in messages:
            have = w.topics.get(topic)
            if have is None:
                w.add_topic(topic, msgtype)
            elif have != msgtype:
                raise ValueError(f'bag {path}: topic {topic} given as {msgtype} after {have}')
            w.write(topic, msg, t_sec)
    return Path(path)
