"""Training reads any machine's recorded commands into its action vector: the policy's generic
JointTrajectory (velocities for velocity DOFs) and a group's native command message (decoded by its
output adapter), from real rosbag2 files written by a driver loop."""
import math

import numpy as np
import pytest

from robot_drivers import conversions as conv
from robot_drivers.bag_writer import write_episode
from robot_drivers.embodiment import Embodiment, Group, JointSpec
from robot_drivers.machine import Machine, MachineDriverCore, MachineState
from vla_training.bag_dataset import read_episode
from vla_training.bag_reader import BagError, BagTopics

TYPES = conv.rosbags_types()

MIXED = Embodiment(
    'test_bag_mixed',
    (JointSpec('lift', -0.5, 1.0, 0.5, max_acceleration=2.0),
     JointSpec('drive', -math.inf, math.inf, 2.0, interface='velocity', max_acceleration=1.0)),
    10.0,
    groups=(Group('front', ('lift',), 'joint_trajectory', '/lift_controller/joint_trajectory'),
            Group('drive', ('drive',), 'twist_stamped', '/cmd_vel', {'fields': ['linear.x']})),
    machine_class='wheel_loader')

FORWARD = Embodiment(
    'test_bag_forward',
    (JointSpec('j1', -2.0, 2.0, 1.0), JointSpec('j2', -2.0, 2.0, 1.0)), 10.0,
    groups=(Group('arm', ('j1', 'j2'), 'float64_array', '/forward_position_controller/commands'),))


def _record(path, emb, steps, command_of, native=False):
    """Drive a perfect plant through MachineDriverCore at 50 Hz with a 10 Hz command stream; record
    camera, joint states, instruction and either the policy command or the driver's native outputs."""
    core = MachineDriverCore(Machine(emb, control_rate_hz=50.0))
    pos = np.zeros(emb.dof)
    msgs, sent = [], []
    img = np.zeros((8, 8, 3), np.uint8)
    msgs.append(('/vla/instruction', 'std_msgs/msg/String', conv.string_msg('go', TYPES), 0.001))
    for k in range(steps * 5):
        now = 0.01 + k * 0.02
        state = MachineState(pos.copy(), np.zeros(emb.dof), now)
        if k % 5 == 0:
            msgs.append(('/camera/image_raw', 'sensor_msgs/msg/Image', conv.numpy_to_image(img, now, TYPES), now))
            msgs.append(('/joint_states', 'sensor_msgs/msg/JointState',
                         conv.arrays_to_joint_state(emb.joint_names, pos, now, TYPES), now))
            row = command_of(k // 5)
            cmd = conv.action_trajectory(emb, row[None], now, TYPES, dt=0.1)
            core.on_command_msg(cmd, now)
            if not native:
                msgs.append(('/vla/joint_trajectory', 'trajectory_msgs/msg/JointTrajectory', cmd, now))
            sent.append(row)
        for topic, m in core.outputs(now, state, TYPES):
            if native and k % 5 == 4:
                msgs.append((topic, m.__msgtype__, m, now))
        out = core.tick(now + 0.001, state)
        pos = np.where(emb.is_velocity, pos + out * 0.02, out)
    write_episode(path, msgs)
    return np.array(sent)


def test_generic_command_gives_velocities_for_velocity_dofs(tmp_path):
    rows = lambda i: np.array([0.05 * i, 0.1 * (i % 7)])  # noqa: E731
    sent = _record(tmp_path / 'ep', MIXED, 20, rows)
    ep = read_episode(tmp_path / 'ep', MIXED, BagTopics(command='/vla/joint_trajectory'))
    assert ep.actions.shape[1] == 2 and len(ep.actions) >= 15
    # each tick's action is the command in force: lift positions and drive *velocities*
    for a in ep.actions:
        assert np.any(np.all(np.abs(sent - a) < 1e-6, axis=1)), a


def test_native_forward_controller_command_is_decoded_by_its_adapter(tmp_path):
    rows = lambda i: np.array([0.4 * math.sin(0.3 * i), -0.2 + 0.02 * i])  # noqa: E731
    _record(tmp_path / 'ep', FORWARD, 20, rows, native=True)
    ep = read_episode(tmp_path / 'ep', FORWARD, BagTopics(command='/forward_position_controller/commands'))
    assert ep.actions.shape == (len(ep.actions), 2) and len(ep.actions) >= 15
    # the native topic carries the driver's safe setpoints: within limits, moving like the commands
    assert np.all(np.abs(ep.actions) <= 2.0)
    assert np.ptp(ep.actions[:, 1]) > 0.1


def test_native_command_of_another_machine_is_a_clear_error(tmp_path):
    _record(tmp_path / 'ep', FORWARD, 5, lambda i: np.zeros(2), native=True)
    with pytest.raises(BagError, match='Float64MultiArray'):
        read_episode(tmp_path / 'ep', MIXED, BagTopics(command='/forward_position_controller/commands'))
