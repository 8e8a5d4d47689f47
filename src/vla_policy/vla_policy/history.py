"""Observation history: the last ``n_obs_steps`` observations, oldest first (LeRobot ``n_obs_steps``)."""
from __future__ import annotations

from collections import deque
from typing import Deque, List

from vla_policy.contracts import Observation

__all__ = ['ObservationHistory']


class ObservationHistory:
    """Fixed-length buffer of :class:`Observation`.

    ``frames()`` returns exactly ``n_obs_steps`` observations: at episode start, when fewer have
    arrived, the oldest one is repeated (as LeRobot's queues are filled on the first step).
    """

    def __init__(self, n_obs_steps: int) -> None:
        if n_obs_steps < 1:
            raise ValueError(f'n_obs_steps must be >= 1, got {n_obs_steps}')
        self.n_obs_steps = n_obs_steps
        self._buf: Deque[Observation] = deque(maxlen=n_obs_steps)

    def push(self, obs: Observation) -> None:
        """Append ``obs``; raises ValueError if its stamp is older than the newest held one."""
        if self._buf and obs.stamp < self._buf[-1].stamp:
            raise ValueError(f'observation stamp {obs.stamp:.3f} s is older than the last one '
                             f'({self._buf[-1].stamp:.3f} s): out-of-order observations')
        self._buf.append(obs)

    def frames(self) -> List[Observation]:
        if not self._buf:
            raise RuntimeError('ObservationHistory is empty: no observation pushed yet')
        items = list(self._buf)
        return [items[0]] * (self.n_obs_steps - len(items)) + items

    def clear(self) -> None:
        self._buf.clear()

    def __len__(self) -> int:
        return len(self._buf)

    @property
    def newest(self) -> Observation:
        if not self._buf:
            raise RuntimeError('ObservationHistory is empty')
        return self._buf[-1]
