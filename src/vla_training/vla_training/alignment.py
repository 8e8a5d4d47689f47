"""Alignment: per-topic time series -> control-rate ticks, with stale-tick accounting (ROS-free).

The second stage of :func:`vla_training.bag_dataset.read_episode`. Streams come at their own rates
(a 30 Hz camera, 100-1000 Hz joint states, a 100 Hz command stream) and are resampled onto one grid
by sample-and-hold, the same rule the policy node applies online (latest message wins):

* The grid runs at ``rate_hz`` from the first time every topic has a message (``t0``) to ``t_end``
  (the last command, or when no command was recorded, one period before the last joint state).
* At grid time ``t`` each topic contributes its latest message with stamp ``<= t + period / 2``
  (the half period absorbs the few milliseconds by which a sensor stamp follows the tick it
  belongs to).
* A tick is *stale* for a topic when that message is older than ``max_age`` or when there is none.
  Stale ticks are excluded; :attr:`Alignment.stale` counts them per topic. Latched topics (the
  instruction) never go stale: their last value holds until the next one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Sequence

import numpy as np

__all__ = ['Alignment', 'align', 'NoTickError']


class NoTickError(ValueError):
    """No grid tick survives; the text says why (per-topic first stamps, or stale counts)."""


@dataclass
class Alignment:
    """Which message of each topic every kept tick uses.

    Attributes:
        grid: ``int64 (G,)`` every grid time in ns (kept or not).
        keep: ``bool (G,)`` ticks where no topic was stale.
        index: ``{role: int64 (T,)}`` for each kept tick, the index into that role's sorted stamps.
        stale: ``{topic: ticks}`` stale ticks per topic (a tick may be stale on several topics);
            only topics with at least one stale tick appear.
        period_ns: grid period in ns (float).
    """

    grid: np.ndarray
    keep: np.ndarray
    index: Dict[str, np.ndarray]
    stale: Dict[str, int]
    period_ns: float

    @property
    def ticks(self) -> np.ndarray:
        """``int64 (T,)`` kept grid times in ns."""
        return self.grid[self.keep]

    @property
    def dropped(self) -> int:
        """Number of grid ticks excluded because some topic was stale."""
        return int(self.grid.size - int(self.keep.sum()))


def align(stamps: Mapping[str, np.ndarray], topics: Mapping[str, str], *, rate_hz: float, max_age_ns: float,
          end_ns: int, latched: Sequence[str] = ()) -> Alignment:
    """Put sorted stamp series on a ``rate_hz`` grid from the first common time to ``end_ns``.

    Args:
        stamps: ``{role: int64 (N_role,)}`` sorted ascending, ns; every series non-empty.
        topics: ``{role: topic name}`` (for the stale counts and messages).
        rate_hz: grid rate (> 0).
        max_age_ns: a topic's message older than this at a tick makes the tick stale (> 0).
        end_ns: the last grid time allowed (ns).
        latched: roles that never go stale (only a missing message makes them stale).

    Returns:
        :class:`Alignment` with at least one kept tick.

    Raises:
        NoTickError: ``end_ns`` precedes the first common time, or every tick is stale.
    """
    period_ns = 1e9 / float(rate_hz)
    roles = list(stamps)
    t0 = max(int(stamps[r][0]) for r in roles)
    if end_ns < t0:
        raise NoTickError(
            f'no grid tick survives: the grid would end at {end_ns * 1e-9:.3f} s, before the first time all topics '
            f'have a message ({t0 * 1e-9:.3f} s; '
            + ', '.join(f'{topics[r]} from {stamps[r][0] * 1e-9:.3f} s' for r in roles) + ')')
    n_ticks = int(np.floor((end_ns - t0) / period_ns + 1e-6)) + 1
    grid = t0 + np.round(np.arange(n_ticks) * period_ns).astype(np.int64)  # (G,) ns
    half = int(round(period_ns / 2))

    keep = np.ones(n_ticks, dtype=bool)
    sel: Dict[str, np.ndarray] = {}
    stale_counts: Dict[str, int] = {}
    for r in roles:
        st = stamps[r]
        idx = np.searchsorted(st, grid + half, side='right') - 1  # (G,) index into sorted stamps
        stale = idx < 0
        idx_c = np.clip(idx, 0, None)
        if r not in latched:
            stale |= (grid - st[idx_c]) > max_age_ns
        if stale.any():
            stale_counts[topics[r]] = int(stale.sum())
        keep &= ~stale
        sel[r] = idx_c
    if not keep.any():
        detail = ', '.join(f'{t}: {n} ticks stale' for t, n in stale_counts.items())
        raise NoTickError(f'no grid tick survives at {float(rate_hz):g} Hz with max age {max_age_ns * 1e-9:.3f} s '
                          f'({n_ticks} ticks; {detail}); the topics never overlap in time')
    return Alignment(grid=grid, keep=keep, index={r: sel[r][keep] for r in roles}, stale=stale_counts,
                     period_ns=period_ns)


def latest_at(stamps: np.ndarray, times_ns: np.ndarray) -> np.ndarray:
    """``int64 (T,)`` index of the latest of the sorted ``stamps`` at or before each of ``times_ns``
    (clipped to 0 when there is none)."""
    return np.clip(np.searchsorted(stamps, times_ns, side='right') - 1, 0, None)
