"""Atomic directory writes: build in a temporary sibling, rename into place (ROS-free).

A checkpoint, a dataset-cache entry, a training state or an exported dataset is a directory of
several files; a process killed mid-write (``kill -9``, power loss) must leave either the old
directory or the new one under the final name, never a mix. ``rename(2)`` of a directory is atomic
on POSIX file systems within one file system, so the files are written into a temporary directory
next to the target and renamed at the end; an existing target is first renamed aside and deleted
only after the new one is in place.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator, Union

__all__ = ['atomic_directory', 'replace_directory']

PathLike = Union[str, Path]


def replace_directory(tmp: PathLike, final: PathLike) -> Path:
    """Move the finished directory ``tmp`` to ``final`` (same file system), replacing ``final``.

    Between the two renames there is an instant where ``final`` does not exist; the previous
    version is then at ``.<name>.old-*`` beside it (readers may fall back to it, see
    ``vla_training.train``'s resume).
    """
    tmp, final = Path(tmp), Path(final)
    old = None
    if final.exists():
        old = final.parent / f'.{final.name}.old-{os.getpid()}-{time.time_ns()}'
        os.rename(final, old)
    os.rename(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


@contextlib.contextmanager
def atomic_directory(final: PathLike) -> Iterator[Path]:
    """``with atomic_directory(d) as tmp:`` write files into ``tmp``; on normal exit ``tmp`` becomes
    ``d`` (replacing it), on an exception ``tmp`` is deleted and ``d`` is untouched."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{final.name}.tmp-', dir=str(final.parent)))
    try:
        yield tmp
        replace_directory(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
