"""``mlp`` head: feature (B, D) [+ state (B, S)] -> continuous action chunk (B, H, A).

Trained with L1 (ACT, Zhao et al. 2023; LeRobot ACT/VQ-BeT default) or MSE on normalized actions;
padded chunk steps (past the episode end, ``action_is_pad``) are excluded from the loss as in
LeRobot's ``ACTPolicy.forward``. Optional BCE on the gripper dims (``head.gripper_loss: bce``): the
shared :class:`~vla_policy.models.heads.losses.ChunkLoss`; with it the gripper outputs are
``tanh(logit / 2)`` (see that module).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import nn

from ..registry import register_head
from .losses import ChunkLoss

__all__ = ['MLPHead']


@register_head('mlp')
class MLPHead(nn.Module):
    """``n_layers`` hidden layers of width ``hidden`` with GELU, linear output to H*A."""

    sequence_input = False   # feature (B, D): one fused feature per sample
    samples = False          # deterministic regression: no noise / generator

    def __init__(self, cfg, in_dim: int) -> None:
        super().__init__()
        h = cfg.head
        self.horizon, self.action_dim = cfg.chunk.chunk_size, cfg.action_dim
        self.use_state = h.use_state
        self.loss_kind = h.loss
        self.chunk_loss = ChunkLoss(h.loss, cfg.action_dim, cfg.binary_action_dims, h.gripper_loss,
                                    h.gripper_loss_weight, 'mlp head')
        d = in_dim + (cfg.state_dim if h.use_state else 0)
        layers = []
        for _ in range(h.n_layers):
            layers += [nn.Linear(d, h.hidden), nn.GELU()]
            if h.dropout:
                layers.append(nn.Dropout(h.dropout))
            d = h.hidden
        layers.append(nn.Linear(d, self.horizon * self.action_dim))
        self.net = nn.Sequential(*layers)

    def raw(self, feature: torch.Tensor, state: Optional[torch.Tensor] = None) -> torch.Tensor:
        """feature (B, D), state (B, S) -> raw output (B, H, A): logits on BCE gripper dims.

        Raises:
            ValueError: feature not (B, D), or state missing with ``use_state``.
        """
        if feature.ndim != 2:
            raise ValueError(f'mlp head takes a (B, D) feature (sequence_input=False), got {tuple(feature.shape)}')
        if self.use_state:
            if state is None:
                raise ValueError('mlp head configured with use_state but no state given')
            feature = torch.cat([feature, state], dim=-1)  # (B, D+S)
        return self.net(feature).reshape(-1, self.horizon, self.action_dim)  # (B, H, A)

    def forward(self, feature: torch.Tensor, state: Optional[torch.Tensor] = None) -> torch.Tensor:
        """feature (B, D), state (B, S) normalized -> actions (B, H, A) normalized."""
        return self.chunk_loss.output(self.raw(feature, state))

    def loss(self, feature: torch.Tensor, state: Optional[torch.Tensor], actions: torch.Tensor,
             action_is_pad: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Dict[str, float]]:
        """Mean L1/MSE over non-padded (B, H) steps and all A dims (gripper BCE if configured);
        returns (loss, {'l1'|'mse': value}) (plus ``'gripper_bce'``, ``'loss'`` with BCE)."""
        return self.chunk_loss(self.raw(feature, state), actions, action_is_pad)
