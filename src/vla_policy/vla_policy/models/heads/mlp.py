"""``mlp`` head: feature (B, D) [+ state (B, S)] -> continuous action chunk (B, H, A).

Trained with L1 (ACT, Zhao et al. 2023; LeRobot ACT/VQ-BeT default) or MSE on normalized actions;
padded chunk steps (past the episode end, ``action_is_pad``) are excluded from the loss as in
LeRobot's ``ACTPolicy.forward``.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import nn
import torch.nn.functional as F

from ..registry import register_head

__all__ = ['MLPHead']


@register_head('mlp')
class MLPHead(nn.Module):
    """``n_layers`` hidden layers of width ``hidden`` with GELU, linear output to H*A."""

    def __init__(self, cfg, in_dim: int) -> None:
        super().__init__()
        h = cfg.head
        self.horizon, self.action_dim = cfg.chunk.chunk_size, cfg.action_dim
        self.use_state = h.use_state
        self.loss_kind = h.loss
        d = in_dim + (cfg.state_dim if h.use_state else 0)
        layers = []
        for _ in range(h.n_layers):
            layers += [nn.Linear(d, h.hidden), nn.GELU()]
            if h.dropout:
                layers.append(nn.Dropout(h.dropout))
            d = h.hidden
        layers.append(nn.Linear(d, self.horizon * self.action_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, feature: torch.Tensor, state: Optional[torch.Tensor] = None) -> torch.Tensor:
        """feature (B, D), state (B, S) normalized -> actions (B, H, A) normalized."""
        if self.use_state:
            if state is None:
                raise ValueError('mlp head configured with use_state but no state given')
            feature = torch.cat([feature, state], dim=-1)  # (B, D+S)
        return self.net(feature).reshape(-1, self.horizon, self.action_dim)  # (B, H, A)

    def loss(self, feature: torch.Tensor, state: Optional[torch.Tensor], actions: torch.Tensor,
             action_is_pad: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Dict[str, float]]:
        """Mean L1/MSE over non-padded (B, H) steps and all A dims; returns (loss, {'l1'|'mse': value})."""
        pred = self.forward(feature, state)  # (B, H, A)
        err = (F.l1_loss if self.loss_kind == 'l1' else F.mse_loss)(pred, actions, reduction='none')  # (B, H, A)
        if action_is_pad is not None:
            keep = (~action_is_pad).to(err.dtype).unsqueeze(-1)  # (B, H, 1)
            loss = (err * keep).sum() / (keep.sum() * err.shape[-1]).clamp_min(1.0)
        else:
            loss = err.mean()
        return loss, {self.loss_kind: float(loss.detach())}
