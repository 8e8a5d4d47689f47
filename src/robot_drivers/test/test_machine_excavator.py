"""The Hitachi ZX200 excavator: limits and their sources, the COM3 / OperaSim adapters, the MuJoCo
dig scene (kinematics, hydraulic lag, tracks, camera), the ``dig`` task's expert, and the closed
loop expert -> MachineDriverCore -> sim (limits, e-stop)."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robot_drivers import conversions as conv
from robot_drivers.adapters import build_adapters, get_adapter
from robot_drivers.embodiment import Group, get_embodiment
from robot_drivers.machine import MachineDriverCore, MachineState, get_machine
from robot_drivers.machines.excavator import EXCAVATOR_ZX200, ZX200, EmgStopInterlock
from robot_drivers.msgs import com3
from robot_drivers.safety import CommandRejected

mujoco = pytest.importorskip('mujoco', reason='the excavator scene needs MuJoCo')
from robot_drivers.sim.excavator import (LINKS, TASKS, ExcavatorDigTask, ExcavatorSim,  # noqa: E402
                                         ExcavatorSimConfig, front_fk)

TYPES = conv.rosbags_types()
EMB = EXCAVATOR_ZX200
DT = 1.0 / ZX200.control_rate_hz          # driver tick, 0.02 s
POLICY_DT = 1.0 / EMB.control_rate_hz     # 0.1 s


@pytest.fixture(scope='module')
def sim():
    s = ExcavatorSim()
    yield s
    s.close()


def _state(pos, vel=None, t=0.0, **extras):
    return MachineState(np.asarray(pos, dtype=float), np.zeros(6) if vel is None else np.asarray(vel, float), t,
                        extras)


# ----------------------------------------------------------------------------- definition
def test_embodiment_is_velocity_controlled_with_the_zx200_description_limits():
    assert get_embodiment('excavator_zx200') is EMB and get_machine('excavator_zx200') is ZX200
    assert EMB.machine_class == 'excavator'
    assert EMB.joint_names == ['swing', 'boom', 'arm', 'bucket', 'left_track', 'right_track']
    assert EMB.is_velocity.all()
    # zx200.xacro <limit lower/upper> of boom_joint, arm_joint, bucket_joint; swing continuous
    assert (EMB.lower[1:4].tolist(), EMB.upper[1:4].tolist()) == ([-1.137, 0.594, -0.622], [1.0, 2.687, 2.372])
    assert np.isinf(EMB.lower[[0, 4, 5]]).all() and np.isinf(EMB.upper[[0, 4, 5]]).all()
    assert EMB.max_velocity[0] == pytest.approx(13.3 * 2 * math.pi / 60)       # 13.3 min^-1
    assert EMB.max_velocity[4] == pytest.approx(5.5 / 3.6)                      # 5.5 km/h
    # zx200_moveit_config joint_limits.yaml max_acceleration: boom 0.4, bucket 0.5, swing 0.5
    assert EMB.max_acceleration[[0, 1, 3]].tolist() == [0.5, 0.4, 0.5]
    assert np.isfinite(EMB.max_acceleration).all() and np.isfinite(EMB.max_jerk).all()
    for j in EMB.joints:
        assert j.source, f'{j.name} has no limit source'
    assert [(g.name, g.joints, g.output, g.topic) for g in EMB.groups] == [
        ('front', ('swing', 'boom', 'arm', 'bucket'), 'com3_joint_cmd', '/zx200/front_cmd'),
        ('tracks', ('left_track', 'right_track'), 'com3_joint_cmd', '/zx200/tracks_cmd')]
    assert ZX200.safety.watchdog_timeout_s == 0.5     # the COM3 relay's cmd_timeout
    assert TASKS == {'dig': ExcavatorDigTask}


# ----------------------------------------------------------------------------- messages and adapters
def test_joint_cmd_is_the_public_com3_definition():
    fields = TYPES.lookup(com3.JOINT_CMD).__dataclass_fields__
    assert list(fields)[:5] == ['joint_name', 'control_type', 'position', 'velocity', 'effort']
    text = com3.MSG_DEFINITIONS[com3.JOINT_CMD]
    assert 'string[] joint_name' in text and 'uint8 control_type' in text and 'float64[] effort' in text


@pytest.mark.parametrize('group', ['front', 'tracks'])
def test_com3_encode_cdr_decode_round_trip(group):
    store = conv.typestore()
    ad = next(a for a in build_adapters(EMB) if a.group.name == group)
    rng = np.random.default_rng(3)
    sp = rng.uniform(-1, 1, len(ad.joints)) * EMB.max_velocity[[EMB.joint_names.index(n) for n in ad.joints]]
    msgs = ad.encode(sp, _state([0.1, -0.3, 1.5, 0.8, np.nan, np.nan]), 1.0, TYPES)
    topic, msg = msgs[0]
    assert topic == f'/zx200/{group}_cmd' and msg.control_type == 1
    # the COM3 relay acts only on messages whose velocity and effort have one entry per joint
    assert len(msg.velocity) == len(msg.effort) == len(msg.position) == len(msg.joint_name) == len(ad.joints)
    assert not np.any(msg.effort) and not np.any(msg.position)
    back = store.deserialize_cdr(store.serialize_cdr(msg, com3.JOINT_CMD), com3.JOINT_CMD)
    got = ad.decode(back, source=topic)
    assert list(got) == list(ad.joints)
    np.testing.assert_array_equal([got[n] for n in ad.joints], sp)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=6, max_size=6))
def test_com3_round_trip_of_any_finite_setpoint(values):
    store = conv.typestore()
    sp = np.array(values)
    got = {}
    for ad in build_adapters(EMB):
        sel = [EMB.joint_names.index(n) for n in ad.joints]
        topic, msg = ad.encode(sp[sel], None, 0.0, TYPES)[0]
        raw = store.serialize_cdr(msg, com3.JOINT_CMD)
        got.update(ad.decode(store.deserialize_cdr(raw, com3.JOINT_CMD), source=topic))
    np.testing.assert_array_equal([got[n] for n in EMB.joint_names], sp)


def test_com3_decode_names_what_is_wrong():
    ad = build_adapters(EMB)[0]
    _, msg = ad.encode(np.zeros(4), _state(np.zeros(6)), 0.0, TYPES)[0]
    cls = TYPES.lookup(com3.JOINT_CMD)
    seq = TYPES.float64_seq
    with pytest.raises(ValueError, match='control_type is 2'):
        ad.decode(cls(joint_name=['boom'], control_type=2, position=seq([0.0]), velocity=seq([0.0]),
                      effort=seq([0.0])))
    with pytest.raises(ValueError, match='velocity has 1 values for 2'):
        ad.decode(cls(joint_name=['boom', 'arm'], control_type=1, position=seq([]), velocity=seq([0.1]),
                      effort=seq([])))
    with pytest.raises(ValueError, match=r"\['left_track'\] are not in group 'front'"):
        ad.decode(cls(joint_name=['left_track'], control_type=1, position=seq([0.0]), velocity=seq([0.1]),
                      effort=seq([0.0])))
    with pytest.raises(ValueError, match='OperaSim joint angles'):
        ad.decode(msg, source='/zx200/boom/cmd')
    with pytest.raises(ValueError, match='control_type must be 0'):
        get_adapter('com3_joint_cmd')(Group('front', ('boom',), 'com3_joint_cmd', '/x', {'control_type': 2}),
                                      EMB, '/x')


def test_emg_stop_bool_at_estop_and_rearm_on_the_front_group_only():
    front, tracks = build_adapters(EMB)
    assert front.estop_topics() == [('/zx200/emg_stop', 'std_msgs/msg/Bool')] and tracks.estop_topics() == []
    [(topic, on)] = front.estop_messages(True, 0.0, TYPES)
    [(_, off)] = front.estop_messages(False, 1.0, TYPES)
    assert topic == '/zx200/emg_stop' and on.data is True and off.data is False
    assert tracks.estop_messages(True, 0.0, TYPES) == []


def test_operasim_angles_integrate_the_safe_velocity_within_limits():
    """OperaSim's /<ns>/<joint>/cmd are angles: velocity 0 holds the measured angle, a velocity
    moves the command by v dt, never more than max_lead ahead of the measurement or past a limit."""
    front = build_adapters(EMB)[0]
    topics = [t for t, _ in front.topics()]
    assert topics == ['/zx200/front_cmd', '/zx200/swing/cmd', '/zx200/boom/cmd', '/zx200/arm/cmd', '/zx200/bucket/cmd']
    meas = np.array([0.3, 0.9, 1.5, 2.3, np.nan, np.nan])

    def angles(sp, now, pos=meas):
        return {t: m.data for t, m in front.encode(np.asarray(sp, float), _state(pos), now, TYPES)[1:]}

    first = angles([0.0, 0.0, 0.0, 0.0], 0.0)
    assert first == {'/zx200/swing/cmd': 0.3, '/zx200/boom/cmd': 0.9, '/zx200/arm/cmd': 1.5, '/zx200/bucket/cmd': 2.3}
    step = angles([0.5, 0.4, -0.6, 0.8], 0.02)
    assert step['/zx200/swing/cmd'] == pytest.approx(0.3 + 0.5 * 0.02)
    assert step['/zx200/arm/cmd'] == pytest.approx(1.5 - 0.6 * 0.02)
    for k in range(1, 200):                     # measurement frozen: the lead saturates, limits hold
        late = angles([0.5, 0.4, -0.6, 0.8], 0.02 + 0.02 * k)
    assert late['/zx200/swing/cmd'] == pytest.approx(0.3 + 0.2)
    assert late['/zx200/boom/cmd'] == pytest.approx(1.0)          # upper limit 1.0 < 0.9 + 0.2
    assert late['/zx200/bucket/cmd'] == pytest.approx(2.372)      # upper limit
    nan_swing = angles([0.1, 0, 0, 0], 5.0, np.array([np.nan, 0.9, 1.5, 2.3, np.nan, np.nan]))
    assert '/zx200/swing/cmd' not in nan_swing                    # no measured angle: nothing sent


def test_operasim_tracks_twist_is_skid_steer():
    g = Group('tracks', ('left_track', 'right_track'), 'operasim_tracks_cmd_vel', '/zx200/tracks/cmd_vel')
    ad = get_adapter('operasim_tracks_cmd_vel')(g, EMB, g.topic)
    [(topic, msg)] = ad.encode(np.array([0.4, 1.0]), None, 0.0, TYPES)
    assert topic == '/zx200/tracks/cmd_vel'
    assert (msg.linear.x, msg.angular.z) == pytest.approx((0.7, 0.6 / 2.2))
    assert ad.decode(msg) == pytest.approx({'left_track': 0.4, 'right_track': 1.0})


# ----------------------------------------------------------------------------- sim
def test_mujoco_chain_is_the_urdf_chain(sim):
    """The bucket tip site of the MuJoCo model equals the zx200.xacro chain (front_fk) for random
    angles and swing: the model's joints mean what the machine's joints mean."""
    rng = np.random.default_rng(0)
    sim.reset(0)
    for _ in range(20):
        q = rng.uniform(np.r_[-3.0, EMB.lower[1:4]], np.r_[3.0, EMB.upper[1:4]])
        sim.q = q
        sim._sync()
        r, z = front_fk(*q[1:])
        tip = sim.tip_position()
        expect = [LINKS['swing'][0] + r * math.cos(q[0]), r * math.sin(q[0]), z]
        np.testing.assert_allclose(tip, expect, atol=0.05)   # the URDF's few-cm y offsets are dropped in fk
    # boom 0 = boom pin line horizontal (URDF), positive boom lowers the tip
    assert front_fk(0.3, 1.5, 1.0)[1] < front_fk(0.0, 1.5, 1.0)[1] < front_fk(-0.3, 1.5, 1.0)[1]


def test_hydraulic_lag_limits_and_tracks():
    s = ExcavatorSim(ExcavatorSimConfig(physics_dt=0.01), seed=1)
    tau = s.cfg.tau_front
    s.write([0.0, 0.0, 0.0, 0.5, 0.0, 0.0])
    s.step(tau)
    assert s.read().velocities[3] == pytest.approx(0.5 * (1 - math.exp(-1)), rel=1e-3)   # first-order lag
    s.write([0.0, 0.0, 0.0, 0.8, 0.0, 0.0])
    s.step(10.0)
    st = s.read()
    assert st.positions[3] == EMB.upper[3] and st.velocities[3] == 0.0      # end of stroke
    assert np.isnan(st.positions[4:]).all()                                 # tracks: no position sensor
    with pytest.raises(ValueError, match='right_track'):
        s.write([0, 0, 0, 0, 0, np.nan])
    s.write([0, 0, 0, 0, 9.0, 9.0])                                         # saturates at 5.5 km/h
    s.step(5.0)
    x, y, yaw = s.read().extras['base_pose']
    assert s.read().velocities[4] == pytest.approx(5.5 / 3.6, rel=1e-4) and abs(y) < 1e-9 and yaw == 0.0
    assert x > 5.0
    s.write([0, 0, 0, 0, -0.5, 0.5])                                        # turn on the spot
    s.step(4.0)
    x2, y2, yaw2 = s.read().extras['base_pose']
    assert yaw2 > 0.5 and math.hypot(x2 - x, y2 - y) < 1.0


def test_camera_sees_left_pile_on_the_left(sim):
    sim.reset(4)
    img = sim.render()
    assert img.shape == (96, 96, 3) and img.dtype == np.uint8
    soil = np.array([0.55, 0.38, 0.22]) * 255
    cols = []
    for pile in ('left', 'right'):
        other = 'right' if pile == 'left' else 'left'
        gid = sim._pile_geom[other]
        sim.model.geom_rgba[gid, 3] = 0.0                  # hide the other pile
        try:
            im = sim.render().astype(float)
        finally:
            sim.model.geom_rgba[gid, 3] = 1.0
        mask = np.abs(im - soil).sum(axis=2) < 60
        assert mask.sum() > 10, f'{pile} pile not in the image'
        cols.append(np.nonzero(mask)[1].mean())
    assert cols[0] < 48 < cols[1]


# ----------------------------------------------------------------------------- task
def _run_standalone(task, seed, policy):
    sim = task.sim
    instr = task.reset(seed)
    for _ in range(task.max_steps):
        sim.write(policy(sim.read()))
        sim.step(POLICY_DT)
    return instr, task.success()


def test_expert_succeeds_and_random_does_not(sim):
    task = ExcavatorDigTask(sim)
    seeds = range(12)
    results = [_run_standalone(task, s, task.expert) for s in seeds]
    assert all(ok for _, ok in results), [s for s, (_, ok) in zip(seeds, results) if not ok]
    assert {i for i, _ in results} == set(ExcavatorDigTask.instructions)
    rng = np.random.default_rng(0)
    rand = [_run_standalone(task, s, lambda st: rng.uniform(EMB.action_lower, EMB.action_upper))[1] for s in seeds]
    assert sum(rand) <= 1


def test_success_needs_the_instructed_pile_first(sim):
    """An expert sent to the wrong pile reaches the dump pad loaded but does not succeed."""
    task = ExcavatorDigTask(sim)
    instr = task.reset(5)
    assert instr == task.reset(5)                          # deterministic per seed
    task.target = 'right' if task.target == 'left' else 'left'
    task._plan_episode()
    for _ in range(task.max_steps):
        sim.write(task.expert(sim.read()))
        sim.step(POLICY_DT)
    assert sim.first_pile == task.target and sim.dumped_at is not None
    task.target = 'right' if task.target == 'left' else 'left'
    assert not task.success()


# ----------------------------------------------------------------------------- closed loop through the driver
def _check_limits(out, prev, emb=EMB):
    assert np.all(np.abs(out) <= emb.max_velocity * (1 + 1e-9)), out
    if prev is not None:
        acc = (out - prev) / DT
        assert np.all(np.abs(acc) <= emb.max_acceleration * (1 + 1e-6) + 1e-9), acc


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_dig_and_swing_through_the_driver_stays_within_limits(sim, seed):
    task = ExcavatorDigTask(sim)
    task.reset(seed)
    core = MachineDriverCore(ZX200)
    prev = None
    sent = {}
    for _ in range(task.max_steps):
        now = sim.time
        core.on_command_msg(conv.action_trajectory(EMB, task.expert(sim.read())[None], now, TYPES, dt=POLICY_DT),
                            now, source='/vla/joint_trajectory')
        for _ in range(int(round(POLICY_DT / DT))):
            state = sim.read()
            msgs = core.outputs(sim.time, state, TYPES)
            out = np.array(core._out)
            _check_limits(out, prev)
            prev = out
            # what the machine receives is the safe setpoint: decode the JointCmds
            front, tracks = core.adapters
            got = {**front.decode(dict(msgs)['/zx200/front_cmd']), **tracks.decode(dict(msgs)['/zx200/tracks_cmd'])}
            np.testing.assert_array_equal([got[n] for n in EMB.joint_names], out)
            sent.update(dict(msgs))
            sim.write(out)
            sim.step(DT)
    assert task.success()
    assert {'/zx200/swing/cmd', '/zx200/boom/cmd', '/zx200/arm/cmd', '/zx200/bucket/cmd'} <= set(sent)
    assert not [e for e in core.events if e.kind == 'rejected']


def test_estop_ramps_the_tracks_to_zero_and_publishes_emg_stop():
    s = ExcavatorSim(seed=2)
    core = MachineDriverCore(ZX200)
    drive = np.array([0.2, 0.0, 0.0, 0.0, 1.2, 1.0])
    prev, outs = None, []
    for k in range(150):                                   # 3 s: tracks up to speed
        t = s.time
        if k % 5 == 0:
            core.on_command_msg(conv.action_trajectory(EMB, drive[None], t, TYPES, dt=POLICY_DT), t)
        msgs = core.outputs(t, s.read(), TYPES)
        out = np.array(core._out)
        _check_limits(out, prev)
        prev = out
        s.write(out)
        s.step(DT)
    assert out[4] == pytest.approx(1.2, abs=0.02) and out[5] == pytest.approx(1.0, abs=0.02)   # jerk: tiny overshoot
    core.estop()
    with pytest.raises(CommandRejected) as exc:
        core.on_command_msg(conv.action_trajectory(EMB, drive[None], s.time, TYPES, dt=POLICY_DT), s.time)
    assert exc.value.reason == 'estop_active'
    bools = []
    for k in range(200):                                   # 4 s
        msgs = core.outputs(s.time, s.read(), TYPES)
        bools += [m.data for topic, m in msgs if topic == '/zx200/emg_stop']
        out = np.array(core._out)
        _check_limits(out, prev)
        assert np.all(np.abs(out) <= np.abs(prev) + 1e-12), 'a speed grew during the e-stop'
        outs.append(out)
        prev = out
        s.write(out)
        s.step(DT)
    assert bools == [True]                                 # once, at the edge
    outs = np.array(outs)
    # tracks at 1.2 m/s stop at 0.5 m/s^2 in 2.4 s (+ jerk rounding): zero well within the 4 s
    ramp = 1.2 / EMB.max_acceleration[4]
    stopped = int(np.argmax(np.all(outs[:, 4:] == 0.0, axis=1)))
    assert np.all(outs[stopped:, 4:] == 0.0) and stopped * DT <= ramp + 0.5
    assert np.all(outs[-1] == 0.0) and np.all(np.abs(s.read().velocities) < 1e-3)
    core.rearm()
    msgs = core.outputs(s.time, s.read(), TYPES)
    assert [m.data for topic, m in msgs if topic == '/zx200/emg_stop'] == [False]


def test_emg_stop_reported_by_the_machine_ramps_everything_down():
    core = MachineDriverCore(ZX200)
    rule = EmgStopInterlock()
    targets = np.array([0.5, 0.2, -0.3, 0.4, 1.0, 1.0])
    st = _state([0.0, 0.0, 1.5, 1.0, np.nan, np.nan])
    assert rule.apply(targets, st, EMB) == (targets, None)
    new, detail = rule.apply(targets, _state(st.positions, emg_stop=True), EMB)
    assert np.all(new == 0.0) and 'emg_stop' in detail
    prev = None
    for k in range(100):
        if k % 5 == 0:
            core.on_trajectory(EMB.joint_names, None, targets[None], np.array([0.1]), k * DT, k * DT)
        out = core.tick(k * DT, st)
        prev = out
    assert np.all(np.abs(prev[4:]) > 0.5)
    estopped = _state(st.positions, emg_stop=True)
    for k in range(100, 400):
        if k % 5 == 0:                                     # the policy keeps commanding: the rule holds
            core.on_trajectory(EMB.joint_names, None, targets[None], np.array([0.1]), k * DT, k * DT)
        out = core.tick(k * DT, estopped)
        assert rule.violated(estopped, out, prev, EMB) is None
        _check_limits(out, prev)
        prev = out
    assert np.all(prev == 0.0)
    assert any(e.kind == 'interlock' for e in core.events)


def test_bang_bang_commands_stay_within_velocity_and_acceleration_limits():
    """A policy that swings every DOF between beyond +-max_velocity and 80 % of it: the driver's
    output never leaves the velocity or acceleration limits (jerk smoothing included)."""
    core = MachineDriverCore(ZX200)
    st = _state([0.0, 0.0, 1.5, 1.0, np.nan, np.nan])
    prev = None
    for k in range(600):
        t = k * DT
        if k % 5 == 0:
            sign = 1.0 if (k // 20) % 2 == 0 else -1.0
            scale = 1.2 if (k // 20) % 3 else 0.96
            core.on_trajectory(EMB.joint_names, None, (sign * scale * EMB.max_velocity)[None],
                               np.array([POLICY_DT]), t, t)
        out = core.tick(t, st)
        _check_limits(out, prev)
        prev = out
