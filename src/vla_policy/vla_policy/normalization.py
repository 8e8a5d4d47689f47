"""Quantile normalization of states and actions, kept outside the model and saved with it.

As RoboVLMs and openpi (``openpi/src/openpi/transforms.py`` ``Normalize(use_quantiles=True)``,
stats from ``openpi/shared/normalize.py``): per dimension, the 1st and 99th percentiles
``q01, q99`` map to -1 and +1, ``y = 2 (x - q01) / (q99 - q01) - 1``, then clipped to [-1, 1]
(RoboVLMs clips normalized actions the same way). Quantiles are robust to the occasional
outlier a teleoperator produces, unlike min/max. Mean / std are stored for reference only.

Constant dimensions (``q99 - q01 < eps``) map to 0 and unnormalize back to the constant (q01).
Normalization lives outside the model, as LeRobot's ``NormalizerProcessorStep``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Union

import numpy as np
import torch

__all__ = ['NormalizationStats', 'EPS']

EPS = 1e-6  # range below this is treated as a constant dimension

ArrayLike = Union[np.ndarray, torch.Tensor]


@dataclass
class NormalizationStats:
    """Per-dimension statistics, each ``float32 (D,)``.

    Attributes:
        q01, q99: 1st / 99th percentiles (units of the data: rad, m).
        mean, std: reference statistics (not used by the mapping).
    """

    q01: np.ndarray
    q99: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self) -> None:
        for k in ('q01', 'q99', 'mean', 'std'):
            v = np.asarray(getattr(self, k), dtype=np.float32).reshape(-1)
            if not np.all(np.isfinite(v)):
                raise ValueError(f'NormalizationStats.{k} contains NaN/Inf')
            setattr(self, k, v)
        d = self.q01.shape[0]
        bad = [k for k in ('q99', 'mean', 'std') if getattr(self, k).shape[0] != d]
        if bad:
            raise ValueError(f'NormalizationStats fields {bad} do not have dimension {d} of q01')
        if np.any(self.q99 < self.q01):
            raise ValueError('NormalizationStats: q99 < q01 in dims '
                             f'{np.flatnonzero(self.q99 < self.q01).tolist()}')

    @property
    def dim(self) -> int:
        return int(self.q01.shape[0])

    @classmethod
    def from_data(cls, x: np.ndarray) -> 'NormalizationStats':
        """Statistics of ``x (N, D)`` (N >= 1). Raises ValueError on wrong shape, empty or non-finite data."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 1:
            raise ValueError(f'NormalizationStats.from_data needs (N, D) with N >= 1, got {x.shape}')
        if not np.all(np.isfinite(x)):
            raise ValueError('NormalizationStats.from_data: data contains NaN/Inf')
        q01, q99 = np.quantile(x, [0.01, 0.99], axis=0)
        return cls(q01=q01, q99=q99, mean=x.mean(axis=0), std=x.std(axis=0))

    def _check(self, x: ArrayLike) -> None:
        if x.shape[-1] != self.dim:
            raise ValueError(f'normalization expects last dimension {self.dim}, got shape {tuple(x.shape)}')

    def _params(self, x: ArrayLike):
        rng = self.q99 - self.q01
        const = rng < EPS
        if isinstance(x, torch.Tensor):
            t = lambda a: torch.as_tensor(a, dtype=x.dtype, device=x.device)  # noqa: E731
            return t(self.q01), t(np.where(const, 1.0, rng)), torch.as_tensor(const, device=x.device)
        return self.q01, np.where(const, 1.0, rng).astype(np.float32), const

    def normalize(self, x: ArrayLike) -> ArrayLike:
        """``(..., D)`` -> ``(..., D)`` in [-1, 1] (numpy float32 or torch, same type as input)."""
        self._check(x)
        lo, rng, const = self._params(x)
        if isinstance(x, torch.Tensor):
            y = (2.0 * (x - lo) / rng - 1.0).clamp(-1.0, 1.0)
            return torch.where(const, torch.zeros_like(y), y)
        y = np.clip(2.0 * (np.asarray(x, np.float32) - lo) / rng - 1.0, -1.0, 1.0)
        return np.where(const, 0.0, y).astype(np.float32)

    def unnormalize(self, y: ArrayLike) -> ArrayLike:
        """Inverse on [-1, 1]: ``x = (y + 1) / 2 * (q99 - q01) + q01``; constant dims give q01."""
        self._check(y)
        lo, rng, const = self._params(y)
        if isinstance(y, torch.Tensor):
            x = (y + 1.0) * 0.5 * rng + lo
            return torch.where(const, lo.expand_as(x), x)
        x = (np.asarray(y, np.float32) + 1.0) * 0.5 * rng + lo
        return np.where(const, lo, x).astype(np.float32)

    def to_dict(self) -> Dict[str, np.ndarray]:
        return {'q01': self.q01, 'q99': self.q99, 'mean': self.mean, 'std': self.std}

    @classmethod
    def from_dict(cls, d: Dict[str, ArrayLike], *, where: str = 'stats') -> 'NormalizationStats':
        """Raises KeyError naming a missing field."""
        missing = [k for k in ('q01', 'q99', 'mean', 'std') if k not in d]
        if missing:
            raise KeyError(f'{where}: missing normalization fields {missing}')
        return cls(**{k: np.asarray(d[k], dtype=np.float32) for k in ('q01', 'q99', 'mean', 'std')})
