"""The machine-generic core: action-space model, policy command form, motion limits, driver core, adapters."""
import math

import numpy as np
import pytest

from robot_drivers import conversions as conv
from robot_drivers.adapters import build_adapters, get_adapter
from robot_drivers.embodiment import FRANKA_PANDA, Embodiment, Group, JointSpec
from robot_drivers.hardware import ArmDriverCore, JointSample
from robot_drivers.machine import (Interlock, Machine, MachineDriverCore, MachineState, get_machine,
                                   validate_command)
from robot_drivers.safety import (ACCELERATION_LIMIT, ESTOP, INTERLOCK, START, WATCHDOG_HOLD, CommandRejected,
                                  MotionLimiter, SafetyConfig, braking_speed)

TYPES = conv.rosbags_types()

# a small mixed machine: an arm joint by position, a boom with limits and a track by velocity
MIXED = Embodiment(
    'test_mixed_machine',
    (JointSpec('arm_joint', -1.0, 1.0, 1.0, max_acceleration=4.0, source='test'),
     JointSpec('boom', -0.5, 0.8, 0.4, interface='velocity', max_acceleration=1.0, max_jerk=20.0, source='test'),
     JointSpec('track', -math.inf, math.inf, 1.5, interface='velocity', max_acceleration=0.8, source='test')),
    10.0,
    groups=(Group('arm', ('arm_joint',), 'joint_trajectory', '/arm_controller/joint_trajectory'),
            Group('front', ('boom',), 'float64_per_joint', '/m/{joint}/cmd'),
            Group('tracks', ('track',), 'twist_stamped', '/cmd_vel', {'fields': ['linear.x']})),
    forbidden_joints=('left_knee',),
    machine_class='excavator',
)


def plant_step(out, pos, emb, dt):
    """A perfect plant: position DOFs at their setpoint, velocity DOFs integrate."""
    new = pos.copy()
    vel = emb.is_velocity
    new[~vel] = out[~vel]
    new[vel] = pos[vel] + out[vel] * dt
    return new


def test_jointspec_and_embodiment_validation():
    with pytest.raises(ValueError, match='position DOF needs finite limits'):
        JointSpec('x', -math.inf, 1.0, 1.0)
    with pytest.raises(ValueError, match='interface'):
        JointSpec('x', -1, 1, 1.0, interface='effort')
    with pytest.raises(ValueError, match='max_acceleration'):
        JointSpec('x', -1, 1, 1.0, max_acceleration=0.0)
    j = (JointSpec('a', -1, 1, 1.0), JointSpec('b', -1, 1, 1.0))
    with pytest.raises(ValueError, match="in no group"):
        Embodiment('e', j, 10.0, groups=(Group('g', ('a',), 'joint_trajectory', '/t'),))
    with pytest.raises(ValueError, match='unknown joints'):
        Embodiment('e', j, 10.0, groups=(Group('g', ('a', 'c'), 'joint_trajectory', '/t'),))
    with pytest.raises(ValueError, match='both commanded and forbidden'):
        Embodiment('e', j, 10.0, forbidden_joints=('a',))
    with pytest.raises(ValueError, match='machine_class'):
        Embodiment('e', j, 10.0, machine_class='boat')
    assert MIXED.is_velocity.tolist() == [False, True, True]
    np.testing.assert_array_equal(MIXED.action_lower, [-1.0, -0.4, -1.5])
    np.testing.assert_array_equal(MIXED.action_upper, [1.0, 0.4, 1.5])
    # the Franka keeps its one JTC output
    (g,) = FRANKA_PANDA.groups_or_default()
    assert g.output == 'joint_trajectory' and g.topic == '/arm_controller/joint_trajectory'


@pytest.mark.parametrize('rows', [np.array([[0.1, 0.2, -0.3]]), np.array([[0.1, 0.2, -0.3], [0.2, 0.1, 0.0]])])
def test_action_trajectory_round_trip_mixed(rows):
    msg = conv.action_trajectory(MIXED, rows, 1.5, TYPES, dt=0.1)
    p0 = msg.points[0]
    assert np.isnan(p0.positions[1]) and np.isnan(p0.velocities[0])      # unused entries are NaN
    assert p0.positions[0] == rows[0, 0] and p0.velocities[2] == rows[0, 2]
    # real CDR round trip, then back to the action vector
    store = conv.typestore()
    msg2 = store.deserialize_cdr(store.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)
    acts, tfs = conv.trajectory_to_actions(msg2, MIXED)
    np.testing.assert_array_equal(acts, rows)
    np.testing.assert_allclose(tfs, 0.1 * (np.arange(len(rows)) + 1))


def test_action_trajectory_all_position_is_the_old_form_and_all_velocity_has_no_positions():
    rows = np.tile(np.linspace(-0.5, 0.5, 8), (2, 1)) * 0.1
    a = conv.action_trajectory(FRANKA_PANDA, rows, 0.0, TYPES, dt=0.1)
    b = conv.arrays_to_trajectory(FRANKA_PANDA.joint_names, rows, 0.0, TYPES, dt=0.1)
    assert [list(p.positions) for p in a.points] == [list(p.positions) for p in b.points]
    assert all(len(p.velocities) == 0 for p in a.points)
    vel_only = Embodiment('v_only', (JointSpec('w', -math.inf, math.inf, 1.0, interface='velocity'),), 10.0)
    m = conv.action_trajectory(vel_only, np.array([[0.3]]), 0.0, TYPES, dt=0.1)
    assert len(m.points[0].positions) == 0 and m.points[0].velocities[0] == 0.3


@pytest.mark.parametrize('names,pos,vel,reason', [
    (['arm_joint', 'boom', 'left_knee'], [[0, 0, 0]], [[0, 0, 0]], 'forbidden_joints'),
    (['arm_joint', 'boom', 'wheel'], [[0, 0, 0]], [[0, 0, 0]], 'unknown_joints'),
    (['arm_joint', 'boom'], [[0, 0]], [[0, 0]], 'missing_joints'),
    (['arm_joint', 'boom', 'boom'], [[0, 0, 0]], [[0, 0, 0]], 'duplicate_joints'),
    (['arm_joint', 'boom', 'track'], [[0, 0, 0]], None, 'shape'),
    (['arm_joint', 'boom', 'track'], [[0, np.nan, np.nan]], [[np.nan, 0.1, np.inf]], 'non_finite'),
    (['arm_joint', 'boom', 'track'], [[np.nan, 0, 0]], [[0, 0.1, 0.0]], 'non_finite'),
])
def test_validate_command_rejects_with_reason(names, pos, vel, reason):
    with pytest.raises(CommandRejected) as ei:
        validate_command(MIXED, names, pos, vel, source='/vla/joint_trajectory')
    assert ei.value.reason == reason and '/vla/joint_trajectory' in str(ei.value)


def test_validate_command_reorders_and_ignores_unused_nan():
    vals = validate_command(MIXED, ['track', 'arm_joint', 'boom'], [[np.nan, 0.3, np.nan]], [[0.7, np.nan, -0.2]])
    np.testing.assert_array_equal(vals, [[0.3, -0.2, 0.7]])


def test_braking_speed_is_recursively_feasible():
    rng = np.random.default_rng(0)
    a, dt = 2.0, 0.02
    for _ in range(200):
        d = rng.uniform(0, 1.0)
        v = braking_speed(np.array([d]), np.array([a]), dt)[0]
        assert v * dt + v * v / (2 * a) <= d + 1e-12
        d2 = d - v * dt
        dt2 = rng.uniform(0.001, 0.1)
        assert max(v - a * dt2, 0.0) <= braking_speed(np.array([d2]), np.array([a]), dt2)[0] + 1e-9


def test_motion_limiter_keeps_every_bound_on_random_targets():
    lim = MotionLimiter(MIXED)
    rng = np.random.default_rng(1)
    pos = np.array([0.0, 0.0, 0.0])
    out_pos = pos.copy()
    v_prev = np.zeros(3)
    for k in range(3000):
        dt = float(rng.choice([0.02, 0.02, 0.005, 0.1]))
        tgt = rng.uniform(-3, 3, 3)
        ref = np.where(MIXED.is_velocity, pos, out_pos)
        out, v, _ = lim.step(tgt, ref, v_prev, pos, dt)
        assert -1.0 <= out[0] <= 1.0
        assert np.all(np.abs(v) <= MIXED.max_velocity + 1e-9)
        assert np.all(np.abs(v - v_prev) <= MIXED.max_acceleration * dt + 1e-9), (k, v, v_prev)
        pos = plant_step(out, pos, MIXED, dt)
        out_pos = np.where(MIXED.is_velocity, out_pos, out)
        v_prev = v
        assert -0.5 - 1e-9 <= pos[1] <= 0.8 + 1e-9          # the boom's braking keeps it inside
    assert k == 2999


def test_driver_watchdog_holds_positions_and_ramps_velocities_within_timeout_plus_one_tick():
    m = Machine(MIXED, safety=SafetyConfig(watchdog_timeout_s=0.3), control_rate_hz=50.0)
    core = MachineDriverCore(m)
    pos = np.zeros(3)
    dt = 0.02
    last_cmd = None
    fired_at = None
    v_hist = []
    for k in range(120):
        now = k * dt
        if k < 40 and k % 5 == 0:
            core.on_trajectory(MIXED.joint_names, [[0.5, np.nan, np.nan]], [[np.nan, 0.3, 1.2]], [0.1], now, now)
            last_cmd = now
        out = core.tick(now, MachineState(pos.copy(), np.zeros(3), now))
        if fired_at is None and any(e.kind == WATCHDOG_HOLD and e.edge == START for e in core.events):
            fired_at = now
            hold = pos[0]
        v_hist.append(core.output_velocity.copy())
        pos = plant_step(out, pos, MIXED, dt)
    assert fired_at is not None and fired_at - last_cmd <= 0.3 + dt + 1e-9
    v = np.array(v_hist)
    after = int(round(fired_at / dt))
    # velocity DOFs ramp down monotonically at no more than their acceleration limit, then stay 0
    assert np.all(np.abs(np.diff(v[after - 1:, 1:], axis=0)) <= MIXED.max_acceleration[1:] * dt + 1e-9)
    assert np.all(v[-1, 1:] == 0.0)
    assert abs(out[0] - hold) < 1e-6                          # the arm joint holds where it was measured


def test_estop_latches_rejects_and_ramps_until_rearm():
    core = MachineDriverCore(Machine(MIXED, safety=SafetyConfig(watchdog_timeout_s=5.0), control_rate_hz=50.0))
    pos = np.zeros(3)
    core.on_trajectory(MIXED.joint_names, [[0.2, np.nan, np.nan]], [[np.nan, 0.2, 1.5]], [2.0], 0.0, 0.0)
    for k in range(60):
        pos = plant_step(core.tick(k * 0.02, MachineState(pos.copy(), np.zeros(3), k * 0.02)), pos, MIXED, 0.02)
    assert core.output_velocity[2] > 0.5
    assert [e.kind for e in core.estop()] == [ESTOP]
    assert core.estop() == []                                  # already latched: no second edge
    with pytest.raises(CommandRejected) as ei:
        core.on_trajectory(MIXED.joint_names, [[0.2, np.nan, np.nan]], [[np.nan, 0.2, 1.5]], [0.1], 1.2, 1.2)
    assert ei.value.reason == 'estop_active'
    prev = core.output_velocity.copy()
    for k in range(60, 200):
        out = core.tick(k * 0.02, MachineState(pos.copy(), np.zeros(3), k * 0.02))
        assert np.all(np.abs(core.output_velocity - prev) <= MIXED.max_acceleration * 0.02 + 1e-9)
        prev = core.output_velocity.copy()
        pos = plant_step(out, pos, MIXED, 0.02)
    assert np.all(core.output_velocity[1:] == 0.0) and core.estopped
    assert [e.kind for e in core.rearm()] == [ESTOP]
    core.on_trajectory(MIXED.joint_names, [[0.2, np.nan, np.nan]], [[np.nan, 0.2, 0.5]], [0.1], 4.1, 4.1)


class _NoTrackWhileBoomUp(Interlock):
    name = 'no_track_while_boom_up'

    def apply(self, targets, state, emb):
        if state.positions[1] > 0.1 and targets[2] != 0.0:
            t = targets.copy()
            t[2] = 0.0
            return t, f'boom at {state.positions[1]:.2f} rad: tracks held'
        return targets, None


def test_interlock_changes_targets_and_reports_one_edge():
    core = MachineDriverCore(Machine(MIXED, interlocks=(_NoTrackWhileBoomUp(),), control_rate_hz=50.0))
    pos = np.array([0.0, 0.3, 0.0])
    for k in range(100):
        now = k * 0.02
        if k % 5 == 0:
            core.on_trajectory(MIXED.joint_names, [[0.0, np.nan, np.nan]], [[np.nan, 0.0, 1.0]], [0.1], now, now)
        core.tick(now, MachineState(pos.copy(), np.zeros(3), now))
    assert core.output_velocity[2] == 0.0
    starts = [e for e in core.events if e.kind == INTERLOCK and e.edge == START]
    assert len(starts) == 1 and starts[0].joint == 'no_track_while_boom_up'


def test_franka_through_the_machine_core_matches_the_arm_driver_core():
    """One design: the Franka's setpoints are the same through MachineDriverCore as through ArmDriverCore."""
    class Hw:
        joint_names = FRANKA_PANDA.joint_names

        def __init__(self):
            self.q = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785, 0.02])

        def read(self):
            return JointSample(self.q.copy(), np.zeros(8), 0.0)

        def write(self, q):
            self.q = np.asarray(q, dtype=np.float64).copy()

    hw = Hw()
    arm = ArmDriverCore(FRANKA_PANDA, hw, SafetyConfig())
    gen = MachineDriverCore(get_machine('franka_panda'))
    rng = np.random.default_rng(3)
    q_gen = hw.q.copy()
    for k in range(300):
        now = k * 0.02
        if k % 5 == 0:
            target = np.clip(hw.q + rng.normal(0, 0.3, 8), FRANKA_PANDA.lower - 0.1, FRANKA_PANDA.upper + 0.1)
            arm.on_trajectory(FRANKA_PANDA.joint_names, target[None], [0.1], now, now)
            gen.on_trajectory(FRANKA_PANDA.joint_names, target[None], None, [0.1], now, now)
        a, _ = arm.tick(now)
        g = gen.tick(now, MachineState(q_gen.copy(), np.zeros(8), now))
        q_gen = g
        np.testing.assert_allclose(g, a, atol=1e-12)


def test_adapters_encode_decode_round_trip():
    ads = {a.group.name: a for a in build_adapters(MIXED)}
    state = MachineState(np.zeros(3), np.zeros(3), 0.0)
    (topic, jt), = ads['arm'].encode(np.array([0.25]), state, 1.0, TYPES)
    assert topic == '/arm_controller/joint_trajectory' and ads['arm'].decode(jt) == {'arm_joint': 0.25}
    per = ads['front'].encode(np.array([-0.1]), state, 1.0, TYPES)
    assert per[0][0] == '/m/boom/cmd' and ads['front'].decode(per[0][1], source='/m/boom/cmd') == {'boom': -0.1}
    (topic, tw), = ads['tracks'].encode(np.array([0.9]), state, 2.0, TYPES)
    assert topic == '/cmd_vel' and tw.twist.linear.x == 0.9 and tw.header.frame_id == 'base_link'
    assert ads['tracks'].decode(tw) == {'track': 0.9}
    fa = get_adapter('float64_array')(Group('arm', ('arm_joint',), 'float64_array', '/fc/commands'), MIXED,
                                      '/fc/commands')
    (_, arr), = fa.encode(np.array([0.5]), state, 0.0, TYPES)
    store = conv.typestore()
    arr2 = store.deserialize_cdr(store.serialize_cdr(arr, arr.__msgtype__), arr.__msgtype__)
    assert fa.decode(arr2) == {'arm_joint': 0.5}
    with pytest.raises(ValueError, match='2 values'):
        fa.decode(TYPES.lookup('std_msgs/msg/Float64MultiArray')(
            layout=TYPES.lookup('std_msgs/msg/MultiArrayLayout')(dim=[], data_offset=0), data=np.zeros(2)))
    with pytest.raises(KeyError, match='no groups'):
        build_adapters(MIXED, {'wheels': '/x'})
    with pytest.raises(KeyError, match='unknown output adapter'):
        get_adapter('smoke_signals')


def test_driver_outputs_publish_every_group():
    core = MachineDriverCore(Machine(MIXED, control_rate_hz=50.0))
    msgs = core.outputs(0.0, MachineState(np.zeros(3), np.zeros(3), 0.0), TYPES)
    assert sorted(t for t, _ in msgs) == ['/arm_controller/joint_trajectory', '/cmd_vel', '/m/boom/cmd']


def test_acceleration_limit_is_an_edge_not_per_tick():
    core = MachineDriverCore(Machine(MIXED, control_rate_hz=50.0))
    pos = np.zeros(3)
    for k in range(100):
        now = k * 0.02
        if k % 5 == 0:
            core.on_trajectory(MIXED.joint_names, [[0.0, np.nan, np.nan]], [[np.nan, 0.0, 1.5]], [0.1], now, now)
        pos = plant_step(core.tick(now, MachineState(pos.copy(), np.zeros(3), now)), pos, MIXED, 0.02)
    starts = [e for e in core.events if e.kind == ACCELERATION_LIMIT and e.joint == 'track' and e.edge == START]
    assert len(starts) == 1


def test_state_vector_uses_velocity_for_dofs_without_position():
    js = conv.arrays_to_joint_state(['arm_joint', 'boom', 'track'], np.array([0.2, 0.1, np.nan]), 1.0, TYPES,
                                    velocities=np.array([0.0, 0.05, 0.7]))
    state, vel = conv.joint_state_to_state(js, MIXED)
    np.testing.assert_allclose(state, [0.2, 0.1, 0.7])
    np.testing.assert_allclose(vel, [0.0, 0.05, 0.7])
    no_track = conv.arrays_to_joint_state(['arm_joint', 'boom'], np.array([0.2, 0.1]), 1.0, TYPES)
    np.testing.assert_allclose(conv.joint_state_to_state(no_track, MIXED)[0], [0.2, 0.1, 0.0])
    with pytest.raises(KeyError, match='arm_joint'):
        conv.joint_state_to_state(conv.arrays_to_joint_state(['boom'], np.array([0.1]), 1.0, TYPES), MIXED)
    with pytest.raises(ValueError, match='non-finite'):
        conv.joint_state_to_state(conv.arrays_to_joint_state(['arm_joint', 'boom'], np.array([np.nan, 0.1]), 1.0,
                                                             TYPES), MIXED)
