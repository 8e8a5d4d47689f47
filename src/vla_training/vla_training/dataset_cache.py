"""On-disk training cache: rosbag2 recordings -> aligned episodes, decoded once, read by the loader.

``train`` used to decode every bag into RAM and resize every frame up front. That cannot hold a real
robot dataset (hundreds of hours, several cameras), and every run paid the decoding again. The cache
stores each recording once, after alignment (:func:`vla_training.bag_dataset.read_episode`), in a
form the loader reads a window of at random with a few ``pread`` calls:

Layout (``<cache_dir>/``)::

    entries/<key>/              one episode (one bag), written atomically (temp dir + rename)
        meta.json               format, source bag, T, rate_hz, joint names, cameras, instructions,
                                dropped / stale ticks, the bag's content hash, the data spec, and
                                the layout of lowdim.bin
        lowdim.bin              the small arrays back to back, read with one ``read``:
                                stamps float64 (T,) s; state float32 (T, J) measured joint positions,
                                embodiment order (rad / m); actions float32 (T, A) commanded targets;
                                instruction int32 (T,) index into meta.json's instructions;
                                index.<cam> int32 (T,) frame of each tick (a frame repeated on several
                                ticks is stored once); offsets.<cam> int64 (F + 1,) for encoded frames
        cam.<name>.raw          uint8 (F, H, W, 3) raw frames (the bag had sensor_msgs/Image), or
        cam.<name>.bin          the F frames' JPEG / PNG bytes back to back (the bag had
                                CompressedImage, or ``images: png``), sliced by offsets.<cam>
    hashes.json                 bag content hashes, memoised by (file name, size, mtime, inode)

**Keys.** An entry's key is a hash of the bag's *content* (BLAKE2b of ``metadata.yaml`` and every
storage file) and of the data spec (:class:`CacheSpec`: embodiment, topics, grid rate, staleness
limit, joints whose action is the next state, image storage, cache format). A changed bag or a changed
data option gives new keys for exactly the entries it affects; everything else is reused. Re-hashing
unchanged bags is skipped by the stat memo (``hashes.json``), as git's index does: a file whose
size, mtime and inode are unchanged keeps its hash.

**Images** are kept at the recorded resolution (the loader resizes them to the model's size with the
same area filter inference uses), and as the bag had them: JPEG / PNG bytes of a
``sensor_msgs/CompressedImage`` are stored as is (never decoded and re-encoded), raw frames as raw
``uint8`` arrays, or losslessly PNG-compressed with ``images: png`` (zlib level 1; on the sim's clean
renders 2-10x smaller than raw; on a noisy real camera PNG gains little). Decoding uses
:func:`robot_drivers.conversions.decode_compressed`, the decoder the policy node uses at run time.

Why these files and not zarr or safetensors shards: an entry per bag is what makes "rebuild only what
changed" a directory rename; a sample costs one ``read`` of the entry's low-dim file (when it is not
in the loader's LRU) and one ``os.pread`` per frame at a computed offset (no mmap per episode: a
dataset of 10^5 episodes would need 10^5 file descriptors with one mmap each); safetensors has no
append or per-frame variable-size records (JPEG), zarr's chunking adds a decompression layer on top of
JPEG that buys nothing. ``benchmarks/bench_data.py`` measures build time, size and loader speed.

Nothing here imports torch.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from robot_drivers import conversions
from robot_drivers.atomic import atomic_directory

__all__ = ['CACHE_FORMAT', 'CacheSpec', 'CacheEntry', 'DatasetCache', 'build_cache', 'bag_content_hash',
           'write_entry', 'default_cache_dir', 'IMAGE_STORAGE', 'build_cache_from_lerobot']

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

#: Bumped when the entry layout or what read_episode produces for the same bag changes.
CACHE_FORMAT = 2
#: ``keep``: frames as the bag had them (raw stays raw, JPEG / PNG stay bytes); ``png``: raw frames
#: PNG-compressed (lossless), compressed ones kept.
IMAGE_STORAGE = ('keep', 'png')
_HASH_BLOCK = 1 << 20


def default_cache_dir() -> Path:
    """``$VLA_CACHE_DIR``, else ``$XDG_CACHE_HOME/vla_ros2/datasets`` (``~/.cache/vla_ros2/datasets``).

    Keys are content hashes, so one cache serves every project and run on the machine.
    """
    env = os.environ.get('VLA_CACHE_DIR')
    if env:
        return Path(env)
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return Path(base) / 'vla_ros2' / 'datasets'


@dataclass(frozen=True)
class CacheSpec:
    """What, besides the bag's bytes, determines an entry (:func:`read_episode` arguments).

    Attributes:
        embodiment: embodiment name (joint order of state and actions).
        topics: :class:`vla_training.bag_reader.BagTopics` as a dict (``as_dict()``).
        rate_hz: grid rate (None = the embodiment's).
        max_age_s: staleness limit (None = two periods).
        action_from_state: joints whose action is the next measured state.
        images: one of :data:`IMAGE_STORAGE`.
    """

    embodiment: str
    topics: Dict[str, Any]
    rate_hz: Optional[float] = None
    max_age_s: Optional[float] = None
    action_from_state: Tuple[str, ...] = ()
    images: str = 'keep'

    def __post_init__(self) -> None:
        if self.images not in IMAGE_STORAGE:
            raise ValueError(f'data.cache_images must be one of {list(IMAGE_STORAGE)}, got {self.images!r}')
        object.__setattr__(self, 'action_from_state', tuple(self.action_from_state))

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d['action_from_state'] = list(self.action_from_state)
        return d

    def digest(self) -> str:
        text = json.dumps({'format': CACHE_FORMAT, **self.to_dict()}, sort_keys=True, default=str)
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


# ----------------------------------------------------------------------------- content hashes
def _bag_files(bag: Path) -> List[Path]:
    return sorted(p for p in bag.iterdir() if p.is_file())


def _stat_key(files: Sequence[Path]) -> List[List[Any]]:
    out = []
    for f in files:
        st = f.stat()
        out.append([f.name, st.st_size, st.st_mtime_ns, st.st_ino])
    return out


def bag_content_hash(bag: PathLike, memo: Optional[Dict[str, Any]] = None) -> str:
    """BLAKE2b (128 bit) of a bag directory's files (names and bytes, in name order).

    ``memo`` (``{bag path: {'stat': ..., 'hash': ...}}``, updated in place) skips re-reading a bag
    whose files' names, sizes, mtimes and inodes are unchanged.

    Raises:
        FileNotFoundError: ``bag`` is not a directory.
    """
    bag = Path(bag)
    if not bag.is_dir():
        raise FileNotFoundError(f'bag {bag}: not a directory')
    files = _bag_files(bag)
    stat = _stat_key(files)
    key = str(bag.resolve())
    if memo is not None and memo.get(key, {}).get('stat') == stat:
        return memo[key]['hash']
    h = hashlib.blake2b(digest_size=16)
    for f in files:
        h.update(f.name.encode() + b'\0')
        with open(f, 'rb') as fh:
            for block in iter(lambda: fh.read(_HASH_BLOCK), b''):
                h.update(block)
    digest = h.hexdigest()
    if memo is not None:
        memo[key] = {'stat': stat, 'hash': digest}
    return digest


def entry_key(content_hash: str, spec: CacheSpec) -> str:
    """Directory name of the entry of a bag with ``content_hash`` read with ``spec``."""
    return hashlib.blake2b(f'{content_hash}:{spec.digest()}'.encode(), digest_size=16).hexdigest()


# ----------------------------------------------------------------------------- writing
def _png(frame: np.ndarray) -> bytes:
    from PIL import Image as PILImage
    out = io.BytesIO()
    PILImage.fromarray(frame).save(out, format='PNG', compress_level=1)
    return out.getvalue()


def _unique_frames(frames) -> Tuple[List[Any], np.ndarray]:
    """(distinct frames in first-use order, int32 (T,) frame index per tick). Repeats are found by
    object identity for bytes (the reader shares one object per message) and by content for arrays
    of consecutive ticks (the reader stacks a repeated message's pixels)."""
    from .bag_dataset import EncodedFrames
    if isinstance(frames, EncodedFrames):
        seen: Dict[int, int] = {}
        uniq: List[Any] = []
        idx = np.empty(len(frames), np.int32)
        for t, b in enumerate(frames.data):
            j = seen.get(id(b))
            if j is None:
                j = seen[id(b)] = len(uniq)
                uniq.append(b)
            idx[t] = j
        return uniq, idx
    arr = np.asarray(frames)
    idx = np.empty(len(arr), np.int32)
    uniq = []
    for t in range(len(arr)):
        if uniq and np.array_equal(arr[t], uniq[-1]):
            idx[t] = len(uniq) - 1
        else:
            uniq.append(arr[t])
            idx[t] = len(uniq) - 1
    return uniq, idx


def write_entry(ep, directory: PathLike, *, spec: Optional[CacheSpec] = None, content_hash: str = '',
                images: str = 'keep') -> 'CacheEntry':
    """Write episode ``ep`` (a :class:`vla_training.bag_dataset.Episode`, cameras as arrays or
    :class:`~vla_training.bag_dataset.EncodedFrames`) as a cache entry at ``directory``, atomically.

    Raises:
        ValueError: ``images`` not in :data:`IMAGE_STORAGE`, or an episode without ticks.
    """
    from .bag_dataset import EncodedFrames
    if images not in IMAGE_STORAGE:
        raise ValueError(f'images must be one of {list(IMAGE_STORAGE)}, got {images!r}')
    t = len(ep.stamps)
    if t < 1:
        raise ValueError(f'{ep.source}: episode has no ticks')
    for k in ('joint_positions', 'actions'):
        v = np.asarray(getattr(ep, k), np.float64)
        if not np.all(np.isfinite(v)):
            raise ValueError(f'{ep.source}: {k} contains NaN/Inf')
    instr_table = list(dict.fromkeys(str(s) for s in ep.instructions))
    lookup = {s: i for i, s in enumerate(instr_table)}
    cams: Dict[str, Dict[str, Any]] = {}
    arrays: Dict[str, np.ndarray] = {
        'stamps': np.asarray(ep.stamps, np.float64),
        'state': np.asarray(ep.joint_positions, np.float32).reshape(t, -1),
        'actions': np.asarray(ep.actions, np.float32),
        'instruction': np.array([lookup[str(s)] for s in ep.instructions], np.int32)}
    with atomic_directory(directory) as tmp:
        for cam, frames in ep.cameras().items():
            uniq, idx = _unique_frames(frames)
            arrays[f'index.{cam}'] = idx
            if isinstance(frames, EncodedFrames) or images == 'png':
                blobs = uniq if isinstance(frames, EncodedFrames) else [_png(np.asarray(f)) for f in uniq]
                offsets = np.zeros(len(blobs) + 1, np.int64)
                offsets[1:] = np.cumsum([len(b) for b in blobs])
                with open(tmp / f'cam.{cam}.bin', 'wb') as f:
                    for b in blobs:
                        f.write(b)
                arrays[f'offsets.{cam}'] = offsets
                fmt = frames.fmt if isinstance(frames, EncodedFrames) else 'png'
                h, w = (frames.height, frames.width) if isinstance(frames, EncodedFrames) else uniq[0].shape[:2]
                cams[cam] = {'storage': 'encoded', 'format': fmt, 'height': int(h), 'width': int(w),
                             'frames': len(blobs)}
            else:
                arr = np.ascontiguousarray(np.stack(uniq), dtype=np.uint8)
                with open(tmp / f'cam.{cam}.raw', 'wb') as f:
                    f.write(arr.tobytes())
                cams[cam] = {'storage': 'raw', 'format': 'rgb8', 'height': int(arr.shape[1]),
                             'width': int(arr.shape[2]), 'frames': int(arr.shape[0])}
        layout, pos = {}, 0
        with open(tmp / 'lowdim.bin', 'wb') as f:
            for name, arr in arrays.items():
                arr = np.ascontiguousarray(arr)
                layout[name] = [pos, arr.dtype.str, list(arr.shape)]
                f.write(arr.tobytes())
                pos += arr.nbytes
        meta = {'format': CACHE_FORMAT, 'source': str(ep.source), 'length': t,
                'rate_hz': None if ep.rate_hz is None else float(ep.rate_hz),
                'joint_names': list(ep.joint_names), 'dropped': int(ep.dropped),
                'state_dim': int(np.asarray(ep.joint_positions).reshape(t, -1).shape[1]),
                'action_dim': int(np.asarray(ep.actions).shape[1]),
                'stale': {k: int(v) for k, v in dict(ep.stale).items()}, 'cameras': cams,
                'instructions': instr_table, 'content_hash': content_hash,
                'spec': spec.to_dict() if spec is not None else None, 'lowdim': layout, 'created': time.time()}
        (tmp / 'meta.json').write_text(json.dumps(meta, indent=1), encoding='utf-8')
    return CacheEntry(Path(directory))


# ----------------------------------------------------------------------------- reading
_FDS: 'OrderedDict[str, int]' = OrderedDict()
#: files kept open per process (``pread`` needs a descriptor; opening one costs ~10 us)
FD_LRU = 128


def _fd(path: Path) -> int:
    """A read-only descriptor of ``path`` from this process's LRU (closed when evicted)."""
    key = str(path)
    fd = _FDS.get(key)
    if fd is not None:
        _FDS.move_to_end(key)
        return fd
    fd = os.open(key, os.O_RDONLY)
    _FDS[key] = fd
    while len(_FDS) > FD_LRU:
        os.close(_FDS.popitem(last=False)[1])
    return fd


class CacheEntry:
    """One cached episode (read-only). Low-dim arrays are small and read whole; frames are read one
    at a time with ``os.pread`` (:meth:`frames`), so a worker never holds more than the frames of
    the sample it builds.

    Attributes:
        path: the entry directory. meta: its ``meta.json``. length: ticks T. cameras: camera names
        in recording order.

    Raises:
        FileNotFoundError: the directory or its ``meta.json`` is missing.
        ValueError: another cache format, or an unreadable ``meta.json`` (names the file).
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        mf = self.path / 'meta.json'
        if not mf.is_file():
            raise FileNotFoundError(f'cache entry {self.path}: no meta.json')
        try:
            self.meta = json.loads(mf.read_text(encoding='utf-8'))
        except json.JSONDecodeError as exc:
            raise ValueError(f'{mf}: not valid JSON ({exc})') from None
        if self.meta.get('format') != CACHE_FORMAT:
            raise ValueError(f'{mf}: cache format {self.meta.get("format")}, this version reads {CACHE_FORMAT}; '
                             f'delete the entry (or the cache directory) to rebuild it')
        self.length = int(self.meta['length'])
        self.cameras = list(self.meta['cameras'])

    # low-dim ------------------------------------------------------------------------------------
    def lowdim(self) -> Dict[str, Any]:
        """``{'stamps' (T,) f64, 'state' (T, J) f32, 'actions' (T, A) f32, 'instruction' (T,) i32,
        'instructions' [str], 'frame_index' {camera: (T,) i32}, 'offsets' {camera: (F + 1,) i64}}``
        (one read of ``lowdim.bin``; ``offsets`` only for encoded cameras)."""
        with open(self.path / 'lowdim.bin', 'rb') as f:
            buf = f.read()
        arr = {name: np.frombuffer(buf, np.dtype(dt), int(np.prod(shape)), off).reshape(shape)
               for name, (off, dt, shape) in self.meta['lowdim'].items()}
        out: Dict[str, Any] = {k: arr[k] for k in ('stamps', 'state', 'actions', 'instruction')}
        out['instructions'] = list(self.meta['instructions'])
        out['frame_index'] = {c: arr[f'index.{c}'] for c in self.cameras}
        out['offsets'] = {c: arr[f'offsets.{c}'] for c in self.cameras if f'offsets.{c}' in arr}
        return out

    @property
    def nbytes(self) -> int:
        """Bytes on disk of the entry's files."""
        return sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())

    # frames -------------------------------------------------------------------------------------
    def _file(self, cam: str) -> Path:
        if cam not in self.meta['cameras']:
            raise KeyError(f'cache entry {self.path} ({self.meta["source"]}) has cameras {self.cameras}, not {cam!r}')
        return self.path / (f'cam.{cam}.raw' if self.meta['cameras'][cam]['storage'] == 'raw' else f'cam.{cam}.bin')

    def frame_bytes(self, cam: str, frame: int, offsets: Optional[np.ndarray] = None) -> bytes:
        """The stored bytes of distinct frame ``frame`` of ``cam`` (raw pixels or JPEG / PNG);
        ``offsets``: the camera's ``lowdim()['offsets'][cam]`` (read here when not given)."""
        fd = _fd(self._file(cam))
        info = self.meta['cameras'][cam]
        if info['storage'] == 'raw':
            n = info['height'] * info['width'] * 3
            return os.pread(fd, n, int(frame) * n)
        offsets = self.lowdim()['offsets'][cam] if offsets is None else offsets
        a, b = int(offsets[frame]), int(offsets[frame + 1])
        return os.pread(fd, b - a, a)

    def frames(self, cam: str, frames: Sequence[int], offsets: Optional[np.ndarray] = None) -> np.ndarray:
        """uint8 ``(n, H, W, 3)`` RGB of distinct frames ``frames`` of camera ``cam``, recorded size.

        Raises:
            KeyError: ``cam`` is not one of the entry's cameras (they are listed).
            ValueError: a stored frame that does not decode (names the entry and camera).
        """
        self._file(cam)
        info = self.meta['cameras'][cam]
        if info['storage'] != 'raw' and offsets is None:
            offsets = self.lowdim()['offsets'][cam]
        out = []
        for f in frames:
            buf = self.frame_bytes(cam, int(f), offsets)
            if info['storage'] == 'raw':
                out.append(np.frombuffer(buf, np.uint8).reshape(info['height'], info['width'], 3))
            else:
                out.append(conversions.decode_compressed(buf, source=f'cache entry {self.path} camera {cam!r}',
                                                         fmt=info['format']))
        return np.stack(out)

    # whole episode ------------------------------------------------------------------------------
    def to_episode(self, decode: bool = True):
        """The cached episode as a :class:`vla_training.bag_dataset.Episode` (frames decoded; with
        ``decode=False`` encoded cameras stay :class:`~vla_training.bag_dataset.EncodedFrames`)."""
        from .bag_dataset import EncodedFrames, Episode
        ld = self.lowdim()
        cams: Dict[str, Any] = {}
        for c in self.cameras:
            info = self.meta['cameras'][c]
            idx = ld['frame_index'][c]
            if info['storage'] == 'raw' or decode:
                uniq = self.frames(c, range(info['frames']))
                cams[c] = uniq[idx]
            else:
                blobs = [self.frame_bytes(c, f) for f in range(info['frames'])]
                cams[c] = EncodedFrames([blobs[i] for i in idx], info['format'], info['height'], info['width'])
        instr = [ld['instructions'][i] for i in ld['instruction']]
        m = self.meta
        return Episode(source=m['source'], stamps=ld['stamps'], images=next(iter(cams.values())),
                       joint_positions=ld['state'], actions=ld['actions'], instructions=instr,
                       dropped=m['dropped'], joint_names=tuple(m['joint_names']), rate_hz=m['rate_hz'],
                       stale=dict(m['stale']), camera_images=cams)


class _LowdimView:
    """What :func:`vla_training.train.compute_stats` reads of an episode, without its frames."""

    def __init__(self, entry: CacheEntry) -> None:
        ld = entry.lowdim()
        self.source, self.actions, self.joint_positions = entry.meta['source'], ld['actions'], ld['state']
        self.instructions = [ld['instructions'][i] for i in ld['instruction']]
        self.stamps, self.rate_hz = ld['stamps'], entry.meta['rate_hz']


@dataclass
class DatasetCache:
    """The entries of a set of bags, in bag order (what ``train`` reads).

    Attributes:
        root: cache directory. entries: one per bag. built / reused: entries written / found by the
        build that produced this. seconds: build wall time.
    """

    root: Path
    entries: List[CacheEntry]
    built: int = 0
    reused: int = 0
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([e.length for e in self.entries], np.int64)

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.entries)

    def lowdim_views(self, ids: Optional[Iterable[int]] = None) -> List[_LowdimView]:
        """Episode-like views (actions, joint_positions, instructions, stamps) of entries ``ids``."""
        ids = range(len(self.entries)) if ids is None else ids
        return [_LowdimView(self.entries[i]) for i in ids]

    def episodes(self, decode: bool = True) -> Iterator[Any]:
        """Every entry as an :class:`~vla_training.bag_dataset.Episode`, one at a time."""
        for e in self.entries:
            yield e.to_episode(decode=decode)

    @classmethod
    def from_episodes(cls, episodes: Iterable[Any], root: PathLike, *, images: str = 'keep',
                      spec: Optional[CacheSpec] = None) -> 'DatasetCache':
        """Cache in-memory (or streamed) episodes under ``root/entries`` (keys: a hash of the source
        name and position; for bags use :func:`build_cache`, which keys by content)."""
        root = Path(root)
        out = []
        for i, ep in enumerate(episodes):
            key = hashlib.blake2b(f'{i}:{ep.source}:{len(ep.stamps)}'.encode(), digest_size=16).hexdigest()
            out.append(write_entry(ep, root / 'entries' / key, spec=spec, images=images))
        return cls(root=root, entries=out, built=len(out))


# ----------------------------------------------------------------------------- building
def _load_memo(root: Path) -> Dict[str, Any]:
    p = root / 'hashes.json'
    try:
        return json.loads(p.read_text(encoding='utf-8'))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _save_memo(root: Path, memo: Dict[str, Any]) -> None:
    tmp = root / f'.hashes.json.tmp-{os.getpid()}'
    tmp.write_text(json.dumps(memo), encoding='utf-8')
    os.replace(tmp, root / 'hashes.json')


def _build_one(args) -> str:
    bag, target, spec_d, content = args
    from robot_drivers.embodiment import get_embodiment
    from .bag_dataset import BagTopics, read_episode
    spec = CacheSpec(**spec_d)
    ep = read_episode(bag, get_embodiment(spec.embodiment), BagTopics.from_dict(spec.topics),
                      rate_hz=spec.rate_hz, max_age_s=spec.max_age_s,
                      action_from_state=spec.action_from_state, decode_images=False)
    write_entry(ep, target, spec=spec, content_hash=content, images=spec.images)
    return target


def build_cache(bags: Sequence[PathLike], spec: CacheSpec, root: Optional[PathLike] = None, *,
                workers: int = 1, progress: Optional[Callable[[int, int], None]] = None) -> DatasetCache:
    """Cache every bag of ``bags`` (bag directories, in order) read with ``spec``; reuse what exists.

    Args:
        bags: rosbag2 directories (:func:`vla_training.bag_dataset.find_bags` expands folders).
        spec: the data options (:class:`CacheSpec`).
        root: cache directory (default :func:`default_cache_dir`).
        workers: processes decoding bags (spawned; 1 = in this process).
        progress: called as ``progress(done, total)`` after each built entry.

    Returns:
        :class:`DatasetCache` with one entry per bag, in ``bags`` order.

    Raises:
        vla_training.bag_dataset.BagError: a bag that cannot be read (names the bag and topic); the
            entries already built stay valid (each is written atomically), nothing half-written remains.
    """
    import multiprocessing as mp
    t0 = time.time()
    root = Path(root) if root is not None else default_cache_dir()
    (root / 'entries').mkdir(parents=True, exist_ok=True)
    memo = _load_memo(root)
    targets, hashes = [], []
    try:
        for b in bags:
            hashes.append(bag_content_hash(b, memo))
            targets.append(root / 'entries' / entry_key(hashes[-1], spec))
    finally:
        _save_memo(root, memo)
    todo = [(str(b), str(t), spec.to_dict(), h) for b, t, h in zip(bags, targets, hashes)
            if not (t / 'meta.json').is_file()]
    if todo:
        log.info('dataset cache %s: building %d of %d entries', root, len(todo), len(targets))
    if workers > 1 and len(todo) > 1:
        # concurrent.futures, not multiprocessing.Pool: a worker that dies (OOM kill, a main module that
        # cannot be re-imported under spawn) raises BrokenProcessPool instead of being respawned forever
        from concurrent.futures import ProcessPoolExecutor, as_completed
        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=mp.get_context('spawn')) as pool:
            futures = [pool.submit(_build_one, job) for job in todo]
            try:
                for i, fut in enumerate(as_completed(futures), 1):
                    fut.result()
                    if progress:
                        progress(i, len(todo))
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
    else:
        for i, job in enumerate(todo, 1):
            _build_one(job)
            if progress:
                progress(i, len(todo))
    entries = [CacheEntry(t) for t in targets]
    return DatasetCache(root=root, entries=entries, built=len(todo), reused=len(targets) - len(todo),
                        seconds=time.time() - t0)


def build_cache_from_lerobot(root: PathLike, spec: CacheSpec, cache_root: Optional[PathLike] = None) -> DatasetCache:
    """Cache the episodes of a LeRobotDataset v3 directory (:func:`vla_training.lerobot_dataset.read_lerobot`).

    Entries are keyed by the content of the dataset's files (all of them: a changed file rebuilds the
    dataset's entries), the episode index and ``spec.images``; the topics of ``spec`` do not apply
    (LeRobot stores features, not topics). Video frames are decoded once and stored PNG-compressed
    (lossless from the decoded video; ``spec.images`` is ignored for them).

    Raises:
        ValueError: not a LeRobotDataset v3 directory, or a bad dataset (see ``read_lerobot``).
    """
    from .lerobot_dataset import read_lerobot
    t0 = time.time()
    root = Path(root)
    cache_root = Path(cache_root) if cache_root is not None else default_cache_dir()
    (cache_root / 'entries').mkdir(parents=True, exist_ok=True)
    memo = _load_memo(cache_root)
    h = hashlib.blake2b(digest_size=16)
    try:
        for f in sorted(p for p in root.rglob('*') if p.is_file()):
            rel = str(f.relative_to(root))
            sub = memo.setdefault(f'lerobot:{root.resolve()}', {})
            st = _stat_key([f])[0]
            if sub.get(rel, {}).get('stat') == st:
                fh = sub[rel]['hash']
            else:
                fh = hashlib.blake2b(f.read_bytes(), digest_size=16).hexdigest()
                sub[rel] = {'stat': st, 'hash': fh}
            h.update(f'{rel}:{fh};'.encode())
    finally:
        _save_memo(cache_root, memo)
    content = h.hexdigest()
    lspec = dataclasses.replace(spec, topics={'lerobot': True}, images='png')

    def target(i) -> Path:
        return cache_root / 'entries' / entry_key(f'{content}#{i}', lspec)

    count_file = target('count') / 'count'
    if count_file.is_file():
        targets = [target(i) for i in range(int(count_file.read_text()))]
        if all((t / 'meta.json').is_file() for t in targets):
            return DatasetCache(root=cache_root, entries=[CacheEntry(t) for t in targets], reused=len(targets),
                                seconds=time.time() - t0)
    entries: List[CacheEntry] = []
    built = 0
    for i, ep in enumerate(read_lerobot(root)):
        t = target(i)
        if not (t / 'meta.json').is_file():
            write_entry(ep, t, spec=lspec, content_hash=f'{content}#{i}', images='png')
            built += 1
        entries.append(CacheEntry(t))
    with atomic_directory(target('count')) as tmp:
        (tmp / 'count').write_text(str(len(entries)))
    return DatasetCache(root=cache_root, entries=entries, built=built, reused=len(entries) - built,
                        seconds=time.time() - t0)
