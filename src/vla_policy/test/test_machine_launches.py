"""launch_testing: every machine's launch file brings up a driver that speaks the machine's native outputs.

One launch per case (``launch_testing.parametrize``): ``ros2 launch vla_policy <launch>.launch.py
autostart:=false params_file:=<config/<machine>.yaml, see below>`` (``humanoid.launch.py`` also with
``machine:=unitree_g1 | unitree_h1 | fourier_gr1``). policy_node stays unconfigured (no checkpoint
needed: the driver's wiring is under test, not a policy's skill); the test plays the policy and the
machine:

* a fake machine publishes ``sensor_msgs/JointState`` for the machine's DOFs on the driver's state
  topic and follows what the driver sends (each output decoded by its group's adapter: a position
  becomes the measured position, a velocity the measured velocity, integrated where the DOF has a
  position sensor);
* the policy's generic command, a ``JointTrajectory`` chunk from
  :func:`robot_drivers.conversions.action_trajectory` (positions for position DOFs, velocities for
  velocity DOFs), goes to the driver's ``input_topic`` at 10 Hz, moving the DOFs the case names.

Asserted, in one test per launch: (1) every group's native output topic (message type from the
group's adapter) carries values inside the machine's position / velocity limits and the commanded
DOFs move; a command naming a forbidden joint (a humanoid's leg) is rejected; (2) ``true`` on
``/machine_driver_node/emergency_stop`` brings every output to rest (positions constant, velocities
0) and keeps it there while commands keep coming, which are rejected; (3) ``false`` re-arms and the
outputs move again; (4) when the policy goes silent the watchdog brings the outputs to rest; (5) a
machine's ``geometry_msgs/TwistStamped`` command input (wheel loader, truck) moves it through the
same gate.

Outputs whose message package is not installed here (``com3_msgs``: the excavator's COM3 JointCmd;
``unitree_hg`` / ``unitree_go`` / ``unitree_api``: the Unitree arm SDK and sport API) are swapped for
the alternative adapters the configs document (``output_adapters.<group>`` / ``outputs.<group>``),
and a second test checks that the unchanged config stops machine_driver_node at start with one line
naming a missing package.

Needs a sourced ROS 2 (Humble or Jazzy) with launch_testing and the workspace built (the launch
files start ``robot_drivers machine_driver_node`` and ``vla_policy policy_node``); skipped elsewhere
(the ROS-free driver core is covered by robot_drivers' tests, the launch files' structure by
test_machine_launches_static.py). A launch that dies ends launch_testing's run: later cases are not
run.
"""
import dataclasses
import importlib.util
import math
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import unittest
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import pytest
import yaml

pytest.importorskip('rclpy', reason='rclpy (ROS 2) is not installed; launch tests run on a ROS 2 machine')
launch_testing = pytest.importorskip('launch_testing', reason='launch_testing (ROS 2) is not installed')

import launch  # noqa: E402
import launch_ros  # noqa: E402,F401
import rclpy  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Bool, String  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from robot_drivers import conversions as conv  # noqa: E402
from robot_drivers.adapters import build_adapters  # noqa: E402
from robot_drivers.arm_driver_node import qos_profile  # noqa: E402
from robot_drivers.embodiment import POSITION, VELOCITY  # noqa: E402
from robot_drivers.machine import get_machine  # noqa: E402
from robot_drivers.qos import COMMANDS, LATCHED, SENSOR_DATA  # noqa: E402

PKG = pathlib.Path(__file__).resolve().parents[1]
DRIVER = 'machine_driver_node'
ESTOP_TOPIC = f'/{DRIVER}/emergency_stop'
EVENTS_TOPIC = f'/{DRIVER}/events'

STARTUP_S = 90.0        # deadline for the graph to come up (policy_node imports torch; CI is slow)
PHASE_S = 30.0          # deadline for each phase's condition
MIN_MESSAGES = 20       # messages per output topic before a phase's condition is judged
SETTLED = 10            # consecutive unchanged messages per topic that count as "at rest"
HOLD = 25               # further messages per topic that must stay at rest under the e-stop
MOVED = 1e-3            # rad, m, rad/s, m/s: a DOF moved / a velocity is nonzero
STILL = 1e-9            # rad, m, rad/s, m/s: unchanged / zero
LIMIT_TOL = 1e-9


@dataclasses.dataclass(frozen=True)
class Case:
    """One machine's launch file and what the test does with it.

    ``launch``: ``launch/<launch>.launch.py``, with ``params_file:=`` ``config/<config>.yaml`` (default
    ``config/<launch>.yaml``) and ``launch_args``; ``machine``: registry name;
    ``moves``: DOFs the test's policy moves (position DOFs: a sine around the start, velocity DOFs: a
    constant speed); the others are held (start position, speed 0). ``start``: fake machine's start
    positions (default: mid-range, 0 where unbounded). ``fallback``: ``{message package: overrides of
    machine_driver_node's parameters}`` used when that package is not installed here.
    ``twist_moves``: for a machine with a ``geometry_msgs/TwistStamped`` command input
    (``Machine.inputs``), the DOFs a twist (0.3 m/s forward, 0.05 rad/s yaw) must move. ``absent``:
    DOFs no joint state reports (a humanoid's base velocity); other velocity DOFs without a position
    sensor (drive speed, tracks) are reported with position NaN and the commanded velocity.
    """

    launch: str
    machine: str
    config: str = ''                                 # config/<config>.yaml; '' = the launch's name
    launch_args: Mapping[str, str] = dataclasses.field(default_factory=dict)
    moves: Optional[Tuple[str, ...]] = None          # None: every DOF
    start: Mapping[str, float] = dataclasses.field(default_factory=dict)
    fallback: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    twist_moves: Tuple[str, ...] = ()                # DOFs a TwistStamped command input must move
    absent: Tuple[str, ...] = ()                     # DOFs the fake joint states leave out

    def __str__(self) -> str:                       # launch_testing names the run with it
        return self.launch if self.config in ('', self.launch) else f'{self.launch}:{self.config}'

    @property
    def config_file(self) -> pathlib.Path:
        return PKG / 'config' / f'{self.config or self.launch}.yaml'


_BASE = ('base_vx', 'base_vy', 'base_wz')
_GENERIC_UPPER_BODY = {'output_adapters': {'upper_body': 'joint_trajectory'},
                       'outputs': {'upper_body': '/upper_body_controller/joint_trajectory'}}
_GENERIC_BASE = {'output_adapters': {'base': 'twist_stamped'}, 'outputs': {'base': '/cmd_vel'}}

CASES = (
    Case('ur5e', 'ur5e'),
    Case('so100', 'so100'),
    # OperaSim's per-joint angle commands and tracks Twist: the alternative config/excavator.yaml documents.
    Case('excavator', 'excavator_zx200', fallback={'com3_msgs': {
        'output_adapters': {'front': 'operasim_joint_cmd', 'tracks': 'operasim_tracks_cmd_vel'},
        'outputs': {'front': '/zx200/{joint}/cmd', 'tracks': '/zx200/tracks/cmd_vel'}}}),
    Case('wheel_loader', 'wheel_loader', twist_moves=('articulation', 'drive')),
    # body down and held there: the interlocks let the truck steer and drive.
    Case('articulated_truck', 'articulated_truck', moves=('articulation', 'drive'), start={'dump_body': 0.0},
         twist_moves=('articulation', 'drive')),
    # humanoid.launch.py machine:=<name>; without unitree_ros2's messages, the generic outputs
    # config/unitree_g1.yaml documents (a ros2_control / /cmd_vel bridge); the base velocity DOFs are
    # no joints, so no joint state reports them.
    Case('humanoid', 'unitree_g1', config='unitree_g1', launch_args={'machine': 'unitree_g1'},
         absent=_BASE, fallback={'unitree_hg': _GENERIC_UPPER_BODY, 'unitree_api': _GENERIC_BASE}),
    Case('humanoid', 'unitree_h1', config='unitree_h1', launch_args={'machine': 'unitree_h1'},
         absent=_BASE, fallback={'unitree_go': _GENERIC_UPPER_BODY, 'unitree_api': _GENERIC_BASE}),
    Case('humanoid', 'fourier_gr1', config='fourier_gr1', launch_args={'machine': 'fourier_gr1'}, absent=_BASE),
)


# ----------------------------------------------------------------------------------------------
# Parameters: config/<machine>.yaml as the launch file would use it, plus the fallbacks.


def _message_packages(adapters) -> List[str]:
    types = [t for ad in adapters for _, t in list(ad.topics()) + list(ad.estop_topics())]
    return sorted({t.split('/')[0] for t in types})


def _installed(pkg: str) -> bool:
    return importlib.util.find_spec(pkg) is not None


def _adapters(machine: str, params: Mapping[str, Any]):
    emb = get_machine(machine).embodiment
    return build_adapters(emb, dict(params.get('outputs') or {}) or None,
                          dict(params.get('output_adapters') or {}) or None)


def _driver_params(case: Case) -> Tuple[Dict[str, Any], Dict[str, Any], List[str]]:
    """``(whole config with the fallbacks applied, its machine_driver_node parameters, packages swapped)``.

    Raises:
        AssertionError: the config's outputs need a message package that is not installed and the case
            has no fallback for it (named).
    """
    path = case.config_file
    config = yaml.safe_load(path.read_text(encoding='utf-8'))
    params = config[DRIVER]['ros__parameters']
    assert params['machine'] == case.machine, f'{path}: machine_driver_node.machine is {params["machine"]!r}'
    swapped = []
    for pkg in _message_packages(_adapters(case.machine, params)):
        if _installed(pkg):
            continue
        assert pkg in case.fallback, (f'{path}: outputs need message package {pkg!r}, not installed here, '
                                      'and the test has no fallback for it')
        for key, value in case.fallback[pkg].items():
            params[key] = {**(params.get(key) or {}), **value} if isinstance(value, Mapping) else value
        swapped.append(pkg)
    return config, params, swapped


@pytest.mark.launch_test
@launch_testing.parametrize('case', CASES)
def generate_test_description(case):
    config, params, swapped = _driver_params(case)
    params_file = os.path.join(os.environ.get('TMPDIR', tempfile.gettempdir()),
                               f'vla_{case.config or case.launch}_launch_test.yaml')
    with open(params_file, 'w', encoding='utf-8') as f:
        yaml.safe_dump(config, f)
    return launch.LaunchDescription([
        launch.actions.IncludeLaunchDescription(
            PythonLaunchDescriptionSource(str(PKG / 'launch' / f'{case.launch}.launch.py')),
            launch_arguments={**case.launch_args, 'params_file': params_file, 'autostart': 'false'}.items()),
        launch_testing.actions.ReadyToTest(),
    ]), {'driver_params': params, 'swapped': swapped}


# ----------------------------------------------------------------------------------------------
# The fake machine and the probe.


def _start_positions(emb, start: Mapping[str, float]) -> np.ndarray:
    bounded = np.isfinite(emb.lower) & np.isfinite(emb.upper)
    q = np.zeros(emb.dof)
    q[bounded] = 0.5 * (emb.lower[bounded] + emb.upper[bounded])
    for name, value in start.items():
        q[emb.joint_names.index(name)] = value
    return q


def _has_position_sensor(spec) -> bool:
    """Velocity DOFs without a position (drive speed, tracks) are NaN in the fake joint states."""
    return spec.interface == POSITION or spec.kind == 'revolute' or math.isfinite(spec.lower)


def _dof_values(adapter, topic: str, msg: Any) -> Dict[str, Tuple[float, str]]:
    """``{dof: (value, POSITION | VELOCITY)}`` of one output message (what the value is).

    The adapter's ``decode`` gives action values (positions of position DOFs, velocities of velocity
    DOFs); an angle command of a velocity DOF (OperaSim's ``/<ns>/<joint>/cmd``) cannot be decoded into
    a velocity and counts as a position.
    """
    emb = adapter.embodiment
    try:
        values = adapter.decode(msg, source=topic)
    except ValueError:
        pairs = list(getattr(adapter, 'per_joint', [])) + list(getattr(adapter, 'operasim', []))
        angle_topics = {t: n for n, t in pairs}
        if topic not in angle_topics:
            raise
        return {angle_topics[topic]: (float(msg.data), POSITION)}
    return {n: (float(v), emb.joints[emb.joint_names.index(n)].interface) for n, v in values.items()}


class Probe:
    """The test's side of the graph: fake machine + fake policy + recorder of every output."""

    def __init__(self, case: Case, params: Mapping[str, Any]) -> None:
        self.case = case
        self.machine = get_machine(case.machine)
        self.emb = emb = self.machine.embodiment
        self.rate_hz = float(params.get('rate_hz') or 0.0) or self.machine.control_rate_hz
        self.adapters = _adapters(case.machine, params)
        self.moves = set(case.moves if case.moves is not None else emb.joint_names)
        unknown = (self.moves | set(case.absent) | set(case.start) | set(case.twist_moves)) - set(emb.joint_names)
        assert not unknown, f'case {case}: unknown DOFs {sorted(unknown)}'
        self.start = _start_positions(emb, case.start)
        self.sensor = np.array([_has_position_sensor(j) for j in emb.joints])
        self.pos = np.where(self.sensor, self.start, np.nan)
        self.vel = np.zeros(emb.dof)
        self.types = conv.rclpy_types()
        self.node = rclpy.create_node(f'{case.config or case.launch}_launch_probe')
        n = self.node
        self.js_pub = n.create_publisher(JointState, str(params.get('state_topic') or emb.state_topic),
                                         qos_profile(SENSOR_DATA))
        self.cmd_pub = n.create_publisher(JointTrajectory, str(params['input_topic']), qos_profile(COMMANDS))
        self.estop_pub = n.create_publisher(Bool, ESTOP_TOPIC, qos_profile(LATCHED))
        self.records: Dict[str, List[Dict[str, Tuple[float, str]]]] = {}
        self.events: List[str] = []
        self.topics = []
        for ad in self.adapters:
            for topic, msg_type in ad.topics():
                self.topics.append(topic)
                self.records[topic] = []
                n.create_subscription(conv.message_class(self.types, msg_type), topic,
                                      lambda m, ad=ad, topic=topic: self._on_output(ad, topic, m),
                                      qos_profile(COMMANDS))
        n.create_subscription(String, EVENTS_TOPIC, lambda m: self.events.append(m.data), qos_profile(COMMANDS))
        self._t0 = time.monotonic()
        self._next_js = self._next_cmd = 0.0
        self.policy_on = True
        self.twist_pubs = []                         # (publisher, class) of the TwistStamped command inputs
        inputs = params.get('inputs') or {}
        for inp in self.machine.inputs:
            if inp.msg_type == 'geometry_msgs/msg/TwistStamped':
                cls = conv.message_class(self.types, inp.msg_type)
                self.twist_pubs.append((n.create_publisher(cls, str(inputs.get(inp.name, inp.topic)),
                                                           qos_profile(COMMANDS)), cls))
        self.twist_on = False

    def close(self) -> None:
        self.node.destroy_node()

    # the fake machine follows the outputs
    def _on_output(self, adapter, topic: str, msg: Any) -> None:
        values = _dof_values(adapter, topic, msg)
        self.records[topic].append(values)
        dt = 1.0 / self.rate_hz
        for name, (value, what) in values.items():
            i = self.emb.joint_names.index(name)
            if what == POSITION:
                if math.isfinite(self.pos[i]):
                    self.vel[i] = (value - self.pos[i]) / dt
                self.pos[i] = value
            else:
                self.vel[i] = value
                if self.sensor[i]:
                    self.pos[i] += value * dt

    def _joint_state(self) -> JointState:
        msg = JointState()
        msg.header.stamp = self.node.get_clock().now().to_msg()
        keep = [i for i, n in enumerate(self.emb.joint_names) if n not in self.case.absent]
        msg.name = [self.emb.joint_names[i] for i in keep]
        msg.position = [float(self.pos[i]) for i in keep]
        msg.velocity = [float(self.vel[i]) for i in keep]
        return msg

    def policy_row(self, t: float) -> np.ndarray:
        """The test policy's action row at ``t`` s (embodiment order)."""
        emb = self.emb
        row = np.where(emb.is_velocity, 0.0, self.start)
        for i, spec in enumerate(emb.joints):
            if spec.name not in self.moves:
                continue
            if spec.interface == VELOCITY:
                row[i] = 0.5 * min(spec.max_velocity, spec.max_acceleration)
            else:
                span = spec.upper - spec.lower
                amp = 0.1 * span if math.isfinite(span) else 0.2
                row[i] = self.start[i] + amp * math.sin(2 * math.pi * t / 4.0 + i)   # a phase per DOF
        return np.clip(row, emb.action_lower, emb.action_upper)

    def spin(self, seconds: float = 0.01) -> None:
        """Publish what is due (joint states at 50 Hz, a 5-point policy chunk at 10 Hz), handle callbacks."""
        now = time.monotonic() - self._t0
        if now >= self._next_js:
            self.js_pub.publish(self._joint_state())
            self._next_js = now + 0.02
        if now >= self._next_cmd:
            if self.policy_on:
                rows = np.stack([self.policy_row(now + 0.1 * k) for k in range(5)])
                stamp = self.node.get_clock().now().nanoseconds * 1e-9
                self.cmd_pub.publish(conv.action_trajectory(self.emb, rows, stamp, self.types, dt=0.1))
            if self.twist_on:
                for pub, cls in self.twist_pubs:
                    msg = cls()
                    msg.header.stamp = self.node.get_clock().now().to_msg()
                    msg.header.frame_id = 'base_link'
                    msg.twist.linear.x, msg.twist.angular.z = 0.3, 0.05
                    pub.publish(msg)
            self._next_cmd = now + 0.1
        rclpy.spin_once(self.node, timeout_sec=seconds)

    def command_with_joint(self, name: str) -> JointTrajectory:
        """The current policy command with one more joint ``name`` (position 0, or velocity 0 when the
        command carries velocities only)."""
        stamp = self.node.get_clock().now().nanoseconds * 1e-9
        msg = conv.action_trajectory(self.emb, self.policy_row(time.monotonic() - self._t0)[None], stamp,
                                     self.types, dt=0.1)
        msg.joint_names = list(msg.joint_names) + [name]
        for pt in msg.points:
            has_pos = len(pt.positions) > 0
            if has_pos:
                pt.positions = list(pt.positions) + [0.0]
            if len(pt.velocities):
                pt.velocities = list(pt.velocities) + [math.nan if has_pos else 0.0]
        return msg

    def run_until(self, condition, deadline_s: float, what: str) -> None:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            self.spin()
            if condition():
                return
        counts = {t: len(v) for t, v in self.records.items()}
        raise AssertionError(f'{self.case}: {what} within {deadline_s:g} s (messages per output topic: {counts}; '
                             f'driver events: {self.events[-10:]})')

    def mark(self) -> Dict[str, int]:
        return {t: len(v) for t, v in self.records.items()}

    def since(self, mark: Mapping[str, int]) -> Dict[str, List[Dict[str, Tuple[float, str]]]]:
        return {t: v[mark[t]:] for t, v in self.records.items()}

    # judgements over recorded messages
    def out_of_limits(self, recs) -> List[str]:
        bad = []
        for topic, msgs in recs.items():
            for values in msgs:
                for name, (v, what) in values.items():
                    spec = self.emb.joints[self.emb.joint_names.index(name)]
                    lo, hi = ((spec.lower, spec.upper) if what == POSITION
                              else (-spec.max_velocity, spec.max_velocity))
                    if not (math.isfinite(v) and lo - LIMIT_TOL <= v <= hi + LIMIT_TOL):
                        bad.append(f'{topic} {name}={v!r} ({what}) outside [{lo}, {hi}]')
        return bad

    def moved(self, recs, among=None) -> List[str]:
        """The DOFs of ``among`` (default: the commanded ones) that moved (a position spanning > MOVED,
        or a velocity beyond it)."""
        out = set()
        for msgs in recs.values():
            series: Dict[str, List[Tuple[float, str]]] = {}
            for values in msgs:
                for name, vw in values.items():
                    series.setdefault(name, []).append(vw)
            for name, s in series.items():
                v = np.array([x for x, _ in s])
                if s[0][1] == POSITION and v.size and v.max() - v.min() > MOVED:
                    out.add(name)
                if s[0][1] == VELOCITY and v.size and np.abs(v).max() > MOVED:
                    out.add(name)
        return sorted(out & set(self.moves if among is None else among))

    @staticmethod
    def summary(phase: str, recs) -> str:
        """One line per output topic: message count, first and last values (shown with ``pytest -s``)."""
        lines = []
        for topic, msgs in recs.items():
            def fmt(values):
                return ', '.join(f'{n}={v:+.4f}{"" if w == POSITION else "/s"}' for n, (v, w) in values.items())
            ends = f'first {fmt(msgs[0])}; last {fmt(msgs[-1])}' if msgs else 'nothing'
            lines.append(f'  {phase:<8} {topic}: {len(msgs)} messages, {ends}')
        return '\n'.join(lines)

    @staticmethod
    def at_rest(msgs) -> bool:
        """Every DOF in ``msgs`` (one topic's messages) holds one position or has velocity 0."""
        if not msgs:
            return False
        first = msgs[0]
        for values in msgs:
            for name, (v, what) in values.items():
                ref = 0.0 if what == VELOCITY else first[name][0]
                if not abs(v - ref) <= STILL:
                    return False
        return True

    def all_at_rest(self, n: int) -> bool:
        return all(len(v) >= n and self.at_rest(v[-n:]) for v in self.records.values())


# unittest.TestCase: launch_testing loads the active tests with unittest's loader.
class TestMachineLaunch(unittest.TestCase):
    def test_policy_command_drives_native_outputs_and_estop_stops_them(self, case, driver_params):
        rclpy.init()
        probe = Probe(case, driver_params)
        try:
            self._drive_stop_rearm(probe)
        finally:
            probe.close()
            rclpy.shutdown()

    def _drive_stop_rearm(self, probe: Probe) -> None:
        case = probe.case
        probe.run_until(lambda: all(len(v) >= 1 for v in probe.records.values()), STARTUP_S,
                        f'the driver published nothing on some of {probe.topics}')

        # 1. the policy moves the commanded DOFs through every native output
        m = probe.mark()
        probe.run_until(lambda: (all(len(v) >= MIN_MESSAGES for v in probe.since(m).values())
                                 and probe.moved(probe.since(m)) == sorted(probe.moves)), PHASE_S,
                        f'the commanded DOFs {sorted(probe.moves)} did not all move')
        moving = probe.since(m)
        self.assertEqual(probe.out_of_limits(moving), [])
        self.assertTrue(all(len(v) >= MIN_MESSAGES for v in moving.values()))
        self.assertEqual(probe.moved(moving), sorted(probe.moves))
        self.assertFalse(probe.all_at_rest(SETTLED), f'{case}: outputs at rest while commanded to move')

        # 1b. a command naming a joint that must never be streamed (a humanoid's leg) is rejected
        if probe.emb.forbidden_joints:
            leg = probe.emb.forbidden_joints[0]
            n_events = len(probe.events)
            probe.cmd_pub.publish(probe.command_with_joint(leg))
            probe.run_until(lambda: any(e.startswith('rejected start') and leg in e
                                        for e in probe.events[n_events:]), PHASE_S,
                            f'a command naming the forbidden joint {leg!r} was not rejected')

        # 2. e-stop: the outputs come to rest and stay there while commands keep coming
        probe.estop_pub.publish(Bool(data=True))
        probe.run_until(lambda: any(e.startswith('estop start') for e in probe.events), PHASE_S,
                        'no "estop start" event after the e-stop')
        m = probe.mark()
        probe.run_until(lambda: probe.all_at_rest(SETTLED), PHASE_S,
                        'the outputs did not come to rest under the e-stop')
        rest = {t: v[-1] for t, v in probe.records.items()}
        m_hold = probe.mark()
        probe.run_until(lambda: all(len(v) >= HOLD for v in probe.since(m_hold).values()), PHASE_S,
                        f'fewer than {HOLD} messages per output under the e-stop')
        held = probe.since(m_hold)
        self.assertEqual(probe.out_of_limits(probe.since(m)), [])
        after = probe.events[next(i for i, e in enumerate(probe.events) if e.startswith('estop start')):]
        self.assertTrue(any(e.startswith('rejected start') and 'emergency stop' in e for e in after),
                        f'{case}: commands under the e-stop were not rejected: {after}')
        for topic, msgs in held.items():
            self.assertTrue(probe.at_rest([rest[topic]] + msgs),
                            f'{case}: {topic} moved under the latched e-stop: {msgs[:3]} ... {msgs[-3:]}')

        # 3. re-arm: the same commands move the outputs again
        probe.estop_pub.publish(Bool(data=False))
        m = probe.mark()
        probe.run_until(lambda: bool(probe.moved(probe.since(m))), PHASE_S, 'nothing moved after the re-arm')
        self.assertIn('estop end', [e.split(':')[0] for e in probe.events])
        rearmed = probe.since(m)

        # 4. the policy goes silent: the watchdog brings the outputs to rest
        probe.policy_on = False
        n_events = len(probe.events)
        probe.run_until(lambda: any(e.startswith('watchdog_hold start') for e in probe.events[n_events:]), PHASE_S,
                        'no "watchdog_hold start" event after the policy went silent')
        m = probe.mark()
        probe.run_until(lambda: probe.all_at_rest(SETTLED), PHASE_S, 'the outputs did not come to rest (watchdog)')
        silent = probe.since(m)
        self.assertEqual(probe.out_of_limits(silent), [])
        report = [probe.summary('moving', moving), probe.summary('e-stop', held), probe.summary('re-armed', rearmed),
                  probe.summary('silent', silent)]

        # 5. a TwistStamped command input (teleop, Nav2) moves the machine through the same gate
        self.assertEqual(bool(probe.twist_pubs), bool(case.twist_moves),
                         f'{case}: TwistStamped inputs {probe.machine.inputs} vs twist_moves {case.twist_moves}')
        if probe.twist_pubs:
            probe.twist_on = True
            m = probe.mark()
            probe.run_until(lambda: set(case.twist_moves) <= set(probe.moved(probe.since(m), case.twist_moves)),
                            PHASE_S, f'the twist input did not move {case.twist_moves}')
            self.assertEqual(probe.out_of_limits(probe.since(m)), [])
            report.append(probe.summary('twist', probe.since(m)))
        print(f'\n{case} ({probe.emb.name}):\n' + '\n'.join(report) + f'\n  events: {probe.events}')
        self.assertEqual(probe.out_of_limits(probe.since(m)), [])

    def test_unchanged_config_names_a_missing_message_package(self, case, swapped):
        """Only where the config's outputs need a message package that is not installed here."""
        if not swapped:
            self.skipTest(f'{case}: every message package of {case.config_file.name} is installed')
        # the config's own parameters under another node name (the launched driver keeps its name)
        config = yaml.safe_load(case.config_file.read_text(encoding='utf-8'))
        probe_name = f'{DRIVER}_config_probe'
        with tempfile.NamedTemporaryFile('w', suffix='.yaml', delete=False) as f:
            yaml.safe_dump({probe_name: config[DRIVER]}, f)
        try:
            proc = subprocess.run(
                [sys.executable, '-m', 'robot_drivers.machine_driver_node', '--ros-args', '--params-file', f.name,
                 '-r', f'__node:={probe_name}'],
                capture_output=True, text=True, timeout=120, env=dict(os.environ, VLA_DEBUG=''))
        finally:
            os.unlink(f.name)
        out = proc.stdout + proc.stderr
        self.assertEqual(proc.returncode, 1, out[-2000:])
        self.assertNotIn('Traceback', out, 'a missing message package is a user error: one line, no traceback')
        # the node stops at the first output it cannot create: one of the missing packages is named
        lines = [ln for ln in out.splitlines() if ln.startswith(f'{DRIVER}: error: ')]
        self.assertEqual(len(lines), 1, out[-2000:])
        self.assertTrue(any(f"message package '{pkg}'" in lines[0] for pkg in swapped), lines[0])
