"""``diffusion`` head: DDPM-trained, DDIM-sampled action chunk (Diffusion Policy / Octo / GR00T style).

Sources:
* Ho et al. 2020, "Denoising Diffusion Probabilistic Models" (arXiv 2006.11239): forward process
  ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``, ``t ~ U{0..T-1}``, loss ``|eps - eps_theta(x_t, t)|^2``;
* Song et al. 2021, "Denoising Diffusion Implicit Models" (arXiv 2010.02502): deterministic (eta = 0)
  sampling on a sub-sequence of ``num_inference_steps`` timesteps;
* Chi et al. 2023, "Diffusion Policy" (arXiv 2303.04137): action chunks as the diffused variable,
  conditioned on the observation feature; 100 training steps, squared-cosine schedule, clipped x0,
  DDIM for fast inference;
* Octo Model Team 2024, "Octo: An Open-Source Generalist Robot Policy" (arXiv 2405.12213): the
  conditional residual MLP (``ScoreActor`` + ``MLPResNet``: [time MLP, obs feature, noisy actions]
  -> Dense -> blocks ``x + Dense(act(Dense_4x(LN(x))))`` -> Dense) -> ``diffusion_net: mlp``;
* Peebles & Xie 2023, "Scalable Diffusion Models with Transformers" (arXiv 2212.09748): DiT blocks
  with adaLN-Zero conditioning -> ``diffusion_net: dit`` (GR00T N1's action head is a DiT,
  NVIDIA 2025, arXiv 2503.14734; GR00T also cross-attends to VL tokens, here the backbone gives one
  feature, so it conditions through adaLN together with the timestep as DiT's class label does).

Schedulers are ``diffusers.DDPMScheduler`` (training: ``add_noise``) and ``diffusers.DDIMScheduler``
(sampling: ``set_timesteps``/``step``, eta = 0) built from the same ``head.num_train_timesteps``,
``head.beta_schedule``, ``head.clip_sample``, ``prediction_type='epsilon'``. They hold no learned
state, so a checkpoint is the network's state dict and the config. ``diffusers`` is imported when a
head is built (its import costs ~1.5 s, which other heads need not pay).

Loss: eps-MSE over the non-padded chunk rows (``action_is_pad``) and all action dims; padded rows
enter the network as part of the noisy chunk, as in ``flow`` and LeRobot's diffusion policy.
Binary (gripper) dims need nothing here: the policy snaps them after unnormalizing.

``forward`` samples, with the ``flow`` head's keyword semantics: ``noise=`` (B, H, A) is the initial
``x_T``; else it is drawn from ``generator=`` (on the generator's device), else from torch's global
generator; ``num_steps=`` overrides ``head.num_inference_steps``. With eta = 0 the DDIM steps draw no
further noise, so the same noise gives the same chunk.
"""
from __future__ import annotations

import copy
import math
from typing import Dict, Optional, Tuple, Union

import torch
from torch import nn

from ..registry import register_head
from .flow import gaussian_chunk, head_context
from .losses import masked_mean

__all__ = ['DiffusionHead', 'timestep_embedding']


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer sinusoidal embedding of diffusion timesteps ``t (B,)`` -> ``(B, dim)`` (``dim`` even).

    The DDPM embedding (Ho et al. 2020, after Vaswani et al. 2017): frequencies
    ``max_period ** (-k / (dim / 2))``, ``[cos, sin]`` halves.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    ang = t.float()[:, None] * freqs[None]  # (B, dim/2)
    return torch.cat([torch.cos(ang), torch.sin(ang)], dim=-1)  # (B, dim)


class _ResBlock(nn.Module):
    """Octo ``MLPResNetBlock``: ``x + W2 act(W1 LN(dropout(x)))`` with a 4x wide hidden layer."""

    def __init__(self, d: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout) if dropout else nn.Identity(), nn.LayerNorm(d),
                                 nn.Linear(d, 4 * d), nn.SiLU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class _MLPNet(nn.Module):
    """eps_theta over the flattened chunk: [cond (hidden), noisy chunk (H*A)] -> Dense -> blocks -> Dense."""

    def __init__(self, horizon: int, action_dim: int, hidden: int, n_layers: int, dropout: float) -> None:
        super().__init__()
        self.horizon, self.action_dim = horizon, action_dim
        flat = horizon * action_dim
        self.inp = nn.Linear(hidden + flat, hidden)
        self.blocks = nn.Sequential(*[_ResBlock(hidden, dropout) for _ in range(n_layers)])
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, flat))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x (B, H, A) noisy chunk, c (B, hidden) condition (observation + timestep) -> eps (B, H, A)."""
        b = x.shape[0]
        h = self.inp(torch.cat([c, x.reshape(b, -1)], dim=-1))  # (B, hidden)
        return self.out(self.blocks(h)).reshape(b, self.horizon, self.action_dim)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1.0 + scale[:, None]) + shift[:, None]  # (B, H, d)


class _DiTBlock(nn.Module):
    """DiT block with adaLN-Zero (Peebles & Xie 2023, fig. 3): the condition regresses per-channel
    shift/scale of both LayerNorms and the residual gates; the regressor is zero-initialised so each
    block starts as the identity."""

    def __init__(self, d: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = nn.MultiheadAttention(d, n_heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(approximate='tanh'), nn.Linear(4 * d, d))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x (B, H, d) action tokens, c (B, d) condition -> (B, H, d)."""
        sh1, sc1, g1, sh2, sc2, g2 = self.ada(c).chunk(6, dim=-1)  # 6 x (B, d)
        y = _modulate(self.norm1(x), sh1, sc1)
        x = x + g1[:, None] * self.attn(y, y, y, need_weights=False)[0]
        return x + g2[:, None] * self.mlp(_modulate(self.norm2(x), sh2, sc2))


class _DiTNet(nn.Module):
    """eps_theta as a DiT over the H action tokens (bidirectional attention, learned positions)."""

    def __init__(self, horizon: int, action_dim: int, hidden: int, n_layers: int, n_heads: int,
                 dropout: float) -> None:
        super().__init__()
        self.tok = nn.Linear(action_dim, hidden)
        self.pos = nn.Parameter(torch.randn(horizon, hidden) * 0.02)
        self.blocks = nn.ModuleList(_DiTBlock(hidden, n_heads, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))
        self.out = nn.Linear(hidden, action_dim)
        for m in (self.ada[1], self.out):   # DiT's zero-initialised final layer
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x (B, H, A) noisy chunk, c (B, hidden) condition -> eps (B, H, A)."""
        h = self.tok(x) + self.pos  # (B, H, hidden)
        for blk in self.blocks:
            h = blk(h, c)
        shift, scale = self.ada(c).chunk(2, dim=-1)
        return self.out(_modulate(self.norm(h), shift, scale))  # (B, H, A)


@register_head('diffusion')
class DiffusionHead(nn.Module):
    """DDPM/DDIM action head; ``forward`` samples (see the module docstring).

    Config (``cfg.head``): ``hidden``, ``n_layers`` (residual / DiT blocks), ``dropout``, ``use_state``,
    ``time_dim`` (sinusoidal timestep width), ``num_train_timesteps``, ``num_inference_steps``,
    ``beta_schedule``, ``clip_sample``, ``diffusion_net`` (``'mlp'`` | ``'dit'``), ``num_heads`` (dit).
    """

    sequence_input = False   # feature (B, D)
    samples = True           # forward draws noise: takes ``noise=`` / ``generator=`` / ``num_steps=``
    supports_guidance = False  # no velocity field for RTC

    def __init__(self, cfg, in_dim: int) -> None:
        super().__init__()
        from diffusers import DDIMScheduler, DDPMScheduler   # deferred: see module docstring

        h = cfg.head
        if h.gripper_loss != 'same':
            raise ValueError("diffusion head: head.gripper_loss must be 'same' (eps-MSE on every dim), "
                             f"got {h.gripper_loss!r}")
        self.horizon, self.action_dim = cfg.chunk.chunk_size, cfg.action_dim
        self.use_state = h.use_state
        self.num_inference_steps = h.num_inference_steps
        self.num_train_timesteps = h.num_train_timesteps
        self.time_dim = h.time_dim
        kw = dict(num_train_timesteps=h.num_train_timesteps, beta_schedule=h.beta_schedule,
                  clip_sample=h.clip_sample, prediction_type='epsilon')
        self.train_scheduler = DDPMScheduler(**kw)
        self.sample_scheduler = DDIMScheduler(**kw)
        c_in = in_dim + (cfg.state_dim if h.use_state else 0)
        self.obs_cond = nn.Sequential(nn.Linear(c_in, h.hidden), nn.SiLU(), nn.Linear(h.hidden, h.hidden))
        self.time_cond = nn.Sequential(nn.Linear(h.time_dim, h.hidden), nn.SiLU(), nn.Linear(h.hidden, h.hidden))
        if h.diffusion_net == 'dit':
            if h.hidden % h.num_heads:
                raise ValueError(f'diffusion head (dit): head.hidden ({h.hidden}) must be divisible by '
                                 f'head.num_heads ({h.num_heads})')
            self.net = _DiTNet(self.horizon, self.action_dim, h.hidden, h.n_layers, h.num_heads, h.dropout)
        elif h.diffusion_net == 'mlp':
            self.net = _MLPNet(self.horizon, self.action_dim, h.hidden, h.n_layers, h.dropout)
        else:
            raise ValueError(f"diffusion head: head.diffusion_net must be 'mlp' or 'dit', got {h.diffusion_net!r}")

    def _context(self, feature: torch.Tensor, state: Optional[torch.Tensor]) -> torch.Tensor:
        return head_context(feature, state, self.use_state, 'diffusion')  # (B, D[+S])

    def predict_noise(self, x: torch.Tensor, t: Union[int, torch.Tensor], feature: torch.Tensor,
                      state: Optional[torch.Tensor] = None, obs: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``eps_theta(x (B, H, A), t (scalar or (B,)) | feature (B, D), state (B, S))`` -> (B, H, A).

        ``obs``: a precomputed ``obs_cond`` output (B, hidden) (sampling reuses it across steps).

        Raises:
            ValueError: ``x`` is not (B, H, A) for this head, or state missing with ``use_state``.
        """
        b = feature.shape[0]
        if x.shape != (b, self.horizon, self.action_dim):
            raise ValueError(f'diffusion head expects x of shape ({b}, {self.horizon}, {self.action_dim}), '
                             f'got {tuple(x.shape)}')
        if obs is None:
            obs = self.obs_cond(self._context(feature, state))  # (B, hidden)
        t_b = torch.as_tensor(t, device=x.device).reshape(-1).expand(b)  # (B,)
        c = obs + self.time_cond(timestep_embedding(t_b, self.time_dim))  # (B, hidden)
        return self.net(x, c)

    def initial_noise(self, batch: int, device: Union[str, torch.device],
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``x_T ~ N(0, I)`` of shape (batch, H, A) (:func:`~.flow.gaussian_chunk`)."""
        return gaussian_chunk(batch, self.horizon, self.action_dim, device, generator)

    def forward(self, feature: torch.Tensor, state: Optional[torch.Tensor] = None, *,
                noise: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None,
                num_steps: Optional[int] = None) -> torch.Tensor:
        """Sample a normalized chunk (B, H, A) by DDIM (eta = 0) from ``noise`` (default: drawn from
        ``generator``, else torch's global generator) in ``num_steps`` (default
        ``head.num_inference_steps``) steps. Same noise -> the same chunk.

        Raises:
            ValueError: ``num_steps`` outside [1, num_train_timesteps]; bad ``noise`` shape; see
                :meth:`predict_noise`.
        """
        n = int(num_steps or self.num_inference_steps)
        if not 1 <= n <= self.num_train_timesteps:
            raise ValueError(f'diffusion head: num_steps must be in [1, {self.num_train_timesteps}], got {n}')
        obs = self.obs_cond(self._context(feature, state))  # (B, hidden), once for all steps
        x = self.initial_noise(feature.shape[0], feature.device, generator) if noise is None else noise
        sched = copy.copy(self.sample_scheduler)   # set_timesteps mutates: concurrent samplers stay apart
        sched.set_timesteps(n, device=feature.device)
        for t in sched.timesteps:
            eps = self.predict_noise(x, t, feature, state, obs=obs)
            x = sched.step(eps, int(t), x, eta=0.0).prev_sample  # (B, H, A)
        return x

    def loss(self, feature: torch.Tensor, state: Optional[torch.Tensor], actions: torch.Tensor,
             action_is_pad: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Dict[str, float]]:
        """eps-MSE ``|eps_theta(x_t, t) - eps|^2`` over non-padded (B, H) rows and all A dims.

        ``t ~ U{0..T-1}`` and ``eps ~ N(0, I)`` from torch's global generator (training seeds it);
        ``x_t`` = ``DDPMScheduler.add_noise(actions, eps, t)``. Returns ``(loss, {'eps_mse': value})``.
        """
        b = actions.shape[0]
        t = torch.randint(0, self.num_train_timesteps, (b,), device=actions.device)  # (B,)
        eps = torch.randn_like(actions)  # (B, H, A)
        x_t = self.train_scheduler.add_noise(actions, eps, t)
        err = (self.predict_noise(x_t, t, feature, state) - eps) ** 2  # (B, H, A)
        loss = masked_mean(err, action_is_pad)
        return loss, {'eps_mse': float(loss.detach())}
