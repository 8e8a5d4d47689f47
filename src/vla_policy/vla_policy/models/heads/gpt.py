"""``gpt`` head: GPT-2-style causal transformer over the feature history -> chunk (B, H, A).

RoboVLMs' GPT policy head (Li et al. 2024, arXiv 2412.14058; ``GPTDecoder`` in
``robovlms/model/policy_head/base_policy.py``, which feeds per-step features as ``inputs_embeds`` to
a GPT-2) with a readout at the newest step. Architecture as GPT-2 (Radford et al. 2019): input
projection + learned absolute positions (``head.max_history`` of them), ``n_layers`` pre-LayerNorm
blocks of causal multi-head self-attention (``head.num_heads``) and a 4x GELU MLP, final LayerNorm.
The newest step's output [+ newest state] goes through a 2-layer MLP to the chunk, trained by the
shared :class:`~vla_policy.models.heads.losses.ChunkLoss`.

Why a small torch block and not ``transformers.GPT2Model(inputs_embeds=...)``: the same computation,
but the checkpoint's state-dict keys and numerics then do not depend on the installed
``transformers`` version (its attention implementations and module names change between major
versions), and the head builds without the ``transformers`` import (~1 s on CPU).

Positions: a history longer than ``max_history`` has no learned position: a configuration with
``chunk.n_obs_steps > head.max_history`` is rejected at build time, a longer input at run time.
A (B, D) feature is a history of length T = 1.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import nn

from ..registry import register_head
from .losses import ChunkLoss, as_history

__all__ = ['GPTHead']


class _Block(nn.Module):
    """GPT-2 block: ``x + attn(ln1(x))`` (causal), then ``x + mlp(ln2(x))``; (B, T, d) -> (B, T, d)."""

    def __init__(self, d: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, n_heads, dropout=dropout, batch_first=True)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(approximate='tanh'), nn.Linear(4 * d, d),
                                 nn.Dropout(dropout) if dropout else nn.Identity())

    def forward(self, x: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
        y = self.ln1(x)
        x = x + self.attn(y, y, y, attn_mask=causal, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


@register_head('gpt')
class GPTHead(nn.Module):
    """Linear(D -> hidden) + positions -> ``n_layers`` causal GPT-2 blocks -> LN -> newest step -> MLP."""

    sequence_input = True    # feature (B, T, D): one feature per history step, oldest first
    samples = False

    def __init__(self, cfg, in_dim: int) -> None:
        super().__init__()
        h = cfg.head
        if cfg.chunk.n_obs_steps > h.max_history:
            raise ValueError(f'gpt head: chunk.n_obs_steps ({cfg.chunk.n_obs_steps}) exceeds head.max_history '
                             f'({h.max_history}) learned positions; raise head.max_history')
        if h.hidden % h.num_heads:
            raise ValueError(f'gpt head: head.hidden ({h.hidden}) must be divisible by head.num_heads ({h.num_heads})')
        self.horizon, self.action_dim = cfg.chunk.chunk_size, cfg.action_dim
        self.use_state = h.use_state
        self.max_history = h.max_history
        self.chunk_loss = ChunkLoss(h.loss, cfg.action_dim, cfg.binary_action_dims, h.gripper_loss,
                                    h.gripper_loss_weight, 'gpt head')
        self.inp = nn.Linear(in_dim, h.hidden)
        self.pos = nn.Parameter(torch.randn(h.max_history, h.hidden) * 0.02)  # GPT-2 init std 0.02
        self.drop = nn.Dropout(h.dropout) if h.dropout else nn.Identity()
        self.blocks = nn.ModuleList(_Block(h.hidden, h.num_heads, h.dropout) for _ in range(h.n_layers))
        self.ln_f = nn.LayerNorm(h.hidden)
        d = h.hidden + (cfg.state_dim if h.use_state else 0)
        self.out = nn.Sequential(nn.Linear(d, h.hidden), nn.GELU(), nn.Linear(h.hidden, self.horizon * self.action_dim))

    def raw(self, feature: torch.Tensor, state: Optional[torch.Tensor] = None) -> torch.Tensor:
        """feature (B, T, D) or (B, D), state (B, S) -> raw chunk (B, H, A) (logits on BCE gripper dims).

        Raises:
            ValueError: malformed feature, T > ``max_history``, or state missing with ``use_state``.
        """
        x = as_history(feature, 'gpt head')  # (B, T, D)
        t = x.shape[1]
        if t > self.max_history:
            raise ValueError(f'gpt head: history of {t} steps exceeds head.max_history ({self.max_history})')
        x = self.drop(self.inp(x) + self.pos[:t])  # (B, T, hidden)
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)  # True = masked (future)
        for blk in self.blocks:
            x = blk(x, causal)
        z = self.ln_f(x)[:, -1]  # (B, hidden): newest step (sees the whole history)
        if self.use_state:
            if state is None:
                raise ValueError('gpt head configured with use_state but no state given')
            z = torch.cat([z, state], dim=-1)  # (B, hidden + S)
        return self.out(z).reshape(-1, self.horizon, self.action_dim)  # (B, H, A)

    def forward(self, feature: torch.Tensor, state: Optional[torch.Tensor] = None) -> torch.Tensor:
        """feature (B, T, D) or (B, D), state (B, S) normalized -> actions (B, H, A) normalized."""
        return self.chunk_loss.output(self.raw(feature, state))

    def loss(self, feature: torch.Tensor, state: Optional[torch.Tensor], actions: torch.Tensor,
             action_is_pad: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Dict[str, float]]:
        """Shared chunk loss (:class:`ChunkLoss`) of the predicted chunk vs ``actions (B, H, A)``."""
        return self.chunk_loss(self.raw(feature, state), actions, action_is_pad)
