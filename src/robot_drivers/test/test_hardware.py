"""ArmDriverCore against a fake first-order-lag arm: tracking, rejection, watchdog, limits, e-stop."""
import logging

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robot_drivers.embodiment import FRANKA_PANDA
from robot_drivers.hardware import ArmDriverCore, Hardware, JointSample
from robot_drivers.safety import (ESTOP, POSITION_CLAMP, REJECTED, WATCHDOG_HOLD, CommandRejected, SafetyConfig)

EMB = FRANKA_PANDA
NAMES = EMB.joint_names
J = EMB.dof
RATE = 100.0
DT = 1.0 / RATE
# Franka "ready" pose, gripper half open.
READY = np.array([0.0, -np.pi / 4, 0.0, -3 * np.pi / 4, 0.0, np.pi / 2, np.pi / 4, 0.02])


class LagArm:
    """Fake hardware: each joint follows its position target with a first-order lag (time constant tau).

    Joints are kept in *reversed* embodiment order so the driver's reordering is exercised.
    ``stuck`` optionally blocks joints (an obstacle), as ``{embodiment index: (min, max)}``.
    """

    def __init__(self, q0, tau=0.03, stuck=None):
        self.joint_names = list(reversed(NAMES))
        self.q = np.asarray(q0, dtype=np.float64)[::-1].copy()   # hardware order
        self.v = np.zeros(J)
        self.target = self.q.copy()
        self.tau = tau
        self.t = 0.0
        self.stuck = stuck or {}
        self.writes = 0

    def read(self):
        return JointSample(self.q.copy(), self.v.copy(), self.t)

    def write(self, positions):
        positions = np.asarray(positions, dtype=np.float64)
        assert positions.shape == (J,) and np.all(np.isfinite(positions))
        self.target = positions.copy()
        self.writes += 1

    def step(self, dt):
        q_new = self.q + (self.target - self.q) * (1.0 - np.exp(-dt / self.tau))
        for i, (lo, hi) in self.stuck.items():
            h = J - 1 - i
            q_new[h] = min(max(q_new[h], lo), hi)
        self.v = (q_new - self.q) / dt
        self.q = q_new
        self.t += dt

    def q_emb(self):
        return self.q[::-1].copy()


def run(driver, arm, t0, t1):
    """Tick at RATE from t0 (inclusive) to t1 (exclusive); returns times (N,), setpoints (N, J), events."""
    times, sps, evs = [], [], []
    for k in range(int(round((t1 - t0) * RATE))):
        now = t0 + k * DT
        sp, ev = driver.tick(now)
        times.append(now)
        sps.append(sp)
        evs.extend(ev)
        arm.step(DT)
    return np.array(times), np.array(sps), evs


def make(q0=READY, cfg=None, **kw):
    """Driver + fake arm. The default watchdog timeout is long: the watchdog holds the *measured*
    position once a one-shot trajectory is over, which would stop a lagging arm short of its goal in
    tests that check convergence (a streaming policy re-sends every 0.1 s and never trips it)."""
    arm = LagArm(q0, **kw)
    return ArmDriverCore(EMB, arm, cfg or SafetyConfig(watchdog_timeout_s=30.0)), arm


def test_fake_arm_satisfies_protocol_and_bad_hardware_is_refused():
    arm = LagArm(READY)
    assert isinstance(arm, Hardware)
    arm.joint_names = NAMES[:-1] + ['gripper']
    with pytest.raises(ValueError, match='gripper'):
        ArmDriverCore(EMB, arm)


def test_holds_first_measured_position_before_any_trajectory():
    driver, arm = make()
    _, sps, evs = run(driver, arm, 0.0, 1.0)
    np.testing.assert_allclose(sps, np.tile(READY, (len(sps), 1)))
    assert evs == []
    assert not driver.has_trajectory


def test_trajectory_is_followed_with_linear_interpolation():
    driver, arm = make()
    run(driver, arm, 0.0, 0.1)
    goal = READY + np.array([0.3, -0.2, 0.25, 0.3, -0.3, 0.2, 0.4, 0.015])
    tfs = np.array([0.5, 1.0, 1.5, 2.0])
    pts = READY + (tfs / 2.0)[:, None] * (goal - READY)          # (4, J), a straight line
    # send it in a shuffled joint order, as another node might
    perm = np.array([3, 0, 7, 1, 6, 2, 5, 4])
    driver.on_trajectory([NAMES[i] for i in perm], pts[:, perm], tfs, stamp=123.0, now=0.1)
    times, sps, evs = run(driver, arm, 0.1, 3.5)
    assert evs == []                          # slow enough: nothing clamped or limited
    # setpoints lie on the line: at 0.1 + s the setpoint is READY + s/2 * (goal - READY)
    s = np.clip(times - 0.1, 0.0, 2.0) / 2.0
    np.testing.assert_allclose(sps, READY + s[:, None] * (goal - READY), atol=1e-9)
    # the arm got there and the last point is held
    np.testing.assert_allclose(arm.q_emb(), goal, atol=1e-4)
    np.testing.assert_allclose(arm.target[::-1], goal, atol=1e-12)


def test_new_trajectory_starts_from_the_last_setpoint():
    driver, arm = make()
    run(driver, arm, 0.0, 0.05)
    a = READY + 0.2
    a[7] = 0.03
    driver.on_trajectory(NAMES, a[None], [1.0], 0.0, 0.05)
    _, sps, _ = run(driver, arm, 0.05, 0.55)
    mid = sps[-1]
    b = READY.copy()
    driver.on_trajectory(NAMES, b[None], [1.0], 0.0, 0.55)
    sp, _ = driver.tick(0.55)
    np.testing.assert_allclose(sp, mid, atol=1e-12)        # no jump at the switch
    sp, _ = driver.tick(0.65)
    np.testing.assert_allclose(sp, mid + 0.1 * (b - mid), atol=1e-9)


def test_nan_command_rejected_logged_and_previous_trajectory_keeps_running(caplog):
    driver, arm = make()
    goal = READY + 0.1
    goal[7] = 0.025
    driver.on_trajectory(NAMES, goal[None], [1.0], 0.0, 0.0)
    run(driver, arm, 0.0, 0.5)
    bad = np.tile(READY, (3, 1))
    bad[1, 4] = np.nan
    with caplog.at_level(logging.ERROR, logger='robot_drivers'):
        with pytest.raises(CommandRejected, match='panda_joint5'):
            driver.on_trajectory(NAMES, bad, [0.1, 0.2, 0.3], 0.0, 0.5, source='/vla/joint_trajectory')
    rec = [r for r in caplog.records if r.name == 'robot_drivers' and r.levelno == logging.ERROR]
    assert len(rec) == 1
    assert 'panda_joint5' in rec[0].getMessage() and '/vla/joint_trajectory' in rec[0].getMessage()
    assert driver.events[-1].kind == REJECTED and 'panda_joint5' in driver.events[-1].detail
    run(driver, arm, 0.5, 2.0)
    np.testing.assert_allclose(arm.q_emb(), goal, atol=1e-4)   # the old command finished


def test_unknown_joint_rejected(caplog):
    driver, arm = make()
    names = NAMES[:7] + ['gripper_width']
    with caplog.at_level(logging.ERROR, logger='robot_drivers'):
        with pytest.raises(CommandRejected, match=r"unknown joints \['gripper_width'\]"):
            driver.on_trajectory(names, READY[None], [0.5], 0.0, 0.0)
    assert any('gripper_width' in r.getMessage() for r in caplog.records)
    assert not driver.has_trajectory


@pytest.mark.parametrize('tfs, match', [
    ([0.2, 0.1], 'decreases'),
    ([-0.1, 0.1], '>= 0'),
    ([0.1, np.nan], 'finite'),
    ([0.1], '2 points but 1'),
])
def test_bad_time_from_start_rejected(tfs, match):
    driver, _ = make()
    with pytest.raises(CommandRejected, match=match):
        driver.on_trajectory(NAMES, np.tile(READY, (2, 1)), tfs, 0.0, 0.0)
    assert driver.events[-1].kind == REJECTED


@pytest.mark.parametrize('reference', ['command', 'measured'])
def test_watchdog_holds_measured_position_after_timeout_and_rearms(reference):
    cfg = SafetyConfig(watchdog_timeout_s=0.5, rate_limit_reference=reference)
    # joint 2 is blocked at -0.7 rad (an obstacle), so the measured position differs from the command
    driver, arm = make(cfg=cfg, stuck={1: (-np.inf, -0.7)})
    goal = READY.copy()
    goal[1] = -0.5
    driver.on_trajectory(NAMES, goal[None], [0.2], 0.0, 0.0)
    times, sps, evs = run(driver, arm, 0.0, 1.5)
    wd = [e for e in evs if e.kind == WATCHDOG_HOLD]
    assert len(wd) == 1                                              # once per timeout
    fired = np.flatnonzero(times > 0.5 + 1e-9)[0]                    # first tick past the timeout
    assert wd[0] is [e for e in driver.events if e.kind == WATCHDOG_HOLD][0]
    assert sps[fired - 1][1] > -0.7 + 1e-3                           # was still pushing towards the goal
    hold = sps[-1]
    assert hold[1] <= -0.7 + 1e-12                                   # now holds where the arm is
    np.testing.assert_allclose(sps[-30:], np.tile(hold, (30, 1)))
    np.testing.assert_allclose(arm.q_emb(), hold, atol=1e-6)
    # a new command re-arms the watchdog: it runs, then times out once more
    driver.on_trajectory(NAMES, READY[None], [0.3], 0.0, 1.5)
    times, sps, evs = run(driver, arm, 1.5, 2.6)
    np.testing.assert_allclose(sps[np.flatnonzero(times >= 1.8)[0]], READY, atol=1e-12)
    assert [e.kind for e in evs].count(WATCHDOG_HOLD) == 1


def test_watchdog_waits_for_long_trajectories():
    driver, arm = make(cfg=SafetyConfig(watchdog_timeout_s=0.2))
    goal = READY - 0.05
    goal[7] = 0.015
    driver.on_trajectory(NAMES, np.stack([READY, goal]), [0.5, 1.0], 0.0, 0.0)
    times, sps, evs = run(driver, arm, 0.0, 1.0)
    assert not any(e.kind == WATCHDOG_HOLD for e in evs)            # still executing: no hold
    np.testing.assert_allclose(sps[-1], READY + (goal - READY) * (0.99 - 0.5) / 0.5, atol=1e-9)


def test_clamps_at_position_limits():
    driver, arm = make()
    goal = READY.copy()
    goal[3] = 0.5            # panda_joint4 upper limit is -0.0698 rad
    goal[7] = 0.08           # finger stroke is 0.04 m
    driver.on_trajectory(NAMES, goal[None], [0.5], 0.0, 0.0)
    _, sps, evs = run(driver, arm, 0.0, 4.0)
    assert np.all(sps <= EMB.upper + 1e-12) and np.all(sps >= EMB.lower - 1e-12)
    clamped = {e.joint for e in evs if e.kind == POSITION_CLAMP}
    assert clamped == {'panda_joint4', 'panda_finger_joint1'}
    np.testing.assert_allclose(arm.q_emb()[[3, 7]], EMB.upper[[3, 7]], atol=1e-4)
    np.testing.assert_allclose(sps[-1], np.clip(goal, EMB.lower, EMB.upper), atol=1e-12)


@pytest.mark.parametrize('reference', ['command', 'measured'])
def test_velocity_limit_relative_to_the_configured_reference(reference):
    driver, arm = make(cfg=SafetyConfig(velocity_scale=0.25, watchdog_timeout_s=30.0,
                                        rate_limit_reference=reference))
    goal = READY + 1.0
    goal[[3, 5, 7]] = [-0.1, 2.5, 0.04]
    driver.on_trajectory(NAMES, goal[None], [0.01], 0.0, 0.0)   # an impossible jump
    previous = None
    for k in range(200):
        measured = arm.q_emb()
        sp, _ = driver.tick(k * DT)
        ref = measured if (reference == 'measured' or previous is None) else previous
        assert np.all(np.abs(sp - ref) <= EMB.max_velocity * 0.25 * (DT if k else 0.0) + 1e-12)
        previous = sp
        arm.step(DT)
    moved = np.abs(goal - READY) > 0
    assert np.all(np.abs(goal - arm.q_emb())[moved] < np.abs(goal - READY)[moved])   # progress, slowly


@pytest.mark.parametrize('reference, squeeze', [('command', 0.02), ('measured', 0.05 * DT)])
def test_gripper_squeeze_depends_on_the_rate_limit_reference(reference, squeeze):
    """Closing on a 4 cm object: the grip force of a position servo comes from the position error."""
    driver, arm = make(cfg=SafetyConfig(watchdog_timeout_s=30.0, rate_limit_reference=reference),
                       stuck={7: (0.02, np.inf)})
    closed = READY.copy()
    closed[7] = 0.0
    driver.on_trajectory(NAMES, closed[None], [0.5], 0.0, 0.0)
    _, sps, _ = run(driver, arm, 0.0, 2.0)
    assert arm.q_emb()[7] == pytest.approx(0.02)
    assert arm.q_emb()[7] - sps[-1][7] == pytest.approx(squeeze, abs=1e-6)


def test_estop_holds_rejects_and_rearm_holds_until_new_command():
    driver, arm = make()
    goal = READY + 0.3
    goal[7] = 0.04
    driver.on_trajectory(NAMES, goal[None], [1.0], 0.0, 0.0)
    run(driver, arm, 0.0, 0.3)
    driver.estop()
    assert driver.events[-1].kind == ESTOP
    for k in range(20):
        m = arm.q_emb()
        sp, ev = driver.tick(0.3 + k * DT)
        np.testing.assert_array_equal(sp, m)
        arm.step(DT)
    with pytest.raises(CommandRejected, match='emergency stop'):
        driver.on_trajectory(NAMES, goal[None], [1.0], 0.0, 0.5)
    driver.rearm()
    q_rearm = arm.q_emb()
    _, sps, _ = run(driver, arm, 0.5, 1.0)
    np.testing.assert_allclose(sps, np.tile(q_rearm, (len(sps), 1)))   # no resume of the old goal
    driver.on_trajectory(NAMES, goal[None], [0.5], 0.0, 1.0)
    run(driver, arm, 1.0, 2.5)
    np.testing.assert_allclose(arm.q_emb(), goal, atol=1e-4)


def test_clock_stepping_back_is_reported_and_holds_still():
    driver, arm = make()
    driver.tick(1.0)
    arm.step(DT)
    driver.on_trajectory(NAMES, (READY + 0.01)[None], [0.1], 0.0, 1.0)
    m = arm.q_emb()
    sp, ev = driver.tick(0.5)
    assert [e.kind for e in ev][0] == 'time_jump'
    np.testing.assert_allclose(sp, m)


def test_hardware_returning_nan_raises_naming_the_joint():
    driver, arm = make()
    arm.q[0] = np.nan        # hardware order is reversed: index 0 is the finger
    with pytest.raises(ValueError, match='panda_finger_joint1'):
        driver.tick(0.0)
    assert arm.writes == 0


@pytest.mark.parametrize('reference', ['command', 'measured'])
@given(pts=st.lists(st.lists(st.floats(-4.0, 4.0), min_size=J, max_size=J), min_size=1, max_size=4),
       gaps=st.lists(st.floats(0.0, 0.3), min_size=4, max_size=4),
       scale=st.floats(0.05, 1.0), tick_every=st.integers(1, 5))
@settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_valid_trajectory_stays_within_limits_and_speed(reference, pts, gaps, scale, tick_every):
    driver, arm = make(cfg=SafetyConfig(velocity_scale=scale, rate_limit_reference=reference))
    pts = np.array(pts)
    tfs = np.cumsum(gaps[:len(pts)])
    driver.on_trajectory(NAMES, pts, tfs, 0.0, 0.0)
    t, last, previous = 0.0, None, None
    for k in range(60):
        measured = arm.q_emb()
        sp, _ = driver.tick(t)
        assert np.all(sp >= EMB.lower) and np.all(sp <= EMB.upper)
        dt = 0.0 if last is None else t - last
        ref = measured if (reference == 'measured' or previous is None) else previous
        assert np.all(np.abs(sp - ref) <= EMB.max_velocity * scale * dt + 1e-9)
        last, previous = t, sp
        h = tick_every * DT
        arm.step(h)
        t += h


def test_drives_the_mujoco_franka_scene():
    from robot_drivers.sim.franka_cubes import READY_POSE, FrankaCubeSim, SimConfig
    sim = FrankaCubeSim(SimConfig(image_size=64))
    try:
        sim.reset(seed=3, joint_noise=0.0)
        assert isinstance(sim, Hardware)
        driver = ArmDriverCore(EMB, sim, SafetyConfig(watchdog_timeout_s=30.0))
        goal = READY_POSE.copy()
        goal[0] += 0.3
        goal[3] += 0.2
        driver.on_trajectory(NAMES, goal[None], [1.0], 0.0, sim.time)
        t_end = sim.time + 2.0
        while sim.time < t_end:
            sp, _ = driver.tick(sim.time)
            assert np.all(sp >= EMB.lower) and np.all(sp <= EMB.upper)
            sim.step(0.01)
        np.testing.assert_allclose(sim.read().positions[:7], goal[:7], atol=0.02)
    finally:
        sim.close()
