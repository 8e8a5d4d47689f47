"""Wheel loader and articulated truck: articulated-steering kinematics, TwistStamped conversion,
machine data, the analytic sims and their tasks closed-loop through MachineDriverCore and the native
messages, and the truck's dump interlocks.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robot_drivers import conversions as conv
from robot_drivers.adapters import build_adapters
from robot_drivers.articulated import (ARTICULATION, DRIVE, ArticulatedGeometry, ArticulatedTwistAdapter,
                                       articulation_rate, rear_speed, steady_state_articulation, turning_radii,
                                       twist_to_targets, yaw_rate)
from robot_drivers.embodiment import get_embodiment
from robot_drivers.machine import MachineDriverCore, MachineState, get_machine
from robot_drivers.machines.articulated_truck import (BODY_DOWN, DUMP_BODY, STOPPED_SPEED, DumpOnlyWhenStopped,
                                                      NoDriveWithBodyRaised)
from robot_drivers.machines.wheel_loader import BOOM_CARRY, BOOM_RAISED, RAISED_SPEED_LIMIT
from robot_drivers.safety import END, INTERLOCK, START, CommandRejected
from robot_drivers.sim.articulated import (TASKS, ArticulatedSimConfig, ArticulatedTruckSim, WheelLoaderSim,
                                           wrap_angle)

LOADER, TRUCK = 'wheel_loader', 'articulated_truck'
DT = 0.02        # driver tick (50 Hz)
POLICY_DT = 0.1  # policy step (10 Hz)


@pytest.fixture(scope='module')
def types():
    return conv.rosbags_types()


def _cdr(msg, msg_type):
    store = conv.typestore()
    return store.deserialize_cdr(store.serialize_cdr(msg, msg_type), msg_type)


def _twist(types, v, w, *, lateral=0.0):
    vec = types.lookup('geometry_msgs/msg/Vector3')
    tw = types.lookup('geometry_msgs/msg/Twist')(linear=vec(x=v, y=lateral, z=0.0), angular=vec(x=0.0, y=0.0, z=w))
    return types.lookup('geometry_msgs/msg/TwistStamped')(header=conv.header(0.0, 'base_link', types), twist=tw)


# ------------------------------------------------------------------------------ kinematics
GEOMS = {'loader': ArticulatedGeometry(1.6, 1.6, math.radians(40)),
         'truck': ArticulatedGeometry(1.9, 3.6, math.radians(45))}


def test_kinematics_special_cases():
    g = GEOMS['truck']
    assert yaw_rate(3.0, 0.0, 0.0, g) == 0.0                                   # straight
    # steering in place: the front body yaws by l_r / (l_f + l_r) of the articulation rate at gamma = 0
    assert yaw_rate(0.0, 0.0, 0.2, g) == pytest.approx(0.2 * 3.6 / 5.5)
    # steady circle: yaw rate * front radius = speed; radii of the centre-pivot loader are equal
    for gamma in (0.2, -0.5, 0.7):
        rf, rr = turning_radii(gamma, g)
        assert yaw_rate(2.0, gamma, 0.0, g) * rf == pytest.approx(2.0)
        assert rear_speed(2.0, gamma, 0.0, g) == pytest.approx(yaw_rate(2.0, gamma, 0.0, g) * rr)
    rf, rr = turning_radii(0.5, GEOMS['loader'])
    assert rf == pytest.approx(rr)
    assert turning_radii(0.0, g) == (math.inf, math.inf)
    with pytest.raises(ValueError, match='l_r'):
        ArticulatedGeometry(1.0, 0.0, 0.5)
    with pytest.raises(ValueError, match='zero'):
        steady_state_articulation(0.0, 0.1, g)


@settings(max_examples=60, deadline=None, database=None)
@given(v=st.floats(-10, 10), gamma=st.floats(-0.78, 0.78), rate=st.floats(-0.4, 0.4),
       which=st.sampled_from(['loader', 'truck']))
def test_twist_round_trip(v, gamma, rate, which):
    g = GEOMS[which]
    w = yaw_rate(v, gamma, rate, g)
    assert articulation_rate(v, w, gamma, g) == pytest.approx(rate, abs=1e-9)
    target, speed, r = twist_to_targets(v, w, gamma, g, 0.1)
    assert speed == v and r == pytest.approx(rate, abs=1e-9)
    assert target == pytest.approx(float(np.clip(gamma + rate * 0.1, -g.max_articulation, g.max_articulation)))
    if abs(v) > 0.05 and abs(gamma) <= g.max_articulation:
        # the steady-state articulation of a steady circle's twist is that circle's articulation
        assert steady_state_articulation(v, yaw_rate(v, gamma, 0.0, g), g) == pytest.approx(gamma, abs=1e-9)


@pytest.mark.parametrize('sim_cls', [WheelLoaderSim, ArticulatedTruckSim])
def test_sim_drives_the_steady_circle_of_the_formula(sim_cls):
    """gamma held: the front axle stays on the circle of radius R_f = (l_f cos g + l_r) / sin g, the rear
    axle on R_r = (l_f + l_r cos g) / sin g, whatever the speed profile (the path depends on gamma only)."""
    sim = sim_cls(ArticulatedSimConfig(initial_pose_noise=(0.0, 0.0)), seed=0)
    emb, g = sim.embodiment, sim.geom
    gamma = 0.5
    cmd = np.where(emb.is_velocity, 0.0, 0.0)
    cmd[emb.joint_names.index(ARTICULATION)] = gamma
    sim.write(cmd)
    sim.step(6.0)                                      # articulate at rest (the front frame yaws)
    assert sim.q[emb.joint_names.index(ARTICULATION)] == pytest.approx(gamma, abs=1e-6)
    rf, rr = turning_radii(gamma, g)
    c = np.array([sim.x - rf * math.sin(sim.theta), sim.y + rf * math.cos(sim.theta)])   # centre, left of the heading
    cmd[emb.joint_names.index(DRIVE)] = 2.0
    sim.write(cmd)
    d_front, d_rear = [], []
    for _ in range(200):
        sim.step(0.05)
        d_front.append(math.hypot(sim.x - c[0], sim.y - c[1]))
        d_rear.append(float(np.hypot(*(sim.rear_axle() - c))))
    assert abs(wrap_angle(sim.theta)) > 0 and sim.t > 12.0
    assert np.allclose(d_front, rf, rtol=2e-3) and np.allclose(d_rear, rr, rtol=2e-3)


def test_sim_rear_axle_rolls_without_lateral_slip():
    """Independent check of the yaw-rate formula: with gamma and v varying, the rear axle point computed
    from the geometry moves along the rear body's heading (no lateral slip), as the model assumes."""
    sim = ArticulatedTruckSim(ArticulatedSimConfig(initial_pose_noise=(0.0, 0.0), internal_dt_s=0.001), seed=0)
    emb = sim.embodiment
    ia, iv = emb.joint_names.index(ARTICULATION), emb.joint_names.index(DRIVE)
    prev = sim.rear_axle()
    lateral, speeds = [], []
    for k in range(400):
        cmd = np.zeros(emb.dof)
        cmd[ia] = 0.6 * math.sin(0.05 * k)
        cmd[iv] = 3.0 * math.cos(0.02 * k)
        sim.write(cmd)
        sim.step(0.01)
        cur = sim.rear_axle()
        d = (cur - prev) / 0.01
        th_r = sim.theta - sim.q[ia]
        lateral.append(-math.sin(th_r) * d[0] + math.cos(th_r) * d[1])
        speeds.append(float(np.hypot(*d)))
        prev = cur
    assert max(speeds) > 1.0
    assert max(abs(x) for x in lateral) < 0.01 * max(speeds)


# ------------------------------------------------------------------------------ machine data
def test_embodiments_are_registered_with_interfaces_limits_and_sources():
    loader, truck = get_embodiment(LOADER), get_embodiment(TRUCK)
    assert loader.joint_names == [ARTICULATION, DRIVE, 'boom', 'bucket']
    assert loader.interfaces == ['position', 'velocity', 'position', 'position']
    assert truck.joint_names == [ARTICULATION, DRIVE, DUMP_BODY]
    assert truck.interfaces == ['position', 'velocity', 'position']
    assert loader.upper[0] == pytest.approx(math.radians(40)) and truck.upper[0] == pytest.approx(math.radians(45))
    assert truck.upper[2] == pytest.approx(math.radians(70)) and truck.lower[2] == 0.0
    assert loader.max_velocity[1] == pytest.approx(13 / 3.6) and truck.max_velocity[1] == pytest.approx(57 / 3.6)
    for emb in (loader, truck):
        assert np.all(np.isfinite(emb.max_acceleration)) and all(j.source for j in emb.joints)
        assert emb.machine_class in ('wheel_loader', 'articulated_truck')
    dump = truck.group('dump')
    (ad,) = [a for a in build_adapters(truck) if a.group.name == 'dump']
    assert dump.joints == (DUMP_BODY,) and ad.topics() == [('/a40g/vessel/cmd', 'std_msgs/msg/Float64')]
    front = [a for a in build_adapters(loader) if a.group.name == 'front'][0]
    assert [t for t, _ in front.topics()] == ['/l120h/boom/cmd', '/l120h/bucket/cmd']
    assert [i.msg_type for i in get_machine(LOADER).inputs] == ['geometry_msgs/msg/TwistStamped']


# ------------------------------------------------------------------------------ TwistStamped in and out
def test_twist_stamped_input_drives_the_commanded_yaw_rate(types):
    machine = get_machine(LOADER)
    emb = machine.embodiment
    (inp,) = machine.inputs
    sim = machine.make_sim(seed=0)
    core = MachineDriverCore(machine)
    twist_out = build_adapters(emb, outputs={'base': 'articulated_twist'}, topics={'base': '/l120h/cmd_vel'})[0]
    assert isinstance(twist_out, ArticulatedTwistAdapter)
    v_cmd, w_cmd = 1.5, 0.2
    msg = _cdr(_twist(types, v_cmd, w_cmd), 'geometry_msgs/msg/TwistStamped')
    t, thetas, out_twists = 0.0, [], []
    for k in range(120):                                       # 12 s of a 10 Hz twist stream
        core.on_trajectory(*inp.to_command(msg, sim.read(), emb), t, t, source='/cmd_vel')
        for _ in range(5):
            state = sim.read()
            out = core.tick(t, state)
            (topic, tw), = twist_out.encode(out[:2], state, t, types)
            out_twists.append((tw.twist.linear.x, tw.twist.angular.z))
            sim.write(out)
            sim.step(DT)
            t += DT
            thetas.append(sim.theta)
    assert topic == '/l120h/cmd_vel'
    rates = np.diff(np.unwrap(thetas[-100:])) / DT            # last 2 s
    assert np.allclose(rates, w_cmd, rtol=0.03) and sim.qd[1] == pytest.approx(v_cmd, rel=1e-3)
    assert sim.q[2] == pytest.approx(BOOM_CARRY, abs=1e-9) and sim.q[3] == pytest.approx(0.0, abs=1e-9)   # held
    # the output twist agrees with the motion, and decodes to the steady articulation the loader drives
    assert out_twists[-1] == pytest.approx((v_cmd, w_cmd), rel=0.03)
    decoded = twist_out.decode(_cdr(tw, 'geometry_msgs/msg/TwistStamped'))
    assert decoded[ARTICULATION] == pytest.approx(sim.q[0], abs=0.02) and decoded[DRIVE] == pytest.approx(v_cmd)
    # a lateral velocity is impossible for an articulated machine: the input names the field
    with pytest.raises(ValueError, match='linear.y'):
        inp.to_command(_twist(types, 1.0, 0.0, lateral=0.5), sim.read(), emb)
    with pytest.raises(ValueError, match='no joint state'):
        inp.to_command(msg, None, emb)


# ------------------------------------------------------------------------------ closed loop
def _check_limits(emb, outs, where):
    """outs (T, J) at DT: position DOFs in their limits, every DOF's velocity and acceleration bounded."""
    outs = np.asarray(outs)
    is_vel = emb.is_velocity
    pos = outs[:, ~is_vel]
    assert np.all(pos >= emb.lower[~is_vel] - 1e-9) and np.all(pos <= emb.upper[~is_vel] + 1e-9), where
    vel = np.where(is_vel[None], outs[1:], np.diff(outs, axis=0) / DT)       # (T-1, J)
    assert np.all(np.abs(vel) <= emb.max_velocity + 1e-9), where
    acc = np.diff(vel, axis=0) / DT
    worst = np.max(np.abs(acc) - emb.max_acceleration, axis=0)
    assert np.all(worst <= 1e-6), f'{where}: acceleration beyond the limit by {worst}'


@pytest.mark.parametrize('name,task,seed', [(LOADER, 'approach_and_lift', 0), (LOADER, 'approach_and_lift', 1),
                                            (TRUCK, 'drive_and_dump', 0), (TRUCK, 'drive_and_dump', 1)])
def test_closed_loop_task_through_the_driver_and_native_messages(name, task, seed, types):
    """Expert rows -> policy JointTrajectory (10 Hz) -> MachineDriverCore (50 Hz) -> per-joint Float64
    messages (CDR) -> decoded back -> sim. The task succeeds and the outputs stay within the limits."""
    machine = get_machine(name)
    emb = machine.embodiment
    sim = machine.make_sim(seed=seed)
    tk = TASKS[task](sim)
    instruction = tk.reset(seed)
    assert instruction in tk.instructions and ('left' in instruction) == (seed % 2 == 0)
    core = MachineDriverCore(machine)
    adapters = {t: ad for ad in core.adapters for t, _ in ad.topics()}
    t, outs, violations, topics = 0.0, [], [], set()
    for k in range(tk.max_steps):
        row = tk.expert(sim.read())
        core.on_command_msg(conv.action_trajectory(emb, row[None], t, types, times=np.array([POLICY_DT])), t)
        for _ in range(5):
            state = sim.read()
            setpoint = {}
            for topic, msg in core.outputs(t, state, types):
                topics.add(topic)
                setpoint.update(adapters[topic].decode(_cdr(msg, 'std_msgs/msg/Float64'), source=topic))
            out = np.array([setpoint[n] for n in emb.joint_names])
            if outs:
                violations += [v for rule in machine.interlocks if (v := rule.violated(state, out, outs[-1], emb))]
            outs.append(out)
            sim.write(out)
            sim.step(DT)
            t += DT
        if tk.success():
            break
    assert tk.success(), f'{task} seed {seed} failed after {k + 1} steps'
    assert not violations
    _check_limits(emb, outs, f'{task} seed {seed}')
    ns = '/l120h' if name == LOADER else '/a40g'
    expected = {f'{ns}/articulation/cmd', f'{ns}/drive/cmd'} | (
        {f'{ns}/boom/cmd', f'{ns}/bucket/cmd'} if name == LOADER else {f'{ns}/vessel/cmd'})
    assert topics == expected
    assert not [e for e in core.events if e.kind == INTERLOCK]          # the expert never trips a rule


# ------------------------------------------------------------------------------ interlocks
class _Rig:
    """A machine's sim driven through MachineDriverCore by constant action rows (10 Hz commands)."""

    def __init__(self, types, name=TRUCK):
        self.machine = get_machine(name)
        self.emb = self.machine.embodiment
        self.sim = self.machine.make_sim(seed=0)
        self.core = MachineDriverCore(self.machine)
        self.types, self.t, self.outs, self.states = types, 0.0, [], []

    def run(self, row, seconds):
        for _ in range(int(round(seconds / POLICY_DT))):
            msg = conv.action_trajectory(self.emb, np.asarray(row, float)[None], self.t, self.types,
                                         times=np.array([POLICY_DT]))
            self.core.on_command_msg(msg, self.t)
            for _ in range(5):
                state = self.sim.read()
                out = self.core.tick(self.t, state)
                for rule in self.machine.interlocks:
                    assert not (self.outs and rule.violated(state, out, self.outs[-1], self.emb))
                self.outs.append(out)
                self.states.append(state)
                self.sim.write(out)
                self.sim.step(DT)
                self.t += DT
        return np.array(self.outs)

    def edges(self, rule):
        return [(e.edge, e.joint) for e in self.core.events if e.kind == INTERLOCK and e.joint == rule]


def test_loader_slows_to_first_gear_with_the_boom_raised(types):
    rig = _Rig(types, LOADER)
    rig.run([0.0, 3.5, -0.45, 0.0], 8.0)               # carry position, 3.5 m/s
    assert rig.sim.qd[1] == pytest.approx(3.5, rel=1e-3)
    n0 = len(rig.outs)
    outs = rig.run([0.0, 3.5, 0.6, 0.3], 8.0)          # lift while driving on
    speed, boom = outs[n0:, 1], outs[n0:, 2]
    assert np.all(np.diff(speed) <= 1e-12)             # from the first tick of the lift: only slower ...
    assert speed[-1] == pytest.approx(RAISED_SPEED_LIMIT)            # ... down to 1st gear
    assert boom[-1] == pytest.approx(0.6) and rig.sim.q[2] > BOOM_RAISED
    n1 = len(rig.outs)
    rig.run([0.0, 3.5, -0.45, 0.0], 10.0)              # boom back down: full speed again
    assert rig.outs[-1][1] == pytest.approx(3.5) and max(o[1] for o in rig.outs[n1:]) <= 3.5 + 1e-9
    assert rig.edges('slow_with_boom_raised') == [(START, 'slow_with_boom_raised'), (END, 'slow_with_boom_raised')]
    _check_limits(rig.emb, rig.outs, 'lift while driving')


def test_body_cannot_be_raised_while_driving(types):
    rig = _Rig(types)
    rig.run([0.0, 3.0, 0.0], 6.0)                      # drive at 3 m/s
    assert rig.sim.qd[1] == pytest.approx(3.0, rel=1e-3)
    n0 = len(rig.outs)
    outs = rig.run([0.0, 3.0, 1.0], 4.0)               # try to raise the body while driving
    assert np.all(outs[n0:, 2] == 0.0) and rig.sim.q[2] == 0.0    # the body stays down
    assert np.allclose(outs[n0:, 1], 3.0)              # the truck keeps driving
    rig.run([0.0, 3.0, 0.0], 1.0)                      # the attempt ends
    assert rig.edges('dump_only_when_stopped') == [(START, 'dump_only_when_stopped'), (END, 'dump_only_when_stopped')]
    assert rig.edges('no_drive_with_body_raised') == []
    _check_limits(rig.emb, rig.outs, 'raise while driving')


def test_truck_cannot_drive_with_the_body_raised(types):
    rig = _Rig(types)
    # stopped truck asked to raise AND drive: raising wins, the truck stays
    outs = rig.run([0.0, 4.0, 1.15], 14.0)
    assert np.all(outs[:, 1] == 0.0) and rig.sim.q[2] > 1.05 and abs(rig.sim.qd[1]) < 1e-9
    assert rig.edges('no_drive_with_body_raised') == [(START, 'no_drive_with_body_raised')]
    n0 = len(rig.outs)
    outs = rig.run([0.0, 4.0, 0.0], 16.0)               # lower the body, still asking to drive
    body = np.array([s.positions[2] for s in rig.states[n0:]])
    moving = np.flatnonzero(outs[n0:, 1] != 0.0)
    assert moving.size > 0                              # it drives once the body is down ...
    assert body[moving[0]] <= BODY_DOWN                 # ... and not before
    assert rig.sim.qd[1] > 3.0
    assert rig.edges('no_drive_with_body_raised') == [(START, 'no_drive_with_body_raised'),
                                                      (END, 'no_drive_with_body_raised')]
    assert rig.edges('dump_only_when_stopped') == []
    _check_limits(rig.emb, rig.outs, 'drive with the body raised')


@settings(max_examples=12, deadline=None, database=None)
@given(st.lists(st.tuples(st.floats(-1.0, 1.0), st.floats(-20.0, 20.0), st.floats(-0.5, 1.5),
                          st.integers(1, 15), st.sampled_from(['ok', 'ok', 'nan', 'push', 'silence'])),
                min_size=3, max_size=12))
def test_truck_rules_and_limits_hold_for_arbitrary_command_streams(stream):
    """Arbitrary rows (also beyond the limits), NaN commands, silences past the watchdog and measured
    speeds that jump (the truck pushed / a sensor glitch): the outputs stay within the limits and
    neither rule's invariant (Interlock.violated) is broken."""
    machine = get_machine(TRUCK)
    emb = machine.embodiment
    sim = machine.make_sim(seed=0)
    core = MachineDriverCore(machine)
    rng = np.random.default_rng(0)
    rules = (DumpOnlyWhenStopped(), NoDriveWithBodyRaised())      # the invariants, checked by fresh instances
    t, outs = 0.0, []
    for art, speed, body, n, kind in stream:
        for _ in range(n):
            if kind != 'silence':
                row = np.array([art, speed, body]) if kind != 'nan' else np.array([art, np.nan, body])
                try:
                    core.on_trajectory(emb.joint_names, np.where(emb.is_velocity, np.nan, row)[None],
                                       np.where(emb.is_velocity, row, np.nan)[None], np.array([POLICY_DT]), t, t)
                except CommandRejected as exc:
                    assert kind == 'nan' and exc.reason == 'non_finite'
            for _ in range(5):
                state = sim.read()
                if kind == 'push':
                    state.velocities[1] = float(rng.uniform(-3.0, 3.0))
                out = core.tick(t, state)
                if outs:
                    for rule in rules:
                        assert rule.violated(state, out, outs[-1], emb) is None
                outs.append(out)
                sim.write(out)
                sim.step(DT)
                t += DT
    _check_limits(emb, outs, 'fuzz')


def test_rules_act_on_targets_only_and_name_their_reason():
    machine = get_machine(TRUCK)
    emb = machine.embodiment
    dump_rule, drive_rule = machine.interlocks
    moving = MachineState(np.array([0.0, np.nan, 0.0]), np.array([0.0, STOPPED_SPEED + 0.1, 0.0]), 0.0)
    new, why = dump_rule.apply(np.array([0.1, 2.0, 0.8]), moving, emb)
    assert new.tolist() == [0.1, 2.0, 0.0] and 'moving' in why
    assert dump_rule.apply(np.array([0.1, 2.0, 0.0]), moving, emb)[1] is None
    raised = MachineState(np.array([0.0, np.nan, 0.4]), np.array([0.0, 0.0, 0.0]), 0.0)
    new, why = drive_rule.apply(np.array([0.1, 2.0, 0.4]), raised, emb)
    assert new.tolist() == [0.1, 0.0, 0.4] and 'body at 0.400' in why
    unknown = MachineState(np.array([0.0, np.nan, 0.0]), np.array([0.0, np.nan, 0.0]), 0.0)
    assert dump_rule.apply(np.array([0.0, 0.0, 0.8]), unknown, emb)[1] is not None     # unknown speed: no raising


@pytest.mark.parametrize('name', [LOADER, TRUCK])
@settings(max_examples=10, deadline=None, database=None)
@given(stream=st.lists(st.tuples(st.lists(st.floats(-30.0, 30.0), min_size=4, max_size=4), st.integers(1, 12),
                                 st.sampled_from(['ok', 'ok', 'ok', 'inf', 'silence', 'estop', 'rearm'])),
                       min_size=3, max_size=12))
def test_watchdog_and_estop_stop_the_machine_for_arbitrary_streams(name, stream):
    """Arbitrary rows, Inf, silences, e-stop toggles: outputs stay within the limits; from the first
    tick past the watchdog timeout (and while the e-stop is latched) the speed output only falls
    toward 0, and the latched e-stop rejects every command until re-armed."""
    machine = get_machine(name)
    emb = machine.embodiment
    sim = machine.make_sim(seed=0)
    core = MachineDriverCore(machine)
    timeout = machine.safety.watchdog_timeout_s
    iv = emb.joint_names.index(DRIVE)
    t, outs, last_cmd = 0.0, [], None
    for values, n, kind in stream:
        row = np.array(values[:emb.dof])
        if kind == 'estop':
            core.estop()
        elif kind == 'rearm':
            core.rearm()
        for _ in range(n):
            if kind in ('ok', 'inf', 'estop', 'rearm'):
                if kind == 'inf':
                    row = row.copy()
                    row[0] = np.inf
                try:
                    core.on_trajectory(emb.joint_names, np.where(emb.is_velocity, np.nan, row)[None],
                                       np.where(emb.is_velocity, row, np.nan)[None], np.array([POLICY_DT]), t, t)
                    last_cmd = t
                    assert not core.estopped
                except CommandRejected as exc:
                    assert exc.reason == ('estop_active' if core.estopped else 'non_finite')
            for _ in range(5):
                state = sim.read()
                out = core.tick(t, state)
                stopping = core.estopped or (last_cmd is not None and t - last_cmd > timeout + DT)
                if outs and stopping:
                    assert abs(out[iv]) <= abs(outs[-1][iv]) + 1e-12
                if outs:
                    assert not [v for rule in machine.interlocks if (v := rule.violated(state, out, outs[-1], emb))]
                outs.append(out)
                sim.write(out)
                sim.step(DT)
                t += DT
    _check_limits(emb, outs, 'fuzz')
