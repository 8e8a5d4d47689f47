"""The Franka graph on a real ROS 2 machine: rates, safety events, instruction, watchdog, shutdown.

    source /opt/ros/jazzy/setup.bash && source install/setup.bash
    python3 benchmarks/ros_graph_check.py --checkpoint outputs/demo/film_cnn/checkpoint \
        [--out benchmarks/results/ros_graph.json]

Starts ``ros2 launch vla_policy franka.launch.py sim:=true checkpoint:=<ckpt>`` and, from a probe
node in this process, measures what a user of the graph sees:

1. topic rates over ``--window`` s: the driver's command (``/arm_controller/joint_trajectory``),
   the policy's chunks (``/vla/joint_trajectory``), the camera (``/camera/image_raw``);
2. ``/arm_driver_node/events`` while running normally, and over an e-stop held for 5 s then
   released (events are edges: a few messages, not one per 50 Hz tick);
3. the instruction changed by a plain (volatile) ``std_msgs/String`` publisher, by a latched one,
   and by ``SetParameters`` (what ``ros2 param set`` calls), read back with ``GetParameters``,
   and whether a node of the graph logs an incompatible-QoS warning;
4. policy_node's lifecycle (the launch file configured and activated it): its state from
   ``get_state``, a ``/diagnostics`` sample (level, message, inference latency p50/p99), then
   ``deactivate`` through ``change_state`` (what ``ros2 lifecycle set`` calls): the policy's
   commands stop and the driver's watchdog holds; ``activate``: they resume;
5. ``kill -9`` of policy_node: the driver's ``watchdog_hold`` event and the delay it reports;
6. SIGINT to the launch: its exit status and how many nodes "finished cleanly".

Writes the measurements as JSON and prints a table. Needs rclpy (a sourced ROS 2 Humble or
Jazzy) and the workspace built and sourced; not part of the test suite (it takes ~1 min).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
NODES = ('policy_node', 'arm_driver_node', 'sim_node')


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--checkpoint', required=True, help='checkpoint directory for policy_node')
    p.add_argument('--window', type=float, default=10.0, help='seconds over which rates are measured')
    p.add_argument('--out', default=str(ROOT / 'benchmarks/results/ros_graph.json'))
    a = p.parse_args()
    try:
        import rclpy
    except ImportError:
        print('ros_graph_check: error: rclpy is not importable: source a ROS 2 installation first', file=sys.stderr)
        return 1
    if not pathlib.Path(a.checkpoint).is_dir():
        print(f'ros_graph_check: error: checkpoint {a.checkpoint!r} is not a directory', file=sys.stderr)
        return 1
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import GetParameters, SetParameters
    from rcl_interfaces.msg import Log
    from diagnostic_msgs.msg import DiagnosticArray
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState
    from sensor_msgs.msg import Image
    from std_msgs.msg import Bool, String
    from trajectory_msgs.msg import JointTrajectory

    from robot_drivers.arm_driver_node import qos_profile
    from robot_drivers.qos import COMMANDS, INSTRUCTION_VOLATILE, LATCHED, SENSOR_DATA

    log = tempfile.NamedTemporaryFile('w+', prefix='ros_graph_launch_', suffix='.log', delete=False)
    launch = subprocess.Popen(
        ['ros2', 'launch', 'vla_policy', 'franka.launch.py', 'sim:=true', f'checkpoint:={a.checkpoint}'],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    rclpy.init()
    node = rclpy.create_node('ros_graph_check')
    stamps = {'/arm_controller/joint_trajectory': [], '/vla/joint_trajectory': [], '/camera/image_raw': []}
    events, rosout = [], []

    def stamp(topic):
        return lambda _msg: stamps[topic].append(time.monotonic())

    node.create_subscription(JointTrajectory, '/arm_controller/joint_trajectory',
                             stamp('/arm_controller/joint_trajectory'), qos_profile(COMMANDS))
    node.create_subscription(JointTrajectory, '/vla/joint_trajectory', stamp('/vla/joint_trajectory'),
                             qos_profile(COMMANDS))
    node.create_subscription(Image, '/camera/image_raw', stamp('/camera/image_raw'), qos_profile(SENSOR_DATA))
    node.create_subscription(String, '/arm_driver_node/events',
                             lambda m: events.append((time.monotonic(), m.data)), qos_profile(COMMANDS))
    node.create_subscription(Log, '/rosout', lambda m: rosout.append((m.name, m.msg)), 100)
    diags = []
    node.create_subscription(DiagnosticArray, '/diagnostics',
                             lambda m: diags.extend(s for s in m.status if s.name.startswith('policy_node:')),
                             qos_profile(COMMANDS))
    get_state = node.create_client(GetState, '/policy_node/get_state')
    change_state = node.create_client(ChangeState, '/policy_node/change_state')
    estop = node.create_publisher(Bool, '/arm_driver_node/emergency_stop', qos_profile(LATCHED))
    plain = node.create_publisher(String, '/vla/instruction', qos_profile(INSTRUCTION_VOLATILE))
    latched = node.create_publisher(String, '/vla/instruction', qos_profile(LATCHED))
    get_params = node.create_client(GetParameters, '/policy_node/get_parameters')
    set_params = node.create_client(SetParameters, '/policy_node/set_parameters')

    def spin_for(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)

    def call(client, request):
        future = client.call_async(request)
        end = time.monotonic() + 10.0
        while not future.done() and time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)
        return future.result()

    def instruction():
        res = call(get_params, GetParameters.Request(names=['instruction']))
        return res.values[0].string_value if res is not None else None

    result = {}
    try:
        # wait for the whole chain: chunks and safe commands flowing
        end = time.monotonic() + 90.0
        while time.monotonic() < end and not (stamps['/vla/joint_trajectory'] and get_params.service_is_ready()):
            spin_for(0.5)
        if not stamps['/vla/joint_trajectory']:
            raise RuntimeError(f'no chunk on /vla/joint_trajectory within 90 s; launch log: {log.name}')
        spin_for(2.0)
        t0 = time.monotonic()
        spin_for(a.window)
        t1 = time.monotonic()
        result['rates_hz'] = {t: round(sum(t0 <= s < t1 for s in v) / (t1 - t0), 2) for t, v in stamps.items()}
        result['events_while_running'] = sum(t0 <= s < t1 for s, _ in events)

        n = len(events)
        estop.publish(Bool(data=True))
        spin_for(5.0)
        estop.publish(Bool(data=False))
        spin_for(3.0)
        result['estop_5s_events'] = [e for _, e in events[n:]]

        changes = {}
        plain.publish(String(data='reach the green cube'))
        spin_for(1.0)
        changes['plain publisher'] = instruction()
        latched.publish(String(data='pick up the red cube'))
        spin_for(1.0)
        changes['latched publisher'] = instruction()
        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value='reach the blue cube')
        call(set_params, SetParameters.Request(parameters=[Parameter(name='instruction', value=value)]))
        spin_for(0.5)
        changes['SetParameters'] = instruction()
        result['instruction_after'] = changes
        # lines of the graph's nodes; this probe's own volatile publisher does warn (publisher side)
        # about policy_node's transient-local subscription, as `ros2 topic pub` does: see README
        result['incompatible_qos_lines_of_graph_nodes'] = sum(
            'incompatible' in msg.lower() for name, msg in rosout if name in NODES)

        def lifecycle_state():
            res = call(get_state, GetState.Request())
            return res.current_state.label if res is not None else None

        def transition(tid):
            res = call(change_state, ChangeState.Request(transition=Transition(id=tid)))
            return bool(res is not None and res.success)

        def diag_sample():
            if not diags:
                return None
            v = {kv.key: kv.value for kv in diags[-1].values}
            level = diags[-1].level
            return {'level': level[0] if isinstance(level, (bytes, bytearray)) else int(level),
                    'message': diags[-1].message,
                    'latency_p50_ms': v.get('inference latency p50 (ms)'),
                    'latency_p99_ms': v.get('inference latency p99 (ms)'),
                    'dropped_ticks': v.get('dropped ticks'), 'missed_ticks': v.get('missed ticks')}

        life = {'state_after_launch': lifecycle_state(), 'diagnostics_active': diag_sample()}
        n, k = len(events), len(stamps['/vla/joint_trajectory'])
        life['deactivate_ok'] = transition(Transition.TRANSITION_DEACTIVATE)
        spin_for(3.0)
        life['state_after_deactivate'] = lifecycle_state()
        spin_for(1.0)
        t_quiet = time.monotonic() - 2.0
        life['policy_commands_in_last_2s_while_inactive'] = sum(s >= t_quiet for s in stamps['/vla/joint_trajectory'])
        life['driver_events_after_deactivate'] = [e for _, e in events[n:]]
        life['diagnostics_inactive'] = diag_sample()
        k = len(stamps['/vla/joint_trajectory'])
        life['activate_ok'] = transition(Transition.TRANSITION_ACTIVATE)
        spin_for(3.0)
        life['state_after_activate'] = lifecycle_state()
        life['policy_commands_3s_after_activate'] = len(stamps['/vla/joint_trajectory']) - k
        result['lifecycle'] = life

        pid = subprocess.run(['pgrep', '-f', '-n', 'lib/vla_policy/policy_node'], capture_output=True,
                             text=True).stdout.strip()
        n = len(events)
        os.kill(int(pid), signal.SIGKILL)
        spin_for(3.0)
        holds = [e for _, e in events[n:] if e.startswith('watchdog_hold start')]
        delay = re.search(r'no trajectory for ([0-9.]+) s', holds[0]) if holds else None
        result['after_kill_policy_node'] = {
            'events': [e for _, e in events[n:]],
            'watchdog_delay_s': float(delay.group(1)) if delay else None,
            'driver_still_publishing': bool(stamps['/arm_controller/joint_trajectory'][-1] > time.monotonic() - 0.5),
        }
    finally:
        node.destroy_node()
        rclpy.shutdown()
        os.killpg(launch.pid, signal.SIGINT)
        try:
            result['launch_exit_status'] = launch.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(launch.pid, signal.SIGKILL)
            result['launch_exit_status'] = 'killed after 30 s'
        text = pathlib.Path(log.name).read_text()
        result['nodes_finished_cleanly'] = sorted(n for n in NODES if re.search(rf'\[{n}-\d+\]: process has finished cleanly', text))
        result['tracebacks_in_launch_log'] = text.count('Traceback')

    import numpy
    result['environment'] = {'ros_distro': os.environ.get('ROS_DISTRO'), 'rmw': os.environ.get('RMW_IMPLEMENTATION'),
                             'python': platform.python_version(), 'numpy': numpy.__version__,
                             'cpu_count': os.cpu_count(), 'checkpoint': a.checkpoint}
    print(f"{'measurement':<42}value")
    for k, v in result.items():
        print(f'{k:<42}{v}')
    from vla_training.evaluate import write_json
    write_json(a.out, result)
    return 0


if __name__ == '__main__':
    sys.exit(main())
