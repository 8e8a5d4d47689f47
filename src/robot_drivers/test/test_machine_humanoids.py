"""Humanoids (Unitree G1, Unitree H1, Fourier GR1): embodiment data, the Unitree native messages and
adapters, the simulators, and the wave / walk-forward closed loop through MachineDriverCore.

The closed loop is what runs on the robot: the scripted expert's action rows go out as the policy's
``JointTrajectory`` at the policy rate, the driver core interpolates and limits them at the driver
rate, each tick's native messages (G1 / H1: ``unitree_hg`` / ``unitree_go`` ``LowCmd`` on
``/arm_sdk`` and a ``unitree_api/Request`` SetVelocity; GR1: ``JointTrajectory`` + ``TwistStamped``)
are serialised to CDR and read back, and the values they carry drive the simulator.
"""
import json
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from robot_drivers import conversions as conv
from robot_drivers.embodiment import get_embodiment
from robot_drivers.machine import MachineDriverCore, MachineState, get_machine
from robot_drivers.machines import humanoids as hum
from robot_drivers.msgs import register_all, unitree
from robot_drivers.safety import ACCELERATION_LIMIT, CommandRejected
from robot_drivers.sim import humanoid as hsim

HUMANOIDS = ('unitree_g1', 'unitree_h1', 'fourier_gr1')
UNITREE = ('unitree_g1', 'unitree_h1')


@pytest.fixture(scope='module')
def types():
    return conv.rosbags_types()


@pytest.fixture(scope='module')
def sims():
    made = {}
    yield lambda name: made.setdefault(name, get_machine(name).make_sim())
    for sim in made.values():
        sim.close()


def _roundtrip(msg, msg_type):
    """Serialise to CDR and back, as the message travels to the robot."""
    store = conv.typestore()
    return store.deserialize_cdr(store.serialize_cdr(msg, msg_type), msg_type)


# ------------------------------------------------------------------------------ embodiment data
@pytest.mark.parametrize('name', HUMANOIDS)
def test_humanoid_action_space_is_upper_body_positions_then_base_velocity(name):
    m = get_machine(name)
    emb = m.embodiment
    assert get_embodiment(name) is emb and emb.machine_class == 'humanoid'
    n_upper = {'unitree_g1': 17, 'unitree_h1': 9, 'fourier_gr1': 20}[name]
    assert emb.dof == n_upper + 3
    assert emb.interfaces == ['position'] * n_upper + ['velocity'] * 3
    assert emb.joint_names[-3:] == ['base_vx', 'base_vy', 'base_wz']
    assert np.all(np.isinf(emb.lower[-3:])) and np.allclose(emb.max_velocity[-3:], [0.5, 0.3, 0.6])
    assert np.all(np.isfinite(emb.max_acceleration)) and np.all(emb.max_velocity[:n_upper] == 2.0)
    assert all(j.source for j in emb.joints)
    assert [g.name for g in emb.groups] == ['upper_body', 'base']
    assert emb.group('base').joints == hum.BASE_DOFS
    legs = {'unitree_g1': hum.G1_LEGS, 'unitree_h1': hum.H1_LEGS, 'fourier_gr1': hum.GR1_LEGS}[name]
    assert emb.forbidden_joints == legs and len(legs) in (10, 12)
    assert not any('knee' in n or 'hip' in n or 'ankle' in n for n in emb.joint_names)
    outputs = {g.name: (g.output, g.topic) for g in emb.groups}
    if name == 'fourier_gr1':
        assert outputs == {'upper_body': ('joint_trajectory', '/upper_body_controller/joint_trajectory'),
                           'base': ('twist_stamped', '/cmd_vel')}
    else:
        sport = '/api/sport/request' if name == 'unitree_g1' else '/api/loco/request'
        assert outputs == {'upper_body': ('unitree_arm_sdk', '/arm_sdk'), 'base': ('unitree_sport', sport)}


def test_gr1_limits_and_legs_are_the_installed_robosuite_mjcf():
    root = ET.parse(hsim.gr1_model_dir() / 'robot.xml').getroot()
    ranges = {j.get('name'): [float(v) for v in j.get('range').split()]
              for j in root.iter('joint') if j.get('range')}
    emb = hum.GR1
    upper = [n for n, v in zip(emb.joint_names, emb.is_velocity) if not v]
    assert np.array_equal(np.array([ranges[n] for n in upper]), np.stack([emb.lower, emb.upper], 1)[:len(upper)])
    # every other hinge of the model is a leg joint, and every one is forbidden
    assert sorted(set(ranges) - set(upper)) == sorted(emb.forbidden_joints)


def test_unitree_motor_tables_match_the_examples():
    """G1: 29-DOF G1Arm7JointIndex (waist 12-14, left arm 15-21, right arm 22-28, weight 29);
    H1: h1_arm_sdk_dds_example JointIndex (torso 6, right arm 12-15, left arm 16-19, weight 9)."""
    g1 = hum.G1.group('upper_body').options
    assert [g1['motor_index'][n] for n in hum.G1.group('upper_body').joints] == list(range(12, 29))
    assert g1['weight_index'] == 29 and g1['message'] == unitree.HG_LOW_CMD
    assert g1['kp']['waist_pitch_joint'] == 240.0 and g1['kp']['left_elbow_joint'] == 60.0
    h1 = hum.H1.group('upper_body').options
    assert h1['motor_index']['torso_joint'] == 6 and h1['motor_index']['left_elbow_joint'] == 19
    assert h1['motor_index']['right_shoulder_pitch_joint'] == 12 and h1['weight_index'] == 9
    assert h1['message'] == unitree.GO_LOW_CMD


@pytest.mark.parametrize('name', HUMANOIDS)
def test_a_command_naming_a_leg_joint_is_rejected(name, sims):
    m = get_machine(name)
    emb = m.embodiment
    sim = sims(name)
    sim.reset(0)
    core = MachineDriverCore(m)
    leg = emb.forbidden_joints[3]
    s = sim.read()
    # the leg joint alone, and the leg joint next to every legitimate DOF
    for names in ([leg], emb.joint_names + [leg]):
        pos = np.zeros((1, len(names)))
        vel = np.zeros((1, len(names)))
        with pytest.raises(CommandRejected, match=leg) as exc:
            core.on_trajectory(names, pos, vel, np.array([0.1]), 0.0, 0.0, source='policy')
        assert exc.value.reason == 'forbidden_joints'
    with pytest.raises(CommandRejected) as exc:
        core.on_trajectory(emb.joint_names[:-1] + ['base_vz'], np.zeros((1, emb.dof)), np.zeros((1, emb.dof)),
                           np.array([0.1]), 0.0, 0.0)
    assert exc.value.reason == 'unknown_joints'
    # nothing was accepted: the upper body holds where it is, the base stays still
    core.tick(0.0, s)
    out = core.tick(0.02, s)
    assert np.allclose(out[sim.upper], s.positions[sim.upper]) and np.all(out[~sim.upper] == 0.0)


# ------------------------------------------------------------------------------ Unitree messages
def test_unitree_definitions_register_and_name_their_source(types):
    store = register_all(conv.typestore())
    for name, text in unitree.MSG_DEFINITIONS.items():
        assert 'github.com/unitreerobotics/unitree_ros2/blob/' in text and name.split('/')[-1] + '.msg' in text
        assert name in store.types
    low = types.lookup(unitree.HG_LOW_CMD)
    assert [f for f in low.__dataclass_fields__ if not f.startswith('__')] == \
        ['mode_pr', 'mode_machine', 'motor_cmd', 'reserve', 'crc']


@pytest.mark.parametrize('name', UNITREE)
def test_arm_sdk_low_cmd_is_well_formed_and_ramps_its_weight(name, types, sims):
    emb = get_machine(name).embodiment
    group = emb.group('upper_body')
    ad = unitree.ArmSdkAdapter(group, emb, '/arm_sdk')
    n_motors = 35 if name == 'unitree_g1' else 20
    idx = [group.options['motor_index'][n] for n in group.joints]
    w_idx = group.options['weight_index']
    rng = np.random.default_rng(0)
    lo, hi = emb.lower[:len(group.joints)], emb.upper[:len(group.joints)]
    dt, weights = 0.02, []
    for k in range(int(round(6.0 / dt))):
        sp = rng.uniform(lo, hi)
        if k % 7 == 0:                     # exactly at a limit: float32 rounding must stay inside
            sp = np.where(rng.random(sp.shape) < 0.5, lo, hi)
        ((topic, msg),) = ad.encode(sp, None, k * dt, types)
        back = _roundtrip(msg, ad.msg_type)
        assert topic == '/arm_sdk' and len(back.motor_cmd) == n_motors
        q = np.array([back.motor_cmd[i].q for i in idx], dtype=np.float64)
        assert np.all(q >= lo) and np.all(q <= hi)
        assert np.allclose(q, sp, atol=1e-6, rtol=0)
        got = ad.decode(back, source=topic)
        assert list(got) == list(group.joints) and np.array_equal(np.array(list(got.values())), q)
        assert [back.motor_cmd[i].kp for i in idx] == [group.options['kp'][n] for n in group.joints]
        assert [back.motor_cmd[i].kd for i in idx] == [group.options['kd'][n] for n in group.joints]
        others = [i for i in range(n_motors) if i not in idx and i != w_idx]
        assert all(back.motor_cmd[i].q == 0 and back.motor_cmd[i].kp == 0 for i in others)
        weights.append(float(back.motor_cmd[w_idx].q))
    w = np.array(weights)
    # 0 -> 1 at weight_rate 0.2/s (the example's delta_weight = 0.2 * control_dt): 5 s, then stays 1
    assert w[0] == 0.0 and np.all(np.diff(w) >= 0)
    assert np.allclose(np.diff(w)[:200], 0.2 * dt, atol=1e-6)
    assert w[int(round(5.0 / dt)) - 1] < 1.0 and np.all(w[int(round(5.0 / dt)) + 1:] == 1.0)
    # e-stop: the weight ramps back to 0 at the same rate (the robot's controller takes the arms), re-arm: up
    assert ad.estop_messages(True, 6.0, types) == []
    down = [float(ad.encode(lo, None, 6.0 + k * dt, types)[0][1].motor_cmd[w_idx].q) for k in range(1, 300)]
    assert np.allclose(np.diff(down)[:200], -0.2 * dt, atol=1e-6) and down[-1] == 0.0 and min(down) == 0.0
    t_last = 6.0 + 299 * dt
    ad.estop_messages(False, t_last, types)
    up = float(ad.encode(lo, None, t_last + dt, types)[0][1].motor_cmd[w_idx].q)
    assert 0.0 < up <= 0.2 * dt + 1e-9
    # malformed messages are named
    bad = _roundtrip(ad.encode(lo, None, 20.0, types)[0][1], ad.msg_type)
    bad.motor_cmd[w_idx].q = 1.5
    with pytest.raises(ValueError, match=rf'motor_cmd\[{w_idx}\]\.q'):
        ad.decode(bad, source='/arm_sdk')
    bad.motor_cmd[w_idx].q = 1.0
    bad.motor_cmd[idx[2]].q = np.nan
    with pytest.raises(ValueError, match=group.joints[2]):
        ad.decode(bad, source='/arm_sdk')


def test_arm_sdk_rejects_inconsistent_options():
    emb = hum.G1
    g = emb.group('upper_body')
    for opts, match in (({'weight_index': 12}, 'distinct'), ({'weight_index': 35}, 'distinct'),
                        ({'message': 'unitree_hg/msg/HandCmd'}, 'message'), ({'weight_rate': 0.0}, 'weight_rate')):
        bad = type(g)(g.name, g.joints, g.output, g.topic, options={**g.options, **opts})
        with pytest.raises(ValueError, match=match):
            unitree.ArmSdkAdapter(bad, emb, '/arm_sdk')
    kp = dict(g.options['kp'])
    kp.pop('left_elbow_joint')
    with pytest.raises(ValueError, match='left_elbow_joint'):
        unitree.ArmSdkAdapter(type(g)(g.name, g.joints, g.output, g.topic, options={**g.options, 'kp': kp}),
                              emb, '/arm_sdk')


@pytest.mark.parametrize('name', UNITREE)
def test_sport_request_is_a_set_velocity_call(name, types):
    emb = get_machine(name).embodiment
    group = emb.group('base')
    ad = unitree.SportRequestAdapter(group, emb, group.topic)
    api_id = 7105 if name == 'unitree_g1' else 8105
    ids = []
    for k, sp in enumerate(([0.3, -0.1, 0.25], [0.0, 0.0, 0.0], [-0.5, 0.3, -0.6])):
        ((topic, msg),) = ad.encode(np.array(sp), None, 1.0, types)        # same clock: ids still increase
        back = _roundtrip(msg, unitree.REQUEST)
        assert topic == group.topic and back.header.identity.api_id == api_id
        assert json.loads(back.parameter) == {'velocity': sp, 'duration': 0.25}
        assert back.header.policy.noreply and back.header.lease.id == 0 and len(back.binary) == 0
        assert ad.decode(back, source=topic) == dict(zip(hum.BASE_DOFS, sp))
        ids.append(back.header.identity.id)
    assert ids[0] == 10 ** 9 and np.all(np.diff(ids) > 0)
    back.header.identity.api_id = 7101
    with pytest.raises(ValueError, match='api_id'):
        ad.decode(back, source=topic)
    back.header.identity.api_id = api_id
    for param in ('{"velocity": [1, 2]', '{"velocity": [1, 2], "duration": 1}', '{"velocity": [0, 0, NaN], "duration": 1}'):
        back.parameter = param
        with pytest.raises(ValueError, match='parameter'):
            ad.decode(back, source=topic)


# ------------------------------------------------------------------------------ simulators
@pytest.mark.parametrize('name', HUMANOIDS)
def test_sim_tracks_the_upper_body_and_integrates_the_base(name, sims):
    sim = sims(name)
    emb = sim.embodiment
    sim.reset(4)
    s0 = sim.read()
    assert np.all(np.isnan(s0.positions[~sim.upper])) and np.all(s0.velocities == 0.0) and s0.stamp == 0.0
    sp = np.clip(np.nan_to_num(s0.positions) + 0.1, emb.lower, emb.upper)
    sp[~sim.upper] = [0.4, 0.0, 0.5]
    sim.write(sp)
    for _ in range(50):
        sim.step(0.02)
    s1 = sim.read()
    assert s1.stamp == pytest.approx(1.0)
    assert np.max(np.abs(s1.positions[sim.upper] - sp[sim.upper])) < 0.02
    assert np.allclose(s1.velocities[~sim.upper], [0.4, 0.0, 0.5], atol=0.02)
    x, y, yaw = sim.base_pose
    assert 0.2 < x < 0.4 and y > 0.0 and yaw == pytest.approx(0.5 * (1.0 - 0.3 * (1 - math.exp(-1 / 0.3))), abs=0.01)
    assert len(sim.log) == 50
    with pytest.raises(ValueError, match=f'{emb.dof} DOFs'):
        sim.write(np.zeros(emb.dof - 1))
    with pytest.raises(ValueError, match='base_vy'):
        sim.write(np.where(np.array(emb.joint_names) == 'base_vy', np.inf, 0.0))
    sim.reset(4)
    assert np.array_equal(sim.read().positions, s0.positions, equal_nan=True)


def test_gr1_render_shows_the_robot(sims):
    pytest.importorskip('mujoco', reason='mujoco renders the GR1 model')
    sim = sims('fourier_gr1')
    sim.reset(0)
    img = sim.render(size=64)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert img.reshape(-1, 3).std(axis=0).max() > 10


# ------------------------------------------------------------------------------ closed loop
def _run(name, task_name, sim, types, seed=0, estop_at=None):
    machine = get_machine(name)
    emb = machine.embodiment
    task = hsim.TASKS[task_name](sim)
    task.reset(seed)
    core = MachineDriverCore(machine)
    adapters = core.adapters
    dt = 1.0 / machine.control_rate_hz
    per_step = int(round(machine.control_rate_hz / emb.control_rate_hz))
    s0 = sim.read()
    tick, outs, natives, weights, rejected = 0, [], [], [], []
    succeeded = False
    for step in range(task.max_steps):
        now = tick * dt
        if estop_at is not None and step == estop_at:
            core.estop()
        cmd = conv.action_trajectory(emb, task.expert(sim.read())[None], now, types,
                                     times=np.array([1.0 / emb.control_rate_hz]))
        try:
            core.on_command_msg(_roundtrip(cmd, 'trajectory_msgs/msg/JointTrajectory'), now, source='policy')
        except CommandRejected as exc:
            rejected.append(exc.reason)
        for _ in range(per_step):
            now = tick * dt
            state = sim.read()
            # MachineDriverCore.outputs, step by step, to keep the float64 setpoint next to its messages
            sp = core.tick(now, state)
            msgs = core.pending_messages(now, types)
            for ad in adapters:
                msgs += ad.encode(sp[[emb.joint_names.index(n) for n in ad.group.joints]], state, now, types)
            outs.append(sp)
            assert [t for t, _ in msgs] == [ad.topic for ad in adapters]
            values = {}
            for ad, (topic, msg) in zip(adapters, msgs):
                back = _roundtrip(msg, ad.msg_type)
                values.update(ad.decode(back, source=topic))
                if ad.key == 'unitree_arm_sdk':
                    weights.append(float(back.motor_cmd[ad.weight_index].q))
            native = np.array([values[n] for n in emb.joint_names])
            natives.append(native)
            sim.write(native)
            sim.step(dt)
            tick += 1
        if estop_at is None and task.success():
            succeeded = True
            break
    return task, core, s0, np.array(outs), np.array(natives), np.array(weights), rejected, succeeded


def _check_limits(emb, dt, out, s0):
    """Positions in limits; velocities and accelerations of the position setpoints, and velocities and
    accelerations of the velocity setpoints, within the embodiment's limits (starting at rest)."""
    is_v = emb.is_velocity
    p = out[:, ~is_v]
    assert np.all(p >= emb.lower[~is_v]) and np.all(p <= emb.upper[~is_v])
    v_pos = np.diff(np.vstack([s0.positions[~is_v][None], p]), axis=0) / dt
    v = np.zeros((len(out), emb.dof))
    v[:, ~is_v], v[:, is_v] = v_pos, out[:, is_v]
    acc = np.diff(np.vstack([np.zeros((1, emb.dof)), v]), axis=0) / dt
    assert np.all(np.abs(v) <= emb.max_velocity * (1 + 1e-9) + 1e-12), np.abs(v).max(axis=0)
    assert np.all(np.abs(acc) <= emb.max_acceleration * (1 + 1e-6) + 1e-9), np.abs(acc).max(axis=0)
    return v


@pytest.mark.parametrize('task_name', ['wave', 'walk'])
@pytest.mark.parametrize('name', HUMANOIDS)
def test_closed_loop_through_the_driver_succeeds_within_limits(name, task_name, sims, types):
    sim = sims(name)
    emb = sim.embodiment
    task, core, s0, out, native, weights, rejected, ok = _run(name, task_name, sim, types)
    assert ok, f'{name} {task_name}: no success in {task.max_steps} steps'
    assert not rejected
    v = _check_limits(emb, 1.0 / get_machine(name).control_rate_hz, out, s0)
    # what went on the wire is the driver's output (float32 on the Unitree arm SDK)
    assert np.allclose(native, out, atol=1e-6, rtol=0)
    assert any(e.kind == ACCELERATION_LIMIT for e in core.events)     # the limits shaped the motion
    if task_name == 'walk':
        assert np.max(v[:, list(emb.joint_names).index('base_vx')]) == pytest.approx(task.speed)
        assert np.allclose(out[:, sim.upper], s0.positions[sim.upper], atol=1e-9)    # arms held
    else:
        assert np.max(np.abs(v[:, ~sim.upper])) == 0.0                                 # base still
    if name in UNITREE:
        assert weights[0] == 0.0 and np.all(np.diff(weights) >= 0) and np.all(weights <= 1.0)


def test_estop_mid_walk_ramps_the_base_down_and_releases_the_arm_sdk(sims, types):
    name = 'unitree_g1'
    sim = sims(name)
    emb = sim.embodiment
    stop_at = 20
    task, core, s0, out, native, weights, rejected, _ = _run(name, 'walk', sim, types, estop_at=stop_at)
    _check_limits(emb, 0.02, out, s0)
    ix = list(emb.joint_names).index('base_vx')
    k = stop_at * 5
    assert out[k - 1, ix] > 0.3                                      # walking when the e-stop latched
    decel = emb.max_acceleration[ix]
    ramp = int(math.ceil(out[k - 1, ix] / (decel * 0.02)))
    assert np.all(out[k + ramp:, ~sim.upper] == 0.0)                 # stopped at the deceleration limit
    assert out[k + ramp - 2, ix] > 0.0                               # ... and not before
    assert set(rejected) == {'estop_active'} and len(rejected) == task.max_steps - stop_at
    assert ('estop', 'start') in [(e.kind, e.edge) for e in core.events]
    w = np.asarray(weights)
    assert np.all(np.diff(w[:k]) >= 0) and np.all(np.diff(w[k:]) <= 0) and w[k] < w[k - 1]


# ------------------------------------------------------------------------------ property test
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_VALUE = st.one_of(st.floats(-10.0, 10.0), st.sampled_from([np.nan, np.inf, -np.inf, 1e6, -1e6]))
_EVENT = st.one_of(
    st.tuples(st.just('cmd'), st.lists(_VALUE, min_size=3, max_size=3), st.integers(1, 3)),  # burst of commands
    st.tuples(st.just('leg'), st.integers(0, 9), st.just(1)),       # a command naming a leg joint
    st.tuples(st.just('silence'), st.integers(1, 40), st.just(0)),  # ticks without commands
    st.tuples(st.just('estop'), st.just(0), st.just(0)),
    st.tuples(st.just('rearm'), st.just(0), st.just(0)),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(HUMANOIDS), events=st.lists(_EVENT, min_size=1, max_size=25), seed=st.integers(0, 99))
def test_arbitrary_command_streams_never_leave_the_limits(name, events, seed):
    """NaN / Inf / huge values, leg joints, bursts, silence and e-stop toggling: every setpoint stays
    in the position, velocity and acceleration limits; the watchdog holds on the first tick past its
    timeout; the e-stop stays latched (commands rejected, base velocity 0 after its ramp) until re-arm.
    The robot tracks the setpoint perfectly (the hardest case for the limits: no lag absorbs a step)."""
    machine = get_machine(name)
    emb = machine.embodiment
    rng = np.random.default_rng(seed)
    dt = 1.0 / machine.control_rate_hz
    timeout = machine.safety.watchdog_timeout_s
    clock = [0.0]
    fired = []
    core = MachineDriverCore(machine, on_event=lambda e: fired.append((e.kind, e.edge, clock[0])))
    is_v = emb.is_velocity
    home = np.clip(rng.uniform(-0.5, 0.5, emb.dof), emb.lower, emb.upper)
    pos = np.where(is_v, np.nan, home)
    vel = np.zeros(emb.dof)
    prev_out, prev_v = None, np.zeros(emb.dof)
    tick, estopped, estop_tick = 0, False, None
    pending, expected_holds = None, []          # accepted command the watchdog still watches; hold times

    def run_ticks(n):
        nonlocal tick, pos, vel, prev_out, prev_v, pending
        for _ in range(n):
            now = clock[0] = tick * dt
            if pending is not None and now - pending > timeout:
                expected_holds.append(now)
                pending = None
            out = core.tick(now, MachineState(pos, vel, now))
            assert np.all(out[~is_v] >= emb.lower[~is_v]) and np.all(out[~is_v] <= emb.upper[~is_v])
            v = np.where(is_v, out, (out - (pos if prev_out is None else prev_out)) / dt)
            v = np.where(is_v | (prev_out is not None), v, 0.0)
            assert np.all(np.abs(v) <= emb.max_velocity * (1 + 1e-9) + 1e-12)
            assert np.all(np.abs(v - prev_v) / dt <= emb.max_acceleration * (1 + 1e-6) + 1e-9)
            if estopped and tick - estop_tick > int(np.ceil(np.max(emb.max_velocity / emb.max_acceleration) / dt)) + 1:
                assert np.all(v == 0.0)                  # stopped and held while latched
            prev_out, prev_v = out, v
            pos = np.where(is_v, np.nan, out)           # perfect tracking
            vel = np.where(is_v, out, v)
            tick += 1

    for kind, a, b in events:
        now = tick * dt
        if kind == 'cmd':
            row = np.where(is_v, 0.0, home)
            row[rng.choice(emb.dof, 3, replace=False)] = a
            for _ in range(b):
                try:
                    core.on_trajectory(emb.joint_names, row[None], row[None], np.array([0.1]), now, now, source='p')
                    pending = now
                    assert not estopped
                except CommandRejected as exc:
                    assert exc.reason == ('estop_active' if estopped else 'non_finite'), exc.reason
            run_ticks(1)
        elif kind == 'leg':
            names = emb.joint_names[:-1] + [emb.forbidden_joints[a]]
            with pytest.raises(CommandRejected) as exc:
                core.on_trajectory(names, np.zeros((1, emb.dof)), np.zeros((1, emb.dof)), np.array([0.1]), now, now)
            assert exc.value.reason == ('estop_active' if estopped else 'forbidden_joints')
            run_ticks(1)
        elif kind == 'silence':
            run_ticks(a)
        elif kind == 'estop':
            core.estop()
            pending = None
            if not estopped:
                estopped, estop_tick = True, tick
        else:
            core.rearm()
            pending = None
            estopped = False
    # the watchdog: a hold starts on the first tick more than the timeout after the last accepted
    # command (while the e-stop has not dropped it), and at no other time
    holds = [at for kind, edge, at in fired if (kind, edge) == ('watchdog_hold', 'start')]
    assert holds == expected_holds
