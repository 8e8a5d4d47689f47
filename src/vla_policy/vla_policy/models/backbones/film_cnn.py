"""``film_cnn``: a small RT-1-style language-conditioned CNN that learns from scratch on a CPU.

Per image (shared weights): ``len(channels)`` blocks of [3x3 conv (``strides``, default 2), 3x3 conv, GroupNorm,
ReLU] each followed by FiLM (Perez et al. 2018, "FiLM: Visual Reasoning with a General
Conditioning Layer"; used per block in RT-1, Brohan et al. 2022) from the instruction embedding
(masked mean of learned word embeddings). A 1x1 conv gives K keypoint maps reduced with a
spatial softmax to expected (x, y) image coordinates in [-1, 1] (Levine et al. 2016, "End-to-End
Training of Deep Visuomotor Policies"). Keypoints of all T images + the instruction embedding go
through a 2-layer MLP to the feature (B, D). About 0.3 M parameters with the defaults.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
import torch.nn.functional as F

from ..registry import register_backbone

__all__ = ['FiLMCNN', 'SpatialSoftmax']


class SpatialSoftmax(nn.Module):
    """Feature maps (N, K, h, w) -> expected coordinates (N, 2K), x then y per map, in [-1, 1].

    Softmax over the h*w positions (learned temperature, init 1), Levine et al. 2016 eq. (3).
    """

    def __init__(self) -> None:
        super().__init__()
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, k, h, w = x.shape
        ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
        p = F.softmax(x.reshape(n, k, h * w) / self.log_temperature.exp(), dim=-1)  # (N, K, h*w)
        p = p.reshape(n, k, h, w)
        ex = (p.sum(dim=2) * xs).sum(dim=-1)  # (N, K)
        ey = (p.sum(dim=3) * ys).sum(dim=-1)  # (N, K)
        return torch.stack([ex, ey], dim=-1).reshape(n, 2 * k)  # (N, 2K)


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, cond_dim: int, stride: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.norm = nn.GroupNorm(min(8, cout), cout)
        self.film = nn.Linear(cond_dim, 2 * cout)
        nn.init.zeros_(self.film.weight)  # identity FiLM at init: gamma = 1, beta = 0
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.norm(self.conv2(x)))  # (N, C, h, w)
        gamma, beta = self.film(cond).chunk(2, dim=-1)  # (N, C) each
        return x * (1.0 + gamma[:, :, None, None]) + beta[:, :, None, None]


@register_backbone('film_cnn')
class FiLMCNN(nn.Module):
    """FiLM-conditioned CNN + spatial-softmax keypoints.

    Args:
        cfg: ``VLAConfig``; uses ``backbone.{channels, word_dim, feature_dim, vocab_size}`` and
            ``images_per_pass`` (= n_obs_steps x cameras; one step's cameras under the policy_head structure).

    Raises:
        ValueError: ``backbone.vocab_size`` < 3 (not set from a tokenizer).
    """

    n_keypoints = 32

    def __init__(self, cfg) -> None:
        super().__init__()
        b = cfg.backbone
        if b.vocab_size < 3:
            raise ValueError(f'film_cnn needs backbone.vocab_size from the tokenizer (>= 3), got {b.vocab_size}')
        self.n_images = cfg.images_per_pass   # policy_head: one step's cameras per call
        self.word_emb = nn.Embedding(b.vocab_size, b.word_dim, padding_idx=0)
        chans = (3,) + tuple(b.channels)
        strides = tuple(b.strides) if b.strides else (2,) * len(b.channels)
        self.blocks = nn.ModuleList(_Block(chans[i], chans[i + 1], b.word_dim, strides[i])
                                    for i in range(len(b.channels)))
        self.keypoints = nn.Conv2d(chans[-1], self.n_keypoints, 1)
        self.softmax = SpatialSoftmax()
        in_dim = self.n_images * 2 * self.n_keypoints + b.word_dim
        if b.use_state:
            in_dim += cfg.steps_per_pass * cfg.state_dim
        self.use_state = b.use_state
        self.mlp = nn.Sequential(nn.Linear(in_dim, b.feature_dim), nn.ReLU(),
                                 nn.Linear(b.feature_dim, b.feature_dim), nn.ReLU())
        self.out_dim = b.feature_dim

    def instruction_embedding(self, token_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Masked mean of word embeddings: (B, L), (B, L) -> (B, word_dim); all-pad rows give 0."""
        m = attention_mask.to(self.word_emb.weight.dtype).unsqueeze(-1)  # (B, L, 1)
        e = self.word_emb(token_ids) * m  # (B, L, E)
        return e.sum(dim=1) / m.sum(dim=1).clamp_min(1.0)  # (B, E)

    def forward(self, images: torch.Tensor, token_ids: torch.Tensor, attention_mask: torch.Tensor,
                state: Optional[torch.Tensor] = None) -> torch.Tensor:
        """images (B, T, 3, S, S) in [0, 1] -> feature (B, D)."""
        bsz, t = images.shape[:2]
        if t != self.n_images:
            raise ValueError(f'film_cnn expects {self.n_images} images per sample, got {t}')
        cond = self.instruction_embedding(token_ids, attention_mask)  # (B, E)
        x = images.reshape(bsz * t, *images.shape[2:]) * 2.0 - 1.0  # (B*T, 3, S, S) in [-1, 1]
        c = cond.repeat_interleave(t, dim=0)  # (B*T, E)
        for blk in self.blocks:
            x = blk(x, c)
        kp = self.softmax(self.keypoints(x)).reshape(bsz, -1)  # (B, T*2K)
        parts = [kp, cond]
        if self.use_state:
            if state is None:
                raise ValueError('film_cnn configured with use_state but no state given')
            parts.append(state.reshape(bsz, -1))
        return self.mlp(torch.cat(parts, dim=-1))  # (B, D)
