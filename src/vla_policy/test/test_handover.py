"""Hand-over of action chunks into the time-indexed plan: splice index, LeRobot aggregates, blend
ramps, ACT temporal ensembling, RTC guides (numbers worked out by hand from the cited formulas)."""
import math

import numpy as np
import pytest

from robot_drivers.embodiment import FRANKA_PANDA
from vla_policy.contracts import ActionChunk, Observation
from vla_policy.handover import (AGGREGATE_FUNCTIONS, ActionPlan, Handover, blend_weights, delay_rows,
                                 prefix_weights, splice_index)
from vla_policy.wrappers import TemporalEnsembler

NAMES = FRANKA_PANDA.joint_names
T0 = 1_800_000_000.0          # large stamps, as the sim and ROS time give
DT = 0.1


def chunk(t_obs, values, dt=DT):
    """A chunk whose row k holds ``values[k]`` on every joint."""
    v = np.asarray(values, np.float32)[:, None] * np.ones((1, 8), np.float32)
    return ActionChunk(v, NAMES, dt, t_obs)


def test_splice_index_is_floor_and_delay_is_ceil_of_latency_in_rows():
    assert splice_index(T0, T0, DT, 8) == 0                   # synchronous: nothing due yet
    assert splice_index(T0, T0 + 0.05, DT, 8) == 0
    assert splice_index(T0, T0 + 0.2, DT, 8) == 2             # rows at +0.1, +0.2 are due
    assert splice_index(T0, T0 + 0.25, DT, 8) == 2
    assert splice_index(T0, T0 + 5.0, DT, 8) == 8             # clipped to the chunk
    assert splice_index(T0, T0 - 1.0, DT, 8) == 0
    assert delay_rows(T0, T0 + 0.25, DT, 8) == 3              # row 3's period has begun
    assert delay_rows(T0, T0 + 0.2, DT, 8) == 2
    assert delay_rows(T0, T0, DT, 8) == 0
    # float rounding of a 1.8e9 s clock (0.3 is not 3 * 0.1) does not move a row across the edge
    assert splice_index(T0 + 0.1, T0 + 0.1 + 3 * 0.1, DT, 8) == 3
    assert delay_rows(T0 + 0.1, T0 + 0.1 + 3 * 0.1, DT, 8) == 3


def test_splice_drops_rows_due_by_ready_time_and_plan_is_time_indexed():
    h = Handover('aggregate')
    rep = h.splice(chunk(T0, np.arange(8) + 1.0), T0 + 0.25)
    assert (rep.dropped, rep.kept, rep.merged) == (2, 6, 0)
    np.testing.assert_allclose(h.plan.times - T0, DT * np.arange(3, 9), atol=1e-6)
    np.testing.assert_allclose(h.plan.actions[:, 0], np.arange(3, 9))
    assert h.rows_ahead(T0 + 0.3) == 5 and h.rows_ahead(T0 + 0.3 + 1e-7) == 5   # row at +0.3 is due, not ahead
    tfs, pos = h.plan.ahead(T0 + 0.3, limit=2)
    np.testing.assert_allclose(tfs, [0.1, 0.2], atol=1e-6)
    np.testing.assert_allclose(pos[:, 0], [4.0, 5.0])


@pytest.mark.parametrize('name,old_w', [('weighted_average', 0.3), ('latest_only', 0.0), ('average', 0.5),
                                        ('conservative', 0.7)])
def test_aggregate_functions_merge_overlapping_rows_as_lerobot(name, old_w):
    h = Handover('aggregate', aggregate_fn=name)
    h.splice(chunk(T0, [1.0] * 8), T0)                        # planned rows at +0.1 .. +0.8, all 1.0
    rep = h.splice(chunk(T0 + 0.4, [2.0] * 8), T0 + 0.6)      # rows at +0.5 .. +1.2; +0.5, +0.6 due
    assert (rep.dropped, rep.kept, rep.merged) == (2, 6, 2)    # +0.7, +0.8 meet planned rows
    np.testing.assert_allclose(h.plan.times - T0, DT * np.arange(7, 13), atol=1e-6)
    merged = old_w * 1.0 + (1 - old_w) * 2.0
    np.testing.assert_allclose(h.plan.actions[:, 0], [merged, merged, 2, 2, 2, 2])
    assert AGGREGATE_FUNCTIONS[name](np.array(1.0), np.array(2.0)) == pytest.approx(merged)


def test_aggregate_keeps_the_newest_value_on_binary_dims():
    h = Handover('aggregate', aggregate_fn='average', binary_dims=[7])
    h.splice(chunk(T0, [0.0] * 8), T0)
    h.splice(chunk(T0 + 0.4, [0.04] * 8), T0 + 0.4)
    np.testing.assert_allclose(h.plan.actions[:4, 0], 0.02)
    np.testing.assert_allclose(h.plan.actions[:, 7], 0.04)


def test_aggregate_aligns_rows_by_interpolation_when_stamps_are_off_grid():
    h = Handover('aggregate', aggregate_fn='average')
    h.splice(chunk(T0, np.arange(8) + 1.0), T0)               # value = 10 * (t - T0) on the grid
    h.splice(chunk(T0 + 0.45, [0.0] * 8), T0 + 0.45)          # rows at +0.55, +0.65, +0.75, ... (off grid)
    np.testing.assert_allclose(h.plan.actions[:3, 0], 0.5 * np.array([5.5, 6.5, 7.5]), atol=1e-6)
    np.testing.assert_allclose(h.plan.actions[3:, 0], 0.0)   # beyond the old plan: new only


def test_blend_ramps_the_new_chunk_in_over_the_window():
    np.testing.assert_allclose(blend_weights(4, 4, 'linear'), [0.2, 0.4, 0.6, 0.8])
    np.testing.assert_allclose(blend_weights(6, 2, 'linear'), [1 / 3, 2 / 3, 1, 1, 1, 1])
    np.testing.assert_allclose(blend_weights(3, 10, 'linear'), [0.25, 0.5, 0.75])    # shortened to the overlap
    np.testing.assert_allclose(blend_weights(3, 0, 'linear'), [0.25, 0.5, 0.75])     # 0 = the overlap
    c = np.array([0.75, 0.5, 0.25])
    np.testing.assert_allclose(blend_weights(3, 3, 'exp'), 1 - c * np.expm1(c) / (math.e - 1))
    h = Handover('blend', blend_window=0)
    h.splice(chunk(T0, [1.0] * 8), T0)
    rep = h.splice(chunk(T0 + 0.4, [2.0] * 8), T0 + 0.4)      # overlap: +0.5 .. +0.8 (4 rows)
    assert rep.merged == 4
    np.testing.assert_allclose(h.plan.actions[:, 0], [1.2, 1.4, 1.6, 1.8, 2, 2, 2, 2])
    steps = np.diff(np.concatenate([[1.0], h.plan.actions[:, 0]]))
    assert steps.max() <= 0.2 + 1e-9                          # no jump at the boundary or the old plan's end
    with pytest.raises(ValueError, match="'linear', 'exp'"):
        blend_weights(3, 3, 'cosine')


def test_temporal_ensemble_uses_act_weights_over_every_stored_prediction():
    m = 0.5
    h = Handover('temporal_ensemble', ensemble_m=m)
    offs = [0.0, 0.3, -0.6]
    for n, off in enumerate(offs):       # chunk n at tick n: row j targets tick n + j + 1, value n + j + 1 + off
        t = T0 + n * DT
        h.splice(chunk(t, n + np.arange(4) + 1 + off), t)
    # ticks 3 and 4 are predicted by all three chunks (oldest first), tick 5 by chunks 1 and 2, tick 6 by chunk 2
    w3, w2 = np.exp(-m * np.arange(3)), np.exp(-m * np.arange(2))
    np.testing.assert_allclose(h.plan.times - T0, DT * np.arange(3, 7), atol=1e-6)
    np.testing.assert_allclose(h.plan.actions[:2, 0], [3, 4] + (w3 * offs).sum() / w3.sum())
    np.testing.assert_allclose(h.plan.actions[2, 0], 5 + (w2 * offs[1:]).sum() / w2.sum())
    np.testing.assert_allclose(h.plan.actions[3, 0], 6 - 0.6)


def test_temporal_ensemble_matches_the_act_wrapper_when_synchronous():
    rng = np.random.default_rng(0)
    chunks = [rng.normal(size=(5, 8)).astype(np.float32) for _ in range(6)]

    class Scripted:
        n = 0

        def infer(self, history):
            c = ActionChunk(chunks[self.n], NAMES, DT, history[-1].stamp)
            self.n += 1
            return c

        def reset(self):
            self.n = 0

    te = TemporalEnsembler(Scripted(), m=0.2)
    h = Handover('temporal_ensemble', ensemble_m=0.2)
    for n in range(6):
        t = T0 + n * DT
        row = te.infer([Observation({'front': np.zeros((2, 2, 3), np.uint8)}, np.zeros(8), 'x', t)]).actions[0]
        h.splice(ActionChunk(chunks[n], NAMES, DT, t), t)
        np.testing.assert_allclose(h.plan.actions[0], row, rtol=1e-5, atol=1e-6)


def test_prefix_weights_follow_lerobot_schedules():
    # delay 2, end 6, total 8: ones for 2 rows, then linspace(1, 0, 6)[1:-1] over 4 rows, zeros after
    np.testing.assert_allclose(prefix_weights(2, 6, 8, 'linear'), [1, 1, 0.8, 0.6, 0.4, 0.2, 0, 0])
    c = np.array([0.8, 0.6, 0.4, 0.2])
    np.testing.assert_allclose(prefix_weights(2, 6, 8, 'exp')[2:6], c * np.expm1(c) / (math.e - 1))
    np.testing.assert_allclose(prefix_weights(2, 6, 8, 'zeros'), [1, 1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(prefix_weights(2, 6, 8, 'ones'), [1, 1, 1, 1, 1, 1, 0, 0])
    np.testing.assert_allclose(prefix_weights(5, 3, 8, 'linear'), [1, 1, 1, 1, 1, 0, 0, 0])  # delay rows always frozen
    with pytest.raises(ValueError, match="'linear', 'exp', 'zeros', 'ones'"):
        prefix_weights(1, 2, 3, 'LINEAR')


def test_rtc_guide_aligns_the_plan_to_the_new_request_and_weights_it():
    h = Handover('rtc', rtc_execution_horizon=3, rtc_prefix_schedule='linear', rtc_max_guidance_weight=5.0)
    assert h.guide(T0, 8, 2) is None                          # nothing planned: nothing to continue
    h.splice(chunk(T0, np.arange(8) + 1.0), T0)               # row k (value k + 1) at T0 + (k + 1) dt
    assert h.wants_chunk(T0 + 0.2) is False and h.wants_chunk(T0 + 0.3) is True   # 5 = H - s rows ahead
    g = h.guide(T0 + 0.3, 8, 2)                               # new rows at +0.4 .. +1.1
    assert g.inference_delay == 2 and g.max_guidance_weight == 5.0
    np.testing.assert_allclose(g.actions[:5, 0], [4, 5, 6, 7, 8])
    # 1 for d = 2 rows, linear decay until H - s = 5, then 0; rows past the plan's end are 0 anyway
    np.testing.assert_allclose(g.weights, [1, 1, 0.75, 0.5, 0.25, 0, 0, 0])
    rep = h.splice(chunk(T0 + 0.3, [9.0] * 8), T0 + 0.5)      # result replaces the plan from t_ready
    assert rep.dropped == 2
    np.testing.assert_allclose(h.plan.actions[:, 0], 9.0)
    np.testing.assert_allclose(h.plan.times[0] - T0, 0.6, atol=1e-6)
    with pytest.raises(ValueError, match='rtc_execution_horizon'):
        Handover('rtc', rtc_execution_horizon=9).guide(T0, 8, 1)


def test_open_loop_executes_n_action_steps_after_the_ready_time():
    h = Handover('open_loop', n_action_steps=3)
    assert h.wants_chunk(T0)
    h.splice(chunk(T0, np.arange(8) + 1.0), T0)
    np.testing.assert_allclose(h.plan.actions[:, 0], [1, 2, 3])
    assert [h.wants_chunk(T0 + k * DT) for k in range(4)] == [False, False, False, True]
    assert h.wants_chunk(T0 + 0.1, delay_s=0.1) is True       # prefetch: delay (1 row) + 1 row of margin
    assert h.wants_chunk(T0 + 0.1, delay_s=0.0) is False
    h.splice(chunk(T0 + 0.2, np.arange(8) + 10.0), T0 + 0.4)  # two rows due while it computed
    np.testing.assert_allclose(h.plan.actions[:, 0], [12, 13, 14])


def test_bad_arguments_name_the_choices():
    with pytest.raises(ValueError, match="'open_loop', 'aggregate', 'temporal_ensemble', 'blend', 'rtc'"):
        Handover('chunked')
    with pytest.raises(ValueError, match="'weighted_average', 'latest_only', 'average', 'conservative'"):
        Handover('aggregate', aggregate_fn='mean')
    with pytest.raises(ValueError, match='chunk_size_threshold'):
        Handover('aggregate', chunk_size_threshold=1.5)
    with pytest.raises(ValueError, match='m must be >= 0'):
        Handover('temporal_ensemble', ensemble_m=-1.0)
    assert len(ActionPlan()) == 0
