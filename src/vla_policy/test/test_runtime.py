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


# ---------------------------------------------------------------------------- hand-over, backends, errors
class FlakyPolicy(RampPolicy):
    """RampPolicy whose calls number ``fail_calls`` (1-based) raise ``exc``."""

    def __init__(self, fail_calls, exc, horizon=8):
        super().__init__(horizon)
        self.fail_calls, self.exc = set(fail_calls), exc

    def infer(self, history):
        if self.calls + 1 in self.fail_calls:
            self.calls += 1
            raise self.exc
        return super().infer(history)


class GuidedRamp(RampPolicy):
    """A guidance-capable fake: records the guides it gets, answers 0.5 + the ramp."""

    supports_guidance = True

    def __init__(self, horizon=8):
        super().__init__(horizon)
        self.guides = []

    def infer_guided(self, history, guide):
        self.guides.append((history[-1].stamp, guide))
        return super().infer(history)


def _ticks(rt, t0, n, dt=0.1):
    out = []
    for k in range(n):
        t = t0 + dt * k
        _feed(rt, t)
        out.append(rt.step(t))
    return out


def test_policy_unavailable_holds_then_recovers_with_one_edge_each():
    from vla_policy.contracts import PolicyUnavailable
    pol = FlakyPolicy({2, 3, 4}, PolicyUnavailable('ws://robot-gpu:8765: connection refused'))
    rt = PolicyRuntime(pol, FRANKA_PANDA, RuntimeConfig(handover='aggregate', chunk_size_threshold=1.0))
    rt.on_instruction('reach the red cube')
    cmds = _ticks(rt, 20.0, 8)
    # call 1 ok (tick 0); calls 2, 3, 4 fail at ticks 1, 2, 3 (one retry per tick); call 5 ok at tick 4
    assert [c is not None for c in cmds] == [True, False, False, False, True, True, True, True]
    events = [e for e in rt.take_events() if e.kind != 'instruction']
    assert [(e.kind, round(e.stamp, 1)) for e in events] == [('acting', 20.0), ('refusing', 20.1), ('acting', 20.4)]
    assert 'policy unavailable' in events[1].detail and 'robot-gpu:8765' in events[1].detail
    snap = rt.snapshot(20.7)
    assert snap.inference_errors == 3 and snap.inferences == pol.calls - 3 and snap.acting and snap.status == 'running'


def test_rejected_observation_refuses_and_other_errors_propagate():
    pol = FlakyPolicy({1}, ValueError("observation lacks camera 'front'"))
    rt = PolicyRuntime(pol, FRANKA_PANDA)
    rt.on_instruction('reach the red cube')
    assert _ticks(rt, 1.0, 1) == [None]
    assert "policy rejected the observation: observation lacks camera 'front'" == rt.status
    assert _ticks(rt, 1.1, 1)[0] is not None and rt.refusal is None
    boom = PolicyRuntime(FlakyPolicy({1}, RuntimeError('CUDA out of memory')), FRANKA_PANDA)
    boom.on_instruction('reach the red cube')
    with pytest.raises(RuntimeError, match='CUDA out of memory'):
        _ticks(boom, 1.0, 1)


def test_simulated_latency_streams_a_command_every_tick_and_snapshot_reports_it():
    from vla_policy.inference import SimulatedLatencyBackend
    pol = RampPolicy(horizon=8)
    rt = PolicyRuntime(pol, FRANKA_PANDA, RuntimeConfig(handover='aggregate', aggregate_fn='latest_only'),
                       backend=SimulatedLatencyBackend(0.2))
    rt.on_instruction('reach the red cube')
    t0 = 1_800_000_000.0
    cmds = []
    for k in range(20):
        t = t0 + 0.1 * k
        _feed(rt, t, q=np.full(8, 0.001 * k))
        cmds.append(rt.step(t))
        if k == 1:
            assert rt.snapshot(t).queue_depth == 1                 # the first chunk is on its way
    assert [c is None for c in cmds[:2]] == [True, True] and all(c is not None for c in cmds[2:])
    c = cmds[2]                                                    # first chunk: obs at t0, ready at t0 + 0.2
    np.testing.assert_allclose(c.time_from_start, 0.1 * np.arange(1, 7), atol=1e-6)
    np.testing.assert_allclose(c.positions[:, 0], 0.01 * np.arange(3, 9), atol=1e-6)   # rows 2.. of the chunk
    snap = rt.snapshot(t0 + 1.9)
    assert snap.last_splice_index == 2 and snap.dropped_ticks == 0 and snap.missed_ticks == 0
    assert snap.latency_ms == {'last': pytest.approx(200.0), 'p50': pytest.approx(200.0), 'p99': pytest.approx(200.0)}
    assert snap.backend == 'simulated' and snap.handover == 'aggregate' and snap.instruction == 'reach the red cube'
    assert snap.input_ages_s == {'image': pytest.approx(0.0), 'joint_state': pytest.approx(0.0)}
    assert snap.plan_rows_left > 0 and snap.commands == 18 and snap.ticks == 20
    # threshold 0.5 of 8 rows: a request at 4 rows ahead, ready 2 rows later: one chunk every 4 ticks
    assert snap.inferences == pol.calls and 4 <= pol.calls <= 6
    _feed(rt, t0 + 2.5)
    rt.step(t0 + 2.5)                                              # 6 periods after the last tick
    assert rt.snapshot(t0 + 2.5).missed_ticks == 1


def test_open_loop_with_a_slow_model_runs_dry_and_counts_dropped_ticks():
    from vla_policy.inference import SimulatedLatencyBackend
    rt = PolicyRuntime(RampPolicy(horizon=8), FRANKA_PANDA, RuntimeConfig(n_action_steps=4),
                       backend=SimulatedLatencyBackend(0.5))
    rt.on_instruction('reach the red cube')
    cmds = _ticks(rt, 50.0, 20)
    snap = rt.snapshot(52.0)
    assert snap.dropped_ticks > 0 and sum(c is None for c in cmds) >= snap.dropped_ticks
    assert snap.last_splice_index == 5


def test_rtc_requests_with_a_guide_from_the_plan():
    from vla_policy.inference import SimulatedLatencyBackend
    pol = GuidedRamp(horizon=8)
    rt = PolicyRuntime(pol, FRANKA_PANDA, RuntimeConfig(handover='rtc', rtc_execution_horizon=3,
                                                        rtc_max_guidance_weight=4.0),
                       backend=SimulatedLatencyBackend(0.2))
    rt.on_instruction('reach the red cube')
    cmds = _ticks(rt, 7.0, 12)
    assert all(c is not None for c in cmds[2:])
    assert pol.guides, 'rtc never asked for a guided chunk'
    stamp, g = pol.guides[0]
    # first chunk: obs 7.0, rows 2..7 kept (7.3 .. 7.8). Next request at 5 = H - s rows ahead: tick 7.3
    assert stamp == pytest.approx(7.3)
    assert g.inference_delay == 2 and g.max_guidance_weight == 4.0     # ceil(0.2 s / 0.1 s)
    np.testing.assert_allclose(g.weights, [1, 1, 0.75, 0.5, 0.25, 0, 0, 0])
    np.testing.assert_allclose(g.actions[:5, 0], 0.01 * np.arange(4, 9), atol=1e-6)   # plan rows at 7.4 .. 7.8


def test_config_errors_list_the_choices():
    with pytest.raises(ValueError, match="handover must be one of 'open_loop', 'aggregate', 'temporal_ensemble', "
                                         "'blend', 'rtc', got 'smooth'"):
        RuntimeConfig(handover='smooth')
    with pytest.raises(ValueError, match="inference must be one of 'sync', 'thread'"):
        RuntimeConfig(inference='process')
    with pytest.raises(ValueError, match="aggregate_fn must be one of 'weighted_average', 'latest_only'"):
        RuntimeConfig(aggregate_fn='median')
    with pytest.raises(ValueError, match="rtc_prefix_schedule must be one of 'linear', 'exp', 'zeros', 'ones'"):
        RuntimeConfig(rtc_prefix_schedule='cosine')
    with pytest.raises(ValueError, match=r'chunk_size_threshold must be in \[0, 1\]'):
        RuntimeConfig(chunk_size_threshold=2.0)
    with pytest.raises(ValueError, match='rtc_max_guidance_weight'):
        RuntimeConfig(rtc_max_guidance_weight=0.0)
    with pytest.raises(TypeError, match='blend_window must be int'):
        RuntimeConfig(blend_window=2.5)
    assert RuntimeConfig(ensemble_m=1).ensemble_m == 1.0 and isinstance(RuntimeConfig(ensemble_m=1).ensemble_m, float)
    with pytest.raises(ValueError, match="handover 'rtc'.*supports_guidance.*'flow'.*RampPolicy does not"):
        PolicyRuntime(RampPolicy(), FRANKA_PANDA, RuntimeConfig(handover='rtc'))


def test_temporal_ensemble_and_blend_publish_every_tick_in_sync_mode_and_close_is_idempotent():
    for mode in ('temporal_ensemble', 'blend'):
        pol = RampPolicy()
        rt = PolicyRuntime(pol, FRANKA_PANDA, RuntimeConfig(handover=mode, publish_horizon=3))
        rt.on_instruction('reach the red cube')
        cmds = _ticks(rt, 3.0, 6)
        assert all(c is not None and c.positions.shape == (3, 8) for c in cmds)
        assert pol.calls == (6 if mode == 'temporal_ensemble' else 2)   # blend: a chunk at <= 4 of 8 rows ahead
        rt.close()
        rt.close()
