"""PolicyRuntime: history, chunk execution, staleness refusal, message edge (rosbags messages)."""
import numpy as np
import pytest

from robot_drivers import conversions as conv
from robot_drivers.embodiment import FRANKA_PANDA
from vla_policy.contracts import ActionChunk
from vla_policy.history import ObservationHistory
from vla_policy.runtime import PolicyRuntime, RuntimeConfig

T = conv.rosbags_types()
NAMES = FRANKA_PANDA.joint_names


class RampPolicy:
    """Chunk row k = current joints + 0.01 * (k + 1): makes executed rows identifiable."""

    def __init__(self, horizon=8):
        self.horizon, self.calls, self.resets, self.seen = horizon, 0, 0, []

    def infer(self, history):
        self.calls += 1
        self.seen.append([o.stamp for o in history])
        q = history[-1].joint_positions
        acts = q[None] + 0.01 * (np.arange(self.horizon)[:, None] + 1)
        return ActionChunk(acts, NAMES, 0.1, history[-1].stamp)

    def reset(self):
        self.resets += 1


def _feed(rt, t, q=None, img_age=0.0):
    q = np.zeros(8) if q is None else q
    img = np.zeros((8, 8, 3), np.uint8)
    rt.on_image_msg(conv.numpy_to_image(img, t - img_age, T))
    rt.on_joint_state_msg(conv.arrays_to_joint_state(NAMES, q, t, T))


def test_chunk_execution_every_n_action_steps_and_trajectory_message():
    pol = RampPolicy()
    rt = PolicyRuntime(pol, FRANKA_PANDA, RuntimeConfig(n_obs_steps=2, n_action_steps=3))
    rt.on_instruction_msg(T.String(data='reach the red cube'))
    cmds = []
    for k in range(9):
        t = 10.0 + 0.1 * k
        _feed(rt, t, q=np.full(8, 0.1 * k))
        cmds.append(rt.step(t))
    fired = [i for i, c in enumerate(cmds) if c is not None]
    assert fired == [0, 3, 6] and pol.calls == 3
    # History of 2: first call pads with the oldest, later calls see two consecutive ticks.
    assert pol.seen[0] == [10.0, 10.0]
    assert pol.seen[1] == pytest.approx([10.2, 10.3])
    msg = cmds[3].to_msg(T)
    names, pos, tfs = conv.trajectory_to_arrays(msg)
    assert names == NAMES and pos.shape == (3, 8)
    np.testing.assert_allclose(tfs, [0.1, 0.2, 0.3])
    np.testing.assert_allclose(pos[:, 0], 0.3 + 0.01 * np.arange(1, 4), atol=1e-6)
    assert conv.stamp_to_sec(msg.header.stamp) == pytest.approx(10.3)


def test_refuses_stale_observations_and_drops_pending_chunk():
    pol = RampPolicy()
    rt = PolicyRuntime(pol, FRANKA_PANDA, RuntimeConfig(n_action_steps=4, max_obs_age_s=0.3))
    rt.on_instruction('reach the red cube')
    _feed(rt, 5.0)
    assert rt.step(5.0) is not None and rt.refusal is None
    rt.take_events()
    # Image now 0.5 s old: no command, and the chunk remainder is dropped.
    _feed(rt, 5.1, img_age=0.5)
    assert rt.step(5.1) is None
    assert 'image is 0.500 s old' in rt.status and rt.refusal == rt.status
    # Still stale on the next ticks (the age grows): one refusal event, not one per tick.
    for t in (5.2, 5.3, 5.4):
        _feed(rt, t, img_age=t - 4.6)   # the camera keeps re-sending the 4.6 s frame
        assert rt.step(t) is None
    assert 'image is 0.800 s old' in rt.status
    events = rt.take_events()
    assert [(e.kind, e.stamp) for e in events] == [('refusing', 5.1)]
    assert 'image is 0.500 s old (max_obs_age_s = 0.3)' in events[0].detail
    # The joint state going stale too is a new condition: a new edge.
    rt.on_image(np.zeros((8, 8, 3), np.uint8), 5.5)
    rt.on_joint_state(np.zeros(8), 5.0)
    assert rt.step(5.5) is None
    assert [(e.kind, e.detail.split(' is ')[0]) for e in rt.take_events()] == [('refusing', 'joint state')]
    _feed(rt, 5.6)
    assert rt.step(5.6) is not None and pol.calls == 2   # fresh data -> infer at once
    ended = rt.take_events()
    assert [(e.kind, e.stamp) for e in ended] == [('acting', 5.6)] and 'joint state is' in ended[0].detail
    assert rt.refusal is None and rt.status == 'running'
    assert [e.kind for e in rt.events] == ['instruction', 'acting', 'refusing', 'refusing', 'acting']


def test_waits_for_all_inputs_and_resets_on_new_instruction():
    pol = RampPolicy()
    rt = PolicyRuntime(pol, FRANKA_PANDA)
    _feed(rt, 1.0)
    assert rt.step(1.0) is None and 'instruction' in rt.status
    assert rt.on_instruction('pick up the blue cube') is True
    assert rt.step(1.0) is not None
    assert rt.on_instruction('pick up the blue cube') is False     # same text: no reset
    n = pol.resets
    assert rt.on_instruction('reach the red cube') is True
    assert pol.resets == n + 1 and rt.instruction == 'reach the red cube'
    assert [e.detail for e in rt.events if e.kind == 'instruction'] == ['pick up the blue cube',
                                                                        'reach the red cube']
    with pytest.raises(ValueError, match='empty'):
        rt.on_instruction('  ')


def test_joint_state_edge_errors():
    rt = PolicyRuntime(RampPolicy(), FRANKA_PANDA)
    msg = conv.arrays_to_joint_state(NAMES[:-1], np.zeros(7), 1.0, T)
    with pytest.raises(KeyError, match='panda_finger_joint1'):
        rt.on_joint_state_msg(msg)
    with pytest.raises(ValueError, match='8'):
        rt.on_joint_state(np.zeros(5), 1.0)


def test_history_pads_and_rejects_out_of_order():
    from vla_policy.contracts import Observation
    h = ObservationHistory(3)
    o = lambda t: Observation({'front': np.zeros((2, 2, 3), np.uint8)}, np.zeros(8), 'x', t)  # noqa: E731
    h.push(o(1.0))
    assert [x.stamp for x in h.frames()] == [1.0, 1.0, 1.0]
    h.push(o(2.0))
    h.push(o(3.0))
    h.push(o(4.0))
    assert [x.stamp for x in h.frames()] == [2.0, 3.0, 4.0]
    with pytest.raises(ValueError, match='out-of-order'):
        h.push(o(3.5))
