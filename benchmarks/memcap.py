"""Run a command under a hard memory cap (a Linux memory cgroup) with the dataset evicted from the page cache.

``python benchmarks/memcap.py --limit-mb 512 --evict DIR [--evict DIR ...] -- cmd args...`` creates a
child memory cgroup (cgroup v2 ``memory.max`` + ``memory.swap.max = 0``, or cgroup v1
``memory.limit_in_bytes`` + ``memory.memsw.limit_in_bytes``) below this process's own, moves the
command into it, and prints one JSON line to stderr at the end: the limit, the peak usage the kernel
recorded (``memory.peak`` / ``memory.max_usage_in_bytes``: anonymous memory *and* page cache of the
command and its children), how often the limit was hit and whether the OOM killer fired. The page
cache is charged to the cgroup that first reads a page, so the files under ``--evict`` are first
dropped from the cache (``posix_fadvise(DONTNEED)``): the command must read the dataset from disk
inside its cap rather than find it cached by the process that wrote it.

Used by ``benchmarks/bench_data.py`` (loader samples/s on a dataset several times larger than the
cap). Needs root or a delegated cgroup; exits with status 3 and says why when neither is available.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

__all__ = ['evict', 'run_capped', 'cgroup_available']


def evict(paths: Sequence[str]) -> int:
    """Drop every file under ``paths`` from the page cache; returns the bytes of those files."""
    total = 0
    for p in paths:
        for f in ([Path(p)] if Path(p).is_file() else Path(p).rglob('*')):
            if f.is_file():
                fd = os.open(f, os.O_RDONLY)
                try:
                    os.fsync(fd)                # dirty pages cannot be dropped
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)
                total += f.stat().st_size
    return total


def _own_cgroup() -> Dict[str, Path]:
    """{'v2': path} or {'v1': path} of this process's memory cgroup directory."""
    for line in Path('/proc/self/cgroup').read_text().splitlines():
        hid, ctrl, rel = line.split(':', 2)
        if ctrl == 'memory' and Path('/sys/fs/cgroup/memory').is_dir():
            return {'v1': Path('/sys/fs/cgroup/memory') / rel.lstrip('/')}
    for line in Path('/proc/self/cgroup').read_text().splitlines():
        hid, ctrl, rel = line.split(':', 2)
        if hid == '0':
            for base in (Path('/sys/fs/cgroup'), Path('/sys/fs/cgroup/unified')):
                if (base / 'cgroup.controllers').is_file() and 'memory' in (base / 'cgroup.controllers').read_text():
                    return {'v2': base / rel.lstrip('/')}
    return {}


def cgroup_available() -> Optional[str]:
    """None when a capped child cgroup can be made here, else the reason."""
    own = _own_cgroup()
    if not own:
        return 'no memory cgroup controller (cgroup v1 memory or v2 with memory enabled)'
    d = next(iter(own.values()))
    if not os.access(d, os.W_OK):
        return f'cannot create a child cgroup in {d} (run as root or with a delegated cgroup)'
    return None


def run_capped(cmd: List[str], limit_bytes: int, evict_paths: Sequence[str] = (), env=None,
               timeout: Optional[float] = None) -> Dict[str, object]:
    """Run ``cmd`` in a fresh memory cgroup of ``limit_bytes``; returns returncode, stdout, stderr,
    peak_bytes, limit_bytes, limit_hits, oom_kills, evicted_bytes, seconds.

    Raises:
        RuntimeError: no usable memory cgroup (:func:`cgroup_available` says why).
    """
    why = cgroup_available()
    if why:
        raise RuntimeError(why)
    kind, parent = next(iter(_own_cgroup().items()))
    cg = parent / f'vla_memcap_{os.getpid()}_{time.time_ns()}'
    cg.mkdir()
    try:
        if kind == 'v1':
            (cg / 'memory.limit_in_bytes').write_text(str(limit_bytes))
            try:
                (cg / 'memory.memsw.limit_in_bytes').write_text(str(limit_bytes))   # no swap beyond the cap
            except OSError:
                pass
        else:
            (cg / 'memory.max').write_text(str(limit_bytes))
            try:
                (cg / 'memory.swap.max').write_text('0')
            except OSError:
                pass
        evicted = evict(evict_paths)
        t0 = time.time()
        procs = cg / 'cgroup.procs'
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: procs.write_text(str(os.getpid())))
        out, err = proc.communicate(timeout=timeout)
        seconds = time.time() - t0
        if kind == 'v1':
            peak = int((cg / 'memory.max_usage_in_bytes').read_text())
            hits = int((cg / 'memory.failcnt').read_text())
            oom = 0
            for line in (cg / 'memory.oom_control').read_text().splitlines():
                if line.startswith('oom_kill '):
                    oom = int(line.split()[1])
        else:
            peak = int((cg / 'memory.peak').read_text()) if (cg / 'memory.peak').exists() else -1
            ev = dict(line.split() for line in (cg / 'memory.events').read_text().splitlines())
            hits, oom = int(ev.get('max', 0)), int(ev.get('oom_kill', 0))
        return {'returncode': proc.returncode, 'stdout': out, 'stderr': err, 'peak_bytes': peak,
                'limit_bytes': limit_bytes, 'limit_hits': hits, 'oom_kills': oom, 'evicted_bytes': evicted,
                'seconds': seconds, 'cgroup': kind}
    finally:
        for _ in range(50):
            try:
                cg.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--limit-mb', type=float, required=True)
    p.add_argument('--evict', action='append', default=[])
    p.add_argument('cmd', nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    cmd = a.cmd[1:] if a.cmd[:1] == ['--'] else a.cmd
    why = cgroup_available()
    if why:
        print(f'memcap: error: {why}', file=sys.stderr)
        return 3
    r = run_capped(cmd, int(a.limit_mb * 2 ** 20), a.evict)
    sys.stdout.write(r.pop('stdout'))
    sys.stderr.write(r.pop('stderr'))
    print(json.dumps(r), file=sys.stderr)
    return int(r['returncode'])


if __name__ == '__main__':
    sys.exit(main())
