"""Training loop: episodes (``vla_training.bag_dataset.Episode``) or the dataset cache -> VLA checkpoint.

Data: :class:`vla_training.dataset.ChunkDataset` builds each sample when the loader asks for it
(from the on-disk cache, :mod:`vla_training.dataset_cache`, or from in-memory episodes), a
``torch.utils.data.DataLoader`` with ``num_workers`` processes feeds the steps, and
:class:`vla_training.dataset.StepBatchSampler` makes the samples of step ``s`` a function of
``(seed, s)``: batches mix episodes (epoch-wise permutations), a resumed run continues the
uninterrupted run's stream, and N processes with batch B see what one process with batch N x B sees.
:func:`compute_stats` fits quantile normalization on the training episodes only.

Engine: HF ``accelerate``. One process by default; started by ``torchrun`` (or ``accelerate
launch``, or ``train --nproc-per-node N``) each process trains a DDP replica (gloo on CPU, NCCL on
GPU), and an ``accelerate`` config file adds FSDP or DeepSpeed. ``mixed_precision: bf16`` autocasts
the forward pass; ``grad_accum`` micro-batches per step; gradient clipping; warmup + cosine (or
linear / constant) learning rate from ``transformers.get_scheduler``; EMA of the weights
(``ema_decay``, ``torch.optim.swa_utils``: what Octo and openpi deploy) saved as the checkpoint.

Every ``checkpoint_every`` steps the training state (weights, optimizer, scheduler, EMA, every
process's RNG, the step = the data position) is written atomically to ``<output>/training_state``;
``train --resume`` continues from it after a crash or ``kill -9`` on the same loss curve, losing at
most one interval. The loss goes to ``train_log.jsonl`` and TensorBoard (``tb/``), and to W&B with
``wandb_project`` set; ``eval_every`` runs closed-loop episodes in the MuJoCo scene and logs their
success. The deployable checkpoint is written atomically with
:func:`vla_policy.checkpoint.save_checkpoint`.

:func:`build_arrays` and :class:`_Data` are the vectorized in-RAM form of the same samples, kept as
the reference the loader is tested against (and for small experiments).
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from vla_policy.checkpoint import save_checkpoint
from vla_policy.images import preprocess_images_uint8
from vla_policy.models.config import VLAConfig
from vla_policy.models.tokenizer import HFTokenizer, WordTokenizer
from vla_policy.models.vla import VLA
from vla_policy.normalization import NormalizationStats
from vla_policy.transforms import to_delta

from .bag_dataset import chunk_targets
from .bag_reader import DEFAULT_CAMERA

__all__ = ['TrainConfig', 'TrainResult', 'build_arrays', 'check_horizon', 'compute_stats', 'split_episodes', 'train',
           'random_shift']


@dataclass
class TrainConfig:
    """Optimisation settings (the ``train`` section of a training YAML).

    Attributes:
        steps: optimizer steps.
        batch_size: samples per process and micro-batch; a step averages
            ``batch_size x processes x grad_accum`` samples.
        lr: peak learning rate (AdamW).
        weight_decay: AdamW decay on weight matrices (not on biases / norms / embeddings' 1-D params).
        warmup_steps: linear warmup length (< steps).
        schedule: ``transformers.get_scheduler`` name after warmup: ``cosine`` (default, as the
            recipes were tuned), ``linear``, ``constant_with_warmup``.
        grad_clip: max global gradient norm (0 disables).
        grad_accum: micro-batches accumulated per optimizer step.
        mixed_precision: ``no``, ``bf16`` (autocast; CPU and recent GPUs) or ``fp16`` (GPU, scaled).
        ema_decay: exponential moving average of the weights (0 = off; Octo / openpi use 0.99-0.9999);
            the checkpoint then holds the EMA weights.
        seed: torch / numpy seed (model init, batches, augmentation, split).
        num_threads: ``torch.set_num_threads`` per process.
        num_workers: DataLoader worker processes (0 = load in the training process).
        log_every: steps between log lines (JSONL, TensorBoard, W&B, progress bar).
        eval_fraction: fraction of episodes held out for the validation loss (0 = none).
        val_max_samples: validation samples evaluated (an even spread over the held-out episodes).
        stats_max_ticks: normalization statistics from at most this many ticks (a seeded subset of
            the training episodes beyond it; quantiles of 10^6 rows are exact to ~1e-3).
        device: torch device (``cpu``, ``cuda``; under torchrun each process takes its local GPU).
        output_dir: run directory; the checkpoint goes to ``output_dir/checkpoint``.
        save_every: also write the deployable checkpoint every N steps (0 = only at the end).
        checkpoint_every: write the resumable training state every N steps (0 = never).
        augment_shift: random-shift padding in pixels (0 disables).
        eval_every: closed-loop evaluation in the MuJoCo Franka scene every N steps (0 = never).
        eval_episodes: episodes per task of that evaluation (held-out seeds).
        eval_tasks: task kinds evaluated (``reach``, ``pick``).
        wandb_project: also log to this W&B project (``wandb`` must be installed; env
            ``WANDB_PROJECT`` works too).
    """

    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    schedule: str = 'cosine'
    grad_clip: float = 1.0
    grad_accum: int = 1
    mixed_precision: str = 'no'
    ema_decay: float = 0.0
    seed: int = 0
    num_threads: int = 1
    num_workers: int = 0
    log_every: int = 50
    eval_fraction: float = 0.1
    val_max_samples: int = 4096
    stats_max_ticks: int = 1_000_000
    device: str = 'cpu'
    output_dir: str = 'runs/vla'
    save_every: int = 0
    checkpoint_every: int = 500
    augment_shift: int = 4
    eval_every: int = 0
    eval_episodes: int = 10
    eval_tasks: List[str] = field(default_factory=lambda: ['reach'])
    wandb_project: Optional[str] = None

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f'steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}')
        if not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f'warmup_steps ({self.warmup_steps}) must be in [0, steps={self.steps})')
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f'eval_fraction must be in [0, 1), got {self.eval_fraction}')
        if self.lr <= 0 or self.grad_clip < 0 or self.log_every < 1 or self.augment_shift < 0:
            raise ValueError('lr must be > 0, grad_clip >= 0, log_every >= 1, augment_shift >= 0')
        if self.schedule not in SCHEDULES:
            raise ValueError(f'schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}')
        if self.mixed_precision not in ('no', 'bf16', 'fp16'):
            raise ValueError(f"mixed_precision must be 'no', 'bf16' or 'fp16', got {self.mixed_precision!r}")
        if self.mixed_precision == 'fp16' and self.device == 'cpu':
            raise ValueError("mixed_precision 'fp16' needs a GPU (loss scaling); use 'bf16' on the CPU")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f'ema_decay must be in [0, 1), got {self.ema_decay}')
        for k in ('grad_accum',):
            if getattr(self, k) < 1:
                raise ValueError(f'{k} must be >= 1, got {getattr(self, k)}')
        for k in ('num_workers', 'save_every', 'checkpoint_every', 'eval_every', 'val_max_samples', 'stats_max_ticks'):
            if getattr(self, k) < 0:
                raise ValueError(f'{k} must be >= 0, got {getattr(self, k)}')
        if self.eval_every and (self.eval_episodes < 1 or not self.eval_tasks):
            raise ValueError('eval_every needs eval_episodes >= 1 and at least one eval_tasks entry')
        self.eval_tasks = list(self.eval_tasks)


#: ``TrainConfig.schedule`` values (``transformers.get_scheduler`` names).
SCHEDULES = ('cosine', 'linear', 'constant_with_warmup')
#: TrainConfig fields a resumed run may change (they do not alter the loss curve).
RESUME_MAY_CHANGE = ('device', 'num_threads', 'num_workers', 'log_every', 'output_dir', 'eval_every',
                     'eval_episodes', 'eval_tasks', 'wandb_project', 'save_every', 'checkpoint_every')


@dataclass
class TrainResult:
    """checkpoint_dir; losses: (step, training loss) per step; val_loss on held-out episodes (None if none); seconds."""

    checkpoint_dir: Path
    losses: List[Tuple[int, float]]
    val_loss: Optional[float]
    seconds: float


def _episode_cameras(i: int, ep, cfg: VLAConfig) -> Dict[str, np.ndarray]:
    """``{camera: (T, H, W, 3)}`` of ``ep`` for ``cfg.camera_names``, in that order.

    An episode's cameras are ``ep.camera_images`` (``{name: frames}``, as
    :func:`vla_training.bag_dataset.read_episode` fills it). A one-camera config also takes an
    episode without names (``ep.images``, taken as camera ``'front'``: old episodes and bags), or
    the one camera it has, whatever its name.

    Raises:
        ValueError: a configured camera the episode lacks (names both sides and the data key to set).
    """
    names = tuple(cfg.camera_names)
    have = dict(getattr(ep, 'camera_images', None) or {}) or {DEFAULT_CAMERA: ep.images}
    if len(names) == 1 and len(have) == 1:
        return {names[0]: next(iter(have.values()))}
    missing = [c for c in names if c not in have]
    if missing:
        raise ValueError(
            f'episode {i} ({getattr(ep, "source", "?")}): config camera_names={list(names)} but the episode has '
            f'cameras {list(have)}; missing {missing}. Read the bags with one topic per '
            f'camera (data topics images: {{{", ".join(f"{c}: <topic>" for c in names)}}})')
    return {c: have[c] for c in names}


def _check_episode(i: int, ep, cfg: VLAConfig) -> None:
    name = f'episode {i} ({getattr(ep, "source", "?")})'
    t = len(ep.stamps)
    if t < 1:
        raise ValueError(f'{name} is empty')
    for cam, im in _episode_cameras(i, ep, cfg).items():
        im = np.asarray(im)
        if im.dtype != np.uint8 or im.ndim != 4 or im.shape[-1] != 3 or im.shape[0] != t:
            what = 'images' if len(cfg.camera_names) == 1 else f'camera {cam!r} images'
            raise ValueError(f'{name}: {what} must be uint8 ({t}, H, W, 3), got {im.dtype} {im.shape}')
    q, a = np.asarray(ep.joint_positions), np.asarray(ep.actions)
    if q.shape != (t, cfg.state_dim) and cfg.state_dim:
        raise ValueError(f'{name}: joint_positions shape {q.shape}, config state_dim={cfg.state_dim} needs ({t}, {cfg.state_dim})')
    if a.shape != (t, cfg.action_dim):
        raise ValueError(f'{name}: actions shape {a.shape}, config action_dim={cfg.action_dim} needs ({t}, {cfg.action_dim})')
    if len(ep.instructions) != t:
        raise ValueError(f'{name}: {len(ep.instructions)} instructions for {t} steps')
    for k, v in (('joint_positions', q), ('actions', a)):
        if not np.all(np.isfinite(v)):
            raise ValueError(f'{name}: {k} contains NaN/Inf')


def check_horizon(cfg: VLAConfig, lengths: Sequence[Tuple[int, Any]]) -> None:
    """Refuse a chunk longer than every episode: each target would be mostly end padding.

    ``lengths``: ``(ticks, source)`` per episode.

    Raises:
        ValueError: ``chunk.chunk_size`` above the longest episode's tick count (names it and its source).
    """
    if not lengths:
        return
    t_max, src = max(lengths, key=lambda x: x[0])
    if cfg.chunk.chunk_size > t_max:
        raise ValueError(f'model.chunk.chunk_size ({cfg.chunk.chunk_size}) is longer than the longest episode '
                         f'({t_max} ticks, {src}): every action chunk would be end padding; use chunk_size <= {t_max}')


def build_arrays(episodes: Sequence[Any], cfg: VLAConfig) -> Dict[str, np.ndarray]:
    """Sample windows for every tick of every episode.

    Returns (N = total ticks, F = total frames = N here, To = n_obs_steps, H = chunk_size,
    C = ``len(cfg.camera_names)``):
        ``images`` uint8 (F * C, 3, S, S) at ``cfg.backbone.image_size``: frame ``f`` of camera
        ``c`` (``cfg.camera_names`` order) is row ``f * C + c``;
        ``obs_index`` int64 (N, To) rows of ``state`` (frames), oldest first; at an episode start
        (or after a dropped-tick gap) the oldest available frame is repeated;
        ``image_index`` int64 (N, To * C) rows of ``images``, time-major camera-minor
        (``[t * C + c]``, the model's image layout); equal to ``obs_index`` for one camera;
        ``state`` float32 (F, S) joint positions (rad / m), un-normalized;
        ``actions`` float32 (N, H, A) targets ``actions[t:t+H]``, end padded by repeating the last;
        ``action_is_pad`` bool (N, H); ``instructions`` str (N,); ``episode`` int64 (N,).

    Raises:
        ValueError: no episodes, an episode lacking a configured camera (see
            :func:`_episode_cameras`), or an episode with wrong shapes / dtypes / non-finite values
            (episode index and source named).
    """
    if not episodes:
        raise ValueError('build_arrays: no episodes')
    n_cam = len(cfg.camera_names)
    h, n_obs = cfg.chunk.chunk_size, cfg.chunk.n_obs_steps
    for i, ep in enumerate(episodes):
        _check_episode(i, ep, cfg)
    check_horizon(cfg, [(len(ep.stamps), getattr(ep, 'source', i)) for i, ep in enumerate(episodes)])
    imgs, states, acts, pads, instr, epi, obs = [], [], [], [], [], [], []
    offset = 0
    for i, ep in enumerate(episodes):
        t = len(ep.stamps)
        rate = getattr(ep, 'rate_hz', None)
        kw = dict(stamps=np.asarray(ep.stamps), period_s=1.0 / rate) if rate else {}
        tgt, pad = chunk_targets(np.asarray(ep.actions, np.float32), h, **kw)  # (T, H, A), (T, H)
        tgt = to_delta(tgt, np.asarray(ep.joint_positions, np.float32), cfg.delta_action_dims)  # (T, H, A)
        # start of each tick's contiguous stretch (a gap = dropped ticks), for observation padding
        seg_start = np.zeros(t, dtype=np.int64)
        if rate:
            gaps = np.flatnonzero(np.diff(np.asarray(ep.stamps, np.float64)) > 1.5 / rate) + 1
            starts = np.concatenate([[0], gaps])
            seg_start = starts[np.searchsorted(starts, np.arange(t), side='right') - 1]
        want = np.arange(t)[:, None] - np.arange(n_obs - 1, -1, -1)[None, :]  # (T, To), oldest first
        obs.append(np.maximum(want, seg_start[:, None]) + offset)
        cams = [preprocess_images_uint8(np.asarray(v), cfg.backbone.image_size,
                                        name=f'episode {i} images' if n_cam == 1 else f'episode {i} camera {c!r}'
                                        ).numpy() for c, v in _episode_cameras(i, ep, cfg).items()]  # C x (T, 3, S, S)
        imgs.append(np.stack(cams, axis=1).reshape((t * n_cam,) + cams[0].shape[1:]))  # (T * C, 3, S, S)
        states.append(np.asarray(ep.joint_positions, np.float32).reshape(t, -1))
        acts.append(tgt.astype(np.float32))
        pads.append(pad)
        instr.extend(str(s) for s in ep.instructions)
        epi.append(np.full(t, i, dtype=np.int64))
        offset += t
    obs_index = np.concatenate(obs).astype(np.int64)                                  # (N, To) frames
    image_index = (obs_index[:, :, None] * n_cam + np.arange(n_cam)[None, None]).reshape(len(obs_index), -1)
    return {'images': np.concatenate(imgs), 'obs_index': obs_index, 'image_index': image_index,
            'state': np.concatenate(states), 'actions': np.concatenate(acts),
            'action_is_pad': np.concatenate(pads), 'instructions': np.array(instr, dtype=str),
            'episode': np.concatenate(epi)}


def compute_stats(episodes: Sequence[Any], cfg: VLAConfig) -> Dict[str, NormalizationStats]:
    """Quantile stats ``{'action', 'state'}`` (state only if ``state_dim > 0``) from ``episodes`` (pass the training split only)."""
    if not episodes:
        raise ValueError('compute_stats: no episodes')
    if cfg.delta_action_dims:
        # statistics of what the model predicts: chunk targets relative to the tick's joints
        rows = []
        for e in episodes:
            tgt, pad = chunk_targets(np.asarray(e.actions, np.float32), cfg.chunk.chunk_size)  # (T, H, A)
            rel = to_delta(tgt, np.asarray(e.joint_positions, np.float32), cfg.delta_action_dims)
            rows.append(rel[~pad])                                                            # (n, A)
        acts = np.concatenate(rows)
    else:
        acts = np.concatenate([np.asarray(e.actions, np.float32) for e in episodes])
    out = {'action': NormalizationStats.from_data(acts)}
    if cfg.state_dim:
        out['state'] = NormalizationStats.from_data(
            np.concatenate([np.asarray(e.joint_positions, np.float32) for e in episodes]))
    return out


def split_episodes(n: int, eval_fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices) of ``n`` episodes; at least one of each when eval_fraction > 0 and n >= 2."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = 0 if eval_fraction <= 0 or n < 2 else min(n - 1, max(1, int(round(eval_fraction * n))))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def random_shift(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """DrQ random shift: replicate-pad by ``pad`` px then crop back at a random offset per sample.

    x (B, T, 3, S, S) -> same shape; all T images of a sample share the shift.
    """
    if pad <= 0:
        return x
    b, t, c, s, _ = x.shape
    xp = F.pad(x.reshape(b, t * c, s, s), (pad, pad, pad, pad), mode='replicate')  # (B, T*3, S+2p, S+2p)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    out = torch.stack([xp[i, :, oy[i]:oy[i] + s, ox[i]:ox[i] + s] for i in range(b)])  # (B, T*3, S, S)
    return out.reshape(b, t, c, s, s)


class _Data:
    """Tensors of one split, normalized once; ``batch(idx)`` builds model batches."""

    def __init__(self, arrays: Dict[str, np.ndarray], sel: np.ndarray, stats, tokenizer, cfg: VLAConfig, device):
        self.cfg, self.device = cfg, device
        self.images = torch.from_numpy(arrays['images'])  # (F * C, 3, S, S) uint8, shared by both splits
        self.obs_index = torch.from_numpy(arrays['obs_index'][sel])  # (N, To) frames (state rows)
        self.image_index = torch.from_numpy(arrays.get('image_index', arrays['obs_index'])[sel])  # (N, To * C)
        self.actions = torch.from_numpy(stats['action'].normalize(arrays['actions'][sel]))  # (N, H, A)
        self.is_pad = torch.from_numpy(arrays['action_is_pad'][sel])  # (N, H)
        self.state = (torch.from_numpy(stats['state'].normalize(arrays['state'])) if cfg.state_dim else None)  # (F, S)
        ids, mask = tokenizer.encode_batch(list(arrays['instructions'][sel]))
        self.token_ids, self.mask = torch.from_numpy(ids), torch.from_numpy(mask)  # (N, L)

    def __len__(self) -> int:
        return int(self.obs_index.shape[0])

    def batch(self, idx: torch.Tensor, shift: int = 0, gen: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
        oi = self.obs_index[idx]  # (B, To)
        imgs = self.images[self.image_index[idx]].float() / 255.0  # (B, To * C, 3, S, S), time-major camera-minor
        if shift:
            imgs = random_shift(imgs, shift, gen)
        b = {'images': imgs, 'token_ids': self.token_ids[idx], 'attention_mask': self.mask[idx],
             'actions': self.actions[idx], 'action_is_pad': self.is_pad[idx]}
        if self.state is not None:
            b['state'] = self.state[oi]  # (B, To, S)
        return {k: v.to(self.device) for k, v in b.items()}


def _param_groups(model: torch.nn.Module, wd: float):
    decay, no = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no).append(p)
    return [{'params': decay, 'weight_decay': wd}, {'params': no, 'weight_decay': 0.0}]


class _LossModule(torch.nn.Module):
    """``forward(batch) -> (loss, info)`` of a VLA: what DDP / FSDP wrap (their hooks run on forward)."""

    def __init__(self, vla: VLA) -> None:
        super().__init__()
        self.vla = vla

    def forward(self, batch: Dict[str, torch.Tensor]):
        return self.vla.loss(batch)


def process_state(device: str):
    """accelerate's ``PartialState`` of this process (initialises the process group under torchrun:
    gloo for ``device: cpu``, NCCL for GPUs); the one :func:`train` uses."""
    from accelerate import PartialState
    return PartialState(cpu=device == 'cpu')


def _make_accelerator(cfg: TrainConfig, find_unused_parameters: bool = False):
    """The ``accelerate.Accelerator`` of this process (DDP / FSDP / DeepSpeed from the launcher's env).

    Gradient accumulation, the scheduler and the data loader are driven here, not by accelerate
    (its prepared scheduler steps once per process and its data loader would re-shard our sampler).
    ``find_unused_parameters``: DDP must be told when a structure leaves parameters without
    gradients (e.g. a VLM's LM head under a continuous head), see :func:`_unused_parameters`.
    """
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.state import AcceleratorState
    if int(os.environ.get('WORLD_SIZE', '1')) <= 1:
        AcceleratorState._reset_state(True)   # several trainings in one process (tests, benchmarks)
    process_state(cfg.device)
    ddp = DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)
    return Accelerator(cpu=cfg.device == 'cpu', mixed_precision=cfg.mixed_precision, kwargs_handlers=[ddp])


def _unused_parameters(vla: VLA, batch: Dict[str, torch.Tensor]) -> bool:
    """Whether one backward pass on ``batch`` leaves a trainable parameter without a gradient."""
    loss, _ = vla.loss(batch)
    loss.backward()
    unused = any(p.grad is None for p in vla.parameters() if p.requires_grad)
    vla.zero_grad(set_to_none=True)
    return unused


def _source_of(data, cfg: VLAConfig):
    from .dataset import CacheSource, EpisodeSource
    from .dataset_cache import DatasetCache
    if isinstance(data, DatasetCache):
        for i, e in enumerate(data.entries):
            m = e.meta
            if cfg.state_dim and m['state_dim'] != cfg.state_dim:
                raise ValueError(f'episode {i} ({m["source"]}): joint_positions have {m["state_dim"]} columns, '
                                 f'config state_dim={cfg.state_dim}')
            if m['action_dim'] != cfg.action_dim:
                raise ValueError(f'episode {i} ({m["source"]}): actions have {m["action_dim"]} columns, '
                                 f'config action_dim={cfg.action_dim}')
        return CacheSource(data, cfg.camera_names, cfg.backbone.image_size)
    episodes = list(data)
    if not episodes:
        raise ValueError('train: no episodes')
    for i, ep in enumerate(episodes):
        _check_episode(i, ep, cfg)
    return EpisodeSource(episodes, cfg.camera_names, cfg.backbone.image_size)


def _stats_subset(lengths: np.ndarray, ids: np.ndarray, max_ticks: int, seed: int) -> np.ndarray:
    """Training episodes the statistics are fitted on: all, or a seeded subset of at most ``max_ticks``."""
    if not max_ticks or lengths[ids].sum() <= max_ticks:
        return ids
    order = np.random.default_rng([seed, 7]).permutation(ids)
    keep = order[np.cumsum(lengths[order]) <= max_ticks]
    return np.sort(keep if len(keep) else order[:1])


def _instructions(source, ids: Sequence[int]) -> List[str]:
    out: List[str] = []
    for i in ids:
        out.extend(source.lowdim(int(i))['instructions'])
    return out


def _fingerprint(source, tr_ep: np.ndarray) -> str:
    import hashlib
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps([[source.name(int(i)), int(source.lengths[i])] for i in tr_ep]).encode())
    return h.hexdigest()


STATE_DIR = 'training_state'


def _find_state(out: Path) -> Optional[Path]:
    """``out/training_state``, or the previous state a crash between its two renames left aside."""
    d = out / STATE_DIR
    if (d / 'state.json').is_file():
        return d
    olds = sorted(out.glob(f'.{STATE_DIR}.old-*'), key=lambda p: p.stat().st_mtime)
    olds = [p for p in olds if (p / 'state.json').is_file()]
    return olds[-1] if olds else None


def _check_resume(state: Dict[str, Any], cfg: VLAConfig, train_cfg: TrainConfig, fingerprint: str,
                  world: int, where: Path) -> None:
    """Refuse to resume a state written by another run (names the first differing field)."""
    now_model = json.loads(json.dumps(cfg.to_dict()))     # as state.json holds it (tuples -> lists)
    if state['model_config'] != now_model:
        diff = sorted(k for k in set(state['model_config']) | set(now_model)
                      if state['model_config'].get(k) != now_model.get(k))
        raise ValueError(f'--resume: {where} was written for another model config (differs in {diff})')
    saved, now = state['train_config'], json.loads(json.dumps(asdict(train_cfg)))
    diff = sorted(k for k in now if k not in RESUME_MAY_CHANGE and saved.get(k) != now[k])
    if diff:
        raise ValueError(f'--resume: {where} was written with train.{diff[0]}={saved.get(diff[0])!r}, '
                         f'now {now[diff[0]]!r}; only {list(RESUME_MAY_CHANGE)} may change on resume')
    if state['data_fingerprint'] != fingerprint:
        raise ValueError(f'--resume: {where} was written for other training data (the bags or the split changed)')
    if state['world_size'] != world:
        raise ValueError(f'--resume: {where} was written by {state["world_size"]} processes, now {world}: the '
                         f'samples per step would change; resume with the same process count')


def _truncate_log(path: Path, step: int) -> None:
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text(encoding='utf-8').splitlines() if ln.strip() and json.loads(ln)['step'] <= step]
    tmp = path.with_suffix('.jsonl.tmp')
    tmp.write_text(''.join(ln + '\n' for ln in keep), encoding='utf-8')
    os.replace(tmp, path)


def _eval_closed_loop(ckpt: Path, train_cfg: TrainConfig, cfg: VLAConfig) -> Dict[str, float]:
    """Success per task of the checkpoint at ``ckpt`` in the MuJoCo Franka scene (held-out seeds)."""
    from .evaluate import EvalConfig, evaluate
    if cfg.embodiment != 'franka_panda':
        raise ValueError(f'train.eval_every: closed-loop evaluation runs the MuJoCo Franka scene; embodiment '
                         f'{cfg.embodiment!r} is evaluated with machine_demo')
    res = evaluate(EvalConfig(policy=str(ckpt), episodes=train_cfg.eval_episodes,
                              tasks=tuple(train_cfg.eval_tasks), workers=1))
    return {f'success_{k}': float(v) for k, v in res['success'].items()}


def train(data, vla_cfg: VLAConfig, train_cfg: TrainConfig, *, progress: bool = True,
          resume: bool = False) -> TrainResult:
    """Train a VLA and write ``train_cfg.output_dir/checkpoint``.

    Args:
        data: in-memory :class:`~vla_training.bag_dataset.Episode` objects, or a
            :class:`vla_training.dataset_cache.DatasetCache` (read from disk as the loader needs it).
        vla_cfg: model config (copied; ``backbone.vocab_size`` is filled in).
        train_cfg: optimisation settings.
        progress: tqdm bar on the main process.
        resume: continue from ``output_dir/training_state`` when it exists (same config, data and
            process count; a fresh start otherwise).

    The tokenizer is a :class:`WordTokenizer` built from the training instructions, or the HF
    tokenizer of ``vla_cfg.backbone.pretrained``. Under torchrun every process calls this; only the
    main process writes logs and checkpoints.

    Returns:
        :class:`TrainResult` (``losses``: the global-batch loss of every step run by this call).

    Raises:
        ValueError: bad episodes (see :func:`build_arrays`), bad configs, a training state that does
            not match (``resume``), or a non-finite loss (step named).
    """
    from tqdm.auto import tqdm
    from torch.utils.tensorboard import SummaryWriter
    from transformers import get_scheduler
    from .dataset import ChunkDataset, StepBatchSampler, collate

    t0 = time.time()
    pstate = process_state(train_cfg.device) if int(os.environ.get('WORLD_SIZE', '1')) > 1 else None
    torch.set_num_threads(train_cfg.num_threads)
    main = pstate is None or pstate.is_main_process
    world = 1 if pstate is None else pstate.num_processes
    rank = 0 if pstate is None else pstate.process_index
    cfg = VLAConfig.from_dict(copy.deepcopy(vla_cfg.to_dict()))
    out = Path(train_cfg.output_dir)
    if main:
        out.mkdir(parents=True, exist_ok=True)

    source = _source_of(data, cfg)
    check_horizon(cfg, [(int(n), source.name(i)) for i, n in enumerate(source.lengths)])
    tr_ep, va_ep = split_episodes(len(source), train_cfg.eval_fraction, train_cfg.seed)
    stats = compute_stats(source.lowdim_views(_stats_subset(source.lengths, tr_ep, train_cfg.stats_max_ticks,
                                                            train_cfg.seed)), cfg)
    if cfg.backbone.pretrained:
        tokenizer = HFTokenizer(cfg.backbone.pretrained, cfg.max_tokens)
    else:
        tokenizer = WordTokenizer.build(_instructions(source, tr_ep), cfg.max_tokens)
    cfg.backbone.vocab_size = tokenizer.vocab_size
    train_ds = ChunkDataset(source, tr_ep, cfg, stats, tokenizer, augment_shift=train_cfg.augment_shift,
                            seed=train_cfg.seed)
    val_ds = ChunkDataset(source, va_ep, cfg, stats, tokenizer) if len(va_ep) else None
    fingerprint = _fingerprint(source, tr_ep)

    torch.manual_seed(train_cfg.seed)
    vla = VLA(cfg)
    unused = world > 1 and _unused_parameters(vla, _to_device(collate(train_ds.__getitems__([0, 1])), 'cpu'))
    torch.manual_seed(train_cfg.seed + 1)
    acc = _make_accelerator(train_cfg, find_unused_parameters=unused)
    ema = None
    if train_cfg.ema_decay:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
        ema = AveragedModel(vla, multi_avg_fn=get_ema_multi_avg_fn(train_cfg.ema_decay), use_buffers=True)
    opt = torch.optim.AdamW(_param_groups(vla, train_cfg.weight_decay), lr=train_cfg.lr)
    sched = get_scheduler(train_cfg.schedule, opt, num_warmup_steps=train_cfg.warmup_steps,
                          num_training_steps=train_cfg.steps)
    model, opt = acc.prepare(_LossModule(vla), opt)
    acc.register_for_checkpointing(sched)
    if ema is not None:
        acc.register_for_checkpointing(ema)

    start = 0
    state_dir = _find_state(out) if resume else None
    if state_dir is not None:
        state = json.loads((state_dir / 'state.json').read_text(encoding='utf-8'))
        _check_resume(state, cfg, train_cfg, fingerprint, world, state_dir)
        acc.load_state(str(state_dir))
        start = int(state['step'])
    if main:
        if start:
            _truncate_log(out / 'train_log.jsonl', start)
        elif (out / 'train_log.jsonl').exists():
            (out / 'train_log.jsonl').unlink()
    ckpt_dir = out / 'checkpoint'
    extra = {'train_config': asdict(train_cfg), 'n_train_samples': len(train_ds),
             'n_val_samples': len(val_ds) if val_ds else 0, 'world_size': world,
             'global_batch': train_cfg.batch_size * world * train_cfg.grad_accum,
             'train_episodes': [source.name(int(i)) for i in tr_ep],
             'val_episodes': [source.name(int(i)) for i in va_ep]}

    sampler = StepBatchSampler(len(train_ds), train_cfg.batch_size, steps=train_cfg.steps, start_step=start,
                               world_size=world, rank=rank, grad_accum=train_cfg.grad_accum, seed=train_cfg.seed)
    loader = torch.utils.data.DataLoader(
        train_ds, batch_sampler=sampler, collate_fn=collate, num_workers=train_cfg.num_workers,
        worker_init_fn=_worker_init, pin_memory=acc.device.type == 'cuda',
        prefetch_factor=4 if train_cfg.num_workers else None, persistent_workers=False,
        generator=torch.Generator().manual_seed(train_cfg.seed))   # workers' seeds: not from the global RNG,
    # which the training state restores for the model's own noise (diffusion / flow) on resume
    writer = SummaryWriter(str(out / 'tb'), purge_step=start + 1 if start else None) if main else None
    wandb_run = _wandb(train_cfg, cfg, out, resume=bool(start)) if main else None

    losses: List[Tuple[int, float]] = []
    val_loss = None
    window: List[float] = []
    device = acc.device
    bar = tqdm(total=train_cfg.steps, initial=start, disable=not (progress and main), desc='train',
               dynamic_ncols=True)
    log = open(out / 'train_log.jsonl', 'a', encoding='utf-8') if main else None
    if train_cfg.num_workers:
        import gc
        gc.collect()
        gc.freeze()   # forked loader workers then copy less of this process's heap (its GC leaves it alone)
    it = iter(loader)
    try:
        for step in range(start + 1, train_cfg.steps + 1):
            step_loss = torch.zeros((), device=device)
            for micro in range(train_cfg.grad_accum):
                batch = _to_device(next(it), device)
                sync = micro == train_cfg.grad_accum - 1
                with (contextlib.nullcontext() if sync else acc.no_sync(model)), acc.autocast():
                    loss, _ = model(batch)
                acc.backward(loss / train_cfg.grad_accum)
                step_loss += loss.detach().float() / train_cfg.grad_accum
            gnorm = (acc.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
                     if train_cfg.grad_clip > 0 else torch.tensor(float('nan')))
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update_parameters(acc.unwrap_model(model).vla)
            lv = float(acc.reduce(step_loss, reduction='mean'))
            if not np.isfinite(lv):
                raise ValueError(f'non-finite training loss {lv} at step {step}')
            losses.append((step, lv))
            window.append(lv)
            bar.update(1)
            if step % train_cfg.log_every == 0 or step == train_cfg.steps:
                rec = {'step': step, 'loss': float(np.mean(window)), 'lr': sched.get_last_lr()[0],
                       'grad_norm': float(gnorm), 'time_s': time.time() - t0}
                if val_ds is not None and (step == train_cfg.steps or step % (train_cfg.log_every * 10) == 0):
                    val_loss = _evaluate_loss(model, val_ds, acc, train_cfg.val_max_samples)
                    rec['val_loss'] = val_loss
                if main:
                    _log(rec, writer, wandb_run, log)
                    bar.set_postfix(loss=f"{rec['loss']:.4f}")
                window = []
            if train_cfg.save_every and step % train_cfg.save_every == 0 and step != train_cfg.steps:
                _save_model(acc, model, ema, cfg, stats, tokenizer, ckpt_dir, dict(extra, step=step))
            if train_cfg.eval_every and step % train_cfg.eval_every == 0:
                ev = out / 'eval_checkpoint'
                _save_model(acc, model, ema, cfg, stats, tokenizer, ev, dict(extra, step=step))
                if main:
                    res = _eval_closed_loop(ev, train_cfg, cfg)
                    _log(dict({'step': step, 'time_s': time.time() - t0}, **{f'eval/{k}': v for k, v in res.items()}),
                         writer, wandb_run, log)
                acc.wait_for_everyone()
            if train_cfg.checkpoint_every and (step % train_cfg.checkpoint_every == 0 or step == train_cfg.steps):
                _save_state(acc, out, step, cfg, train_cfg, fingerprint, world)   # at the end too: resuming a
                # finished run then has nothing to redo
    finally:
        bar.close()
        if log is not None:
            log.close()
        if train_cfg.num_workers:
            import gc
            gc.unfreeze()
    if val_ds is not None and val_loss is None:
        val_loss = _evaluate_loss(model, val_ds, acc, train_cfg.val_max_samples)
    if writer is not None:
        writer.close()
    if wandb_run is not None:
        wandb_run.finish()
    _save_model(acc, model, ema, cfg, stats, tokenizer, ckpt_dir,
                dict(extra, step=train_cfg.steps, val_loss=val_loss, ema_decay=train_cfg.ema_decay))
    acc.wait_for_everyone()
    return TrainResult(checkpoint_dir=ckpt_dir, losses=losses, val_loss=val_loss, seconds=time.time() - t0)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def _to_device(batch: Dict[str, torch.Tensor], device) -> Dict[str, torch.Tensor]:
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    out['images'] = out['images'].float().div_(255.0)     # (B, To * C, 3, S, S) uint8 -> [0, 1]
    return out


def _log(rec: Dict[str, Any], writer, wandb_run, log) -> None:
    step = rec['step']
    for k, v in rec.items():
        if k in ('step', 'time_s'):
            continue
        tag = k if '/' in k else {'loss': 'train/loss', 'lr': 'train/lr', 'grad_norm': 'train/grad_norm',
                                  'val_loss': 'val/loss'}.get(k, f'train/{k}')
        writer.add_scalar(tag, v, step)
        if wandb_run is not None:
            wandb_run.log({tag: v}, step=step)
    log.write(json.dumps(rec) + '\n')
    log.flush()


def _wandb(train_cfg: TrainConfig, cfg: VLAConfig, out: Path, resume: bool):
    project = train_cfg.wandb_project or os.environ.get('WANDB_PROJECT')
    if not project:
        return None
    try:
        import wandb
    except ImportError:
        raise ValueError(f'train.wandb_project is {project!r} but wandb is not installed (pip install wandb)') from None
    run_id_file = out / 'wandb_run_id'
    run_id = run_id_file.read_text().strip() if resume and run_id_file.is_file() else None
    run = wandb.init(project=project, dir=str(out), id=run_id, resume='allow' if run_id else None,
                     config={'model': cfg.to_dict(), 'train': asdict(train_cfg)})
    run_id_file.write_text(run.id)
    return run


def _evaluate_loss(model, ds, acc, max_samples: int, batch_size: int = 128) -> float:
    """Mean loss over (an even spread of at most ``max_samples`` of) ``ds``, split over the processes."""
    from .dataset import collate
    n = len(ds)
    idx = np.arange(n) if not max_samples or n <= max_samples else np.linspace(0, n - 1, max_samples).astype(np.int64)
    mine = idx[acc.process_index::acc.num_processes]
    was = model.training
    model.eval()
    tot = torch.zeros(2, dtype=torch.float64, device=acc.device)
    with torch.no_grad():
        torch_state = torch.random.get_rng_state()
        torch.manual_seed(12345)              # the same diffusion / flow noise at every evaluation
        for s in range(0, len(mine), batch_size):
            keys = [int(i) for i in mine[s:s + batch_size]]
            batch = _to_device(collate(ds.__getitems__(keys)), acc.device)
            with acc.autocast():
                loss, _ = model(batch)
            tot += torch.tensor([float(loss) * len(keys), len(keys)], dtype=torch.float64, device=acc.device)
        torch.random.set_rng_state(torch_state)
    model.train(was)
    tot = acc.reduce(tot, reduction='sum')
    return float(tot[0] / max(float(tot[1]), 1.0))


def _save_model(acc, model, ema, cfg: VLAConfig, stats, tokenizer, directory: Path, extra: Dict[str, Any]) -> None:
    """Write the deployable checkpoint (EMA weights when enabled) from the main process."""
    sd = acc.get_state_dict(model)      # gathers FSDP shards; every process must call it
    if acc.is_main_process:
        vla = VLA(cfg)
        if ema is not None:
            vla.load_state_dict(ema.module.state_dict())
        else:
            vla.load_state_dict({k[len('vla.'):]: v for k, v in sd.items()})
        save_checkpoint(directory, vla.eval(), cfg, stats, tokenizer, extra)
    acc.wait_for_everyone()


def _save_state(acc, out: Path, step: int, cfg: VLAConfig, train_cfg: TrainConfig, fingerprint: str,
                world: int) -> None:
    """Write ``out/training_state`` atomically: accelerate's state (weights, optimizer, scheduler, EMA,
    RNG of every process) + ``state.json`` (step = data position, configs, data fingerprint)."""
    from robot_drivers.atomic import replace_directory
    tmp = out / f'.{STATE_DIR}.tmp-{step}'
    if acc.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    acc.wait_for_everyone()
    acc.save_state(str(tmp), safe_serialization=True)
    if acc.is_main_process:
        state = {'step': step, 'model_config': cfg.to_dict(), 'train_config': asdict(train_cfg),
                 'data_fingerprint': fingerprint, 'world_size': world, 'time': time.time()}
        (tmp / 'state.json').write_text(json.dumps(state, indent=1), encoding='utf-8')
        replace_directory(tmp, out / STATE_DIR)
    acc.wait_for_everyone()
