"""SafetyFilter: validation, limits, velocity bound and e-stop, driven by hypothesis properties;
conditions reported as start/end edges (EdgeTracker)."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robot_drivers.embodiment import FRANKA_PANDA
from robot_drivers.safety import (END, ESTOP, ESTOP_HOLD, LIMIT_KINDS, LIMIT_TOLERANCE, MAX_STEP,
                                  MEASURED_OUTSIDE_LIMITS, POSITION_CLAMP, REJECTED, START, VELOCITY_LIMIT,
                                  WATCHDOG_HOLD, CommandRejected, EdgeTracker, SafetyConfig, SafetyEvent,
                                  SafetyFilter, severity)

EMB = FRANKA_PANDA
NAMES = EMB.joint_names
J = EMB.dof
EPS = 1e-9
SETTINGS = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

finite = st.floats(min_value=-10.0, max_value=10.0, allow_nan=False, allow_infinity=False)
unit = st.floats(min_value=0.0, max_value=1.0)


def vec(elements):
    return st.lists(elements, min_size=J, max_size=J).map(lambda v: np.array(v, dtype=np.float64))


@st.composite
def configs(draw):
    return SafetyConfig(position_margin=draw(st.floats(0.0, 0.05)),
                        velocity_scale=draw(st.floats(0.01, 1.0)),
                        prismatic_margin=draw(st.floats(0.0, 0.005)))


@st.composite
def inside(draw, filt):
    """A measured position inside the filter's limits, (J,)."""
    frac = draw(vec(unit))
    return filt.lower + frac * (filt.upper - filt.lower)


@given(cfg=configs(), target=vec(finite), data=st.data(), dt=st.floats(0.0, 0.2))
@SETTINGS
def test_output_within_limits_and_velocity_bound(cfg, target, data, dt):
    filt = SafetyFilter(EMB, cfg)
    measured = data.draw(inside(filt))
    safe, events = filt.filter(NAMES, target, measured, dt)
    assert safe.shape == (J,)
    assert np.all(safe >= filt.lower - EPS) and np.all(safe <= filt.upper + EPS)
    vmax = EMB.max_velocity * cfg.velocity_scale
    assert np.all(np.abs(safe - measured) <= vmax * dt + EPS)
    # margins really are kept from the datasheet limits
    margin = np.where([j.kind == 'prismatic' for j in EMB.joints], cfg.prismatic_margin, cfg.position_margin)
    assert np.all(safe >= EMB.lower + margin - EPS) and np.all(safe <= EMB.upper - margin + EPS)
    # on a fresh filter every condition is new: every joint changed by more than the tolerance
    # (at most one clamp and one rate limit, each within it) has a start edge, no unchanged joint has one
    gap = np.abs(safe - target)
    flagged = {e.joint for e in events}
    assert {NAMES[i] for i in np.flatnonzero(gap > 2 * LIMIT_TOLERANCE)} <= flagged
    assert flagged <= {NAMES[i] for i in np.flatnonzero(gap > LIMIT_TOLERANCE)}
    assert all(e.kind in (POSITION_CLAMP, VELOCITY_LIMIT) and e.edge == START for e in events)


@given(target=vec(finite), measured=vec(finite), dt=st.floats(0.0, 0.2))
@SETTINGS
def test_output_within_limits_even_when_measured_is_outside(target, measured, dt):
    filt = SafetyFilter(EMB)
    safe, events = filt.filter(NAMES, target, measured, dt)
    assert np.all(safe >= filt.lower) and np.all(safe <= filt.upper)
    outside = (measured < filt.lower) | (measured > filt.upper)
    # a joint measured outside its limits either gets pulled onto the limit (with an event) or the
    # velocity-limited step already brought it inside
    flagged = {e.joint for e in events if e.kind == MEASURED_OUTSIDE_LIMITS}
    assert flagged <= {NAMES[i] for i in np.flatnonzero(outside)}


@given(target=vec(finite), data=st.data(), bad_index=st.integers(0, J - 1),
       bad=st.sampled_from([np.nan, np.inf, -np.inf]))
@SETTINGS
def test_any_non_finite_command_is_rejected_naming_the_joint(target, data, bad_index, bad):
    filt = SafetyFilter(EMB)
    measured = data.draw(inside(filt))
    target = target.copy()
    target[bad_index] = bad
    with pytest.raises(CommandRejected, match=NAMES[bad_index]):
        filt.filter(NAMES, target, measured, 0.01)


@given(data=st.data(), bad_index=st.integers(0, J - 1), bad=st.sampled_from([np.nan, np.inf, -np.inf]))
@SETTINGS
def test_non_finite_measured_or_dt_is_rejected(data, bad_index, bad):
    filt = SafetyFilter(EMB)
    measured = data.draw(inside(filt))
    target = measured.copy()
    broken = measured.copy()
    broken[bad_index] = bad
    with pytest.raises(ValueError, match=NAMES[bad_index]):
        filt.filter(NAMES, target, broken, 0.01)
    with pytest.raises(ValueError, match='dt'):
        filt.filter(NAMES, target, measured, bad)


@given(perm=st.permutations(list(range(J))), target=vec(finite), data=st.data(), dt=st.floats(0.0, 0.1))
@SETTINGS
def test_joint_order_of_the_command_does_not_matter(perm, target, data, dt):
    filt = SafetyFilter(EMB)
    measured = data.draw(inside(filt))
    perm = np.array(perm)
    ordered, c1 = filt.conditions(NAMES, target, measured, dt)
    shuffled, c2 = filt.conditions([NAMES[i] for i in perm], target[perm], measured, dt)
    np.testing.assert_array_equal(ordered, shuffled)
    assert c1 == c2
    # the stateful filter gives the same start edges on a fresh filter, whatever the order
    _, ev1 = SafetyFilter(EMB).filter(NAMES, target, measured, dt)
    _, ev2 = SafetyFilter(EMB).filter([NAMES[i] for i in perm], target[perm], measured, dt)
    assert sorted(map(str, ev1)) == sorted(map(str, ev2))
    assert {e.key: e.detail for e in ev1} == c1


def test_reachable_target_inside_limits_passes_unchanged():
    filt = SafetyFilter(EMB)
    measured = (EMB.lower + EMB.upper) / 2
    target = measured + 0.004
    safe, events = filt.filter(NAMES, target, measured, 0.1)  # 0.004 < 0.05 m/s * 0.1 s, the finger's bound
    np.testing.assert_allclose(safe, target, rtol=0, atol=1e-15)
    assert events == []


def test_clamp_to_limits_reports_each_clamped_joint():
    filt = SafetyFilter(EMB)
    measured = EMB.upper - 1e-3
    target = EMB.upper.copy()
    target[3] = 1.0          # panda_joint4's upper limit is -0.0698 rad
    target[7] = 0.5          # finger beyond its 0.04 m stroke
    safe, events = filt.filter(NAMES, target, measured, 0.1)
    np.testing.assert_allclose(safe, EMB.upper)
    clamp = [e for e in events if e.kind == POSITION_CLAMP]
    assert [e.joint for e in clamp] == ['panda_joint4', 'panda_finger_joint1']
    assert '-0.0698' in clamp[0].detail


def test_velocity_limit_uses_datasheet_speed_and_scale():
    cfg = SafetyConfig(velocity_scale=0.5)
    filt = SafetyFilter(EMB, cfg)
    measured = (EMB.lower + EMB.upper) / 2
    target = measured + 1.0
    target[7] = EMB.upper[7]
    dt = 0.01
    safe, events = filt.filter(NAMES, target, measured, dt)
    np.testing.assert_allclose(safe - measured, EMB.max_velocity * 0.5 * dt)
    assert {e.joint for e in events if e.kind == VELOCITY_LIMIT} == set(NAMES)
    # dt = 0 allows no motion at all
    safe0, _ = filt.filter(NAMES, target, measured, 0.0)
    np.testing.assert_array_equal(safe0, measured)


def test_max_step_caps_below_the_velocity_limit():
    cap = np.full(J, 1e-3)
    cap[0] = 10.0            # joint 1: velocity limit is the tighter bound
    filt = SafetyFilter(EMB, SafetyConfig(max_step=cap))
    measured = (EMB.lower + EMB.upper) / 2
    target = measured - 0.5
    target[7] = EMB.lower[7]
    safe, events = filt.filter(NAMES, target, measured, 0.01)
    np.testing.assert_allclose(measured - safe, np.minimum(cap, EMB.max_velocity * 0.01))
    kinds = {e.joint: e.kind for e in events}
    assert kinds['panda_joint1'] == VELOCITY_LIMIT and kinds['panda_joint2'] == MAX_STEP


def test_estop_holds_measured_and_rearm_restores_with_one_edge_each():
    filt = SafetyFilter(EMB)
    measured = (EMB.lower + EMB.upper) / 2
    target = measured + 0.001
    started = filt.estop()
    assert filt.estopped
    assert [(e.kind, e.joint, e.edge) for e in started] == [(ESTOP, None, START)]
    assert ESTOP_HOLD == ESTOP                           # the former per-tick name is the same condition
    assert filt.estop() == []                            # engaging it again is no new edge
    for _ in range(200):                                 # 4 s at 50 Hz: no event per tick
        safe, events = filt.filter(NAMES, target, measured, 0.02)
        np.testing.assert_array_equal(safe, measured)
        assert events == []
    # validation still applies while e-stopped
    bad = target.copy()
    bad[2] = np.nan
    with pytest.raises(CommandRejected, match='panda_joint3') as exc:
        filt.filter(NAMES, bad, measured, 0.1)
    assert exc.value.reason == 'non_finite'
    ended = filt.rearm()
    assert [(e.kind, e.edge) for e in ended] == [(ESTOP, END)] and 'rearm' in ended[0].detail
    assert filt.rearm() == []
    safe, events = filt.filter(NAMES, target, measured, 0.1)
    np.testing.assert_allclose(safe, target)
    assert events == []


def test_rejects_bad_names_and_lengths_with_clear_messages():
    filt = SafetyFilter(EMB)
    m = (EMB.lower + EMB.upper) / 2
    with pytest.raises(CommandRejected, match=r"unknown joints \['elbow', 'wrist'\]") as exc:
        filt.filter(NAMES[:-2] + ['elbow', 'wrist'], m, m, 0.1)
    assert exc.value.reason == 'unknown_joints'
    with pytest.raises(CommandRejected, match=r"missing joints \['panda_finger_joint1'\]") as exc:
        filt.filter(NAMES[:-1], m[:-1], m, 0.1)
    assert exc.value.reason == 'missing_joints'
    with pytest.raises(CommandRejected, match='duplicate joint names') as exc:
        filt.filter(NAMES[:-1] + [NAMES[0]], m, m, 0.1)
    assert exc.value.reason == 'duplicate_joints'
    with pytest.raises(CommandRejected, match=r'shape \(7,\) do not match 8 joint names') as exc:
        filt.filter(NAMES, m[:-1], m, 0.1)
    assert exc.value.reason == 'shape'
    with pytest.raises(CommandRejected, match='not numeric') as exc:
        filt.filter(NAMES, ['a'] * J, m, 0.1)
    assert exc.value.reason == 'not_numeric'
    assert filt.tracker.active == {}                     # a rejection is not a limit condition
    with pytest.raises(ValueError, match='measured positions have 7 values'):
        filt.filter(NAMES, m, m[:-1], 0.1)
    with pytest.raises(ValueError, match='dt must be finite and >= 0'):
        filt.filter(NAMES, m, m, -0.01)


def test_validate_trajectory_reports_the_point():
    filt = SafetyFilter(EMB)
    pts = np.tile((EMB.lower + EMB.upper) / 2, (4, 1))
    pts[2, 5] = np.inf
    with pytest.raises(CommandRejected, match=r"joint 'panda_joint6' at point 2"):
        filt.validate(NAMES, pts, source='/vla/joint_trajectory')
    rev = list(reversed(NAMES))
    out = filt.validate(rev, pts[:2, ::-1])
    np.testing.assert_array_equal(out, pts[:2])


@pytest.mark.parametrize('kwargs, match', [
    (dict(velocity_scale=0.0), 'velocity_scale'),
    (dict(velocity_scale=1.5), 'velocity_scale'),
    (dict(velocity_scale=float('nan')), 'velocity_scale'),
    (dict(position_margin=-0.1), 'position_margin'),
    (dict(prismatic_margin=float('inf')), 'prismatic_margin'),
    (dict(watchdog_timeout_s=0.0), 'watchdog_timeout_s'),
    (dict(max_step=np.array([0.1, -0.1])), 'max_step'),
    (dict(max_step=np.zeros((2, 2))), 'max_step'),
    (dict(rate_limit_reference='previous'), 'rate_limit_reference'),
    (dict(condition_clear_s=-0.1), 'condition_clear_s'),
])
def test_config_rejects_out_of_range_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SafetyConfig(**kwargs)


def test_filter_rejects_config_that_does_not_fit_the_embodiment():
    with pytest.raises(ValueError, match='max_step has 3 values'):
        SafetyFilter(EMB, SafetyConfig(max_step=np.ones(3)))
    with pytest.raises(ValueError, match='panda_finger_joint1'):
        SafetyFilter(EMB, SafetyConfig(prismatic_margin=0.03))
    with pytest.raises(ValueError, match='panda_joint6'):   # joint 6 spans only 3.77 rad
        SafetyFilter(EMB, SafetyConfig(position_margin=1.9))


# ---------------------------------------------------------------------------------------------
# Events are edges: one start when a condition begins, one end when it clears, nothing per tick.

MID = (EMB.lower + EMB.upper) / 2


def _finger(value):
    """MID with the finger (panda_finger_joint1, 0..0.04 m) at ``value``."""
    q = MID.copy()
    q[7] = value
    return q


# kind -> (config, (target, reference) while the condition holds, (target, reference) once it has cleared)
EDGE_CASES = {
    POSITION_CLAMP: (SafetyConfig(), (_finger(0.05), _finger(0.04)), (_finger(0.04), _finger(0.04))),
    VELOCITY_LIMIT: (SafetyConfig(), (_finger(0.0), _finger(0.04)), (_finger(0.0399), _finger(0.04))),
    MAX_STEP: (SafetyConfig(max_step=np.full(J, 1e-4)), (_finger(0.03), _finger(0.04)),
               (_finger(0.03995), _finger(0.04))),
    # the reference outside the stroke comes with a rate limit (the way back is limited too)
    MEASURED_OUTSIDE_LIMITS: (SafetyConfig(), (_finger(0.04), _finger(0.045)), (_finger(0.04), _finger(0.04))),
}


@pytest.mark.parametrize('kind', sorted(EDGE_CASES))
def test_limit_condition_is_one_start_and_one_end_edge(kind):
    cfg, (held_t, held_m), (clear_t, clear_m) = EDGE_CASES[kind]
    filt = SafetyFilter(EMB, cfg)
    dt = 0.02                                      # 50 Hz, the rate the firehose was seen at
    events = []
    for _ in range(100):                           # the condition persists for 2 s
        safe, ev = filt.filter(NAMES, held_t, held_m, dt)
        events += ev
    mine = [e for e in events if e.kind == kind]
    assert [(e.joint, e.edge) for e in mine] == [('panda_finger_joint1', START)]
    assert len({e.key for e in events}) == len(events) and all(e.edge == START for e in events)
    assert filt.tracker.active[(kind, 'panda_finger_joint1')] == mine[0].detail
    assert np.all(safe >= EMB.lower) and np.all(safe <= EMB.upper)
    ended = []
    for _ in range(100):
        _, ev = filt.filter(NAMES, clear_t, clear_m, dt)
        ended += ev
    assert sorted((e.kind, e.edge, e.count) for e in ended) == sorted((e.kind, END, 100) for e in events)
    end = [e for e in ended if e.kind == kind][0]
    assert str(end).startswith(f'{kind} panda_finger_joint1 end: ')
    assert filt.tracker.active == {}
    # it can start again, once
    again = [e for _ in range(10) for e in filt.filter(NAMES, held_t, held_m, dt)[1]]
    assert [(e.kind, e.edge) for e in again] == [(e.kind, START) for e in events]


def test_one_tick_gaps_do_not_end_a_condition_a_longer_one_does():
    """A policy's chunks: rate-limited on every tick but the first of each new trajectory."""
    filt = SafetyFilter(EMB)                            # condition_clear_s = 0.1 s
    assert filt.config.condition_clear_s == 0.1
    fast, still = _finger(0.0), _finger(0.04)
    events = []
    for k in range(100):                                # 2 s at 50 Hz, a one-tick gap every 5 ticks
        target = still if k % 5 == 0 else fast
        events += filt.filter(NAMES, target, _finger(0.04), 0.02)[1]
    assert [(e.kind, e.edge) for e in events] == [(VELOCITY_LIMIT, START)]
    for k in range(10):                                 # 0.2 s without it: ends once, after > 0.1 s
        ev = filt.filter(NAMES, still, _finger(0.04), 0.02)[1]
        events += ev
        if ev:
            assert k == 5                               # the 6th absent tick: 0.12 s > 0.1 s
    assert [(e.kind, e.edge, e.count) for e in events] == [(VELOCITY_LIMIT, START, 1), (VELOCITY_LIMIT, END, 80)]
    # without hysteresis every gap is an end and a start
    filt = SafetyFilter(EMB, SafetyConfig(condition_clear_s=0.0))
    flapping = [e for k in range(100) for e in filt.filter(NAMES, still if k % 5 == 0 else fast,
                                                           _finger(0.04), 0.02)[1]]
    assert len(flapping) == 2 * 20 - 1


@pytest.mark.parametrize('excess', [0.0, 1e-15, 1e-12, 0.9 * LIMIT_TOLERANCE])
@pytest.mark.parametrize('side', ['upper', 'lower'])
def test_value_resting_at_its_limit_is_not_a_clamp(excess, side):
    """The fingers resting at 0.04 m, commanded 0.04 m (plus round-off): no event, on any tick."""
    filt = SafetyFilter(EMB)
    limit = EMB.upper[7] if side == 'upper' else EMB.lower[7]
    target = _finger(limit + excess if side == 'upper' else limit - excess)
    for _ in range(500):
        safe, events = filt.filter(NAMES, target, _finger(limit), 0.02)
        assert events == []
        assert EMB.lower[7] <= safe[7] <= EMB.upper[7]      # still clipped onto the limit
    assert filt.tracker.active == {}
    # just beyond the tolerance it is a clamp, reported once
    beyond = _finger(limit + 1e-6 if side == 'upper' else limit - 1e-6)
    events = [e for _ in range(50) for e in filt.filter(NAMES, beyond, _finger(limit), 0.02)[1]]
    assert [(e.kind, e.edge) for e in events] == [(POSITION_CLAMP, START)]
    assert '1e-06' in events[0].detail and side in events[0].detail


@st.composite
def finger_targets(draw):
    """Finger targets around the 0..0.04 m stroke: inside, exactly at a limit, beyond it."""
    return draw(st.one_of(st.sampled_from([0.0, 0.04, 0.04 + 1e-13, -1e-13, 0.05, -0.01]),
                          st.floats(-0.01, 0.05)))


@given(fingers=st.lists(finger_targets(), min_size=1, max_size=40), arm=vec(finite),
       reference=st.sampled_from(['measured', 'command']), estop_at=st.lists(st.integers(0, 39), max_size=4),
       clear_s=st.sampled_from([0.0, 0.03]))
@SETTINGS
def test_edges_alternate_per_key_and_track_the_conditions(fingers, arm, reference, estop_at, clear_s):
    """Over any command sequence: per key the edges go start, end, start, ...; the conditions the
    edges say are active are those :meth:`conditions` reports for the current call (exactly,
    without hysteresis; a superset that keeps a cleared one at most ``clear_s`` longer with it)."""
    filt = SafetyFilter(EMB, SafetyConfig(max_step=np.full(J, 0.05), condition_clear_s=clear_s))
    absent = {}
    q = MID.copy()
    history = []
    for k, f in enumerate(fingers):
        if k in estop_at:
            history += filt.rearm() if filt.estopped else filt.estop()
        target = np.clip(arm, -4.0, 4.0)
        target[7] = f
        expected = {} if filt.estopped else filt.conditions(NAMES, target, q, 0.01)[1]
        safe, events = filt.filter(NAMES, target, q, 0.01)
        history += events
        active = {k2 for k2 in filt.tracker.active if k2[0] in LIMIT_KINDS}
        assert set(expected) <= active
        for key in active - set(expected):                 # cleared, not yet ended: within the hysteresis
            absent[key] = absent.get(key, 0.0) + 0.01
            assert clear_s > 0 and absent[key] <= clear_s + 1e-12
        absent = {key: t for key, t in absent.items() if key in active - set(expected)}
        if reference == 'command':
            q = safe
    open_keys = {}
    for e in history:
        assert e.edge == (END if open_keys.get(e.key) else START), f'{e} out of order'
        open_keys[e.key] = e.edge == START
    assert {k for k, v in open_keys.items() if v} == set(filt.tracker.active)


def test_edge_tracker_set_counts_repeats_and_restarts_on_a_new_reason():
    tr = EdgeTracker()
    first = tr.set(REJECTED, None, True, 'non-finite position for panda_joint3', tag='non_finite')
    assert [(e.kind, e.edge, e.detail) for e in first] == [(REJECTED, START, 'non-finite position for panda_joint3')]
    for _ in range(4):                                           # identical reason: counted, not reported
        assert tr.set(REJECTED, None, True, 'again', tag='non_finite') == []
    assert tr.count(REJECTED) == 5
    switched = tr.set(REJECTED, None, True, 'unknown joints', tag='unknown_joints')
    assert [(e.edge, e.count) for e in switched] == [(END, 5), (START, 1)]
    assert 'non_finite' in switched[0].detail and switched[1].detail == 'unknown joints'
    ended = tr.set(REJECTED, None, False, 'accepted')
    assert [(e.edge, e.count, e.detail) for e in ended] == [(END, 1, 'accepted')]
    assert tr.set(REJECTED, None, False, 'accepted') == [] and tr.count(REJECTED) == 0


def test_edge_tracker_update_touches_only_the_observed_kinds():
    tr = EdgeTracker()
    tr.set(WATCHDOG_HOLD, None, True, 'holding')
    ev = tr.update(LIMIT_KINDS, {(POSITION_CLAMP, 'j1'): 'clamped', (VELOCITY_LIMIT, 'j2'): 'limited'})
    assert [(e.kind, e.joint, e.edge) for e in ev] == [(POSITION_CLAMP, 'j1', START), (VELOCITY_LIMIT, 'j2', START)]
    ev = tr.update(LIMIT_KINDS, {(VELOCITY_LIMIT, 'j2'): 'limited'})
    assert [(e.kind, e.edge, e.count, e.detail) for e in ev] == [(POSITION_CLAMP, END, 1, 'cleared after 1 tick')]
    assert tr.clear(LIMIT_KINDS, 'stopped') == [SafetyEvent(VELOCITY_LIMIT, 'j2', 'stopped', END, 2)]
    assert tr.active == {(WATCHDOG_HOLD, None): 'holding'}       # other kinds untouched
    with pytest.raises(ValueError, match='watchdog_hold'):
        tr.update(LIMIT_KINDS, {(WATCHDOG_HOLD, None): 'x'})


def test_severity_of_edges():
    assert severity(SafetyEvent(REJECTED, None, 'x')) == 'error'
    assert severity(SafetyEvent(POSITION_CLAMP, 'j', 'x')) == 'warning'
    assert severity(SafetyEvent(VELOCITY_LIMIT, 'j', 'x')) == 'info'
    assert severity(SafetyEvent(REJECTED, None, 'x', END, 3)) == 'info'
    assert str(SafetyEvent(ESTOP, None, 'engaged')) == 'estop start: engaged'
