"""Write episodes as rosbag2 directories that ``ros2 bag info`` / ``ros2 bag play`` accept (ROS-free).

:class:`EpisodeBagWriter` wraps ``rosbags.rosbag2.Writer`` (rosbag2 format version 9, the one ROS 2 Jazzy
writes; MCAP or sqlite3 storage; CDR serialization) and records each topic with the QoS a live
``ros2 bag record`` would have stored for its publisher, so a replay with ``ros2 bag play`` offers the same
QoS (rosbag2 re-uses ``offered_qos_profiles``). The bag is built in a hidden temporary directory next to
``path`` and renamed onto ``path`` only when the writer closes without an exception, so a crash never
leaves a half-written bag under the final name.
"""
from __future__ import annotations

import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Tuple, Union

from robot_drivers import conversions

from .bag_dataset import bag_info

__all__ = ['EpisodeBagWriter', 'write_episode', 'bag_info', 'QOS_KINDS', 'DEFAULT_QOS_BY_TYPE', 'qos_profile']

PathLike = Union[str, Path]

STORAGES = ('mcap', 'sqlite3')

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

    Raises:
        FileExistsError: ``path`` exists.
        ValueError: unknown storage or QoS kind.
    """

    def __init__(self, path: PathLike, *, storage: str = 'mcap', qos: Optional[Dict[str, str]] = None) -> None:
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f'bag {self.path} exists already; rosbag2 directories are never overwritten')
        if storage not in STORAGES:
            raise ValueError(f'bag {self.path}: storage must be one of {STORAGES}, got {storage!r}')
        self.storage = storage
        self.qos = dict(qos or {})
        for topic, kind in self.qos.items():
            if kind not in QOS_KINDS:
                raise ValueError(f'bag {self.path}: QoS for {topic} must be one of {sorted(QOS_KINDS)}, got {kind!r}')
        self._tmp: Optional[Path] = None
        self._writer = None
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
        from rosbags.rosbag2 import StoragePlugin, Writer
        if self._writer is not None or self._closed:
            raise RuntimeError(f'bag {self.path}: writer already opened')
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The bag is built as <tmp>/<name>/ so its storage file is named after the final bag
        # (rosbags names it <dir name>.mcap / .db3 and lists it in metadata.yaml).
        self._tmp = self.path.parent / f'.{self.path.name}.tmp-{uuid.uuid4().hex[:12]}'
        self._tmp.mkdir()
        plugin = StoragePlugin.MCAP if self.storage == 'mcap' else StoragePlugin.SQLITE3
        try:
            writer = Writer(self._tmp / self.path.name, version=9, storage_plugin=plugin)
            writer.open()
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise
        self._writer = writer

    def close(self) -> Path:
        """Finalize (index, ``metadata.yaml``) and rename the temporary bag onto ``path``; returns ``path``.

        Raises:
            RuntimeError: not open. FileExistsError: ``path`` appeared meanwhile (the temp bag is removed).
        """
        w = self._require_open()
        try:
            w.close()
            self._writer = None
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
        w = self._require_open()
        if not isinstance(topic, str) or not topic.startswith('/'):
            raise ValueError(f'bag {self.path}: topic must be an absolute name like "/x", got {topic!r}')
        if topic in self._conns:
            raise ValueError(f'bag {self.path}: topic {topic} already added (type {self._conns[topic][1]})')
        ts = conversions.typestore()
        if msgtype not in ts.types:
            raise ValueError(f'bag {self.path}: topic {topic}: message type {msgtype!r} is not in the ROS 2 '
                             f'Jazzy type store (write it as "pkg/msg/Type")')
        kind = qos or self.qos.get(topic) or DEFAULT_QOS_BY_TYPE.get(msgtype, 'reliable')
        conn = w.add_connection(topic, msgtype, typestore=ts, serialization_format='cdr',
                                offered_qos_profiles=[qos_profile(kind)])
        self._conns[topic] = (conn, msgtype)

    def write(self, topic: str, msg: Any, t_sec: float) -> None:
        """Serialize ``msg`` (a rosbags message of the topic's type) as CDR and record it at ``t_sec``.

        ``t_sec`` is the receive/record time in seconds since the epoch (what ``ros2 bag record``
        stores as the message timestamp); header stamps inside ``msg`` are kept as they are.

        Raises:
            KeyError: topic not added. ValueError: ``t_sec`` negative/non-finite, or ``msg`` of another type.
        """
        w = self._require_open()
        if topic not in self._conns:
            raise KeyError(f'bag {self.path}: topic {topic} was not added (call add_topic first); '
                           f'added: {sorted(self._conns)}')
        conn, msgtype = self._conns[topic]
        got = getattr(msg, '__msgtype__', None)
        if got != msgtype:
            raise ValueError(f'bag {self.path}: topic {topic} takes {msgtype}, got a message of type {got or type(msg)}')
        t = float(t_sec)
        if not math.isfinite(t) or t < 0:
            raise ValueError(f'bag {self.path}: topic {topic}: time must be finite and >= 0 s, got {t_sec}')
        data = conversions.typestore().serialize_cdr(msg, msgtype)
        w.write(conn, int(round(t * 1e9)), data)

    @property
    def topics(self) -> Dict[str, str]:
        """``{topic: msgtype}`` added so far."""
        return {t: m for t, (_, m) in self._conns.items()}


def write_episode(path: PathLike, messages: Iterable[Tuple[str, str, Any, float]], storage: str = 'mcap',
                  qos: Optional[Dict[str, str]] = None) -> Path:
    """Write ``(topic, msgtype, msg, t_sec)`` tuples into a new bag at ``path``; returns ``path``.

    Topics are added on first appearance. Nothing is left at ``path`` if any message fails.

    Raises:
        FileExistsError: ``path`` exists. ValueError: a topic appears with two types, or as in
            :meth:`EpisodeBagWriter.write`.
    """
    with EpisodeBagWriter(path, storage=storage, qos=qos) as w:
        for topic, msgtype, msg, t_sec in messages:
            have = w.topics.get(topic)
            if have is None:
                w.add_topic(topic, msgtype)
            elif have != msgtype:
                raise ValueError(f'bag {path}: topic {topic} given as {msgtype} after {have}')
            w.write(topic, msg, t_sec)
    return Path(path)
