"""``VLA``: backbone + action head, operating on normalized tensors (normalization lives outside).

Batch keys (all torch tensors):
    images (B, T_img, 3, S, S) float in [0, 1], T_img = n_obs_steps * cameras (time-major);
    token_ids (B, L) long; attention_mask (B, L) long/bool; state (B, T_obs, S) normalized;
    actions (B, H, A) normalized; action_is_pad (B, H) bool.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from .config import VLAConfig
from .registry import make_backbone, make_head

__all__ = ['VLA']


class VLA(nn.Module):
    """Backbone (``cfg.backbone.name``) + head (``cfg.head.name``) from the registries."""

    def __init__(self, cfg: VLAConfig) -> None:
        super().__init__()
        self.config = cfg
        self.backbone = make_backbone(cfg)
        self.head = make_head(cfg, self.backbone.out_dim)

    def _check(self, batch: Dict[str, torch.Tensor], need_actions: bool) -> None:
        keys = ['images', 'token_ids', 'attention_mask'] + (['actions'] if need_actions else [])
        if self.config.state_dim:
            keys.append('state')
        missing = [k for k in keys if k not in batch]
        if missing:
            raise KeyError(f'VLA batch lacks {missing} (has {sorted(batch)})')
        im = batch['images']
        s = self.config.backbone.image_size
        if im.ndim != 5 or im.shape[2:] != (3, s, s):
            raise ValueError(f'VLA batch images must be (B, T, 3, {s}, {s}), got {tuple(im.shape)}')
        if self.config.state_dim:
            st = batch['state']
            if st.ndim != 3 or st.shape[-1] != self.config.state_dim:
                raise ValueError(f'VLA batch state must be (B, T, {self.config.state_dim}), got {tuple(st.shape)}')

    def _feature(self, batch) -> Tuple[torch.Tensor, torch.Tensor]:
        state = batch.get('state') if self.config.state_dim else None
        feat = self.backbone(batch['images'], batch['token_ids'], batch['attention_mask'], state)  # (B, D)
        last = state[:, -1] if state is not None else None  # (B, S)
        return feat, last

    def features(self, batch: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(feature (B, D), newest normalized state (B, S) or None)``: the head's inputs.

        For callers that drive the head themselves (RTC guided sampling, :mod:`vla_policy.rtc`).
        Raises KeyError/ValueError on a malformed batch.
        """
        self._check(batch, need_actions=False)
        return self._feature(batch)

    def forward(self, batch: Dict[str, torch.Tensor], **head_kwargs: Any) -> torch.Tensor:
        """Predicted normalized action chunk (B, H, A). Raises KeyError/ValueError on a malformed batch.

        ``head_kwargs`` go to the head's forward: a sampling head (``flow``) takes ``noise``,
        ``generator`` and ``num_steps``.
        """
        feat, last = self.features(batch)
        return self.head(feat, last, **head_kwargs)

    def loss(self, batch: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, Dict[str, float]]:
        """Training loss (scalar) and a dict of logged values."""
        self._check(batch, need_actions=True)
        feat, last = self._feature(batch)
        a = batch['actions']
        if a.shape[1:] != (self.config.chunk.chunk_size, self.config.action_dim):
            raise ValueError(f'VLA batch actions must be (B, {self.config.chunk.chunk_size}, '
                             f'{self.config.action_dim}), got {tuple(a.shape)}')
        return self.head.loss(feat, last, a, batch.get('action_is_pad'))

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
