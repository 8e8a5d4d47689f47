"""Bag writing for ``vla_training``: :func:`copy_bag` (ROS-free).

The writer itself (:class:`EpisodeBagWriter`, :func:`write_episode`, the QoS kinds) is
:mod:`robot_drivers.bag_writer`, shared with ``vla_policy``'s rollout recorder; it is re-exported
here for the recording and training code and their tests.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional, Union

from robot_drivers.bag_writer import (COMPRESSIONS, DEFAULT_QOS_BY_TYPE, QOS_KINDS, STORAGES,  # noqa: F401
                                      EpisodeBagWriter, qos_profile, write_episode)

from .bag_reader import bag_info, open_bag

__all__ = ['EpisodeBagWriter', 'write_episode', 'copy_bag', 'bag_info', 'QOS_KINDS', 'DEFAULT_QOS_BY_TYPE',
           'qos_profile', 'COMPRESSIONS']

PathLike = Union[str, Path]


def copy_bag(src: PathLike, dst: PathLike, *, storage: Optional[str] = None, compression: str = 'none',
             max_bag_duration_s: Optional[float] = None, topics: Optional[Iterable[str]] = None) -> Path:
    """Rewrite the bag ``src`` as ``dst``: same raw CDR messages, receive times, types and offered QoS.

    Args:
        storage: ``'mcap'`` / ``'sqlite3'``; default the storage of ``src``.
        compression, max_bag_duration_s: as :class:`EpisodeBagWriter`.
        topics: copy only these topics (default all).

    Returns:
        ``dst``.

    Raises:
        BagError: ``src`` unreadable. FileExistsError: ``dst`` exists. ValueError: a topic asked for
            is not in ``src``, or as :class:`EpisodeBagWriter`.
    """
    from .bag_reader import BagError, iter_messages
    src = Path(src)
    reader = open_bag(src)
    try:
        conns = list(reader.connections)
        if topics is not None:
            wanted = list(topics)
            missing = sorted(set(wanted) - {c.topic for c in conns})
            if missing:
                raise ValueError(f'bag {src}: topics {missing} are not in the bag')
            conns = [c for c in conns if c.topic in set(wanted)]
        if storage is None:
            storage = bag_info(src)['storage']
        if len({c.topic for c in conns}) != len(conns):
            raise BagError(f'bag {src}: a topic with several connections cannot be copied')
        with EpisodeBagWriter(dst, storage=storage, compression=compression,
                              max_bag_duration_s=max_bag_duration_s) as w:
            for c in conns:
                w.add_connection_like(c)
            for con, t_ns, raw in iter_messages(reader, src, conns):
                w.write_raw(con.topic, bytes(raw), t_ns)
    finally:
        reader.close()
    return Path(dst)
