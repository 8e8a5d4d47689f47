"""Training samples on demand: a ``torch.utils.data.Dataset`` over cached or in-memory episodes.

A sample is what :func:`vla_training.train.build_arrays` makes for one tick, built when the loader
asks for it: the observation window (``n_obs_steps`` frames of every camera, resized to the model's
``image_size`` with :func:`vla_policy.images.preprocess_images_uint8`; the normalized joint
positions), the instruction tokens, and the action chunk (``chunk_size`` targets, relative on the
delta dims, normalized, end padded with ``action_is_pad``), identical value for value to the in-RAM
arrays (tested). Two sources hold the episodes:

* :class:`CacheSource`: :class:`vla_training.dataset_cache.DatasetCache` entries on disk; low-dim
  arrays of the entries in use are kept in a small LRU (``lowdim_lru`` entries), frames are read with
  ``pread`` at the recorded size and resized per sample. Memory does not grow with the dataset: per
  episode the dataset keeps its length (8 bytes) and entry path.
* :class:`EpisodeSource`: in-memory :class:`~vla_training.bag_dataset.Episode` objects (frames
  resized once up front), for small datasets and tests.

:class:`StepBatchSampler` decides which samples form optimizer step ``s`` from ``(seed, s)`` alone:
the global batch (``batch_size x world_size x grad_accum`` samples) is the next slice of an
epoch-wise permutation of all training samples (so batches mix episodes), and rank ``r`` /
micro-batch ``m`` takes its slice of it. Hence (a) a resumed run continues with exactly the samples
the uninterrupted run would have seen (the data position is the step), and (b) 2 processes with
batch ``B`` see the same samples per step as 1 process with batch ``2B``. Random-shift augmentation
(DrQ) draws its offsets from a hash of ``(seed, position of the sample in the stream)``, not from a
process RNG, so it is identical under both layouts too.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from vla_policy.images import preprocess_images_uint8
from vla_policy.transforms import to_delta

__all__ = ['EpisodeSource', 'CacheSource', 'ChunkDataset', 'Batch', 'StepBatchSampler', 'shift_offsets', 'collate']

Key = Union[int, Tuple[int, int]]


def _segments(stamps: np.ndarray, rate_hz: Optional[float]) -> Tuple[np.ndarray, np.ndarray]:
    """(seg_start (T,), seg_end (T,)): first / last tick of each tick's contiguous stretch (a gap of
    more than 1.5 periods = dropped ticks ends a stretch), as build_arrays and chunk_targets define."""
    t = len(stamps)
    if not rate_hz:
        return np.zeros(t, np.int64), np.full(t, t - 1, np.int64)
    gaps = np.flatnonzero(np.diff(np.asarray(stamps, np.float64)) > 1.5 / rate_hz)  # gap between i, i+1
    starts = np.concatenate([[0], gaps + 1])
    ends = np.concatenate([gaps, [t - 1]])
    ar = np.arange(t)
    return starts[np.searchsorted(starts, ar, side='right') - 1], ends[np.searchsorted(ends, ar, side='left')]


class EpisodeSource:
    """In-memory episodes as a sample source (frames of ``cameras`` resized to ``image_size`` once).

    Raises:
        ValueError: an episode lacking a configured camera (see ``train._episode_cameras``).
    """

    def __init__(self, episodes: Sequence[Any], cameras: Sequence[str], image_size: int) -> None:
        from .train import _episode_cameras
        self.cameras, self.image_size = list(cameras), int(image_size)
        self._eps = list(episodes)
        self._frames: List[Dict[str, torch.Tensor]] = []
        cfg_like = type('C', (), {'camera_names': self.cameras})
        for i, ep in enumerate(self._eps):
            cams = _episode_cameras(i, ep, cfg_like)
            self._frames.append({c: preprocess_images_uint8(np.asarray(v), self.image_size,
                                                            name=f'episode {i} camera {c!r}')
                                 for c, v in cams.items()})                              # {cam: (T, 3, S, S)}
        self.lengths = np.array([len(e.stamps) for e in self._eps], np.int64)

    def __len__(self) -> int:
        return len(self._eps)

    def name(self, e: int) -> str:
        return str(getattr(self._eps[e], 'source', e))

    def rate(self, e: int) -> Optional[float]:
        return getattr(self._eps[e], 'rate_hz', None)

    def lowdim(self, e: int) -> Dict[str, Any]:
        ep = self._eps[e]
        instr = [str(s) for s in ep.instructions]
        table = list(dict.fromkeys(instr))
        look = {s: i for i, s in enumerate(table)}
        t = len(ep.stamps)
        return {'stamps': np.asarray(ep.stamps, np.float64), 'state': np.asarray(ep.joint_positions, np.float32).reshape(t, -1),
                'actions': np.asarray(ep.actions, np.float32), 'instruction': np.array([look[s] for s in instr], np.int32),
                'instructions': table, 'frame_index': {c: np.arange(t, dtype=np.int32) for c in self.cameras}}

    resized = True

    def frames(self, e: int, cam: str, frames: np.ndarray) -> torch.Tensor:
        return self._frames[e][cam][torch.as_tensor(np.asarray(frames, np.int64))]          # (n, 3, S, S)

    def lowdim_views(self, ids: Sequence[int]) -> List[Any]:
        return [self._eps[i] for i in ids]


class CacheSource:
    """Cached episodes (:class:`vla_training.dataset_cache.DatasetCache`) as a sample source.

    Raises:
        ValueError: an entry lacking a configured camera (names the entry's source and its cameras).
    """

    def __init__(self, cache, cameras: Sequence[str], image_size: int) -> None:
        self.cache, self.cameras, self.image_size = cache, list(cameras), int(image_size)
        self.lengths = cache.lengths
        for i, e in enumerate(cache.entries):
            have = e.cameras
            if len(self.cameras) == 1 and len(have) == 1:
                continue
            missing = [c for c in self.cameras if c not in have]
            if missing:
                raise ValueError(f'episode {i} ({e.meta["source"]}): config camera_names={self.cameras} but the episode '
                                 f'has cameras {have}; missing {missing}. Read the bags with one topic per camera '
                                 f'(data topics images: {{{", ".join(f"{c}: <topic>" for c in self.cameras)}}})')

    def __len__(self) -> int:
        return len(self.cache.entries)

    def _cam(self, e: int, cam: str) -> str:
        have = self.cache.entries[e].cameras
        return have[0] if len(self.cameras) == 1 and len(have) == 1 else cam

    def name(self, e: int) -> str:
        return str(self.cache.entries[e].meta['source'])

    def rate(self, e: int) -> Optional[float]:
        return self.cache.entries[e].meta['rate_hz']

    def lowdim(self, e: int) -> Dict[str, Any]:
        ld = self.cache.entries[e].lowdim()
        ld['frame_index'] = {c: ld['frame_index'][self._cam(e, c)] for c in self.cameras}
        return ld

    resized = False

    def raw_frames(self, e: int, cam: str, frames: np.ndarray, lowdim: Dict[str, Any]) -> np.ndarray:
        """uint8 ``(n, H, W, 3)`` at the recorded size (resized by the dataset, a batch at a time)."""
        c = self._cam(e, cam)
        return self.cache.entries[e].frames(c, frames, lowdim.get('offsets', {}).get(c))

    def lowdim_views(self, ids: Sequence[int]) -> List[Any]:
        return self.cache.lowdim_views(ids)


def shift_offsets(seed: int, draws: np.ndarray, pad: int) -> Tuple[np.ndarray, np.ndarray]:
    """(ox, oy) int64 in ``[0, 2 pad]`` per draw: splitmix64 of ``(seed, draw)`` (Steele et al. 2014),
    so a sample's augmentation depends on its position in the sample stream, not on a process RNG."""
    with np.errstate(over='ignore'):
        z = (np.asarray(draws, np.uint64) * np.uint64(0x9E3779B97F4A7C15)
             + np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * np.uint64(0xBF58476D1CE4E5B9) + np.uint64(0x94D049BB133111EB))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    n = np.uint64(2 * pad + 1)
    return (z % n).astype(np.int64), ((z >> np.uint64(32)) % n).astype(np.int64)


def _shift_batch(images: torch.Tensor, pad: int, ox: np.ndarray, oy: np.ndarray) -> torch.Tensor:
    """DrQ random shift of uint8 ``(B, K, 3, S, S)``: replicate-pad by ``pad``, crop ``S x S`` at
    ``(oy[b], ox[b])``; all K images of a sample share its shift."""
    b, k, c, s, _ = images.shape
    xp = torch.nn.functional.pad(images.reshape(b, k * c, s, s).float(), (pad, pad, pad, pad), mode='replicate')
    out = torch.stack([xp[i, :, oy[i]:oy[i] + s, ox[i]:ox[i] + s] for i in range(b)])   # (B, K*3, S, S)
    return out.reshape(b, k, c, s, s).to(torch.uint8)


class ChunkDataset(torch.utils.data.Dataset):
    """Samples of episodes ``episode_ids`` of ``source``, one per tick, in episode order.

    ``dataset[i]`` / ``dataset[(i, draw)]`` is sample ``i`` (``draw``: its position in the training
    stream, which seeds the random shift when ``augment_shift > 0``). ``__getitems__`` builds a
    whole batch (the DataLoader calls it with a batch sampler); :func:`collate` stacks it. A sample
    (K = n_obs_steps x cameras, time-major camera-minor; H = chunk_size; L = max_tokens)::

        images          uint8  (K, 3, S, S)     RGB, S = backbone.image_size
        token_ids       int64  (L,)             attention_mask int64 (L,)
        actions         float32 (H, A)          normalized chunk (relative on delta dims)
        action_is_pad   bool   (H,)
        state           float32 (n_obs_steps, S_state)   normalized (if state_dim > 0)

    Args:
        source: :class:`CacheSource` or :class:`EpisodeSource`.
        episode_ids: the episodes of this split.
        cfg: :class:`vla_policy.models.config.VLAConfig`.
        stats: ``{'action', 'state'}`` :class:`~vla_policy.normalization.NormalizationStats`.
        tokenizer: instruction tokenizer (``encode_batch``).
        augment_shift: DrQ shift in pixels (0 = none).
        seed: augmentation seed.
        lowdim_lru: entries whose low-dim arrays stay in memory per worker.
    """

    def __init__(self, source, episode_ids: Sequence[int], cfg, stats, tokenizer, *, augment_shift: int = 0,
                 seed: int = 0, lowdim_lru: int = 64) -> None:
        self.source, self.cfg, self.stats, self.tokenizer = source, cfg, stats, tokenizer
        self.episode_ids = np.asarray(episode_ids, np.int64)
        lens = source.lengths[self.episode_ids] if len(self.episode_ids) else np.zeros(0, np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)               # (E + 1,)
        self.augment_shift, self.seed, self.lowdim_lru = int(augment_shift), int(seed), int(lowdim_lru)
        self.cameras = list(cfg.camera_names)
        self._lru: 'OrderedDict[int, Dict[str, Any]]' = OrderedDict()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, i: int) -> Tuple[int, int]:
        """(source episode, tick) of sample ``i``.

        Raises:
            IndexError: ``i`` outside ``[0, len)``.
        """
        if not 0 <= i < len(self):
            raise IndexError(f'sample {i} outside [0, {len(self)})')
        k = int(np.searchsorted(self.offsets, i, side='right') - 1)
        return int(self.episode_ids[k]), int(i - self.offsets[k])

    def _episode(self, e: int) -> Dict[str, Any]:
        d = self._lru.get(e)
        if d is not None:
            self._lru.move_to_end(e)
            return d
        d = self.source.lowdim(e)
        d['seg_start'], d['seg_end'] = _segments(d['stamps'], self.source.rate(e))
        d['tokens'] = self.tokenizer.encode_batch(d['instructions'])                           # (U, L) x 2
        self._lru[e] = d
        while len(self._lru) > self.lowdim_lru:
            self._lru.popitem(last=False)
        return d

    def __getitem__(self, key: Key) -> Dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([key])[0].items()}

    def __getitems__(self, keys: Sequence[Key]) -> List['Batch']:
        """The batch of ``keys`` (ints, or ``(index, stream position)`` pairs), built at once: frames
        of equal size are resized together and the normalizations run on the whole batch. Returns
        ``[Batch]`` (one element: :func:`collate` passes it through)."""
        cfg = self.cfg
        h, n_obs, n_cam = cfg.chunk.chunk_size, cfg.chunk.n_obs_steps, len(self.cameras)
        b = len(keys)
        tgts, pads, states, draws, ids, masks = [], [], [], [], [], []
        frames: List[Any] = []                       # b * To * C frames, time-major camera-minor per sample
        for key in keys:
            i, draw = (key if isinstance(key, tuple) else (key, None))
            e, t = self.locate(int(i))
            d = self._episode(e)
            obs = np.maximum(t - np.arange(n_obs - 1, -1, -1), d['seg_start'][t])              # (To,) oldest first
            want = t + np.arange(h)                                                              # (H,)
            pads.append(want > d['seg_end'][t])
            tgt = d['actions'][np.minimum(want, d['seg_end'][t])][None]                          # (1, H, A)
            tgts.append(to_delta(tgt, d['state'][t][None], cfg.delta_action_dims)[0])           # (H, A)
            if cfg.state_dim:
                states.append(d['state'][obs])                                                   # (To, S)
            for o in obs:
                for c in self.cameras:
                    frames.append((e, c, int(d['frame_index'][c][o]), d))
            u = int(d['instruction'][t])
            ids.append(d['tokens'][0][u])
            masks.append(d['tokens'][1][u])
            draws.append(draw)
        images = self._images(frames).reshape((b, n_obs * n_cam) + (3, cfg.backbone.image_size,
                                                                     cfg.backbone.image_size))  # (B, To*C, 3, S, S)
        if self.augment_shift and all(d is not None for d in draws):
            ox, oy = shift_offsets(self.seed, np.array(draws), self.augment_shift)
            images = _shift_batch(images, self.augment_shift, ox, oy)
        out = Batch(images=images, token_ids=torch.from_numpy(np.stack(ids)),
                    attention_mask=torch.from_numpy(np.stack(masks)),
                    actions=torch.from_numpy(self.stats['action'].normalize(np.stack(tgts).astype(np.float32))),
                    action_is_pad=torch.from_numpy(np.stack(pads)))
        if cfg.state_dim:
            out['state'] = torch.from_numpy(self.stats['state'].normalize(np.stack(states).astype(np.float32)))
        return [out]

    def _images(self, frames: List[Any]) -> torch.Tensor:
        """uint8 ``(n, 3, S, S)`` of ``(episode, camera, frame, lowdim)`` requests, in order.

        Frames are decoded and resized a chunk of at most :data:`RESIZE_PIXELS` recorded pixels at a
        time (the area filter works in float: 64 frames of 480x480 would be 180 MB at once)."""
        size = self.cfg.backbone.image_size
        if getattr(self.source, 'resized', False):
            return torch.cat([self.source.frames(e, c, np.array([f])) for e, c, f, _ in frames])
        out = torch.empty((len(frames), 3, size, size), dtype=torch.uint8)
        pending: List[Tuple[int, np.ndarray]] = []

        def flush() -> None:
            by_shape: Dict[Tuple[int, ...], List[int]] = {}
            for k, (_, r) in enumerate(pending):
                by_shape.setdefault(r.shape, []).append(k)
            for ks in by_shape.values():
                out[torch.tensor([pending[k][0] for k in ks])] = preprocess_images_uint8(
                    np.stack([pending[k][1] for k in ks]), size)
            pending.clear()

        pixels = 0
        for j, (e, c, f, d) in enumerate(frames):
            r = self.source.raw_frames(e, c, np.array([f]), d)[0]                             # (H, W, 3)
            pending.append((j, r))
            pixels += r.shape[0] * r.shape[1]
            if pixels >= RESIZE_PIXELS:
                flush()
                pixels = 0
        if pending:
            flush()
        return out


#: Recorded pixels decoded and resized together in :meth:`ChunkDataset._images` (1 M: 12 MB of floats).
RESIZE_PIXELS = 1 << 20


class Batch(dict):
    """A batch built by :meth:`ChunkDataset.__getitems__` (``{key: (B, ...) tensor}``)."""


def collate(samples: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """The DataLoader's ``collate_fn``: a :class:`Batch` from ``__getitems__`` as it is, or single
    samples stacked (``(B, ...)`` per key)."""
    if len(samples) == 1 and isinstance(samples[0], Batch):
        return dict(samples[0])
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


class StepBatchSampler(torch.utils.data.Sampler):
    """Batches of ``(sample index, stream position)`` for optimizer steps ``start_step .. steps - 1``.

    The stream is the concatenation of permutations of ``range(n)``, one per epoch
    (``numpy.random.default_rng([seed, epoch])``). Step ``s`` consumes positions
    ``[s G, (s + 1) G)`` with ``G = batch_size x world_size x grad_accum``; micro-batch ``m`` of
    rank ``r`` is positions ``s G + (m W + r) B + [0, B)``. One process with batch ``2B`` and two
    with ``B`` thus draw the same samples per step, and a run resumed at step ``s`` draws what the
    uninterrupted run drew.

    Raises:
        ValueError: ``n < 1``, or a rank / size out of range.
    """

    def __init__(self, n: int, batch_size: int, *, steps: int, start_step: int = 0, world_size: int = 1,
                 rank: int = 0, grad_accum: int = 1, seed: int = 0) -> None:
        if n < 1:
            raise ValueError('StepBatchSampler: the training split has no samples')
        if not 0 <= rank < world_size or batch_size < 1 or grad_accum < 1:
            raise ValueError(f'StepBatchSampler: rank {rank}, world_size {world_size}, batch_size {batch_size}, '
                             f'grad_accum {grad_accum}')
        self.n, self.b, self.steps, self.start = int(n), int(batch_size), int(steps), int(start_step)
        self.w, self.r, self.k, self.seed = int(world_size), int(rank), int(grad_accum), int(seed)
        self._perm: Tuple[int, Optional[np.ndarray]] = (-1, None)

    @property
    def global_batch(self) -> int:
        return self.b * self.w * self.k

    def _at(self, pos: np.ndarray) -> np.ndarray:
        epoch, within = pos // self.n, pos % self.n
        out = np.empty_like(pos)
        for ep in np.unique(epoch):
            if self._perm[0] != ep:
                self._perm = (int(ep), np.random.default_rng([self.seed, int(ep)]).permutation(self.n))
            sel = epoch == ep
            out[sel] = self._perm[1][within[sel]]
        return out

    def positions(self, step: int, micro: int = 0) -> np.ndarray:
        """Stream positions of this rank's micro-batch ``micro`` of step ``step`` (B,)."""
        base = step * self.global_batch + (micro * self.w + self.r) * self.b
        return np.arange(base, base + self.b, dtype=np.int64)

    def __len__(self) -> int:
        return max(0, self.steps - self.start) * self.k

    def __iter__(self):
        for s in range(self.start, self.steps):
            for m in range(self.k):
                pos = self.positions(s, m)
                yield [(int(i), int(p)) for i, p in zip(self._at(pos), pos)]
