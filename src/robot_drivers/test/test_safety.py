"""SafetyFilter: validation, limits, velocity bound and e-stop, driven by hypothesis properties."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robot_drivers.embodiment import FRANKA_PANDA
from robot_drivers.safety import (ESTOP_HOLD, MAX_STEP, MEASURED_OUTSIDE_LIMITS, POSITION_CLAMP, VELOCITY_LIMIT,
                                  CommandRejected, SafetyConfig, SafetyFilter)

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
    # every joint that was changed has an event naming it, and no event names an unchanged joint
    changed = {NAMES[i] for i in np.flatnonzero(np.abs(safe - target) > 1e-12)}
    assert {e.joint for e in events} == changed
    assert all(e.kind in (POSITION_CLAMP, VELOCITY_LIMIT) for e in events)


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
    ordered, ev1 = filt.filter(NAMES, target, measured, dt)
    shuffled, ev2 = filt.filter([NAMES[i] for i in perm], target[perm], measured, dt)
    np.testing.assert_array_equal(ordered, shuffled)
    assert sorted(map(str, ev1)) == sorted(map(str, ev2))


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


def test_estop_holds_measured_and_rearm_restores():
    filt = SafetyFilter(EMB)
    measured = (EMB.lower + EMB.upper) / 2
    target = measured + 0.001
    filt.estop()
    assert filt.estopped
    safe, events = filt.filter(NAMES, target, measured, 0.1)
    np.testing.assert_array_equal(safe, measured)
    assert [e.kind for e in events] == [ESTOP_HOLD]
    # validation still applies while e-stopped
    bad = target.copy()
    bad[2] = np.nan
    with pytest.raises(CommandRejected, match='panda_joint3'):
        filt.filter(NAMES, bad, measured, 0.1)
    filt.rearm()
    safe, events = filt.filter(NAMES, target, measured, 0.1)
    np.testing.assert_allclose(safe, target)


def test_rejects_bad_names_and_lengths_with_clear_messages():
    filt = SafetyFilter(EMB)
    m = (EMB.lower + EMB.upper) / 2
    with pytest.raises(CommandRejected, match=r"unknown joints \['elbow', 'wrist'\]"):
        filt.filter(NAMES[:-2] + ['elbow', 'wrist'], m, m, 0.1)
    with pytest.raises(CommandRejected, match=r"missing joints \['panda_finger_joint1'\]"):
        filt.filter(NAMES[:-1], m[:-1], m, 0.1)
    with pytest.raises(CommandRejected, match='duplicate joint names'):
        filt.filter(NAMES[:-1] + [NAMES[0]], m, m, 0.1)
    with pytest.raises(CommandRejected, match=r'shape \(7,\) do not match 8 joint names'):
        filt.filter(NAMES, m[:-1], m, 0.1)
    with pytest.raises(CommandRejected, match='not numeric'):
        filt.filter(NAMES, ['a'] * J, m, 0.1)
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
