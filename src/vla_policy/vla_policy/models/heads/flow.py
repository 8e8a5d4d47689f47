"""``flow`` head: conditional flow matching over the action chunk (pi0's action expert, scaled down).

Black et al. 2024, "pi0: A Vision-Language-Action Flow Model for General Robot Control"
(arXiv 2410.24164), sec. IV and appendix B. Conventions used here, the paper's and openpi's:

* flow time ``tau`` in [0, 1], ``tau = 0`` is pure noise, ``tau = 1`` the data;
* noisy chunk ``A^tau = tau * A + (1 - tau) * eps``, ``eps ~ N(0, I)`` of shape (H, A);
* the network predicts ``v(A^tau, tau | feature, state)`` regressed onto ``u = eps - A``
  (pi0 eq. 1; openpi's ``u_t = noise - actions``), so ``dA^tau / dtau = -u`` and
* sampling integrates from noise at ``tau = 0`` to ``tau = 1`` with Euler steps
  ``A <- A - delta * v``, ``delta = 1 / num_steps`` (pi0: 10 steps);
* the denoised estimate at time ``tau`` is ``A_hat = A^tau - (1 - tau) * v`` (exact when ``v = u``);
* training times ``tau = s * (1 - b)``, ``b ~ Beta(1.5, 1)``, ``s = 0.999``: pi0's
  ``p(tau) = Beta((s - tau) / s; 1.5, 1)``, which puts more weight on noisy (low) times and never
  trains at ``tau > s``.

Loss: velocity MSE over the non-padded chunk rows (``action_is_pad``), all action dims, as the
``mlp`` head masks its L1/MSE. Padded rows still enter the network as part of the noisy chunk
(they hold the episode's last action, see ``vla_training.train.build_arrays``: a stationary
continuation), as in LeRobot's diffusion and pi0 policies; only their error is dropped.
Binary (gripper) dims need nothing here: the policy snaps them
after unnormalizing, as it does for the ``mlp`` head. ``HeadConfig.loss`` applies to ``mlp``
only: flow matching is defined with the squared error (the conditional expectation of ``u``).

Network (CPU-sized: 0.58 M parameters at hidden 256 and 2 blocks; the film_cnn trunk has 0.26 M):
the flattened noisy chunk (H*A) is projected to ``hidden``; a condition vector from
``[feature, state, sincos(tau)]`` is added to the
input and, through its own projection, inside each of ``n_layers`` pre-LayerNorm residual MLP
blocks (the additive conditioning of DiT / diffusion-policy MLPs; pi0 concatenates the time
embedding per action token, which a flat MLP over 8x8 actions does not need).
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Tuple, Union

import torch
from torch import nn

from ..registry import register_head

__all__ = ['FlowHead', 'sincos_time_embedding', 'sample_flow_time', 'euler_integrate', 'denoised_estimate']

VelocityFn = Callable[[torch.Tensor, float], torch.Tensor]


def sincos_time_embedding(tau: torch.Tensor, dim: int, min_period: float = 4e-3,
                          max_period: float = 4.0) -> torch.Tensor:
    """Sinusoidal embedding of flow times ``tau (B,)`` -> ``(B, dim)`` (``dim`` even).

    Periods are log-spaced in ``[min_period, max_period]``, openpi's ``posemb_sincos`` defaults
    (4e-3 .. 4.0: fine enough to tell apart the 0.1-wide Euler steps, coarse enough to stay
    smooth over [0, 1]).
    """
    half = dim // 2
    frac = torch.linspace(0.0, 1.0, half, device=tau.device, dtype=torch.float32)
    period = min_period * (max_period / min_period) ** frac  # (dim/2,)
    ang = tau.float()[:, None] * (2.0 * math.pi / period)[None]  # (B, dim/2)
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)  # (B, dim)


def sample_flow_time(n: int, alpha: float = 1.5, beta: float = 1.0, s: float = 0.999,
                     device: Union[str, torch.device] = 'cpu') -> torch.Tensor:
    """``n`` training times ``tau = s * (1 - b)``, ``b ~ Beta(alpha, beta)`` (pi0 appendix B).

    Drawn from torch's global generator (training seeds it). Returns float32 ``(n,)`` in [0, s].
    """
    b = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(beta))).sample((n,))
    return (s * (1.0 - b)).to(device=device, dtype=torch.float32)


def denoised_estimate(x: torch.Tensor, v: torch.Tensor, tau: float) -> torch.Tensor:
    """``A_hat = A^tau - (1 - tau) * v``: the chunk at ``tau = 1`` one Euler step would reach."""
    return x - (1.0 - tau) * v


def euler_integrate(velocity: VelocityFn, noise: torch.Tensor, num_steps: int) -> torch.Tensor:
    """Integrate ``dA/dtau = -v(A, tau)`` from ``noise`` at ``tau = 0`` to ``tau = 1``.

    ``num_steps`` Euler steps at ``tau_k = k / num_steps``: ``A <- A - (1 / num_steps) * v``.
    ``velocity(x (B, H, A), tau: float) -> (B, H, A)``; RTC passes a guided one
    (:mod:`vla_policy.rtc`), so both samplers share this loop and, unguided, agree bit for bit.
    """
    if num_steps < 1:
        raise ValueError(f'num_steps must be >= 1, got {num_steps}')
    x = noise
    dt = 1.0 / num_steps
    for k in range(num_steps):
        x = x - dt * velocity(x, k * dt)
    return x


def head_context(feature: torch.Tensor, state: Optional[torch.Tensor], use_state: bool,
                 head: str) -> torch.Tensor:
    """The conditioning of a generative head: ``feature`` (B, D), with ``state`` (B, S) appended when
    ``use_state`` -> (B, D[+S]).

    Raises:
        ValueError: ``feature`` not 2-D (these heads take one fused feature per sample), or
            ``use_state`` without a state; both name ``head``.
    """
    if feature.ndim != 2:
        raise ValueError(f'{head} head takes a (B, D) feature (sequence_input=False), got {tuple(feature.shape)}')
    if use_state:
        if state is None:
            raise ValueError(f'{head} head configured with use_state but no state given')
        return torch.cat([feature, state], dim=-1)  # (B, D+S)
    return feature  # (B, D)


def gaussian_chunk(batch: int, horizon: int, action_dim: int, device: Union[str, torch.device],
                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``N(0, I)`` noise of shape (batch, horizon, action_dim) on ``device``, drawn from ``generator`` on
    the generator's own device when given (so a CPU generator reproduces the same chunk on any device)."""
    gdev = generator.device if generator is not None else device
    return torch.randn(batch, horizon, action_dim, generator=generator, device=gdev).to(device)


class _Block(nn.Module):
    """Pre-LayerNorm residual MLP block with an additive condition: ``h + W2 gelu(W1 ln(h) + U c)``."""

    def __init__(self, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.cond = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(self.drop(nn.functional.gelu(self.fc1(self.norm(h)) + self.cond(c))))


@register_head('flow')
class FlowHead(nn.Module):
    """Flow-matching action head; ``forward`` samples (registry contract for generative heads).

    Config (``cfg.head``): ``hidden``, ``n_layers`` (residual blocks), ``dropout``, ``use_state``,
    ``num_steps`` (Euler steps at inference), ``time_dim`` (sincos width), ``time_alpha``,
    ``time_beta``, ``time_s`` (training-time distribution).
    """

    supports_guidance = True   # velocity field exposed: RTC (vla_policy.rtc) can guide sampling
    sequence_input = False     # feature (B, D): one fused feature per sample
    samples = True             # forward draws noise: takes ``noise=`` / ``generator=``

    def __init__(self, cfg, in_dim: int) -> None:
        super().__init__()
        h = cfg.head
        self.horizon, self.action_dim = cfg.chunk.chunk_size, cfg.action_dim
        self.use_state = h.use_state
        self.num_steps = h.num_steps
        self.time_dim = h.time_dim
        self.time_alpha, self.time_beta, self.time_s = h.time_alpha, h.time_beta, h.time_s
        c_in = in_dim + (cfg.state_dim if h.use_state else 0) + h.time_dim
        flat = self.horizon * self.action_dim
        self.cond = nn.Sequential(nn.Linear(c_in, h.hidden), nn.GELU(), nn.Linear(h.hidden, h.hidden))
        self.inp = nn.Linear(flat, h.hidden)
        self.blocks = nn.ModuleList(_Block(h.hidden, h.dropout) for _ in range(h.n_layers))
        self.out_norm = nn.LayerNorm(h.hidden)
        self.out = nn.Linear(h.hidden, flat)

    def _context(self, feature: torch.Tensor, state: Optional[torch.Tensor]) -> torch.Tensor:
        return head_context(feature, state, self.use_state, 'flow')  # (B, D[+S])

    def velocity(self, x: torch.Tensor, tau: Union[float, torch.Tensor], feature: torch.Tensor,
                 state: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``v(x (B, H, A), tau (scalar or (B,)) | feature (B, D), state (B, S))`` -> (B, H, A).

        Raises:
            ValueError: ``x`` is not (B, H, A) for this head, or state missing with ``use_state``.
        """
        b = feature.shape[0]
        if x.shape != (b, self.horizon, self.action_dim):
            raise ValueError(f'flow head expects x of shape ({b}, {self.horizon}, {self.action_dim}), '
                             f'got {tuple(x.shape)}')
        tau_t = torch.as_tensor(tau, dtype=torch.float32, device=x.device).reshape(-1).expand(b)  # (B,)
        ctx = torch.cat([self._context(feature, state), sincos_time_embedding(tau_t, self.time_dim)], dim=-1)
        c = self.cond(ctx)  # (B, hidden)
        h = self.inp(x.reshape(b, -1)) + c  # (B, hidden)
        for blk in self.blocks:
            h = blk(h, c)
        return self.out(self.out_norm(h)).reshape(b, self.horizon, self.action_dim)  # (B, H, A)

    def initial_noise(self, batch: int, device: Union[str, torch.device],
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``eps ~ N(0, I)`` of shape (batch, H, A) (:func:`gaussian_chunk`)."""
        return gaussian_chunk(batch, self.horizon, self.action_dim, device, generator)

    def forward(self, feature: torch.Tensor, state: Optional[torch.Tensor] = None, *,
                noise: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None,
                num_steps: Optional[int] = None) -> torch.Tensor:
        """Sample a normalized chunk (B, H, A): Euler from ``noise`` (default: drawn from ``generator``,
        else torch's global generator) with ``num_steps`` (default ``cfg.head.num_steps``).

        Same ``noise`` (or a generator in the same state) -> the same chunk.
        """
        if noise is None:
            noise = self.initial_noise(feature.shape[0], feature.device, generator)
        return euler_integrate(lambda x, t: self.velocity(x, t, feature, state), noise,
                               num_steps or self.num_steps)

    def loss(self, feature: torch.Tensor, state: Optional[torch.Tensor], actions: torch.Tensor,
             action_is_pad: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Dict[str, float]]:
        """Velocity MSE ``|v(A^tau, tau) - (eps - A)|^2`` over non-padded (B, H) rows and all A dims.

        ``tau`` from :func:`sample_flow_time`, ``eps`` from torch's global generator.
        Returns ``(loss, {'flow_mse': value})``.
        """
        b = actions.shape[0]
        tau = sample_flow_time(b, self.time_alpha, self.time_beta, self.time_s, actions.device)  # (B,)
        eps = torch.randn_like(actions)  # (B, H, A)
        t = tau[:, None, None]
        x = t * actions + (1.0 - t) * eps  # A^tau
        u = eps - actions  # target velocity (pi0 convention)
        err = (self.velocity(x, tau, feature, state) - u) ** 2  # (B, H, A)
        if action_is_pad is not None:
            keep = (~action_is_pad).to(err.dtype).unsqueeze(-1)  # (B, H, 1)
            loss = (err * keep).sum() / (keep.sum() * err.shape[-1]).clamp_min(1.0)
        else:
            loss = err.mean()
        return loss, {'flow_mse': float(loss.detach())}
