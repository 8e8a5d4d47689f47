"""Shared chunk loss of the regression heads (``mlp``, ``lstm``, ``gpt``).

Per element of the normalized chunk (B, H, A):

* continuous dims: L1 (ACT, Zhao et al. 2023; LeRobot's ACT default) or MSE (``head.loss``);
* dims in ``VLAConfig.binary_action_dims`` (the gripper): the same L1/MSE when
  ``head.gripper_loss == 'same'`` (default, the behaviour before this option existed), or
  binary cross-entropy on a logit when ``'bce'`` (RoboVLMs 2024, Li et al., arXiv 2412.14058, and
  RT-1/Octo-style open/closed gripper: RoboVLMs' policy heads train ``arm MSE + w * gripper BCE``).

Reduction: ``sum(err * w_d * keep) / (n_kept_rows * A)``, with per-dim weight ``w_d = 1`` on
continuous dims and ``w_d = head.gripper_loss_weight`` on binary dims; ``keep`` drops chunk rows
past the episode end (``action_is_pad``, LeRobot's ``ACTPolicy.forward``). With ``'same'`` and weight 1
this is exactly the plain mean over non-padded rows and all dims the ``mlp`` head always used.

BCE target and output convention: the target of a binary dim is ``normalized action > 0``, i.e. the
upper half of the dataset's q01..q99 range (:mod:`vla_policy.normalization` maps q01..q99 to -1..1).
The head's raw output on that dim is a logit ``z``; its ``forward`` returns ``tanh(z / 2) = 2 p - 1``
with ``p = sigmoid(z)``, a value in (-1, 1) that is > 0 exactly when ``p > 0.5``. After
unnormalization that lands above the middle of q01..q99 iff the gripper is predicted in its upper
state, so the policy's snapping of binary dims to the nearer joint limit
(:meth:`vla_policy.policy.VLAPolicy._chunk`) keeps working unchanged whenever the demonstrated
open/closed values are the q01/q99 of that dim (a gripper commanded open/closed).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ['ChunkLoss', 'masked_mean', 'as_history']


def as_history(feature: torch.Tensor, who: str) -> torch.Tensor:
    """A sequence head's feature input as a history ``(B, T, D)``, oldest step first; ``(B, D)`` is T = 1.

    Raises:
        ValueError: ``feature`` is neither 2-D nor 3-D, or has T = 0.
    """
    if feature.ndim == 2:
        return feature[:, None]  # (B, 1, D)
    if feature.ndim != 3 or feature.shape[1] < 1:
        raise ValueError(f'{who} takes a feature history (B, T, D) or a feature (B, D), got {tuple(feature.shape)}')
    return feature


def masked_mean(err: torch.Tensor, action_is_pad: Optional[torch.Tensor],
                dim_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``sum(err * w * keep) / (n_kept_rows * A)`` over ``err (B, H, A)``.

    ``action_is_pad (B, H)`` bool (True = padded row, excluded), None keeps every row;
    ``dim_weight (A,)`` per-dim weights (None = 1). All rows padded -> 0 (denominator clamped to 1).
    """
    if dim_weight is not None:
        err = err * dim_weight.to(device=err.device, dtype=err.dtype)  # (B, H, A)
    if action_is_pad is None:
        return err.mean()
    keep = (~action_is_pad.bool()).to(err.dtype).unsqueeze(-1)  # (B, H, 1)
    return (err * keep).sum() / (keep.sum() * err.shape[-1]).clamp_min(1.0)


class ChunkLoss:
    """L1/MSE on continuous dims + optional BCE-with-logits on binary dims (see module docstring).

    Args:
        kind: ``'l1'`` or ``'mse'`` (``head.loss``).
        action_dim: A.
        binary_dims: ``VLAConfig.binary_action_dims``.
        gripper_loss: ``'same'`` or ``'bce'`` (``head.gripper_loss``).
        gripper_weight: ``head.gripper_loss_weight`` (>= 0), weight of the binary dims in both modes.
        head_name: for error messages.

    Raises:
        ValueError: unknown ``kind``/``gripper_loss``; ``'bce'`` with no binary dims; a binary dim
            outside [0, A); negative weight.
    """

    def __init__(self, kind: str, action_dim: int, binary_dims: Sequence[int] = (), gripper_loss: str = 'same',
                 gripper_weight: float = 1.0, head_name: str = 'head') -> None:
        if kind not in ('l1', 'mse'):
            raise ValueError(f"{head_name}: head.loss must be 'l1' or 'mse', got {kind!r}")
        if gripper_loss not in ('same', 'bce'):
            raise ValueError(f"{head_name}: head.gripper_loss must be 'same' or 'bce', got {gripper_loss!r}")
        self.binary_dims = tuple(int(d) for d in binary_dims)
        bad = [d for d in self.binary_dims if not 0 <= d < action_dim]
        if bad:
            raise ValueError(f'{head_name}: binary_action_dims {bad} outside [0, action_dim={action_dim})')
        if gripper_loss == 'bce' and not self.binary_dims:
            raise ValueError(f"{head_name}: head.gripper_loss 'bce' needs binary_action_dims (the gripper "
                             f"dims), got none")
        if not gripper_weight >= 0.0:
            raise ValueError(f'{head_name}: head.gripper_loss_weight must be >= 0, got {gripper_weight}')
        self.kind, self.action_dim = kind, action_dim
        self.bce = gripper_loss == 'bce'
        self.gripper_weight = float(gripper_weight)
        w = torch.ones(action_dim)
        w[list(self.binary_dims)] = self.gripper_weight
        self.dim_weight = None if (not self.binary_dims or self.gripper_weight == 1.0) else w  # (A,)
        bin_mask = torch.zeros(action_dim, dtype=torch.bool)
        bin_mask[list(self.binary_dims)] = True
        self.bin_mask = bin_mask  # (A,)

    def output(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw head output (..., A) -> normalized actions: ``tanh(logit / 2)`` on binary dims in BCE mode."""
        if not self.bce:
            return raw
        m = self.bin_mask.to(raw.device)
        return torch.where(m, torch.tanh(0.5 * raw), raw)

    def __call__(self, raw: torch.Tensor, actions: torch.Tensor, action_is_pad: Optional[torch.Tensor] = None
                 ) -> Tuple[torch.Tensor, Dict[str, float]]:
        """``raw (B, H, A)`` (logits on binary dims in BCE mode), ``actions (B, H, A)`` normalized,
        ``action_is_pad (B, H)`` -> ``(loss, info)``.

        ``info``: ``{kind: loss}`` in ``'same'`` mode (the ``mlp`` head's historical log key);
        in ``'bce'`` mode ``{kind: masked L1/MSE of continuous dims, 'gripper_bce': masked BCE of the
        binary dims, 'loss': total}``.
        """
        if raw.shape != actions.shape:
            raise ValueError(f'chunk loss: prediction {tuple(raw.shape)} and actions {tuple(actions.shape)} differ')
        err = (F.l1_loss if self.kind == 'l1' else F.mse_loss)(raw, actions, reduction='none')  # (B, H, A)
        if not self.bce:
            loss = masked_mean(err, action_is_pad, self.dim_weight)
            return loss, {self.kind: float(loss.detach())}
        m = self.bin_mask.to(raw.device)
        target = (actions > 0).to(raw.dtype)  # upper half of q01..q99
        bce = F.binary_cross_entropy_with_logits(raw, target, reduction='none')  # (B, H, A)
        err = torch.where(m, bce, err)
        loss = masked_mean(err, action_is_pad, self.dim_weight)
        with torch.no_grad():
            n_bin = len(self.binary_dims)
            n_cont = self.action_dim - n_bin
            scale = float(self.action_dim)
            cont = masked_mean(err * (~m).to(err.dtype), action_is_pad) * scale / max(n_cont, 1)
            grip = masked_mean(err * m.to(err.dtype), action_is_pad) * scale / n_bin
        return loss, {self.kind: float(cont), 'gripper_bce': float(grip), 'loss': float(loss.detach())}
