"""Inference backends: synchronous, simulated latency, worker thread; and the runtime fed at 30 Hz by
real sleeps while a model takes 200 ms per chunk in the worker (counts, never durations)."""
import dataclasses
import math
import threading
import time

import numpy as np
import pytest

from robot_drivers.embodiment import FRANKA_PANDA
from vla_policy.contracts import ActionChunk, Observation, PolicyUnavailable
from vla_policy.handover import TIME_TOLERANCE
from vla_policy.inference import SimulatedLatencyBackend, SyncBackend, ThreadBackend, make_backend
from vla_policy.runtime import PolicyRuntime, RuntimeConfig

NAMES = FRANKA_PANDA.joint_names


def _hist(t=1.0):
    return [Observation({'front': np.zeros((4, 4, 3), np.uint8)}, np.zeros(8), 'x', t)]


class Gated:
    """infer blocks until ``go`` is set (deterministic 'slow model'); counts calls and resets."""

    def __init__(self, fail=None):
        self.go = threading.Event()
        self.entered = threading.Event()
        self.calls = self.resets = 0
        self.fail = fail

    def infer(self, history):
        self.entered.set()
        self.go.wait(10.0)
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return ActionChunk(np.zeros((4, 8)), NAMES, 0.1, history[-1].stamp)

    def reset(self):
        self.resets += 1


def _wait_result(backend, now, limit_s=10.0):
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        r = backend.poll(now)
        if r is not None:
            return r
        time.sleep(0.002)
    raise AssertionError('no result from the worker')


def test_sync_backend_answers_at_the_request_time_and_hands_errors_over():
    b = SyncBackend()
    pol = Gated()
    pol.go.set()
    b.bind(pol)
    b.submit(_hist(), 5.0)
    assert b.busy and b.queue_depth == 1
    with pytest.raises(RuntimeError, match='not been polled'):
        b.submit(_hist(), 5.0)
    r = b.poll(5.0)
    assert r.chunk is not None and r.error is None and r.request_time == r.ready_time == 5.0 and r.latency_s >= 0
    assert b.poll(5.0) is None and not b.busy
    bad = SyncBackend()
    bad.bind(Gated(fail=PolicyUnavailable('server gone')))
    bad.policy.go.set()
    bad.submit(_hist(), 1.0)
    r = bad.poll(1.0)
    assert r.chunk is None and isinstance(r.error, PolicyUnavailable)
    with pytest.raises(ValueError, match='another policy'):
        b.bind(Gated())
    with pytest.raises(ValueError, match="'sync', 'thread'"):
        make_backend('process')


def test_simulated_latency_releases_the_chunk_at_request_plus_latency():
    b = SimulatedLatencyBackend(0.2)
    pol = Gated()
    pol.go.set()
    b.bind(pol)
    b.submit(_hist(10.0), 10.0)
    assert pol.calls == 1                                      # computed at once, released later
    assert b.poll(10.1) is None and b.poll(10.19) is None and b.busy
    r = b.poll(10.2)
    assert r.ready_time == pytest.approx(10.2) and r.latency_s == 0.2 and not b.busy
    with pytest.raises(ValueError, match='>= 0'):
        SimulatedLatencyBackend(-0.1)


def test_thread_backend_never_waits_for_the_model_and_maps_latency_onto_the_runtime_clock():
    b = ThreadBackend()
    pol = Gated()
    b.bind(pol)
    b.submit(_hist(), 100.0)                                   # the model is blocked on pol.go
    assert pol.entered.wait(5.0)
    assert b.poll(100.5) is None and b.busy and b.queue_depth == 1
    with pytest.raises(RuntimeError, match='in flight'):
        b.submit(_hist(), 100.5)
    b.reset_policy()                                           # deferred: the model is mid-call
    assert pol.resets == 0
    pol.go.set()
    r = _wait_result(b, 101.0)
    assert pol.resets == 1                                     # after the call, in the worker
    assert r.error is None and r.request_time == 100.0
    assert r.ready_time == pytest.approx(100.0 + r.latency_s) and r.latency_s >= 0
    assert r.latency_s == r.compute_s and r.latency_s > 0    # measured by the worker
    assert b.alive
    b.close()
    b.close()                                                  # idempotent
    assert not b.alive
    with pytest.raises(RuntimeError, match='closed'):
        b.submit(_hist(), 102.0)


def test_thread_backend_hands_the_policy_exception_over():
    b = ThreadBackend()
    pol = Gated(fail=ValueError('image missing'))
    pol.go.set()
    b.bind(pol)
    b.submit(_hist(), 1.0)
    r = _wait_result(b, 1.0)
    assert r.chunk is None and isinstance(r.error, ValueError) and 'image missing' in str(r.error)
    b.close()


class SleepyPolicy:
    """Sleeps ``delay_s`` per chunk (a slow model) and returns a smooth 1 s chunk at 30 Hz."""

    def __init__(self, delay_s, horizon, dt):
        self.delay_s, self.horizon, self.dt = delay_s, horizon, dt
        self.calls = 0

    def infer(self, history):
        time.sleep(self.delay_s)
        self.calls += 1
        q = history[-1].joint_positions
        acts = q[None] + 0.001 * (np.arange(self.horizon)[:, None] + 1)
        return ActionChunk(acts, NAMES, self.dt, history[-1].stamp)

    def reset(self):
        pass


class RecordingThreadBackend(ThreadBackend):
    """Keeps every result handed to the runtime (to compare splices with measured latencies)."""

    def __init__(self):
        super().__init__()
        self.results = []

    def poll(self, now):
        r = super().poll(now)
        if r is not None:
            self.results.append(r)
        return r


@pytest.mark.parametrize('handover,n_action_steps', [('aggregate', 4), ('open_loop', 12)])
def test_command_every_tick_at_30_hz_while_the_model_sleeps_200_ms(handover, n_action_steps):
    rate = 30.0
    emb = dataclasses.replace(FRANKA_PANDA, control_rate_hz=rate)
    dt = 1.0 / rate
    pol = SleepyPolicy(0.2, 30, dt)
    backend = RecordingThreadBackend()
    rt = PolicyRuntime(pol, emb, RuntimeConfig(handover=handover, n_action_steps=n_action_steps,
                                               inference='thread', max_obs_age_s=1.0), backend=backend)
    rt.on_instruction('reach the red cube')
    splices, cmds, ticks_after_first = [], [], 0
    deadline = time.monotonic()
    try:
        for _ in range(66):                                    # ~2.2 s of real time
            wait = deadline - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            now = time.monotonic()
            rt.on_image(np.zeros((8, 8, 3), np.uint8), now)
            rt.on_joint_state(np.zeros(8), now)
            cmd = rt.step(now)
            if cmds:
                ticks_after_first += 1
            if cmd is not None:
                cmds.append(cmd)
                assert cmd.time_from_start[0] > 0 and np.all(np.diff(cmd.time_from_start) > 0)
            last = rt.handover.last_splice
            if last is not None and (not splices or splices[-1] is not last):
                splices.append(last)
            deadline += dt
        snap = rt.snapshot(time.monotonic())
    finally:
        rt.close()
    assert not backend.alive
    assert cmds, 'no command at all'
    assert len(cmds) - 1 == ticks_after_first                  # a command on every tick after the first chunk
    assert snap.dropped_ticks == 0 and snap.backend == 'thread' and snap.handover == handover
    assert pol.calls >= 3 and len(splices) >= 3
    # every chunk was spliced at the row its measured latency says: floor((request + latency - t_obs) / dt)
    ok = [r for r in backend.results if r.error is None]
    assert len(ok) >= len(splices)
    by_stamp = {r.chunk.stamp: r for r in ok}
    for s in splices:
        r = by_stamp[s.t_obs]
        expect = math.floor((r.request_time + r.latency_s - s.t_obs) / dt + TIME_TOLERANCE)
        assert s.dropped == min(expect, 30) and s.t_ready == pytest.approx(r.request_time + r.latency_s)
        assert s.dropped >= 6                                  # the model slept 200 ms = 6 rows at 30 Hz
    assert snap.latency_ms['p50'] >= 200.0 and snap.inferences == len(ok)
