"""``VLAPolicy``: a trained checkpoint behind the ``Policy`` contract (``infer`` / ``reset``).

Per call: preprocess the configured cameras' images (:mod:`vla_policy.images`, as in training),
tokenize the instruction, quantile-normalize the joint positions, run the model under
``torch.no_grad``, unnormalize the chunk. Joint names and ``dt = 1 / control_rate_hz`` come
from ``robot_drivers.embodiment.get_embodiment(cfg.embodiment)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch

from robot_drivers.embodiment import get_embodiment

from .checkpoint import load_checkpoint
from .contracts import ActionChunk, Observation
from .images import preprocess_image
from .models.config import VLAConfig
from .models.vla import VLA
from .normalization import NormalizationStats
from .transforms import from_delta

__all__ = ['VLAPolicy']


class VLAPolicy:
    """Runs a :class:`VLA` on observation histories.

    Args:
        model, config, stats (``{'state', 'action'}``), tokenizer: as returned by ``load_checkpoint``.
        device: torch device string.

    Raises:
        KeyError: unknown embodiment, or ``stats`` lacks 'action' (or 'state' when state_dim > 0).
        ValueError: embodiment DoF differs from ``action_dim``.
    """

    def __init__(self, model: VLA, config: VLAConfig, stats: Dict[str, NormalizationStats], tokenizer,
                 device: str = 'cpu', meta: Optional[dict] = None) -> None:
        self.model = model.to(device).eval()
        self.config = config
        self.device = torch.device(device)
        self.tokenizer = tokenizer
        self.meta = meta or {}
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
    def from_checkpoint(cls, path: Union[str, Path], device: str = 'cpu') -> 'VLAPolicy':
        """Load a checkpoint directory written by ``save_checkpoint``."""
        model, cfg, stats, tok, meta = load_checkpoint(path, device=device)
        return cls(model, cfg, stats, tok, device=device, meta=meta)

    @property
    def camera(self) -> str:
        """The (first) camera the model reads from ``Observation.images``."""
        return self.config.camera_names[0]

    def reset(self) -> None:
        """Stateless between calls: nothing to forget."""

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

    def infer(self, history: Sequence[Observation]) -> ActionChunk:
        """ActionChunk (H, A) of absolute joint targets (rad / m) for the newest observation."""
        batch = self.make_batch(history)
        with torch.no_grad():
            pred = self.model(batch)[0].float().cpu().numpy()  # (H, A) normalized
        actions = self.stats['action'].unnormalize(pred)  # (H, A)
        actions = from_delta(actions, history[-1].joint_positions, self.config.delta_action_dims)  # (H, A)
        for d in self.config.binary_action_dims:   # open/closed, as the gripper was demonstrated
            lo, hi = self.embodiment.lower[d], self.embodiment.upper[d]
            actions[:, d] = np.where(actions[:, d] > 0.5 * (lo + hi), hi, lo)
        return ActionChunk(actions=actions, joint_names=tuple(self.embodiment.joint_names),
                           dt=self.embodiment.dt, stamp=float(history[-1].stamp))
