"""The executing action plan and how a new chunk is handed over into it (ROS-free, numpy).

Every chunk row has an absolute time: row ``k`` of a chunk computed from an observation stamped
``t_obs`` is meant for ``t_obs + (k + 1) * dt`` (:class:`~vla_policy.contracts.ActionChunk`). The
runtime keeps one :class:`ActionPlan` of such rows and publishes the rows still ahead of the
control clock. A chunk requested at ``t_obs`` and ready at ``t_ready`` (later, when inference is
asynchronous) is **spliced**: its rows with time ``<= t_ready`` are dropped (they were due while
the model was computing: latency compensation from the header stamps), the rest become the plan
from ``t_ready`` on. :func:`splice_index` is the number of rows dropped.

How the new rows meet the rows already planned for the same times is the **hand-over mode**
(:data:`HANDOVER_MODES`, ``RuntimeConfig.handover``):

``open_loop``
    The plan is the new chunk's first ``n_action_steps`` rows after ``t_ready``; the next chunk is
    requested when the plan has run out, which with synchronous inference is exactly the ACT /
    Diffusion Policy / LeRobot ``n_action_steps`` execution (one chunk every ``n_action_steps``
    ticks). With a delay ``D`` (s) between request and result, it is requested earlier, when the
    rows ahead are down to ``ceil(D / dt) + 1`` (the expected delay plus one row for jitter), so
    the next chunk arrives before the plan runs dry (when ``D`` is shorter than the plan).
``aggregate``
    LeRobot async inference (lerobot 0.4.4, ``lerobot/async_inference/robot_client.py``): a chunk
    is requested when ``rows ahead / chunk rows <= chunk_size_threshold``; rows of the new chunk
    for times the plan already holds are merged with ``aggregate_fn(old, new)``
    (:data:`AGGREGATE_FUNCTIONS`, the table of ``lerobot/async_inference/configs.py``), the others
    are taken as they are; planned rows the new chunk does not cover are dropped (as LeRobot
    rebuilds its queue from the incoming timesteps).
``temporal_ensemble``
    ACT temporal ensembling (Zhao et al. 2023, arXiv 2304.13705, sec. 3.3): a chunk is requested
    on every tick the model is free; the plan value for each future time is the weighted mean of
    every stored chunk's prediction for that time, ``w_i = exp(-m i)``, ``i = 0`` the oldest
    prediction (:func:`act_weights`). Indexed by time, so it also works with chunks that arrive
    late or at irregular ticks.
``blend``
    Requested as ``aggregate``; over the overlap the new chunk's weight ramps from 0 to 1 over
    ``blend_window`` rows (:func:`blend_weights`, ``linear`` or ``exp``), the old plan's weight
    falls to 0, so a chunk boundary is no jump.
``rtc``
    Real-time chunking (Black, Galliker, Levine 2025, "Real-Time Execution of Action Chunking
    Flow Policies", arXiv 2506.07339): a chunk is requested when ``rtc_execution_horizon`` rows
    of the current one have run (rows ahead ``<= H - rtc_execution_horizon``); the request carries
    a :class:`~vla_policy.contracts.ChunkGuide` built from the plan (:meth:`Handover.guide`) and
    the policy inpaints a chunk that continues it; the result replaces the plan from ``t_ready``.

Dimensions listed in ``binary_dims`` (a gripper commanded open/closed) are never averaged: the
newest chunk's value is taken, as :class:`~vla_policy.wrappers.TemporalEnsembler` does.

Two stamps are "the same time" within ``1e-3 * dt`` (:data:`TIME_TOLERANCE`): stamps such as
1.8e9 s carry ~2.4e-7 s of float rounding, and a rounding difference must not decide whether a
row is due.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from vla_policy.contracts import ActionChunk, ChunkGuide

__all__ = ['HANDOVER_MODES', 'AGGREGATE_FUNCTIONS', 'PREFIX_SCHEDULES', 'BLEND_SHAPES', 'TIME_TOLERANCE',
           'splice_index', 'delay_rows', 'prefix_weights', 'blend_weights', 'act_weights', 'ActionPlan',
           'SpliceReport', 'Handover']

HANDOVER_MODES = ('open_loop', 'aggregate', 'temporal_ensemble', 'blend', 'rtc')

#: ``aggregate_fn(old, new)`` for rows two chunks plan for the same time; the names and
#: coefficients of lerobot 0.4.4 ``lerobot/async_inference/configs.py`` ``AGGREGATE_FUNCTIONS``.
AGGREGATE_FUNCTIONS: Dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    'weighted_average': lambda old, new: 0.3 * old + 0.7 * new,
    'latest_only': lambda old, new: new,
    'average': lambda old, new: 0.5 * old + 0.5 * new,
    'conservative': lambda old, new: 0.7 * old + 0.3 * new,
}

#: RTC prefix schedules, lerobot 0.4.4 ``RTCAttentionSchedule`` (``lerobot/configs/types.py``), lower case.
PREFIX_SCHEDULES = ('linear', 'exp', 'zeros', 'ones')
#: Shapes of the blend ramp (the old plan's weight follows the RTC schedule of the same name).
BLEND_SHAPES = ('linear', 'exp')

#: Fraction of ``dt`` within which two times are equal (see the module docstring).
TIME_TOLERANCE = 1e-3


def splice_index(t_obs: float, t_ready: float, dt: float, horizon: int) -> int:
    """Rows of a chunk that are due by the time it is ready, so dropped when it is spliced.

    Row ``k`` is due at ``t_obs + (k + 1) * dt``; the index is ``#{k < H : t_obs + (k + 1) dt <= t_ready}``
    ``= clip(floor((t_ready - t_obs) / dt), 0, H)`` (times equal within ``TIME_TOLERANCE * dt``
    count as due). With the request at the observation time and a latency ``L``:
    ``floor(L / dt)``; synchronous inference (``t_ready = t_obs``) drops nothing.
    """
    k = math.floor((float(t_ready) - float(t_obs)) / float(dt) + TIME_TOLERANCE)
    return int(min(max(k, 0), int(horizon)))


def delay_rows(t_obs: float, t_ready: float, dt: float, horizon: int) -> int:
    """RTC's inference delay ``d``: rows of the running plan that start executing before a chunk
    requested from ``t_obs`` is ready at ``t_ready``: ``clip(ceil((t_ready - t_obs) / dt), 0, H)``.

    ``ceil``, not ``floor`` (:func:`splice_index`): the driver interpolates towards row ``k``
    during the period before its time, so a row whose period has begun when the chunk arrives
    is already being executed and belongs to the frozen prefix (Black et al. 2025, sec. 4: ``d``
    is the number of controller steps the inference takes).
    """
    k = math.ceil((float(t_ready) - float(t_obs)) / float(dt) - TIME_TOLERANCE)
    return int(min(max(k, 0), int(horizon)))


def prefix_weights(delay: int, end: int, total: int, schedule: str = 'linear') -> np.ndarray:
    """RTC soft mask ``W (total,)`` (Black et al. 2025, arXiv 2506.07339, eq. 5; lerobot 0.4.4
    ``RTCProcessor.get_prefix_weights``): 1 for rows ``< delay``, decaying over ``[delay, end)``,
    0 from ``end`` on.

    ``schedule``: ``linear`` ``c_i = (end - i) / (end - delay + 1)`` (LeRobot's
    ``linspace(1, 0, n + 2)[1:-1]``); ``exp`` ``c_i * (e^{c_i} - 1) / (e - 1)`` (the paper's
    weights); ``zeros`` 1 then 0 from ``delay`` on (only the frozen prefix); ``ones`` 1 up to ``end``.
    Unlike LeRobot, which caps the ones at ``end``, the first ``delay`` rows are always 1: they run
    before the new chunk can, whatever the horizon.

    Raises:
        ValueError: an unknown schedule (names the valid ones), negative sizes.
    """
    if schedule not in PREFIX_SCHEDULES:
        raise ValueError(f'prefix schedule must be one of {", ".join(map(repr, PREFIX_SCHEDULES))}, got {schedule!r}')
    if total < 0 or delay < 0 or end < 0:
        raise ValueError(f'prefix_weights needs sizes >= 0, got delay={delay}, end={end}, total={total}')
    d, e = min(delay, total), min(max(end, delay), total)
    w = np.zeros(total, np.float64)
    w[:d] = 1.0
    n = e - d
    if n > 0:
        if schedule == 'ones':
            w[d:e] = 1.0
        elif schedule in ('linear', 'exp'):
            c = (n - np.arange(n)) / (n + 1.0)           # (n,) in (0, 1): linspace(1, 0, n + 2)[1:-1]
            w[d:e] = c if schedule == 'linear' else c * np.expm1(c) / (math.e - 1.0)
    return w


def blend_weights(n: int, window: int, shape: str = 'linear') -> np.ndarray:
    """Weights ``(n,)`` of the new chunk over ``n`` overlapping rows: a ramp from 0 to 1 over the
    first ``L = min(window, n)`` rows (``window = 0``: ``L = n``), 1 after.

    The old plan's weight is the RTC schedule of the same shape over the ramp
    (:func:`prefix_weights` with ``delay = 0, end = L``): ``linear`` ``w_j = (j + 1) / (L + 1)``,
    ``exp`` ``w_j = 1 - c_j (e^{c_j} - 1) / (e - 1)`` with ``c_j = (L - j) / (L + 1)``.
    The ramp is never longer than the overlap: where the old plan ends, the new chunk's weight
    is already 1, so its end is no jump.

    Raises:
        ValueError: an unknown shape, negative sizes.
    """
    if shape not in BLEND_SHAPES:
        raise ValueError(f'blend shape must be one of {", ".join(map(repr, BLEND_SHAPES))}, got {shape!r}')
    if n < 0 or window < 0:
        raise ValueError(f'blend_weights needs n, window >= 0, got {n}, {window}')
    ramp = n if window == 0 else min(window, n)
    return 1.0 - prefix_weights(0, ramp, n, shape)


def act_weights(n: int, m: float) -> np.ndarray:
    """ACT temporal-ensemble weights ``exp(-m i)``, ``i = 0..n-1`` with ``i = 0`` the oldest
    prediction (Zhao et al. 2023, sec. 3.3; ACT's ``m = 0.01``), unnormalized. Raises ValueError for ``m < 0``."""
    if m < 0:
        raise ValueError(f'temporal ensembling coefficient m must be >= 0, got {m}')
    return np.exp(-float(m) * np.arange(n, dtype=np.float64))


def _values_at(t0: float, rel: np.ndarray, acts: np.ndarray, times_rel: np.ndarray, ref: float,
               tol: float) -> Tuple[np.ndarray, np.ndarray]:
    """Rows of a piecewise-linear plan (``t0 + rel (N,)``, ``acts (N, A)``) at ``ref + times_rel (K,)``.

    Returns ``(values (K, A), covered (K,) bool)``; a time within ``tol`` of a row takes that row
    exactly, times outside ``[first - tol, last + tol]`` are not covered (values 0).
    """
    k = times_rel.shape[0]
    if rel.shape[0] == 0 or k == 0:
        return np.zeros((k, acts.shape[1]), np.float64), np.zeros(k, bool)
    x = (float(t0) - float(ref)) + rel                   # plan rows on the query's time base, (N,)
    covered = (times_rel >= x[0] - tol) & (times_rel <= x[-1] + tol)
    if x.shape[0] == 1:
        return np.where(covered[:, None], acts[0][None], 0.0), covered
    right = np.clip(np.searchsorted(x, times_rel), 1, x.shape[0] - 1)    # (K,)
    left = right - 1
    a = np.clip((times_rel - x[left]) / (x[right] - x[left]), 0.0, 1.0)
    a = np.where(np.abs(times_rel - x[left]) <= tol, 0.0, np.where(np.abs(times_rel - x[right]) <= tol, 1.0, a))
    out = (1.0 - a)[:, None] * acts[left] + a[:, None] * acts[right]
    return np.where(covered[:, None], out, 0.0), covered


class ActionPlan:
    """Rows at absolute times: ``times = t0 + rel`` (s), ``actions (N, A)`` for ``joint_names``.

    ``t0`` is the stamp of the newest chunk's observation and ``rel`` the rows' offsets from it,
    so a command built at ``now == t0`` has ``time_from_start`` exactly ``(k + 1) * dt``.
    ``horizon`` is the newest chunk's row count ``H`` (for the request thresholds).
    """

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.t0 = 0.0
        self.rel = np.zeros(0, np.float64)
        self.actions = np.zeros((0, 0), np.float64)
        self.dt = 0.0
        self.horizon = 0
        self.joint_names: Tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.rel.shape[0])

    @property
    def times(self) -> np.ndarray:
        """Absolute row times ``(N,)`` s."""
        return self.t0 + self.rel

    def _ahead_mask(self, now: float) -> np.ndarray:
        tol = TIME_TOLERANCE * self.dt
        return ((self.t0 - float(now)) + self.rel) > tol

    def rows_ahead(self, now: float) -> int:
        """Rows whose time is after ``now`` (more than ``TIME_TOLERANCE * dt`` after)."""
        return int(self._ahead_mask(now).sum()) if len(self) else 0

    def ahead(self, now: float, limit: int = 0) -> Tuple[np.ndarray, np.ndarray]:
        """``(time_from_start (P,) s relative to now, positions (P, A))`` of the rows ahead of
        ``now``, at most ``limit`` of them (0 = all)."""
        if not len(self):
            return np.zeros(0), np.zeros((0, 0))
        m = self._ahead_mask(now)
        tfs = ((self.t0 - float(now)) + self.rel)[m]
        pos = self.actions[m]
        if limit > 0:
            tfs, pos = tfs[:limit], pos[:limit]
        return tfs, pos

    def values_at(self, ref: float, times_rel: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Plan values at ``ref + times_rel (K,)`` (linear between rows): ``(values (K, A), covered (K,))``."""
        if not len(self):
            return np.zeros((len(times_rel), 0)), np.zeros(len(times_rel), bool)
        return _values_at(self.t0, self.rel, self.actions, np.asarray(times_rel, np.float64), ref,
                          TIME_TOLERANCE * self.dt)

    def set(self, t0: float, rel: np.ndarray, actions: np.ndarray, dt: float, horizon: int,
            joint_names: Sequence[str]) -> None:
        self.t0, self.rel = float(t0), np.asarray(rel, np.float64)
        self.actions = np.asarray(actions, np.float64)
        self.dt, self.horizon, self.joint_names = float(dt), int(horizon), tuple(joint_names)


@dataclass(frozen=True)
class SpliceReport:
    """What one splice did.

    dropped: :func:`splice_index`, rows of the chunk due by ``t_ready`` (not used).
    kept: rows of the chunk now in the plan.
    merged: kept rows that met a planned row for the same time (and were aggregated /
        ensembled / blended; in ``open_loop`` and ``rtc`` they replaced it).
    t_obs, t_ready: the chunk's observation stamp and ready time (runtime clock, s).
    """

    dropped: int
    kept: int
    merged: int
    t_obs: float
    t_ready: float


class Handover:
    """The plan and its hand-over rules for one mode; see the module docstring.

    Args:
        mode: one of :data:`HANDOVER_MODES`.
        n_action_steps: rows of each chunk executed in ``open_loop``.
        chunk_size_threshold: ``aggregate``/``blend`` request a chunk when
            ``rows ahead / H <= threshold``, in [0, 1] (LeRobot ``chunk_size_threshold``).
        aggregate_fn: a key of :data:`AGGREGATE_FUNCTIONS`.
        ensemble_m: ACT ``m`` (>= 0).
        blend_window: ramp length in rows (0 = the whole overlap).
        blend_shape: one of :data:`BLEND_SHAPES`.
        rtc_execution_horizon: ``s``, rows executed per chunk in ``rtc`` (>= 1).
        rtc_prefix_schedule: one of :data:`PREFIX_SCHEDULES`.
        rtc_max_guidance_weight: ``beta`` passed in the guide (> 0).
        binary_dims: action dims taken from the newest chunk, never averaged.

    Raises:
        ValueError: any value outside the ranges above (naming the argument and the choices).
    """

    def __init__(self, mode: str = 'open_loop', *, n_action_steps: int = 4, chunk_size_threshold: float = 0.5,
                 aggregate_fn: str = 'weighted_average', ensemble_m: float = 0.01, blend_window: int = 0,
                 blend_shape: str = 'linear', rtc_execution_horizon: int = 4, rtc_prefix_schedule: str = 'linear',
                 rtc_max_guidance_weight: float = 10.0, binary_dims: Sequence[int] = ()) -> None:
        if mode not in HANDOVER_MODES:
            raise ValueError(f'handover must be one of {", ".join(map(repr, HANDOVER_MODES))}, got {mode!r}')
        if aggregate_fn not in AGGREGATE_FUNCTIONS:
            raise ValueError(f'aggregate_fn must be one of {", ".join(map(repr, AGGREGATE_FUNCTIONS))}, '
                             f'got {aggregate_fn!r}')
        if blend_shape not in BLEND_SHAPES:
            raise ValueError(f'blend_shape must be one of {", ".join(map(repr, BLEND_SHAPES))}, got {blend_shape!r}')
        if rtc_prefix_schedule not in PREFIX_SCHEDULES:
            raise ValueError(f'rtc_prefix_schedule must be one of {", ".join(map(repr, PREFIX_SCHEDULES))}, '
                             f'got {rtc_prefix_schedule!r}')
        if n_action_steps < 1:
            raise ValueError(f'n_action_steps must be >= 1, got {n_action_steps}')
        if not 0.0 <= chunk_size_threshold <= 1.0:
            raise ValueError(f'chunk_size_threshold must be in [0, 1], got {chunk_size_threshold}')
        if not ensemble_m >= 0:
            raise ValueError(f'ensemble_m must be >= 0, got {ensemble_m}')
        if blend_window < 0:
            raise ValueError(f'blend_window must be >= 0 (0 = the whole overlap), got {blend_window}')
        if rtc_execution_horizon < 1:
            raise ValueError(f'rtc_execution_horizon must be >= 1, got {rtc_execution_horizon}')
        if not rtc_max_guidance_weight > 0:
            raise ValueError(f'rtc_max_guidance_weight must be > 0, got {rtc_max_guidance_weight}')
        self.mode = mode
        self.n_action_steps = int(n_action_steps)
        self.chunk_size_threshold = float(chunk_size_threshold)
        self.aggregate_fn = aggregate_fn
        self.ensemble_m = float(ensemble_m)
        self.blend_window = int(blend_window)
        self.blend_shape = blend_shape
        self.rtc_execution_horizon = int(rtc_execution_horizon)
        self.rtc_prefix_schedule = rtc_prefix_schedule
        self.rtc_max_guidance_weight = float(rtc_max_guidance_weight)
        self.binary_dims = [int(d) for d in binary_dims]
        self.plan = ActionPlan()
        self._chunks: List[Tuple[float, np.ndarray, np.ndarray]] = []   # temporal_ensemble: (t_obs, rel, acts)
        self.last_splice: Optional[SpliceReport] = None

    def clear(self) -> None:
        """Forget the plan (and the ensemble's stored chunks)."""
        self.plan.clear()
        self._chunks.clear()

    # ------------------------------------------------------------------ when to ask for a chunk
    def rows_ahead(self, now: float) -> int:
        return self.plan.rows_ahead(now)

    def wants_chunk(self, now: float, delay_s: float = 0.0) -> bool:
        """Whether to request a chunk at ``now`` (the model being free), given the expected
        request -> ready delay ``delay_s`` (s on the runtime clock; 0 for synchronous inference)."""
        ahead = self.plan.rows_ahead(now)
        if ahead == 0:
            return True
        h = max(self.plan.horizon, 1)
        if self.mode == 'open_loop':                   # prefetch: the expected delay + 1 row for jitter
            if delay_s <= 0:
                return False
            return ahead <= math.ceil(delay_s / self.plan.dt - TIME_TOLERANCE) + 1
        if self.mode in ('aggregate', 'blend'):
            return ahead / h <= self.chunk_size_threshold
        if self.mode == 'temporal_ensemble':
            return True
        return ahead <= h - min(self.rtc_execution_horizon, h)          # rtc

    # ------------------------------------------------------------------ RTC guide
    def guide(self, t_obs: float, horizon: int, delay: int) -> Optional[ChunkGuide]:
        """The :class:`ChunkGuide` for a chunk of ``horizon`` rows computed from an observation
        stamped ``t_obs`` with ``delay`` rows expected to run before it is ready.

        ``actions[k]`` is the plan at ``t_obs + (k + 1) * dt`` (0 where the plan has no row);
        ``weights = prefix_weights(delay, H - rtc_execution_horizon, H, rtc_prefix_schedule)``,
        times 0 where the plan has no row. None when no weight is > 0 (nothing to continue).

        Raises:
            ValueError: ``rtc_execution_horizon`` exceeds ``horizon``.
        """
        if self.rtc_execution_horizon > horizon:
            raise ValueError(f'rtc_execution_horizon ({self.rtc_execution_horizon}) exceeds the policy chunk '
                             f'({horizon} rows)')
        if not len(self.plan):
            return None
        dt = self.plan.dt
        rel = (np.arange(horizon) + 1.0) * dt
        vals, covered = self.plan.values_at(t_obs, rel)
        d = int(min(max(delay, 0), horizon))
        w = prefix_weights(d, horizon - self.rtc_execution_horizon, horizon, self.rtc_prefix_schedule)
        w = np.where(covered, w, 0.0)
        if not np.any(w > 0):
            return None
        return ChunkGuide(actions=vals.astype(np.float32), weights=w.astype(np.float32), inference_delay=d,
                          max_guidance_weight=self.rtc_max_guidance_weight)

    # ------------------------------------------------------------------ splice
    def splice(self, chunk: ActionChunk, t_ready: float) -> SpliceReport:
        """Put ``chunk`` (observation stamp ``chunk.stamp``) ready at ``t_ready`` (s, runtime clock) into the
        plan as the mode says (module docstring); returns what it did."""
        dt, h = float(chunk.dt), chunk.horizon
        t_obs = float(chunk.stamp)
        drop = splice_index(t_obs, t_ready, dt, h)
        acts = np.asarray(chunk.actions, np.float64)                     # (H, A)
        rel_all = (np.arange(h) + 1.0) * dt                              # (H,)
        rel, new = rel_all[drop:], acts[drop:]
        if self.mode == 'open_loop':
            rel, new = rel[:self.n_action_steps], new[:self.n_action_steps]
        tol = TIME_TOLERANCE * dt
        merged = 0
        if self.mode == 'temporal_ensemble':
            self._chunks = [c for c in self._chunks if (c[0] - t_ready) + c[1][-1] > tol]   # rows left after t_ready
            self._chunks.append((t_obs, rel_all, acts))
            preds = [_values_at(c_t0, c_rel, c_acts, rel, t_obs, tol) for c_t0, c_rel, c_acts in self._chunks]
            vals = np.stack([v for v, _ in preds])                       # (C, K, A), oldest first
            cov = np.stack([c for _, c in preds])                        # (C, K); the newest covers all
            rank = np.cumsum(cov, axis=0) - 1                            # i: 0 = oldest prediction of that row
            w = np.where(cov, act_weights(len(self._chunks), self.ensemble_m)[np.maximum(rank, 0)], 0.0)
            values = (w[..., None] * vals).sum(0) / w.sum(0)[:, None]
            merged = int((cov.sum(0) > 1).sum())
        else:
            if len(self.plan):
                old, covered = self.plan.values_at(t_obs, rel)
            else:
                old, covered = None, np.zeros(len(rel), bool)
            merged = int(covered.sum())
            if self.mode in ('open_loop', 'rtc') or not merged:
                values = new.copy()
            elif self.mode == 'aggregate':
                f = AGGREGATE_FUNCTIONS[self.aggregate_fn]
                values = np.where(covered[:, None], f(old, new), new)
            else:                                                        # blend
                idx = np.nonzero(covered)[0]
                w = np.ones(len(rel))
                w[idx] = blend_weights(len(idx), self.blend_window, self.blend_shape)
                values = np.where(covered[:, None], (1.0 - w)[:, None] * old + w[:, None] * new, new)
        if self.binary_dims:
            values[:, self.binary_dims] = new[:, self.binary_dims]
        self.plan.set(t_obs, rel, values, dt, h, chunk.joint_names)
        self.last_splice = SpliceReport(drop, len(rel), merged, t_obs, float(t_ready))
        return self.last_splice
