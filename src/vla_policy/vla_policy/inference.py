"""Inference backends: where and when ``policy.infer`` runs for :class:`~vla_policy.runtime.PolicyRuntime` (ROS-free).

One small interface, three implementations:

* :class:`SyncBackend` (``inference: sync``): the policy runs inside the control tick, the chunk
  is ready at the request time (the runtime's behaviour before async inference existed).
* :class:`ThreadBackend` (``inference: thread``): one daemon worker thread runs the policy; the
  control tick only hands over the history and later picks the result up, it never waits.
  Latency is measured with ``time.monotonic`` and mapped onto the runtime clock:
  ``ready_time = request_time + latency``.
* :class:`SimulatedLatencyBackend` (closed-loop evaluation in simulated time): computes inline
  but releases the chunk only once the runtime clock reaches ``request_time + latency_s``, so a
  slow model is evaluated deterministically without real sleeping, through the same runtime code.

At most one request is in flight (``busy``); :meth:`InferenceBackend.poll` hands each result
over once (an :class:`InferenceResult` carrying the chunk or the exception the policy raised).

Why a thread and not a process: the model call is almost entirely torch operators, and torch's
Python bindings release the GIL inside each operator, so a worker thread computing does not stall
the control loop. Measured on the 2-core development machine (``benchmarks/handover_eval.py``,
``benchmarks/results/handover.json`` key ``thread_jitter``): a 30 Hz loop feeding real messages
through this runtime while the worker thread ran a 108 ms torch transformer back to back (one
torch thread) woke up with a p99 lateness of 0.19 ms (0.18 ms while the worker only slept as
long), 0 ticks more than half a period late, a command on every tick (3.4 ms p99 in an earlier
run while other jobs loaded both cores). A process would add little per request (a 224x224
observation through a ``multiprocessing`` pipe and back: 0.22 ms p50) but
would hold a second copy of the model, need its own start-up, shutdown and crash handling, and
buys nothing the measurement asks for. The process (and machine) boundary that does pay is a GPU
server: :class:`~vla_policy.remote.RemotePolicy` runs in this same worker thread.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from vla_policy.contracts import ActionChunk, ChunkGuide, Observation

__all__ = ['InferenceResult', 'InferenceBackend', 'SyncBackend', 'ThreadBackend', 'SimulatedLatencyBackend',
           'BACKENDS', 'make_backend']

#: ``RuntimeConfig.inference`` values that name a backend (the simulated one is built by evaluation code).
BACKENDS = ('sync', 'thread')


@dataclass
class InferenceResult:
    """One answered request.

    Attributes:
        chunk: the policy's :class:`ActionChunk`, or None when it raised.
        error: the exception the policy raised (``PolicyUnavailable``, ``ValueError``, anything), or None.
        request_time: runtime-clock time of the request (s), the ``request_now`` given to ``submit``.
        ready_time: runtime-clock time the chunk became available (s): ``request_time`` for
            :class:`SyncBackend`, ``request_time + latency_s`` for the others.
        latency_s: request -> result, s: the measured wall time of the call (sync, thread) or the
            simulated latency.
        compute_s: wall time the policy call really took (s).
        guided: the request carried a :class:`ChunkGuide`.
    """

    chunk: Optional[ActionChunk]
    error: Optional[BaseException]
    request_time: float
    ready_time: float
    latency_s: float
    compute_s: float
    guided: bool = False


class InferenceBackend:
    """Base class: a policy bound once (:meth:`bind`), one request at a time.

    Subclasses implement :meth:`submit` and :meth:`poll`. Every method is called from the control
    thread only; a worker's state is guarded internally.
    """

    name = 'base'
    #: True when a result can become ready after the tick that requested it.
    is_async = False

    def __init__(self) -> None:
        self.policy: Any = None
        self._closed = False

    def bind(self, policy: Any) -> None:
        """Attach the policy (the runtime does this). Raises ValueError for a second, different policy."""
        if self.policy is not None and self.policy is not policy:
            raise ValueError(f'{type(self).__name__} is already bound to another policy; use one backend per runtime')
        self.policy = policy

    def _call(self, history: Sequence[Observation], guide: Optional[ChunkGuide]) -> ActionChunk:
        if self.policy is None:
            raise RuntimeError(f'{type(self).__name__}: no policy bound (PolicyRuntime binds it)')
        if guide is None:
            return self.policy.infer(history)
        return self.policy.infer_guided(history, guide)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f'{type(self).__name__} is closed')

    @property
    def busy(self) -> bool:
        """A request is in flight or its result has not been polled yet."""
        raise NotImplementedError

    @property
    def queue_depth(self) -> int:
        """Requests in flight (0 or 1)."""
        return int(self.busy)

    def submit(self, history: Sequence[Observation], request_now: float, guide: Optional[ChunkGuide] = None) -> None:
        """Start inferring a chunk for ``history`` (oldest first), requested at ``request_now`` (runtime clock, s).

        ``guide`` given: ``policy.infer_guided(history, guide)`` (real-time chunking).

        Raises:
            RuntimeError: a request is already in flight (check :attr:`busy`) or the backend is closed.
        """
        raise NotImplementedError

    def poll(self, now: float) -> Optional[InferenceResult]:
        """The finished result when it is available at runtime-clock time ``now`` (each result once), else None."""
        raise NotImplementedError

    def reset_policy(self) -> None:
        """``policy.reset()`` without racing an inference in flight (deferred until it ends)."""
        if self.policy is not None:
            self.policy.reset()

    def close(self) -> None:
        """Stop the backend (idempotent); a later :meth:`submit` raises RuntimeError."""
        self._closed = True


def _run(backend: InferenceBackend, history, guide) -> tuple:
    t0 = time.monotonic()
    chunk: Optional[ActionChunk] = None
    error: Optional[BaseException] = None
    try:
        chunk = backend._call(history, guide)
    except Exception as exc:          # handed to the runtime, which decides (refuse or re-raise)
        error = exc
    return chunk, error, time.monotonic() - t0


class _InlineBackend(InferenceBackend):
    """Computes in :meth:`submit`, holds the one result until :meth:`poll` is called at or after
    its ready time (request time + :meth:`_latency`)."""

    #: A result is released when ``now >= ready_time - TIME_TOLERANCE_S`` (clock rounding of
    #: large stamps such as 1.8e9 s is ~2.4e-7 s).
    TIME_TOLERANCE_S = 1e-6

    def __init__(self) -> None:
        super().__init__()
        self._result: Optional[InferenceResult] = None

    def _latency(self, took: float) -> float:
        """Seconds of runtime clock from the request to the result, given the call's wall time."""
        raise NotImplementedError

    @property
    def busy(self) -> bool:
        return self._result is not None

    def submit(self, history, request_now, guide=None) -> None:
        self._check_open()
        if self.busy:
            raise RuntimeError(f'{type(self).__name__}: the previous result has not been polled')
        chunk, error, took = _run(self, history, guide)
        t = float(request_now)
        latency = self._latency(took)
        ready = t if not self.is_async else t + latency
        self._result = InferenceResult(chunk, error, t, ready, latency, took, guide is not None)

    def poll(self, now: float) -> Optional[InferenceResult]:
        r = self._result
        if r is None or float(now) < r.ready_time - self.TIME_TOLERANCE_S:
            return None
        self._result = None
        return r


class SyncBackend(_InlineBackend):
    """Infer inside :meth:`submit`; the result is ready at the request time (``latency_s`` = wall time of the call)."""

    name = 'sync'
    is_async = False

    def _latency(self, took: float) -> float:
        return took


class SimulatedLatencyBackend(_InlineBackend):
    """Compute inline, release the result when the runtime clock reaches ``request_time + latency_s``.

    For closed-loop evaluation in simulated time: the runtime sees exactly what a model taking
    ``latency_s`` per chunk would give it, deterministically, and nobody sleeps.

    Raises:
        ValueError: ``latency_s`` < 0 or not finite.
    """

    name = 'simulated'
    is_async = True

    def __init__(self, latency_s: float) -> None:
        super().__init__()
        latency_s = float(latency_s)
        if not (math.isfinite(latency_s) and latency_s >= 0):
            raise ValueError(f'simulated latency must be a finite number >= 0 s, got {latency_s}')
        self.latency_s = latency_s

    def _latency(self, took: float) -> float:
        return self.latency_s


class ThreadBackend(InferenceBackend):
    """One daemon worker thread runs the policy; :meth:`submit` and :meth:`poll` never wait for it.

    ``ready_time = request_time + latency`` with the latency measured by ``time.monotonic`` from
    the hand-over to the worker until the policy returned (the runtime clock may be ROS time or
    simulated time; only the duration is taken from the monotonic clock).

    :meth:`close` asks the worker to stop and waits up to ``join_timeout_s`` for it; a policy call
    still running then finishes in the (daemon) thread and its result is dropped.
    """

    name = 'thread'
    is_async = True

    def __init__(self, join_timeout_s: float = 2.0) -> None:
        super().__init__()
        self.join_timeout_s = float(join_timeout_s)
        self._cv = threading.Condition()
        self._job: Optional[tuple] = None            # (history, request_now, guide)
        self._running = False                        # the worker is inside the policy call
        self._result: Optional[InferenceResult] = None
        self._reset_pending = False
        self._stop = False
        self._thread: Optional[threading.Thread] = None

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name='vla-inference', daemon=True)
            self._thread.start()

    @property
    def busy(self) -> bool:
        with self._cv:
            return self._job is not None or self._running or self._result is not None

    @property
    def queue_depth(self) -> int:
        with self._cv:
            return int(self._job is not None or self._running)

    def submit(self, history, request_now, guide=None) -> None:
        self._check_open()
        with self._cv:
            if self._job is not None or self._running or self._result is not None:
                raise RuntimeError('ThreadBackend: a request is in flight')
            self._job = (list(history), float(request_now), guide)
            self._ensure_thread()
            self._cv.notify_all()

    def poll(self, now: float) -> Optional[InferenceResult]:
        with self._cv:
            out, self._result = self._result, None
            return out

    def reset_policy(self) -> None:
        with self._cv:
            if self._job is not None or self._running:
                self._reset_pending = True           # the worker resets after the call in flight
                return
        if self.policy is not None:
            self.policy.reset()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while self._job is None and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
                history, t_req, guide = self._job
                self._job = None
                self._running = True
            chunk, error, took = _run(self, history, guide)
            with self._cv:
                self._running = False
                if self._reset_pending:
                    self._reset_pending = False
                    try:
                        self.policy.reset()
                    except Exception as exc:   # reported with the (discarded) result of this call
                        error = error or exc
                if not self._stop:
                    self._result = InferenceResult(chunk, error, t_req, t_req + took, took, took, guide is not None)
                self._cv.notify_all()

    def close(self) -> None:
        if self._closed:
            return
        super().close()
        with self._cv:
            self._stop = True
            self._job = None
            self._cv.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(self.join_timeout_s)

    @property
    def alive(self) -> bool:
        """The worker thread is running (it starts with the first request)."""
        return self._thread is not None and self._thread.is_alive()


def make_backend(name: str) -> InferenceBackend:
    """The backend for ``RuntimeConfig.inference``; raises ValueError naming the valid choices."""
    if name == 'sync':
        return SyncBackend()
    if name == 'thread':
        return ThreadBackend()
    raise ValueError(f'inference must be one of {", ".join(repr(b) for b in BACKENDS)}, got {name!r}')
