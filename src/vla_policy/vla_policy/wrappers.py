"""Wrappers that implement the policy contract around another policy (openpi ``ActionChunkBroker`` style)."""
from __future__ import annotations

from collections import deque
from typing import Deque, Sequence, Tuple

import numpy as np

from vla_policy.contracts import ActionChunk, Observation, Policy
from vla_policy.handover import act_weights

__all__ = ['TemporalEnsembler']


class TemporalEnsembler:
    """ACT temporal ensembling (Zhao et al. 2023, "Learning Fine-Grained Bimanual Manipulation with
    Low-Cost Hardware", sec. 3.3): query the policy every control tick and execute, for the next
    tick, the weighted mean of every stored chunk's prediction for that tick,
    ``w_i = exp(-m * i)`` with ``i = 0`` the oldest prediction (ACT's ``m = 0.01``).

    Use with ``RuntimeConfig(n_action_steps=1)``. The returned chunk is the newest one with its
    row 0 replaced by the ensemble, so the contract (``(H, A)`` absolute targets) is unchanged.
    Dimensions in ``binary_dims`` (a gripper) are not averaged: the newest prediction is kept.

    This wrapper assumes one call per control tick (rows matched by tick count). The runtime's
    ``handover='temporal_ensemble'`` (:mod:`vla_policy.handover`) does the same ensembling indexed
    by time over the whole plan, so it also works with asynchronous inference, where chunks arrive
    late and not every tick; with synchronous inference the two give the same next row.

    Raises:
        ValueError: ``m`` < 0; chunks whose step ``dt`` or joint names change mid-episode.
    """

    def __init__(self, policy: Policy, m: float = 0.01, binary_dims: Sequence[int] = ()) -> None:
        if m < 0:
            raise ValueError(f'temporal ensembling coefficient m must be >= 0, got {m}')
        self.policy, self.m = policy, float(m)
        self.binary_dims = list(binary_dims)
        self._chunks: Deque[Tuple[float, ActionChunk]] = deque()

    def reset(self) -> None:
        self._chunks.clear()
        self.policy.reset()

    def infer(self, history: Sequence[Observation]) -> ActionChunk:
        new = self.policy.infer(history)
        now = new.stamp
        if self._chunks and (self._chunks[-1][1].dt != new.dt or self._chunks[-1][1].joint_names != new.joint_names):
            raise ValueError('TemporalEnsembler: chunk dt or joint names changed mid-episode; call reset()')
        self._chunks.append((now, new))
        preds = []
        for stamp, ch in self._chunks:
            j = int(round((now - stamp) / new.dt))          # row of that chunk meant for the next tick
            if 0 <= j < ch.horizon:
                preds.append(ch.actions[j])
        while self._chunks and int(round((now - self._chunks[0][0]) / new.dt)) >= self._chunks[0][1].horizon - 1:
            self._chunks.popleft()                              # no rows left for future ticks
        p = np.stack(preds)                                     # (K, A), oldest first
        w = act_weights(len(p), self.m)[:, None]               # (K, 1)
        row = (w * p).sum(0) / w.sum()                          # (A,)
        if self.binary_dims:
            row[self.binary_dims] = new.actions[0, self.binary_dims]
        actions = new.actions.copy()
        actions[0] = row
        return ActionChunk(actions, new.joint_names, new.dt, new.stamp, dict(new.info, ensembled=float(len(p))))
