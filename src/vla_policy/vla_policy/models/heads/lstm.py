"""``lstm`` head: history of features (B, T, D) [+ state (B, S)] -> LSTM -> MLP -> chunk (B, H, A).

RoboVLMs' policy-head formulation (Li et al. 2024, "Towards Generalist Robot Policies: What Matters
in Building Vision-Language-Action Models", arXiv 2412.14058; ``LSTMDecoder`` in
``robovlms/model/policy_head/base_policy.py``): one backbone feature per history step goes through a
multi-layer LSTM; the output at the newest step is decoded by an MLP into the action chunk
(RoboVLMs: ``fwd_pred_next_n`` future actions). Differences, all for this code base's contracts:

* the input is LayerNorm-ed first (VLM hidden states and CNN features have very different scales);
* the newest normalized state (B, S) is concatenated to the LSTM's last output before the MLP
  (``head.use_state``), as the ``mlp`` head concatenates it to the feature;
* continuous outputs are linear (RoboVLMs: tanh) and the gripper is trained by the shared
  :class:`~vla_policy.models.heads.losses.ChunkLoss` (L1/MSE, or BCE with ``head.gripper_loss: bce``
  as RoboVLMs' sigmoid gripper head).

An LSTM has no positional table, so any history length T works (``head.max_history`` is for ``gpt``).
``n_layers`` = LSTM layers, ``hidden`` = LSTM and MLP width, ``dropout`` between LSTM layers and in
the MLP. A (B, D) feature is a history of length T = 1.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import nn

from ..registry import register_head
from .losses import ChunkLoss, as_history

__all__ = ['LSTMHead']


@register_head('lstm')
class LSTMHead(nn.Module):
    """LayerNorm -> ``n_layers``-layer LSTM (width ``hidden``) -> last step [+ state] -> 2-layer MLP -> (H, A)."""

    sequence_input = True    # feature (B, T, D): one feature per history step, oldest first
    samples = False

    def __init__(self, cfg, in_dim: int) -> None:
        super().__init__()
        h = cfg.head
        self.horizon, self.action_dim = cfg.chunk.chunk_size, cfg.action_dim
        self.use_state = h.use_state
        self.chunk_loss = ChunkLoss(h.loss, cfg.action_dim, cfg.binary_action_dims, h.gripper_loss,
                                    h.gripper_loss_weight, 'lstm head')
        self.in_norm = nn.LayerNorm(in_dim)
        self.rnn = nn.LSTM(in_dim, h.hidden, num_layers=h.n_layers, batch_first=True,
                           dropout=h.dropout if h.n_layers > 1 else 0.0)
        d = h.hidden + (cfg.state_dim if h.use_state else 0)
        self.mlp = nn.Sequential(nn.Linear(d, h.hidden), nn.GELU(),
                                 nn.Dropout(h.dropout) if h.dropout else nn.Identity(),
                                 nn.Linear(h.hidden, self.horizon * self.action_dim))

    def raw(self, feature: torch.Tensor, state: Optional[torch.Tensor] = None) -> torch.Tensor:
        """feature (B, T, D) or (B, D), state (B, S) -> raw chunk (B, H, A) (logits on BCE gripper dims).

        Raises:
            ValueError: malformed feature, or state missing with ``use_state``.
        """
        x = as_history(feature, 'lstm head')  # (B, T, D)
        out, _ = self.rnn(self.in_norm(x))  # (B, T, hidden)
        z = out[:, -1]  # (B, hidden): newest step
        if self.use_state:
            if state is None:
                raise ValueError('lstm head configured with use_state but no state given')
            z = torch.cat([z, state], dim=-1)  # (B, hidden + S)
        return self.mlp(z).reshape(-1, self.horizon, self.action_dim)  # (B, H, A)

    def forward(self, feature: torch.Tensor, state: Optional[torch.Tensor] = None) -> torch.Tensor:
        """feature (B, T, D) or (B, D), state (B, S) normalized -> actions (B, H, A) normalized."""
        return self.chunk_loss.output(self.raw(feature, state))

    def loss(self, feature: torch.Tensor, state: Optional[torch.Tensor], actions: torch.Tensor,
             action_is_pad: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Dict[str, float]]:
        """Shared chunk loss (:class:`ChunkLoss`) of the predicted chunk vs ``actions (B, H, A)``."""
        return self.chunk_loss(self.raw(feature, state), actions, action_is_pad)
