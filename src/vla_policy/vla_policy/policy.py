"""``VLAPolicy``: a trained checkpoint behind the ``Policy`` contract (``infer`` / ``reset``).

Per call: preprocess the configured cameras' images (:mod:`vla_policy.images`, as in training),
tokenize the instruction, quantile-normalize the joint positions, run the model under
``torch.no_grad``, unnormalize the chunk. Joint names and ``dt = 1 / control_rate_hz`` come
from ``robot_drivers.embodiment.get_embodiment(cfg.embodiment)``.

A checkpoint whose head samples (``flow``) also serves real-time chunking: ``infer_guided``
maps the guide's absolute rows into the model's action space (the inverse of ``infer``'s
output chain) and samples with RTC guidance (:mod:`vla_policy.rtc`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from robot_drivers.embodiment import get_embodiment

from .checkpoint import load_checkpoint
from .contracts import ActionChunk, ChunkGuide, Observation
from .images import preprocess_image
from .models.config import VLAConfig
from .models.vla import VLA
from .normalization import NormalizationStats
from .normalization import EPS
from .rtc import sample_guided
from .transforms import from_delta, to_delta

__all__ = ['VLAPolicy', 'PROTOCOL_VERSION']

PROTOCOL_VERSION = 1   # version of the metadata() layout a policy server sends on connect


def cfg_head_samples(model: VLA) -> bool:
    """True when ``model``'s head draws noise in ``forward`` (``flow``, ``diffusion``)."""
    head = getattr(model, 'head', None)
    return bool(getattr(head, 'samples', getattr(head, 'supports_guidance', False)))


class VLAPolicy:
    """Runs a :class:`VLA` on observation histories.

    Args:
        model, config, stats (``{'state', 'action'}``), tokenizer: as returned by ``load_checkpoint``.
        device: torch device string.
        meta: the checkpoint's meta.json dict.
        seed: for a sampling head, seed of the noise generator (re-seeded by :meth:`reset`, so an
            episode is reproducible); None draws from torch's global generator.
        checkpoint: the directory the policy was loaded from (reported by :meth:`metadata`).

    Raises:
        KeyError: unknown embodiment, or ``stats`` lacks 'action' (or 'state' when state_dim > 0).
        ValueError: embodiment DoF differs from ``action_dim``.
    """

    def __init__(self, model: VLA, config: VLAConfig, stats: Dict[str, NormalizationStats], tokenizer,
                 device: str = 'cpu', meta: Optional[dict] = None, seed: Optional[int] = None,
                 checkpoint: Optional[Union[str, Path]] = None) -> None:
        self.model = model.to(device).eval()
        self.config = config
        self.device = torch.device(device)
        self.tokenizer = tokenizer
        self.meta = meta or {}
        self.checkpoint = str(checkpoint) if checkpoint is not None else None
        self.seed = seed
        self.generator: Optional[torch.Generator] = None
        if seed is not None:
            self.generator = torch.Generator(device=self.device)
            self.generator.manual_seed(int(seed))
        self.embodiment = get_embodiment(config.embodiment)
        if self.embodiment.dof != config.action_dim:
            raise ValueError(f'embodiment {config.embodiment!r} has {self.embodiment.dof} joints but the '
                             f'model predicts action_dim={config.action_dim}')
        need = ['action'] + (['state'] if config.state_dim else [])
        miss = [k for k in need if k not in stats]
        if miss:
            raise KeyError(f'normalization stats lack {miss} (have {sorted(stats)})')
        self.stats = stats

    @classmethod
    def from_checkpoint(cls, path: Union[str, Path], device: str = 'cpu', seed: Optional[int] = None) -> 'VLAPolicy':
        """Load a checkpoint directory written by ``save_checkpoint`` (``seed``: see the class)."""
        model, cfg, stats, tok, meta = load_checkpoint(path, device=device)
        return cls(model, cfg, stats, tok, device=device, meta=meta, seed=seed, checkpoint=path)

    @property
    def supports_guidance(self) -> bool:
        """True when the model samples with an exposed velocity field (a ``flow`` head under a continuous
        structure): RTC is possible."""
        return bool(getattr(self.model, 'supports_guidance', False))

    def metadata(self) -> Dict[str, Any]:
        """What a client needs before the first call (msgpack/JSON-serialisable; protocol version 1).

        Keys: ``protocol_version, embodiment, joint_names, camera_names, n_obs_steps,
        n_action_steps, chunk_size, dt`` (s), ``supports_guidance, checkpoint`` (path or None),
        ``backbone, head`` (registry names; head ``'none'`` for the discrete structure), ``structure``,
        plus ``action_dim, state_dim, image_size`` and ``num_steps`` (Euler steps of a flow head, DDIM
        steps of a diffusion head, else None).
        """
        cfg = self.config
        return {'protocol_version': PROTOCOL_VERSION, 'embodiment': cfg.embodiment,
                'joint_names': list(self.embodiment.joint_names), 'camera_names': list(cfg.camera_names),
                'n_obs_steps': int(cfg.chunk.n_obs_steps), 'n_action_steps': int(cfg.chunk.n_action_steps),
                'chunk_size': int(cfg.chunk.chunk_size), 'dt': float(self.embodiment.dt),
                'supports_guidance': self.supports_guidance, 'checkpoint': self.checkpoint,
                'backbone': cfg.backbone.name, 'head': cfg.head.name, 'action_dim': int(cfg.action_dim),
                'state_dim': int(cfg.state_dim), 'image_size': int(cfg.backbone.image_size),
                'structure': cfg.structure, 'num_steps': self._num_steps()}

    def _num_steps(self) -> Optional[int]:
        if cfg_head_samples(self.model):
            return int(self.config.head.num_inference_steps if self.config.head.name == 'diffusion'
                       else self.config.head.num_steps)
        return None

    @property
    def cameras(self) -> Tuple[str, ...]:
        """Every camera the model reads from ``Observation.images``, in the model's order
        (``VLAConfig.camera_names``; images are fed time-major, camera-minor)."""
        return tuple(self.config.camera_names)

    @property
    def camera(self) -> str:
        """The first camera the model reads (:attr:`cameras` ``[0]``; for one-camera callers)."""
        return self.config.camera_names[0]

    def reset(self) -> None:
        """Stateless between calls; with a ``seed``, re-seed the sampling noise (reproducible episodes)."""
        if self.generator is not None:
            self.generator.manual_seed(int(self.seed))

    def make_batch(self, history: Sequence[Observation]) -> Dict[str, torch.Tensor]:
        """Model batch (B=1) from the newest ``n_obs_steps`` observations (oldest repeated if short).

        Raises:
            ValueError: empty history, a missing camera, wrong joint count (names the step).
        """
        cfg = self.config
        if not history:
            raise ValueError('VLAPolicy.infer needs at least one Observation')
        n = cfg.chunk.n_obs_steps
        hist = list(history)[-n:]
        hist = [hist[0]] * (n - len(hist)) + hist  # pad at episode start by repeating the oldest
        size = cfg.backbone.image_size
        imgs = []
        for i, ob in enumerate(hist):
            for cam in cfg.camera_names:
                if cam not in ob.images:
                    raise ValueError(f'observation {i} lacks camera {cam!r} (has {sorted(ob.images)})')
                imgs.append(preprocess_image(ob.images[cam], size, name=f'camera {cam!r}'))
        batch = {'images': torch.stack(imgs)[None].to(self.device)}  # (1, T_img, 3, S, S)
        ids, mask = self.tokenizer.encode(hist[-1].instruction)
        batch['token_ids'] = torch.from_numpy(ids)[None].to(self.device)  # (1, L)
        batch['attention_mask'] = torch.from_numpy(mask)[None].to(self.device)  # (1, L)
        if cfg.state_dim:
            q = []
            for i, ob in enumerate(hist):
                if ob.joint_positions.shape[0] != cfg.state_dim:
                    raise ValueError(f'observation {i}: joint_positions has {ob.joint_positions.shape[0]} joints, '
                                     f'the model expects {cfg.state_dim} ({self.embodiment.joint_names})')
                q.append(ob.joint_positions)
            st = self.stats['state'].normalize(np.stack(q).astype(np.float32))  # (T, S)
            batch['state'] = torch.from_numpy(st)[None].to(self.device)  # (1, T, S)
        return batch

    def _head_kwargs(self) -> Dict[str, Any]:
        # every sampling head (flow, diffusion) draws its noise from the policy's seeded generator
        return {'generator': self.generator} if cfg_head_samples(self.model) and self.generator is not None else {}

    def infer(self, history: Sequence[Observation]) -> ActionChunk:
        """ActionChunk (H, A) of absolute joint targets (rad / m) for the newest observation."""
        batch = self.make_batch(history)
        with torch.no_grad():
            pred = self.model(batch, **self._head_kwargs())[0].float().cpu().numpy()  # (H, A) normalized
        return self._chunk(pred, history)

    def _chunk(self, pred: np.ndarray, history: Sequence[Observation], info: Optional[Dict[str, float]] = None
               ) -> ActionChunk:
        actions = self.to_absolute(pred, history[-1].joint_positions)  # (H, A)
        for d in self.config.binary_action_dims:   # open/closed, as the gripper was demonstrated
            lo, hi = self.embodiment.lower[d], self.embodiment.upper[d]
            actions[:, d] = np.where(actions[:, d] > 0.5 * (lo + hi), hi, lo)
        return ActionChunk(actions=actions, joint_names=tuple(self.embodiment.joint_names),
                           dt=self.embodiment.dt, stamp=float(history[-1].stamp), info=dict(info or {}))

    def to_absolute(self, normalized: np.ndarray, joint_positions: np.ndarray) -> np.ndarray:
        """Model output ``(..., H, A)`` normalized -> absolute targets: unnormalize, then add the newest
        joint positions ``(A,)`` on ``delta_action_dims`` (binary dims are not snapped here)."""
        actions = self.stats['action'].unnormalize(np.asarray(normalized, np.float32))
        return from_delta(actions, joint_positions, self.config.delta_action_dims)

    def to_normalized(self, actions: np.ndarray, joint_positions: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_absolute`: absolute ``(..., H, A)`` -> the model's action space.

        Subtracts ``joint_positions (A,)`` on ``delta_action_dims``, then applies the quantile map
        ``2 (x - q01) / (q99 - q01) - 1`` *without* the [-1, 1] clip of
        ``NormalizationStats.normalize``: ``infer`` does not clip the model's output either, so
        this is its exact inverse and a guide beyond the training quantiles keeps its value
        (constant dims map to 0, as ``normalize`` does).

        Raises:
            ValueError: the last dimension is not ``action_dim``.
        """
        actions = np.asarray(actions, np.float32)
        if actions.shape[-1] != self.config.action_dim:
            raise ValueError(f'actions have {actions.shape[-1]} dims, the model has action_dim='
                             f'{self.config.action_dim} ({self.embodiment.joint_names})')
        rel = to_delta(actions, np.asarray(joint_positions, np.float32), self.config.delta_action_dims)
        st = self.stats['action']
        rng = st.q99 - st.q01
        const = rng < EPS
        y = 2.0 * (rel - st.q01) / np.where(const, 1.0, rng) - 1.0
        return np.where(const, 0.0, y).astype(np.float32)

    def infer_guided(self, history: Sequence[Observation], guide: ChunkGuide) -> ActionChunk:
        """RTC: an ActionChunk (H, A) whose rows follow ``guide.actions`` where ``guide.weights`` > 0.

        The guide's absolute rows go into the model's action space with :meth:`to_normalized`
        (relative to the newest joint positions on the delta dims, quantile map), the flow head
        samples with guidance there (:func:`vla_policy.rtc.sample_guided`, clip
        ``guide.max_guidance_weight``), and the result is post-processed as :meth:`infer` does
        (binary dims snapped). A guide shorter than the chunk leaves the remaining rows free
        (weight 0). ``info`` carries ``rtc_guided_rows`` (rows with weight > 0) and
        ``rtc_prefix_error`` (``sum_h W_h mean_a |sample - guide| / sum_h W_h`` in the model's
        normalized space).

        Raises:
            ValueError: the head does not sample (names it), the guide has the wrong action size,
                more rows than the chunk, or NaN in a weighted row; a malformed history as ``infer``.
        """
        if not self.supports_guidance:
            raise ValueError(f"infer_guided needs a sampling head ('flow'); this policy's head is "
                             f"{self.config.head.name!r}")
        h, a = self.config.chunk.chunk_size, self.config.action_dim
        g_act, g_w = guide.actions, guide.weights
        if g_act.shape[1] != a or g_act.shape[0] > h:
            raise ValueError(f'ChunkGuide actions {g_act.shape} do not fit the model chunk ({h}, {a}): '
                             f'at most {h} rows of {a} joints {self.embodiment.joint_names}')
        if g_act.shape[0] < h:
            g_act = np.concatenate([g_act, np.zeros((h - g_act.shape[0], a), np.float32)])
            g_w = np.concatenate([g_w, np.zeros(h - g_w.shape[0], np.float32)])
        batch = self.make_batch(history)
        target = self.to_normalized(np.where(g_w[:, None] > 0, g_act, 0.0), history[-1].joint_positions)
        with torch.no_grad():
            feat, last = self.model.features(batch)
        pred = sample_guided(self.model.head, feat, last, torch.from_numpy(target)[None],
                             torch.from_numpy(g_w)[None], guide.max_guidance_weight,
                             generator=self.generator)[0].float().cpu().numpy()  # (H, A) normalized
        live = g_w > 0
        err = float((np.abs(pred - target).mean(-1) * g_w).sum() / g_w.sum()) if live.any() else 0.0
        return self._chunk(pred, history, {'rtc_guided_rows': float(live.sum()), 'rtc_prefix_error': err})
