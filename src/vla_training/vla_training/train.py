"""Training loop: episodes (``vla_training.bag_dataset.Episode``) -> VLA checkpoint.

Pipeline: :func:`build_arrays` turns episodes into sample windows (observation indices with
start padding, action-chunk targets with end padding + ``action_is_pad``); :func:`compute_stats`
fits quantile normalization on the training episodes only; :func:`train` runs AdamW with linear
warmup + cosine decay (``transformers.get_cosine_schedule_with_warmup``), gradient clipping,
random-shift image augmentation (pad 4 + random crop, DrQ: Kostrikov et al. 2020; Diffusion
Policy, Chi et al. 2023), logs the loss to ``train_log.jsonl`` and TensorBoard (``tb/``), and
writes the checkpoint atomically with :func:`vla_policy.checkpoint.save_checkpoint`.

Images are preprocessed once into a uint8 tensor at the model resolution.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass
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
    """Optimisation settings.

    Attributes:
        steps: optimizer steps.
        batch_size: samples per step.
        lr: peak learning rate (AdamW).
        weight_decay: AdamW decay on weight matrices (not on biases / norms / embeddings' 1-D params).
        warmup_steps: linear warmup length (< steps).
        grad_clip: max global gradient norm (0 disables).
        seed: torch / numpy seed (model init, batches, augmentation, split).
        num_threads: ``torch.set_num_threads``.
        log_every: steps between log lines (JSONL, TensorBoard, progress bar).
        eval_fraction: fraction of episodes held out for the validation loss (0 = none).
        device: torch device.
        output_dir: run directory; the checkpoint goes to ``output_dir/checkpoint``.
        save_every: also checkpoint every N steps (0 = only at the end).
        augment_shift: random-shift padding in pixels (0 disables).
    """

    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    grad_clip: float = 1.0
    seed: int = 0
    num_threads: int = 1
    log_every: int = 50
    eval_fraction: float = 0.1
    device: str = 'cpu'
    output_dir: str = 'runs/vla'
    save_every: int = 0
    augment_shift: int = 4

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f'steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}')
        if not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f'warmup_steps ({self.warmup_steps}) must be in [0, steps={self.steps})')
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f'eval_fraction must be in [0, 1), got {self.eval_fraction}')
        if self.lr <= 0 or self.grad_clip < 0 or self.log_every < 1 or self.augment_shift < 0:
            raise ValueError('lr must be > 0, grad_clip >= 0, log_every >= 1, augment_shift >= 0')


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
    check_horizon(cfg, [(len(ep.stamps), getattr(ep, 'source', i)) for i, ep in enumerate(episodes)])
    imgs, states, acts, pads, instr, epi, obs = [], [], [], [], [], [], []
    offset = 0
    for i, ep in enumerate(episodes):
        _check_episode(i, ep, cfg)
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


def _evaluate(model: VLA, data: _Data, batch_size: int = 128) -> float:
    was = model.training
    model.eval()
    tot, n = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(data), batch_size):
            idx = torch.arange(s, min(s + batch_size, len(data)))
            loss, _ = model.loss(data.batch(idx))
            tot += float(loss) * len(idx)
            n += len(idx)
    model.train(was)
    return tot / max(n, 1)


def _param_groups(model: torch.nn.Module, wd: float):
    decay, no = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no).append(p)
    return [{'params': decay, 'weight_decay': wd}, {'params': no, 'weight_decay': 0.0}]


def train(episodes: Sequence[Any], vla_cfg: VLAConfig, train_cfg: TrainConfig, *, progress: bool = True) -> TrainResult:
    """Train a VLA on ``episodes`` and write ``train_cfg.output_dir/checkpoint``.

    The tokenizer is a :class:`WordTokenizer` built from the training instructions, or the HF tokenizer
    of ``vla_cfg.backbone.pretrained``. ``vla_cfg`` is copied (``backbone.vocab_size`` filled in).

    Raises:
        ValueError: bad episodes (see :func:`build_arrays`), bad configs, or a non-finite loss (step named).
    """
    from tqdm.auto import tqdm
    from torch.utils.tensorboard import SummaryWriter
    from transformers import get_cosine_schedule_with_warmup

    t0 = time.time()
    torch.set_num_threads(train_cfg.num_threads)
    torch.manual_seed(train_cfg.seed)
    cfg = VLAConfig.from_dict(copy.deepcopy(vla_cfg.to_dict()))
    out = Path(train_cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(train_cfg.device)

    arrays = build_arrays(episodes, cfg)
    tr_ep, va_ep = split_episodes(len(episodes), train_cfg.eval_fraction, train_cfg.seed)
    stats = compute_stats([episodes[i] for i in tr_ep], cfg)
    if cfg.backbone.pretrained:
        tokenizer = HFTokenizer(cfg.backbone.pretrained, cfg.max_tokens)
    else:
        tokenizer = WordTokenizer.build([s for i in tr_ep for s in episodes[i].instructions], cfg.max_tokens)
    cfg.backbone.vocab_size = tokenizer.vocab_size
    tr_sel = np.flatnonzero(np.isin(arrays['episode'], tr_ep))
    va_sel = np.flatnonzero(np.isin(arrays['episode'], va_ep))
    train_data = _Data(arrays, tr_sel, stats, tokenizer, cfg, device)
    val_data = _Data(arrays, va_sel, stats, tokenizer, cfg, device) if len(va_sel) else None

    model = VLA(cfg).to(device).train()
    opt = torch.optim.AdamW(_param_groups(model, train_cfg.weight_decay), lr=train_cfg.lr)
    sched = get_cosine_schedule_with_warmup(opt, train_cfg.warmup_steps, train_cfg.steps)
    gen = torch.Generator().manual_seed(train_cfg.seed)
    writer = SummaryWriter(str(out / 'tb'))
    ckpt_dir = out / 'checkpoint'
    extra = {'train_config': asdict(train_cfg), 'n_train_samples': len(train_data),
             'n_val_samples': len(val_data) if val_data else 0,
             'train_episodes': [str(getattr(episodes[i], 'source', i)) for i in tr_ep],
             'val_episodes': [str(getattr(episodes[i], 'source', i)) for i in va_ep]}
    losses: List[Tuple[int, float]] = []
    log_path = out / 'train_log.jsonl'
    val_loss = None
    bar = tqdm(range(1, train_cfg.steps + 1), disable=not progress, desc='train', dynamic_ncols=True)
    window: List[float] = []
    with open(log_path, 'w', encoding='utf-8') as log:
        for step in bar:
            idx = torch.randint(0, len(train_data), (train_cfg.batch_size,), generator=gen)
            batch = train_data.batch(idx, train_cfg.augment_shift, gen)
            loss, info = model.loss(batch)
            if not torch.isfinite(loss):
                raise ValueError(f'non-finite training loss {float(loss)} at step {step}')
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = (torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
                     if train_cfg.grad_clip > 0 else torch.tensor(float('nan')))
            opt.step()
            sched.step()
            lv = float(loss.detach())
            losses.append((step, lv))
            window.append(lv)
            if step % train_cfg.log_every == 0 or step == train_cfg.steps:
                rec = {'step': step, 'loss': float(np.mean(window)), 'lr': sched.get_last_lr()[0],
                       'grad_norm': float(gnorm), 'time_s': time.time() - t0}
                if val_data is not None and (step == train_cfg.steps or step % (train_cfg.log_every * 10) == 0):
                    val_loss = _evaluate(model, val_data)
                    rec['val_loss'] = val_loss
                    writer.add_scalar('val/loss', val_loss, step)
                writer.add_scalar('train/loss', rec['loss'], step)
                writer.add_scalar('train/lr', rec['lr'], step)
                writer.add_scalar('train/grad_norm', rec['grad_norm'], step)
                log.write(json.dumps(rec) + '\n')
                log.flush()
                bar.set_postfix(loss=f"{rec['loss']:.4f}")
                window = []
            if train_cfg.save_every and step % train_cfg.save_every == 0 and step != train_cfg.steps:
                model.eval()
                save_checkpoint(ckpt_dir, model, cfg, stats, tokenizer, dict(extra, step=step))
                model.train()
    if val_data is not None and val_loss is None:
        val_loss = _evaluate(model, val_data)
    writer.close()
    model.eval()
    save_checkpoint(ckpt_dir, model, cfg, stats, tokenizer, dict(extra, step=train_cfg.steps, val_loss=val_loss))
    return TrainResult(checkpoint_dir=ckpt_dir, losses=losses, val_loss=val_loss, seconds=time.time() - t0)
