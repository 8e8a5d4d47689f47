"""Real-time chunking (RTC): guided inpainting while a flow head samples the next chunk.

Black, Galliker, Levine 2025, "Real-Time Execution of Action Chunking Flow Policies",
arXiv 2506.07339, Algorithm 1 / eq. (ΠGDM guidance). While chunk ``k`` is still executing, chunk
``k + 1`` is sampled so that its first rows reproduce the rows of chunk ``k`` that will run before
it arrives (weights 1), blend into them over the overlap (weights in (0, 1)) and are free after
(weights 0). At every Euler step, with the paper's time (``tau = 0`` noise, ``tau = 1`` data) and
its velocity ``v_p = dA/dtau``:

    A_hat = A^tau + (1 - tau) * v_p(A^tau, tau)                     denoised estimate
    e     = (Y - A_hat) * W                                          W (H,) broadcast over A
    g     = e^T dA_hat/dA^tau                                        vector-Jacobian product (autograd)
    w     = min(beta, (1 - tau) / (tau * r2)),  r2 = (1 - tau)^2 / (tau^2 + (1 - tau)^2)
    v_p  <- v_p + w * g

Our flow head (:mod:`vla_policy.models.heads.flow`, pi0's convention) predicts ``v = eps - A =
-v_p``, so here ``A_hat = A^tau - (1 - tau) v`` and ``v <- v - w * g``; the Euler step
``A <- A - v / num_steps`` is the head's own (:func:`~vla_policy.models.heads.flow.euler_integrate`),
so with ``W = 0`` the guided sample equals the unguided one for the same noise, bit for bit.
``w`` is ``beta`` at ``tau = 0`` (the formula's limit is infinite).

Where this differs from LeRobot 0.4.4 (``lerobot/policies/rtc/modeling_rtc.py``, time running
from 1 to 0): LeRobot evaluates the velocity before marking ``x_t`` as requiring grad, so its
"correction" is ``e`` itself (the Jacobian of ``A_hat`` taken as the identity); we back-propagate
``e`` through the velocity network as Algorithm 1 does. LeRobot builds ``W`` from
``inference_delay``/``execution_horizon`` inside the sampler; here the caller passes ``W``
(``ChunkGuide.weights``, built by the runtime) so any prefix schedule works.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .models.heads.flow import denoised_estimate, euler_integrate

__all__ = ['guidance_weight', 'GuidedVelocity', 'sample_guided']


def guidance_weight(tau: float, max_guidance_weight: float) -> float:
    """``min(beta, (1 - tau) / (tau * r2_tau))`` with ``r2_tau = (1 - tau)^2 / (tau^2 + (1 - tau)^2)``.

    The ΠGDM weight of Black et al. 2025 (arXiv 2506.07339, sec. 4), simplified to
    ``(tau^2 + (1 - tau)^2) / (tau (1 - tau))``; ``beta`` at ``tau <= 0`` (the limit is infinite)
    and ``0`` at ``tau >= 1`` (sampling never evaluates it there).

    Raises:
        ValueError: ``max_guidance_weight`` is not > 0.
    """
    beta = float(max_guidance_weight)
    if not beta > 0:
        raise ValueError(f'max_guidance_weight must be > 0, got {max_guidance_weight}')
    if tau <= 0.0:
        return beta
    if tau >= 1.0:
        return 0.0
    return min(beta, (tau ** 2 + (1.0 - tau) ** 2) / (tau * (1.0 - tau)))


class GuidedVelocity:
    """Wraps ``velocity(x (B, H, A), tau) -> v`` (pi0 convention ``v = eps - A``) with RTC guidance.

    Args:
        velocity: the unguided velocity field (differentiable in ``x``).
        target: ``Y`` (B, H, A) or (H, A), in the space the head samples (normalized actions).
        weights: ``W`` (B, H) or (H,) in [0, 1], broadcast over the action dims.
        max_guidance_weight: ``beta`` (paper: 5; LeRobot default: 10).

    Raises:
        ValueError: shapes that do not broadcast to ``target``'s, weights outside [0, 1], a
            non-finite target row with a non-zero weight, ``beta <= 0``.
    """

    def __init__(self, velocity: Callable[[torch.Tensor, float], torch.Tensor], target: torch.Tensor,
                 weights: torch.Tensor, max_guidance_weight: float) -> None:
        if target.ndim == 2:
            target = target[None]
        if target.ndim != 3:
            raise ValueError(f'RTC target must be (B, H, A) or (H, A), got {tuple(target.shape)}')
        w = weights if weights.ndim == 2 else weights.reshape(1, -1)
        if w.shape[-1] != target.shape[1] or w.shape[0] not in (1, target.shape[0]):
            raise ValueError(f'RTC weights {tuple(weights.shape)} do not match target {tuple(target.shape)} '
                             '(need (H,) or (B, H))')
        if not bool(torch.all((w >= 0) & (w <= 1))):
            raise ValueError('RTC weights must lie in [0, 1]')
        w = w.to(target.dtype)[..., None]  # (B|1, H, 1)
        live = (w > 0).expand_as(target)
        if not bool(torch.all(torch.isfinite(target[live]))):
            raise ValueError('RTC target has NaN/Inf in rows with a non-zero weight')
        self.velocity = velocity
        self.target = torch.where(live, target, torch.zeros_like(target)).detach()  # (B|1, H, A)
        self.weights = w.detach()
        self.beta = float(max_guidance_weight)
        guidance_weight(0.0, self.beta)  # validates beta
        self.last_error: Optional[float] = None   # weighted |Y - A_hat| at the last step (diagnostics)

    def __call__(self, x: torch.Tensor, tau: float) -> torch.Tensor:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            v = self.velocity(xg, tau)                      # (B, H, A)
            a_hat = denoised_estimate(xg, v, tau)           # (B, H, A)
            err = ((self.target - a_hat) * self.weights).detach()
            g, = torch.autograd.grad(a_hat, xg, grad_outputs=err)   # e^T dA_hat/dA^tau
        self.last_error = float(err.abs().mean())
        return (v - guidance_weight(tau, self.beta) * g).detach()


def sample_guided(head, feature: torch.Tensor, state: Optional[torch.Tensor], target: torch.Tensor,
                  weights: torch.Tensor, max_guidance_weight: float = 10.0, *,
                  noise: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None,
                  num_steps: Optional[int] = None) -> torch.Tensor:
    """RTC sample of a flow head: normalized chunk (B, H, A) continuing ``target`` where ``weights`` > 0.

    Args:
        head: a head with ``velocity(x, tau, feature, state)``, ``initial_noise`` and ``num_steps``
            (:class:`~vla_policy.models.heads.flow.FlowHead`).
        feature (B, D), state (B, S) or None: the head's conditioning (``VLA.features``).
        target, weights, max_guidance_weight: see :class:`GuidedVelocity`.
        noise: (B, H, A) starting noise; else drawn from ``generator`` (or torch's global one).
        num_steps: Euler steps (default the head's).

    Raises:
        ValueError: the head cannot be guided, or bad target / weights (see :class:`GuidedVelocity`).
    """
    if not callable(getattr(head, 'velocity', None)):
        raise ValueError(f'RTC needs a flow head exposing velocity(); got {type(head).__name__}')
    target = target.to(device=feature.device, dtype=torch.float32)
    weights = weights.to(device=feature.device, dtype=torch.float32)
    if noise is None:
        noise = head.initial_noise(feature.shape[0], feature.device, generator)
    feature = feature.detach()
    state = state.detach() if state is not None else None
    guided = GuidedVelocity(lambda x, t: head.velocity(x, t, feature, state), target, weights, max_guidance_weight)
    return euler_integrate(guided, noise, num_steps or head.num_steps)

