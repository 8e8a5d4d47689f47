"""policy_node's /diagnostics and ~/status, built ROS-free from a real PolicyRuntime's snapshot."""
import dataclasses
import time

import numpy as np
import pytest

from robot_drivers import conversions as conv
from robot_drivers.embodiment import FRANKA_PANDA
from vla_policy.contracts import ActionChunk, PolicyUnavailable
from vla_policy.diagnostics import (ERROR, OK, WARN, assess, level_of, rosbags_diagnostic_types, status_line,
                                    to_diagnostic_array, values_of)
from vla_policy.runtime import PolicyRuntime, RuntimeConfig

DT = FRANKA_PANDA.dt
Q = FRANKA_PANDA.lower + 0.5 * (FRANKA_PANDA.upper - FRANKA_PANDA.lower)


class SleepyPolicy:
    """Holds the current joints; each call sleeps ``sleep_s`` (a model that takes time); ``down``
    makes it raise PolicyUnavailable, as RemotePolicy does when its server is gone."""

    def __init__(self, sleep_s):
        self.sleep_s = sleep_s
        self.down = False

    def infer(self, history):
        if self.down:
            raise PolicyUnavailable('policy server ws://127.0.0.1:9 unreachable: connection refused')
        time.sleep(self.sleep_s)
        ob = history[-1]
        return ActionChunk(np.repeat(ob.joint_positions[None], 4, 0), FRANKA_PANDA.joint_names, DT, ob.stamp)

    def reset(self):
        pass


def _feed(rt, t):
    rt.on_image(np.zeros((8, 8, 3), np.uint8), t)
    rt.on_joint_state(Q, t)


def _diag(report, stamp=10.0):
    msg = to_diagnostic_array(report, stamp, rosbags_diagnostic_types(), name='policy_node: policy runtime',
                              hardware_id='franka_panda')
    # a real message: CDR round trip through the Jazzy type store
    ts = conv.typestore()
    back = ts.deserialize_cdr(ts.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)
    assert len(back.status) == 1
    return back.status[0]


def test_diagnostics_carry_the_measured_inference_latencies():
    policy = SleepyPolicy(0.02)
    rt = PolicyRuntime(policy, FRANKA_PANDA, RuntimeConfig(n_action_steps=1, camera='front'))
    rt.on_instruction('reach the red cube')
    t = 100.0
    for i in range(5):
        _feed(rt, t + i * DT)
        assert rt.step(t + i * DT) is not None
    snap = rt.snapshot(t + 4 * DT + 0.05)
    assert snap.inferences == 5 and snap.latency_ms['p50'] >= 20.0   # time.sleep sleeps at least that long
    report = assess(snap, state='active', max_obs_age_s=rt.cfg.max_obs_age_s)
    assert (report.level, report.message) == (OK, 'acting')
    status = _diag(report)
    values = values_of(status)
    assert level_of(status) == OK and status.name == 'policy_node: policy runtime'
    assert values['inference latency p50 (ms)'] == f"{snap.latency_ms['p50']:.1f}"
    assert values['inference latency p99 (ms)'] == f"{snap.latency_ms['p99']:.1f}"
    assert values['inference latency last (ms)'] == f"{snap.latency_ms['last']:.1f}"
    assert values['image age (s)'] == '0.050' and values['joint_state age (s)'] == '0.050'
    assert values['instruction'] == 'reach the red cube' and values['inferences'] == '5'
    assert values['queue depth'] == str(snap.queue_depth)
    line = status_line(report)
    assert line.startswith('OK acting') and f"p50 {snap.latency_ms['p50']:.1f} ms" in line
    rt.close()


def test_watchdog_waiting_and_an_unreachable_server_set_the_level_with_the_reason():
    policy = SleepyPolicy(0.0)
    rt = PolicyRuntime(policy, FRANKA_PANDA, RuntimeConfig(n_action_steps=1, max_obs_age_s=0.5, camera='front'))
    rt.step(0.0)
    report = assess(rt.snapshot(0.0), state='active', max_obs_age_s=0.5)
    assert report.level == WARN and report.message == 'waiting for image, joint state, instruction'
    rt.on_instruction('reach the red cube')
    _feed(rt, 1.0)
    assert rt.step(1.0) is not None
    # the input watchdog: nothing new for 0.8 s > max_obs_age_s
    assert rt.step(1.8) is None
    report = assess(rt.snapshot(1.8), state='active', max_obs_age_s=0.5, previous=report)
    assert report.level == ERROR
    assert report.message == ('input watchdog: image is 0.800 s old, joint state is 0.800 s old '
                              '(max_obs_age_s = 0.5); no command')
    assert level_of(_diag(report)) == ERROR
    # fresh inputs, but the policy server is gone: ERROR with the runtime's reason
    policy.down = True
    _feed(rt, 2.0)
    rt.step(2.0)
    snap = rt.snapshot(2.0)
    assert not snap.acting
    report = assess(snap, state='active', max_obs_age_s=0.5, previous=report)
    assert report.level == ERROR and report.message.startswith('not acting: ')
    assert 'unreachable' in report.message
    # back: OK again
    policy.down = False
    for i in range(1, 4):
        _feed(rt, 2.0 + i * DT)
        rt.step(2.0 + i * DT)
    report = assess(rt.snapshot(2.3), state='active', max_obs_age_s=0.5, previous=report)
    assert report.level in (OK, WARN) and report.message.startswith('acting')
    rt.close()


def test_counters_warn_for_the_period_they_grew_in_and_inactive_states_are_ok():
    rt = PolicyRuntime(SleepyPolicy(0.0), FRANKA_PANDA, RuntimeConfig(n_action_steps=1, camera='front'))
    rt.on_instruction('reach the red cube')
    _feed(rt, 1.0)
    rt.step(1.0)
    base = rt.snapshot(1.0)
    first = assess(base, state='active', max_obs_age_s=0.5)
    assert first.level == OK
    later = dataclasses.replace(base, dropped_ticks=base.dropped_ticks + 3, missed_ticks=base.missed_ticks + 1)
    report = assess(later, state='active', max_obs_age_s=0.5, previous=first)
    assert report.level == WARN
    assert '3 control ticks without a plan row' in report.message and '1 control ticks late' in report.message
    # nothing new since: the warning clears by itself
    assert assess(later, state='active', max_obs_age_s=0.5, previous=report).level == OK
    inactive = assess(base, state='inactive', max_obs_age_s=0.5)
    assert inactive.level == OK and inactive.message.startswith('inactive: model loaded, publishing no command')
    unconfigured = assess(None, state='unconfigured', max_obs_age_s=0.5)
    assert unconfigured.level == OK and unconfigured.value('status') == 'no runtime'
    assert status_line(unconfigured) == 'OK unconfigured: no model loaded'
    with pytest.raises(ValueError, match='max_obs_age_s must be > 0'):
        assess(base, max_obs_age_s=0)
    with pytest.raises(KeyError, match="'nope' not in"):
        first.value('nope')
    rt.close()
