"""``octo``: an Octo-style transformer trunk trained from scratch (Octo Model Team 2024, "Octo: An
Open-Source Generalist Robot Policy", arXiv 2405.12213), scaled down to learn on a CPU.

Token sequence (Octo section 3.1 / ``octo/model/octo_transformer.py``), width ``octo_dim`` = D::

    [task: instruction word tokens (L)]
    for each observation step t = 0..T_obs-1:
        [obs_t: per camera: conv-stem cell tokens (h * w, octo_patch_tokens) + keypoint tokens
                (octo_keypoints, octo_keypoint_mode); then 1 proprio token if octo_state_token]
        [readout_t: octo_readouts learned readout tokens]

* Image tokenizer: a small conv stem (Octo's ``SmallStem``: strided convs, then the feature map's
  cells are the tokens) made of ``film_cnn``'s blocks: [3x3 conv stride s, 3x3 conv, GroupNorm, ReLU].
  With ``octo_stem_film`` each block is FiLM-conditioned on the instruction (Perez et al. 2018; RT-1,
  Brohan et al. 2022; Octo's ``ImageTokenizer`` offers the same through its ``task_film_keys`` option).
  A 1x1 conv projects to D; 2-D sine-cosine position embeddings (``octo_pos: sincos``, MAE / ViT style)
  or learned ones (``learned``, Octo) are added, plus a learned per-camera and per-step embedding.
* ``octo_keypoints`` > 0 adds spatial-softmax keypoint tokens per image (Levine et al. 2016): K expected
  (x, y) coordinates of K learned heat maps (features: :func:`fourier_features`, raw (x, y) with
  ``octo_kp_freqs: 0``). ``octo_keypoint_mode: tokens``: one token per keypoint, Linear(features) + a
  learned identity; ``flat``: one token per image, Linear(all K keypoints' features) (Octo's tokenizer for
  low-dimensional observations). ``octo_patch_tokens: false`` drops the h*w cell tokens. Flat raw keypoints
  without cell tokens is the variant that learns the demo task on a CPU (``config/models/octo.yaml``).
* ``octo_state_token``: one proprio token per step (Octo's optional proprio tokenizer), Linear(state).
* ``octo_obs_skip``: the output also carries the mean image token entering the trunk (a skip past it).
* Block-wise attention (Octo's ``AttentionRule``): task tokens attend to task tokens; observation tokens
  of step t attend to task tokens and observation tokens of steps <= t; readout tokens of step t attend
  to task tokens, observation tokens of steps <= t and readout tokens of steps <= t. Observation and
  task tokens never attend to readouts, so the readouts only read the scene (Octo section 3.1). Padded
  instruction tokens are never attended to.
* Pre-LayerNorm transformer blocks (``octo_layers`` x [MHSA, MLP with ratio ``octo_mlp_ratio``]).
* Output: the mean of the newest step's readout tokens after a final LayerNorm, ``(B, D)``
  (Octo's heads mean-pool the readout tokens), or with ``octo_readout_pool: concat`` the R readouts
  side by side, ``(B, R * D)``.

The action head (``mlp``, ``flow``, ``diffusion``) is separate, as in Octo. No pretrained weights: the
trunk is trained from scratch as Octo is.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import nn
import torch.nn.functional as F

from ..registry import register_backbone
from .film_cnn import SpatialSoftmax, _Block

__all__ = ['OctoBackbone', 'sincos_2d', 'octo_attention_mask']

# Token-group kinds used to build the block-wise attention mask.
TASK, OBS, READOUT = 0, 1, 2


def sincos_2d(h: int, w: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding (MAE, He et al. 2021, ``get_2d_sincos_pos_embed``).

    Returns (h*w, dim), row-major over (y, x); dim must be divisible by 4.
    """
    if dim % 4:
        raise ValueError(f'sincos_2d needs dim divisible by 4, got {dim}')
    q = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(q, dtype=torch.float32) / q))  # (q,)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing='ij')
    out = []
    for pos in (ys.reshape(-1), xs.reshape(-1)):
        ang = pos[:, None] * omega[None]  # (h*w, q)
        out += [ang.sin(), ang.cos()]
    return torch.cat(out, dim=1)  # (h*w, dim)


def fourier_features(xy: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """Coordinates (..., 2) in [-1, 1] -> (..., 2 + 4 * n_freqs): the coordinates, then sin and cos of
    pi * 2^k * coord for k < n_freqs (NeRF / Tancik et al. 2020 positional encoding; n_freqs = 0 keeps
    the raw coordinates only, as film_cnn's keypoint MLP sees them).
    """
    if n_freqs == 0:
        return xy
    f = math.pi * (2.0 ** torch.arange(n_freqs, dtype=xy.dtype, device=xy.device))  # (F,)
    ang = (xy[..., None] * f).flatten(-2)  # (..., 2F)
    return torch.cat([xy, ang.sin(), ang.cos()], dim=-1)


def octo_attention_mask(kinds: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """Octo block-wise rule as a boolean matrix ``allowed[i, j]`` (query i may attend key j).

    Args:
        kinds: (N,) token kind per position: 0 task, 1 observation, 2 readout.
        steps: (N,) observation step of each token (task tokens: any value, ignored).

    Returns:
        (N, N) bool. task -> task only; obs_t -> task, obs_{<=t}; readout_t -> task, obs_{<=t},
        readout_{<=t}. Every position may attend itself.
    """
    qk, kk = kinds[:, None], kinds[None, :]
    causal = steps[None, :] <= steps[:, None]
    allowed = kk == TASK
    allowed = allowed | ((qk != TASK) & (kk == OBS) & causal)
    allowed = allowed | ((qk == READOUT) & (kk == READOUT) & causal)
    return allowed | torch.eye(len(kinds), dtype=torch.bool, device=kinds.device)


class _TransformerBlock(nn.Module):
    """Pre-LN block: x + MHSA(LN(x)), x + MLP(LN(x)); attention restricted by a boolean mask."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hid = int(round(dim * mlp_ratio))
        self.mlp = nn.Sequential(nn.Linear(dim, hid), nn.GELU(), nn.Linear(hid, dim))
        self.dropout = dropout

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """x (B, N, D), allowed (B, 1, N, N) bool -> (B, N, D)."""
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                           dropout_p=self.dropout if self.training else 0.0)  # (B, h, N, dh)
        x = x + self.proj(a.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


@register_backbone('octo')
class OctoBackbone(nn.Module):
    """Octo-style trunk: conv-stem patch tokens + instruction tokens + readout tokens -> (B, D).

    Args:
        cfg: ``VLAConfig``; uses ``backbone.{image_size, vocab_size, octo_*}``, ``state_dim``,
            ``camera_names``, and ``images_per_pass`` (when the config has it, else ``n_images``) images
            per call, time-major camera-minor (index t * C + c).

    Raises:
        ValueError: vocab_size < 3 (not set from a tokenizer), image_size not divisible by the stem's
            total stride, octo_dim not divisible by octo_heads or by 4 (sincos), or octo_state_token
            with state_dim 0.
    """

    def __init__(self, cfg) -> None:
        super().__init__()
        b = cfg.backbone
        if b.vocab_size < 3:
            raise ValueError(f'octo needs backbone.vocab_size from the tokenizer (>= 3), got {b.vocab_size}')
        d = int(b.octo_dim)
        self.n_images = int(getattr(cfg, 'images_per_pass', cfg.n_images))
        self.n_cameras = len(cfg.camera_names)
        if self.n_images % self.n_cameras:
            raise ValueError(f'octo: images per pass ({self.n_images}) must be a multiple of the camera count '
                             f'({self.n_cameras})')
        self.n_steps = self.n_images // self.n_cameras
        chans = (3,) + tuple(b.octo_stem_channels)
        strides = tuple(b.octo_stem_strides) if b.octo_stem_strides else (2,) * len(b.octo_stem_channels)
        total = int(math.prod(strides))
        if b.image_size % total:
            raise ValueError(f'octo: backbone.image_size ({b.image_size}) must be divisible by the stem\'s total '
                             f'stride {total} (octo_stem_strides {strides})')
        self.grid = b.image_size // total
        self.film = bool(b.octo_stem_film)
        self.word_emb = nn.Embedding(b.vocab_size, d, padding_idx=0)
        self.stem = nn.ModuleList(_Block(chans[i], chans[i + 1], d, strides[i]) for i in range(len(strides)))
        if not self.film:
            for blk in self.stem:   # FiLM off: gamma = beta = 0 forever (identity modulation)
                blk.film.requires_grad_(False)
        self.patch_tokens = bool(b.octo_patch_tokens)
        if not self.patch_tokens and not b.octo_keypoints:
            raise ValueError('octo: octo_patch_tokens false needs octo_keypoints > 0 (no image tokens otherwise)')
        self.patch_proj = nn.Conv2d(chans[-1], d, 1)
        if not self.patch_tokens:
            self.patch_proj.requires_grad_(False)
        if b.octo_pos == 'sincos':
            self.register_buffer('pos', sincos_2d(self.grid, self.grid, d), persistent=False)
        else:
            self.pos = nn.Parameter(torch.randn(self.grid * self.grid, d) * 0.02)
        self.n_keypoints = int(b.octo_keypoints)
        self.kp_flat = False
        self.kp_freqs = int(b.octo_kp_freqs)
        if self.n_keypoints:
            self.kp_maps = nn.Conv2d(chans[-1], self.n_keypoints, 1)
            self.kp_softmax = SpatialSoftmax()
            self.kp_flat = b.octo_keypoint_mode == 'flat'
            self.kp_embed = nn.Linear((2 + 4 * self.kp_freqs) * (self.n_keypoints if self.kp_flat else 1), d)
            # unit-scale identities: keypoint tokens must be told apart from the first step (a 0.02 init
            # leaves them an unordered set of points whose identities are learned slowly)
            if not self.kp_flat:
                self.kp_id = nn.Parameter(torch.randn(self.n_keypoints, d))
        self.camera_emb = nn.Parameter(torch.zeros(self.n_cameras, d))
        self.step_emb = nn.Parameter(torch.zeros(self.n_steps, d))
        self.lang_pos = nn.Parameter(torch.randn(cfg.max_tokens, d) * 0.02)
        self.use_state_token = bool(b.octo_state_token)
        if self.use_state_token:
            if cfg.state_dim < 1:
                raise ValueError('octo: backbone.octo_state_token needs state_dim >= 1')
            self.state_proj = nn.Linear(cfg.state_dim, d)
        self.n_readouts = int(b.octo_readouts)
        self.readouts = nn.Parameter(torch.randn(self.n_readouts, d) * 0.02)
        self.blocks = nn.ModuleList(_TransformerBlock(d, b.octo_heads, b.octo_mlp_ratio, b.octo_dropout)
                                    for _ in range(b.octo_layers))
        self.norm = nn.LayerNorm(d)
        self.pool = b.octo_readout_pool
        self.obs_skip = bool(b.octo_obs_skip)
        self.out_dim = d * (self.n_readouts if self.pool == 'concat' else 1) + (d if self.obs_skip else 0)
        self.n_kp_tokens = (1 if self.kp_flat else self.n_keypoints) if self.n_keypoints else 0
        self.per_image = self.grid * self.grid * int(self.patch_tokens) + self.n_kp_tokens
        self.per_step_obs = self.n_cameras * self.per_image + int(self.use_state_token)
        # Static part of the layout (after the L task tokens): kinds and steps per position.
        kinds, steps = [], []
        for t in range(self.n_steps):
            kinds += [OBS] * self.per_step_obs + [READOUT] * self.n_readouts
            steps += [t] * (self.per_step_obs + self.n_readouts)
        self.register_buffer('_kinds', torch.tensor(kinds, dtype=torch.long), persistent=False)
        self.register_buffer('_steps', torch.tensor(steps, dtype=torch.long), persistent=False)

    # ------------------------------------------------------------------ helpers
    def instruction_embedding(self, token_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Masked mean of word embeddings (the stem's FiLM input): (B, L), (B, L) -> (B, D)."""
        m = attention_mask.to(self.word_emb.weight.dtype).unsqueeze(-1)  # (B, L, 1)
        e = self.word_emb(token_ids) * m
        return e.sum(dim=1) / m.sum(dim=1).clamp_min(1.0)

    def layout(self, n_task: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """(kinds (N,), steps (N,)) of the whole sequence for ``n_task`` instruction tokens."""
        dev = self._kinds.device
        kinds = torch.cat([torch.full((n_task,), TASK, dtype=torch.long, device=dev), self._kinds])
        steps = torch.cat([torch.zeros(n_task, dtype=torch.long, device=dev), self._steps])
        return kinds, steps

    def _image_tokens(self, images: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """images (B, T_img, 3, S, S) in [0,1], cond (B, D) -> (B, T_img, per_image, D)."""
        bsz, t = images.shape[:2]
        x = images.reshape(bsz * t, *images.shape[2:]) * 2.0 - 1.0
        c = cond.repeat_interleave(t, dim=0)
        for blk in self.stem:
            x = blk(x, c)  # (B*T, C, h, w)
        toks = []
        if self.patch_tokens:
            toks.append(self.patch_proj(x).flatten(2).transpose(1, 2) + self.pos)  # (B*T, h*w, D)
        if self.n_keypoints:
            kp = self.kp_softmax(self.kp_maps(x)).reshape(bsz * t, self.n_keypoints, 2)
            f = fourier_features(kp, self.kp_freqs)  # (B*T, K, 4F)
            if self.kp_flat:   # one token of all K keypoints (Octo's low-dimensional observation tokenizer)
                toks.append(self.kp_embed(f.reshape(bsz * t, 1, -1)))  # (B*T, 1, D)
            else:
                toks.append(self.kp_embed(f) + self.kp_id)  # (B*T, K, D)
        tok = torch.cat(toks, dim=1)
        tok = tok.reshape(bsz, self.n_steps, self.n_cameras, self.per_image, -1)
        tok = tok + self.camera_emb[None, None, :, None] + self.step_emb[None, :, None, None]
        return tok.reshape(bsz, t, self.per_image, -1)

    def tokens(self, images: torch.Tensor, token_ids: torch.Tensor, attention_mask: torch.Tensor,
               state: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """All output tokens: ``(hidden (B, N, D) after the final LayerNorm, kinds (N,))``.

        Raises:
            ValueError: wrong image count, token length above ``max_tokens``, or missing state.
        """
        h, kinds, _ = self._encode(images, token_ids, attention_mask, state)
        return h, kinds

    def _encode(self, images, token_ids, attention_mask, state):
        """(hidden (B, N, D), kinds (N,), newest step's mean input image token (B, D))."""
        bsz, t = images.shape[:2]
        if t != self.n_images:
            raise ValueError(f'octo expects {self.n_images} images per sample, got {t}')
        n_task = token_ids.shape[1]
        if n_task > self.lang_pos.shape[0]:
            raise ValueError(f'octo: {n_task} instruction tokens exceed max_tokens ({self.lang_pos.shape[0]})')
        lang = self.word_emb(token_ids) + self.lang_pos[:n_task]  # (B, L, D)
        cond = self.instruction_embedding(token_ids, attention_mask) if self.film else lang.new_zeros(bsz, lang.shape[-1])
        img = self._image_tokens(images, cond).reshape(bsz, self.n_steps, -1, lang.shape[-1])  # (B, T, C*P, D)
        parts = [lang]
        for s in range(self.n_steps):
            parts.append(img[:, s])
            if self.use_state_token:
                if state is None:
                    raise ValueError('octo configured with octo_state_token but no state given')
                st = state[:, min(s, state.shape[1] - 1)]
                parts.append((self.state_proj(st) + self.step_emb[s])[:, None])
            parts.append((self.readouts + self.step_emb[s]).expand(bsz, -1, -1))
        x = torch.cat(parts, dim=1)  # (B, N, D)
        kinds, steps = self.layout(n_task)
        allowed = octo_attention_mask(kinds, steps)[None].expand(bsz, -1, -1).clone()  # (B, N, N)
        pad = torch.ones(bsz, x.shape[1], dtype=torch.bool, device=x.device)
        pad[:, :n_task] = attention_mask.bool()
        allowed = allowed & pad[:, None, :]
        allowed = allowed | torch.eye(x.shape[1], dtype=torch.bool, device=x.device)[None]
        allowed = allowed[:, None]  # (B, 1, N, N)
        for blk in self.blocks:
            x = blk(x, allowed)
        return self.norm(x), kinds, img[:, -1].mean(dim=1)

    def forward(self, images: torch.Tensor, token_ids: torch.Tensor, attention_mask: torch.Tensor,
                state: Optional[torch.Tensor] = None) -> torch.Tensor:
        """images (B, T_img, 3, S, S) in [0, 1], token_ids/attention_mask (B, L), state (B, T_obs, S) -> (B, D)."""
        h, _, obs_in = self._encode(images, token_ids, attention_mask, state)
        r = h[:, -self.n_readouts:]  # newest step's readouts (B, R, D)
        out = r.reshape(r.shape[0], -1) if self.pool == 'concat' else r.mean(dim=1)
        if self.obs_skip:
            out = torch.cat([out, obs_in], dim=-1)
        return out
