"""ArmDriverCore against a fake first-order-lag arm: tracking, rejection, watchdog, limits, e-stop,
and every condition reported as one start and one end edge."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robot_drivers.embodiment import FRANKA_PANDA
from robot_drivers.hardware import ArmDriverCore, Hardware, JointSample
from robot_drivers.safety import (END, ESTOP, JOINT_STATE_STALE, POSITION_CLAMP, REJECTED, START, TIME_JUMP,
                                  VELOCITY_LIMIT, WATCHDOG_HOLD, CommandRejected, SafetyConfig)

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


def test_nan_command_rejected_once_counted_and_previous_trajectory_keeps_running():
    seen = []
    arm = LagArm(READY)
    driver = ArmDriverCore(EMB, arm, SafetyConfig(watchdog_timeout_s=30.0), on_event=seen.append)
    goal = READY + 0.1
    goal[7] = 0.025
    driver.on_trajectory(NAMES, goal[None], [1.0], 0.0, 0.0)
    run(driver, arm, 0.0, 0.5)
    assert list(driver.events) == seen == []
    bad = np.tile(READY, (3, 1))
    bad[1, 4] = np.nan
    for k in range(5):       # a broken policy streaming NaN: one event, the rest counted
        with pytest.raises(CommandRejected, match='panda_joint5'):
            driver.on_trajectory(NAMES, bad, [0.1, 0.2, 0.3], 0.0, 0.5 + 0.1 * k, source='/vla/joint_trajectory')
    assert len(seen) == 1 and list(driver.events) == seen
    ev = seen[0]
    assert (ev.kind, ev.joint, ev.edge, ev.severity) == (REJECTED, None, START, 'error')
    assert 'panda_joint5' in ev.detail and '/vla/joint_trajectory' in ev.detail and 'point 1' in ev.detail
    assert driver.active_conditions == {(REJECTED, None): ev.detail}
    run(driver, arm, 0.5, 2.0)
    np.testing.assert_allclose(arm.q_emb(), goal, atol=1e-4)   # the old command finished
    assert len(seen) == 1
    # the next valid command ends the condition, with the count of rejected commands
    ended = driver.on_trajectory(NAMES, goal[None], [0.1], 0.0, 2.0, source='/vla/joint_trajectory')
    assert [(e.kind, e.edge, e.count) for e in ended] == [(REJECTED, END, 5)]
    assert '5 rejected' in ended[0].detail and seen[-1] is ended[0] and driver.events[-1] is ended[0]
    assert driver.on_trajectory(NAMES, goal[None], [0.1], 0.0, 2.1) == []


def test_unknown_joint_rejected_and_a_new_reason_is_reported_again():
    driver, arm = make()
    names = NAMES[:7] + ['gripper_width']
    for _ in range(3):
        with pytest.raises(CommandRejected, match=r"unknown joints \['gripper_width'\]"):
            driver.on_trajectory(names, READY[None], [0.5], 0.0, 0.0)
    assert [(e.kind, e.edge) for e in driver.events] == [(REJECTED, START)]
    assert 'gripper_width' in driver.events[0].detail
    assert not driver.has_trajectory
    bad = READY.copy()
    bad[0] = np.inf
    with pytest.raises(CommandRejected, match='panda_joint1'):
        driver.on_trajectory(NAMES, bad[None], [0.5], 0.0, 0.1)
    assert [(e.kind, e.edge, e.count) for e in driver.events] == [(REJECTED, START, 1), (REJECTED, END, 3),
                                                                   (REJECTED, START, 1)]
    assert 'panda_joint1' in driver.events[-1].detail


@pytest.mark.parametrize('tfs, match', [
    ([0.2, 0.1], 'decreases'),
    ([-0.1, 0.1], '>= 0'),
    ([0.1, np.nan], 'finite'),
    ([0.1], '2 points but 1'),
])
def test_bad_time_from_start_rejected(tfs, match):
    driver, _ = make()
    with pytest.raises(CommandRejected, match=match) as exc:
        driver.on_trajectory(NAMES, np.tile(READY, (2, 1)), tfs, 0.0, 0.0)
    assert exc.value.reason == 'time_from_start'
    assert [(e.kind, e.edge) for e in driver.events] == [(REJECTED, START)]
    assert match in driver.events[-1].detail


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
    assert [e.edge for e in wd] == [START]                           # once per timeout, not per tick
    fired = np.flatnonzero(times > 0.5 + 1e-9)[0]                    # first tick past the timeout
    assert wd[0] is [e for e in driver.events if e.kind == WATCHDOG_HOLD][0]
    assert list(driver.events) == evs                                # the history holds exactly the edges
    assert sps[fired - 1][1] > -0.7 + 1e-3                           # was still pushing towards the goal
    hold = sps[-1]
    assert hold[1] <= -0.7 + 1e-12                                   # now holds where the arm is
    np.testing.assert_allclose(sps[-30:], np.tile(hold, (30, 1)))
    np.testing.assert_allclose(arm.q_emb(), hold, atol=1e-6)
    # a new command ends the hold and re-arms the watchdog: it runs, then times out once more
    ended = driver.on_trajectory(NAMES, READY[None], [0.3], 0.0, 1.5)
    assert [(e.kind, e.edge, e.count) for e in ended] == [(WATCHDOG_HOLD, END, 1)]
    assert 'resuming' in ended[0].detail
    times, sps, evs = run(driver, arm, 1.5, 2.6)
    np.testing.assert_allclose(sps[np.flatnonzero(times >= 1.8)[0]], READY, atol=1e-12)
    assert [(e.kind, e.edge) for e in evs if e.kind == WATCHDOG_HOLD] == [(WATCHDOG_HOLD, START)]


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
    # 400 ticks commanding beyond the limits: one start edge per clamped joint, no end yet
    clamps = [(e.joint, e.edge) for e in evs if e.kind == POSITION_CLAMP]
    assert sorted(clamps) == [('panda_finger_joint1', START), ('panda_joint4', START)]
    np.testing.assert_allclose(arm.q_emb()[[3, 7]], EMB.upper[[3, 7]], atol=1e-4)
    np.testing.assert_allclose(sps[-1], np.clip(goal, EMB.lower, EMB.upper), atol=1e-12)
    # commanding the limits themselves (where the arm now rests) ends both, once
    driver.on_trajectory(NAMES, np.clip(goal, EMB.lower, EMB.upper)[None], [0.1], 0.0, 4.0)
    _, _, evs = run(driver, arm, 4.0, 8.0)
    assert sorted((e.joint, e.edge) for e in evs) == [('panda_finger_joint1', END), ('panda_joint4', END)]
    assert all(e.kind == POSITION_CLAMP for e in evs)


def test_fingers_resting_at_their_limit_give_no_event():
    """The issue's firehose: fingers commanded to and resting at 0.04 m for 10 s at 50 Hz."""
    q0 = READY.copy()
    q0[7] = EMB.upper[7]
    driver, arm = make(q0=q0)
    chunk = np.tile(q0, (8, 1))
    events = []
    for k in range(500):
        now = k * 0.02
        if k % 20 == 0:          # a policy re-sending its chunk at 2.5 Hz, fingers open at the limit
            driver.on_trajectory(NAMES, chunk, 0.1 * np.arange(1, 9), now, now)
        events += driver.tick(now)[1]
        arm.step(0.02)
    assert events == [] and list(driver.events) == []


class WobblyFingerArm(LagArm):
    """A gripper pushed against its stop: the finger measures a hair past the 0.04 m limit, by an
    amount that changes every tick (as MuJoCo's contact solver leaves it: 1e-9..2e-4 m)."""

    def __init__(self, q0, seed=0):
        super().__init__(q0)
        self._rng = np.random.default_rng(seed)

    def step(self, dt):
        super().step(dt)
        self.q[0] = EMB.upper[7] + self._rng.uniform(0.0, 2e-4)   # hardware order: finger first


@pytest.mark.parametrize('hold', ['estop', 'watchdog', 'start'])
def test_holding_a_finger_measured_past_its_limit_gives_no_clamp_edges(hold):
    """Seen on the sim graph: while held (e-stop, watchdog, or before any command) the driver held
    the raw measurement, 0.04 m + wobble, and the finger clamp started and ended over and over."""
    q0 = READY.copy()
    q0[7] = EMB.upper[7]
    arm = WobblyFingerArm(q0)
    driver = ArmDriverCore(EMB, arm, SafetyConfig(watchdog_timeout_s=0.5))
    arm.step(DT)
    if hold == 'estop':
        driver.estop()
    elif hold == 'watchdog':
        driver.on_trajectory(NAMES, q0[None, :], np.array([0.1]), 0.0, 0.0)
    # the first tick may report the measurement outside the limits once (start, then end within
    # condition_clear_s): it is; what must not follow is a stream of edges while holding
    run(driver, arm, 0.0, 0.2)
    _, sps, evs = run(driver, arm, 0.2, 4.0)
    assert not [e for e in evs if e.kind == POSITION_CLAMP]
    assert np.all(sps[:, 7] <= EMB.upper[7])       # the hold itself is within the limit
    assert [(e.kind, e.edge) for e in evs] == ([(WATCHDOG_HOLD, 'start')] if hold == 'watchdog' else [])


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
    n0 = len(driver.events)
    started = driver.estop()
    assert [(e.kind, e.edge) for e in started] == [(ESTOP, START)] and driver.events[-1] is started[0]
    assert driver.estop() == []                                       # a second `true` is no new edge
    tick_events = []
    for k in range(20):
        m = arm.q_emb()
        sp, ev = driver.tick(0.3 + k * DT)
        tick_events += ev
        np.testing.assert_array_equal(sp, m)
        arm.step(DT)
    # holding gives no event per tick; limit conditions active before the stop end once
    assert all(e.edge == END and e.kind != ESTOP for e in tick_events)
    for k in range(4):       # the policy keeps streaming: one rejection edge, the others counted
        with pytest.raises(CommandRejected, match='emergency stop') as exc:
            driver.on_trajectory(NAMES, goal[None], [1.0], 0.0, 0.5)
        assert exc.value.reason == 'estop_active'
    new = list(driver.events)[n0:]
    assert [(e.kind, e.edge) for e in new if e.kind in (ESTOP, REJECTED)] == [(ESTOP, START), (REJECTED, START)]
    ended = driver.rearm()
    assert [(e.kind, e.edge) for e in ended] == [(ESTOP, END)]
    q_rearm = arm.q_emb()
    _, sps, evs = run(driver, arm, 0.5, 1.0)
    np.testing.assert_allclose(sps, np.tile(q_rearm, (len(sps), 1)))   # no resume of the old goal
    assert evs == []
    ended = driver.on_trajectory(NAMES, goal[None], [0.5], 0.0, 1.0)
    assert [(e.kind, e.edge, e.count) for e in ended] == [(REJECTED, END, 4)]
    run(driver, arm, 1.0, 2.5)
    np.testing.assert_allclose(arm.q_emb(), goal, atol=1e-4)


def test_clock_stepping_back_is_reported_and_holds_still():
    driver, arm = make()
    driver.tick(1.0)
    arm.step(DT)
    driver.on_trajectory(NAMES, (READY + 0.01)[None], [0.1], 0.0, 1.0)
    m = arm.q_emb()
    sp, ev = driver.tick(0.5)
    assert [(e.kind, e.edge) for e in ev] == [(TIME_JUMP, START)]
    np.testing.assert_allclose(sp, m)
    arm.step(DT)
    _, ev = driver.tick(0.4)                  # still going back: no new event
    assert ev == []
    _, ev = driver.tick(0.41)                 # forward again: the condition ends
    assert [(e.kind, e.edge, e.count) for e in ev] == [(TIME_JUMP, END, 2)]
    assert driver.active_conditions == {}


def test_velocity_limit_is_one_edge_per_joint_while_it_lasts():
    driver, arm = make(cfg=SafetyConfig(velocity_scale=0.1, watchdog_timeout_s=30.0))
    goal = READY.copy()
    goal[0] += 0.5                                        # 0.5 rad at 0.2175 rad/s: limited for ~2.3 s
    driver.on_trajectory(NAMES, goal[None], [0.05], 0.0, 0.0)
    times, sps, evs = run(driver, arm, 0.0, 4.0)
    assert [(e.kind, e.joint, e.edge) for e in evs] == [(VELOCITY_LIMIT, 'panda_joint1', START),
                                                        (VELOCITY_LIMIT, 'panda_joint1', END)]
    end_tick = np.flatnonzero([np.isclose(sp[0], goal[0], atol=1e-12) for sp in sps])[0]
    assert evs[1].count == end_tick - 1               # limited on every tick but the first (dt = 0) until there
    np.testing.assert_allclose(sps[-1], goal, atol=1e-12)


def test_conditions_reported_by_the_caller_are_edges_too():
    """The node's joint-state checks go through set_condition: one edge each way."""
    seen = []
    driver = ArmDriverCore(EMB, LagArm(READY), on_event=seen.append)
    for k in range(50):
        ev = driver.set_condition(JOINT_STATE_STALE, True, f'joint states are {0.6 + 0.02 * k:.2f} s old')
        assert ev == ([] if k else seen[:1])
    for k in range(50):
        driver.set_condition(JOINT_STATE_STALE, False, 'joint states fresh again')
    assert [(e.kind, e.edge, e.count) for e in seen] == [(JOINT_STATE_STALE, START, 1), (JOINT_STATE_STALE, END, 50)]
    assert seen[0].detail == 'joint states are 0.60 s old' and list(driver.events) == seen


def test_every_recorded_edge_is_returned_once_and_alternates_per_key():
    """A run through clamp, rate limit, e-stop, rejection, watchdog: the history is exactly the
    edges returned by tick/on_trajectory/estop/rearm, in order, alternating start/end per key."""
    seen = []
    arm = LagArm(READY)
    driver = ArmDriverCore(EMB, arm, SafetyConfig(watchdog_timeout_s=0.3, velocity_scale=0.5), on_event=seen.append)
    returned = []
    far = READY + 0.6
    far[7] = 0.06
    bad = READY.copy()
    bad[2] = np.nan
    script = {0: lambda t: driver.on_trajectory(NAMES, far[None], [0.1], t, t),
              60: lambda t: driver.estop(), 90: lambda t: driver.rearm(),
              100: lambda t: driver.on_trajectory(NAMES, bad[None], [0.1], t, t),
              120: lambda t: driver.on_trajectory(NAMES, READY[None], [0.2], t, t)}
    for k in range(200):
        now = k * DT
        if k in script:
            try:
                returned += script[k](now)
            except CommandRejected:
                pass
        returned += driver.tick(now)[1]
        arm.step(DT)
    kinds = {e.kind for e in driver.events}
    assert {POSITION_CLAMP, VELOCITY_LIMIT, ESTOP, REJECTED, WATCHDOG_HOLD} <= kinds
    rejected = [e for e in driver.events if e.kind == REJECTED]
    assert [e.edge for e in rejected] == [START, END]
    assert seen == list(driver.events)
    assert [id(e) for e in returned] == [id(e) for e in seen if e.kind != REJECTED or e.edge == END]
    open_keys = {}
    for e in seen:
        assert e.edge == (END if open_keys.get(e.key) else START), f'{e} out of order'
        open_keys[e.key] = e.edge == START


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
