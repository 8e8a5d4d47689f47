"""The policy runtime: inputs at the edge -> observation history -> policy -> action plan -> commands (ROS-free).

The rclpy ``policy_node`` and the ROS-free closed-loop evaluation both drive this class, so one
code path turns camera / joint-state / instruction messages into trajectory commands.

Per control tick (``step(now)``):
1. refuse to act when an input -- any camera of ``cameras``, the joint state, the instruction --
   is missing or older than ``max_obs_age_s`` (the plan is dropped: acting on it would replay
   stale intent); the refusal names the camera and its topic;
2. push the newest observation into the history (``n_obs_steps`` long);
3. pick up a chunk the inference backend has finished (:mod:`vla_policy.inference`) and splice it
   into the time-indexed plan (:mod:`vla_policy.handover`): its rows due by the time it was ready
   are dropped (latency compensation from the header stamps) and the rest meet the planned rows
   as ``handover`` says (``open_loop``, ``aggregate``, ``temporal_ensemble``, ``blend``, ``rtc``);
4. when the hand-over mode wants a new chunk and the backend is free, request one for the
   current history (with an RTC :class:`~vla_policy.contracts.ChunkGuide` in ``rtc`` mode);
   with ``inference: sync`` it is computed right here and spliced at once;
5. return the plan rows ahead of ``now`` as a :class:`TrajectoryCommand` (``time_from_start``
   relative to ``now``): with an asynchronous backend, or any mode but ``open_loop``, on every
   tick while the plan has rows ahead; with ``inference: sync`` and ``open_loop`` only on the
   ticks a chunk arrives, its first ``n_action_steps`` rows (the open-loop chunk execution of
   ACT / Diffusion Policy / LeRobot ``n_action_steps``, one command per chunk).

A policy that cannot answer (:class:`~vla_policy.contracts.PolicyUnavailable`: a server down or
too slow) or rejects the observation (ValueError) makes the runtime refuse: no command, the plan
is dropped, a ``'refusing'`` event with the reason; the request is repeated on later ticks and the
first chunk that arrives ends the refusal (``'acting'``). Any other exception from the policy is
re-raised by :meth:`PolicyRuntime.step` (a bug, not a condition).

Refusing to act, resuming, and a new instruction are recorded as :class:`RuntimeEvent` edges in
``events`` (one when a condition starts or changes, one when it ends; never one per tick); the
node logs each one once (:meth:`PolicyRuntime.take_events`). :meth:`PolicyRuntime.snapshot`
gives the numbers ``/diagnostics`` reports.
"""
from __future__ import annotations

import math
import sys
from collections import deque
from dataclasses import dataclass, fields
from typing import Any, Deque, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from robot_drivers import conversions as conv
from robot_drivers.embodiment import Embodiment
from robot_drivers.robot_config import parse_cameras
from vla_policy.contracts import Observation, Policy, PolicyUnavailable
from vla_policy.handover import (AGGREGATE_FUNCTIONS, BLEND_SHAPES, HANDOVER_MODES, PREFIX_SCHEDULES, Handover,
                                 delay_rows)
from vla_policy.history import ObservationHistory
from vla_policy.inference import BACKENDS, InferenceBackend, InferenceResult, make_backend

__all__ = ['RuntimeConfig', 'RuntimeEvent', 'RuntimeSnapshot', 'TrajectoryCommand', 'PolicyRuntime',
           'HANDOVER_MODES', 'BACKENDS']


def _choices(xs: Sequence[str]) -> str:
    return ', '.join(repr(x) for x in xs)


@dataclass
class RuntimeConfig:
    """Runtime parameters; every field is a plain bool/int/float/str and maps 1:1 onto the
    ``policy_node`` ROS parameter of the same name.

    n_obs_steps: observations fed to the policy (must match the model's).
    n_action_steps: chunk rows executed per inference in ``open_loop``; fewer = more reactive,
        more inference.
    max_obs_age_s: refuse to act on an image or joint state older than this (s). 0.5 s = 5
        control periods at 10 Hz: a camera hiccup is tolerated, a dead driver is not.
    camera: key of the image in ``Observation.images`` (the model's camera name); with several
        cameras, the first of ``cameras``.
    cameras: every camera the model reads and its image topic, as ``name=topic`` pairs separated
        by commas, in the model's ``camera_names`` order (a string so that it is one ROS parameter),
        e.g. ``'front=/camera/image_raw,wrist=/wrist_camera/image_raw'``; a mapping
        ``{name: topic}`` is accepted too. ``''`` (default) = the one camera ``camera`` on
        ``/camera/image_raw``. An observation is complete only when every camera is fresh. The
        topics only name where images come from (in refusals); the caller subscribes.
    handover: how a new chunk meets the executing plan, one of ``'open_loop'`` (default: execute
        ``n_action_steps`` rows, then the next chunk), ``'aggregate'`` (LeRobot async inference),
        ``'temporal_ensemble'`` (ACT), ``'blend'``, ``'rtc'`` (real-time chunking; needs a policy
        with ``supports_guidance``, a flow-matching head); see :mod:`vla_policy.handover`.
    inference: ``'sync'`` (the policy runs inside the control tick) or ``'thread'`` (a worker
        thread; the tick never waits); see :mod:`vla_policy.inference`.
    chunk_size_threshold: ``aggregate``/``blend`` request the next chunk when the rows ahead are
        at most this fraction of a chunk, in [0, 1] (LeRobot ``chunk_size_threshold``, default 0.5).
    aggregate_fn: merge of two chunks' rows for the same time in ``aggregate``:
        ``'weighted_average'`` (0.3 old + 0.7 new), ``'latest_only'``, ``'average'``,
        ``'conservative'`` (0.7 old + 0.3 new) (lerobot 0.4.4 ``AGGREGATE_FUNCTIONS``).
    ensemble_m: ACT temporal-ensemble coefficient ``m`` in ``w_i = exp(-m i)`` (>= 0; ACT: 0.01).
    blend_window: rows over which ``blend`` ramps the new chunk in (0 = the whole overlap).
    blend_shape: ``'linear'`` or ``'exp'``.
    rtc_execution_horizon: RTC ``s``, rows of a chunk executed before the next is requested
        (0 = ``n_action_steps``); at most the policy's chunk size.
    rtc_max_guidance_weight: RTC guidance clip ``beta`` (> 0; paper 5, LeRobot 10).
    rtc_prefix_schedule: RTC soft-mask decay over the overlap: ``'linear'``, ``'exp'``,
        ``'zeros'``, ``'ones'`` (LeRobot ``RTCAttentionSchedule``).
    publish_horizon: at most this many rows per published trajectory (0 = every row ahead).
    control_rate_hz: the rate ``step`` is called at, for the missed-tick count (0 = the
        embodiment's ``control_rate_hz``).

    Raises:
        ValueError: a value out of range or a name not among the choices (the message lists them).
        TypeError: a field of the wrong type.
    """

    n_obs_steps: int = 1
    n_action_steps: int = 4
    max_obs_age_s: float = 0.5
    camera: str = 'front'
    cameras: str = ''
    handover: str = 'open_loop'
    inference: str = 'sync'
    chunk_size_threshold: float = 0.5
    aggregate_fn: str = 'weighted_average'
    ensemble_m: float = 0.01
    blend_window: int = 0
    blend_shape: str = 'linear'
    rtc_execution_horizon: int = 0
    rtc_max_guidance_weight: float = 10.0
    rtc_prefix_schedule: str = 'linear'
    publish_horizon: int = 0
    control_rate_hz: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.cameras, Mapping):
            self.cameras = ','.join(f'{k}={v}' for k, v in self.cameras.items())
        for f in fields(self):
            v = getattr(self, f.name)
            want = {'int': int, 'float': (int, float), 'str': str, 'bool': bool}[f.type]
            if isinstance(v, bool) and f.type != 'bool' or not isinstance(v, want) or isinstance(v, np.generic):
                if isinstance(v, np.generic) and isinstance(v.item(), want) and not isinstance(v.item(), bool):
                    setattr(self, f.name, v.item())
                    continue
                raise TypeError(f'RuntimeConfig.{f.name} must be {f.type}, got {type(v).__name__} {v!r}')
            if f.type == 'float':
                setattr(self, f.name, float(v))
        if self.n_obs_steps < 1:
            raise ValueError(f'n_obs_steps must be >= 1, got {self.n_obs_steps}')
        if self.n_action_steps < 1:
            raise ValueError(f'n_action_steps must be >= 1, got {self.n_action_steps}')
        if not self.max_obs_age_s > 0:
            raise ValueError(f'max_obs_age_s must be > 0, got {self.max_obs_age_s}')
        if not self.camera:
            raise ValueError('camera must name the model camera, got an empty string')
        topics = self.camera_topics     # parses (and checks) cameras
        if self.cameras:
            first = next(iter(topics))
            if self.camera not in ('front', first):
                raise ValueError(f'camera {self.camera!r} is not the first of cameras {list(topics)}')
            self.camera = first
        for name, value, valid in (('handover', self.handover, HANDOVER_MODES), ('inference', self.inference, BACKENDS),
                                   ('aggregate_fn', self.aggregate_fn, tuple(AGGREGATE_FUNCTIONS)),
                                   ('blend_shape', self.blend_shape, BLEND_SHAPES),
                                   ('rtc_prefix_schedule', self.rtc_prefix_schedule, PREFIX_SCHEDULES)):
            if value not in valid:
                raise ValueError(f'{name} must be one of {_choices(valid)}, got {value!r}')
        if not 0.0 <= self.chunk_size_threshold <= 1.0:
            raise ValueError(f'chunk_size_threshold must be in [0, 1], got {self.chunk_size_threshold}')
        if not (math.isfinite(self.ensemble_m) and self.ensemble_m >= 0):
            raise ValueError(f'ensemble_m must be a finite number >= 0, got {self.ensemble_m}')
        for name in ('blend_window', 'rtc_execution_horizon', 'publish_horizon'):
            if getattr(self, name) < 0:
                raise ValueError(f'{name} must be >= 0 (0 = default, see RuntimeConfig), got {getattr(self, name)}')
        if not (math.isfinite(self.rtc_max_guidance_weight) and self.rtc_max_guidance_weight > 0):
            raise ValueError(f'rtc_max_guidance_weight must be > 0, got {self.rtc_max_guidance_weight}')
        if not (math.isfinite(self.control_rate_hz) and self.control_rate_hz >= 0):
            raise ValueError(f'control_rate_hz must be >= 0 (0 = the embodiment rate), got {self.control_rate_hz}')

    @property
    def camera_topics(self) -> Dict[str, str]:
        """``{camera name: image topic}`` of :attr:`cameras`, in order (``{camera: '/camera/image_raw'}`` when empty).

        Raises:
            ValueError: a pair that is not ``name=/topic``, or a camera or topic given twice.
        """
        return parse_cameras(self.cameras, 'cameras') or {self.camera: DEFAULT_IMAGE_TOPIC}

    @property
    def camera_names(self) -> Tuple[str, ...]:
        """The cameras in order (``(camera,)`` when :attr:`cameras` is empty)."""
        return tuple(self.camera_topics)


#: Image topic of the single camera when ``RuntimeConfig.cameras`` is empty (REP-144 style).
DEFAULT_IMAGE_TOPIC = '/camera/image_raw'


@dataclass(frozen=True)
class RuntimeEvent:
    """An edge in the runtime's state.

    kind: ``'refusing'`` (no command: ``detail`` says why; recorded when refusal starts or its
        reason changes), ``'acting'`` (the refusal ended), ``'instruction'`` (``detail`` is the new
        instruction).
    stamp: control time (s) of the tick that saw it; None for an instruction (arrives off-tick).
    """

    kind: str
    detail: str
    stamp: Optional[float] = None


@dataclass
class TrajectoryCommand:
    """What to publish: action rows ``positions (P, J)`` for ``joint_names``, point k due ``times[k]`` s
    after ``stamp`` (``times`` None: ``(k + 1) * dt``). For an embodiment with velocity DOFs the
    rows hold their velocities, and :meth:`to_msg` puts those into the points' ``velocities``
    (:func:`robot_drivers.conversions.action_trajectory`)."""

    joint_names: Tuple[str, ...]
    positions: np.ndarray
    dt: float
    stamp: float
    times: Optional[np.ndarray] = None
    embodiment: Optional[Embodiment] = None

    @property
    def time_from_start(self) -> np.ndarray:
        """``(P,)`` s after ``stamp``."""
        if self.times is not None:
            return np.asarray(self.times, np.float64)
        return (np.arange(len(self.positions)) + 1) * self.dt

    def to_msg(self, types: conv.MessageTypes) -> Any:
        """As ``trajectory_msgs/JointTrajectory`` built from ``types``."""
        if self.embodiment is not None:
            return conv.action_trajectory(self.embodiment, self.positions, self.stamp, types, dt=self.dt,
                                          times=self.times)
        return conv.arrays_to_trajectory(self.joint_names, self.positions, self.stamp, types, dt=self.dt,
                                         times=self.times)


@dataclass
class RuntimeSnapshot:
    """The runtime's state at one instant, for ``/diagnostics`` and ``~/status``.

    status: ``'running'`` or why no command is produced. acting: not refusing.
    instruction: the current one (None until one arrives).
    input_ages_s: ``{'image', 'joint_state'}``: ``now`` minus the newest stamp, s (None: none yet);
        ``'image'`` is the oldest camera's (None while a camera has none); with several cameras
        also ``'image/<camera>'`` for each.
    latency_ms: ``{'last', 'p50', 'p99'}`` over the last 100 inferences, request -> chunk ready
        (sync: the wall time of the call), ms (None: no inference yet).
    inferences: chunks received. inference_errors: policy calls that raised.
    queue_depth: requests in flight (0/1). plan_rows_left: plan rows ahead of ``now``.
    dropped_ticks: ticks while acting, after the first chunk, with no plan row ahead (plan ran dry).
    missed_ticks: control ticks that came more than 1.5 periods after the previous one.
    handover, backend: the mode and the backend name (``sync``, ``thread``, ``simulated``).
    ticks: ``step`` calls. commands: commands returned.
    last_splice_index: rows the last chunk dropped as already due (None before the first chunk).
    """

    status: str
    acting: bool
    instruction: Optional[str]
    input_ages_s: Dict[str, Optional[float]]
    latency_ms: Dict[str, Optional[float]]
    inferences: int
    inference_errors: int
    queue_depth: int
    plan_rows_left: int
    dropped_ticks: int
    missed_ticks: int
    handover: str
    backend: str
    ticks: int = 0
    commands: int = 0
    last_splice_index: Optional[int] = None


def _guidance_heads() -> str:
    """Names of the registered heads that support guidance (the built-in ones: 'flow')."""
    reg = sys.modules.get('vla_policy.models.registry')
    heads = sorted(n for n, cls in getattr(reg, '_HEADS', {}).items() if getattr(cls, 'supports_guidance', False))
    return _choices(heads) if heads else "'flow'"


class PolicyRuntime:
    """Feeds a :class:`~vla_policy.contracts.Policy` from timestamped inputs; see the module docstring.

    Args:
        policy: ``infer(history) -> ActionChunk``, ``reset()``; for ``handover='rtc'`` also
            ``supports_guidance = True`` and ``infer_guided(history, guide)``.
        embodiment: joints the chunks must name, in order; its ``dt`` is the control period unless
            ``config.control_rate_hz`` is set.
        config: :class:`RuntimeConfig` (default values when None).
        backend: an :class:`~vla_policy.inference.InferenceBackend` (e.g. a
            :class:`~vla_policy.inference.SimulatedLatencyBackend`); None = the one
            ``config.inference`` names. The runtime binds the policy to it and closes it in :meth:`close`.
        binary_dims: action dims never averaged across chunks (a gripper); None = the policy's
            ``config.binary_action_dims`` when it has one, else none.

    Attributes:
        status: ``'running'`` or why no command is produced (the current refusal).
        refusal: the current refusal reason, None while acting.
        events: the last :data:`MAX_EVENTS` :class:`RuntimeEvent` edges, oldest first.
        inferences: chunks received from the policy so far.
        handover: the :class:`~vla_policy.handover.Handover` holding the plan.

    Raises:
        ValueError: ``handover='rtc'`` with a policy whose ``supports_guidance`` is not True.
    """

    MAX_EVENTS = 256
    #: Latencies kept for the snapshot percentiles.
    LATENCY_WINDOW = 100
    #: Delays (request -> ready) whose largest is the expected delay for RTC's frozen prefix and
    #: open-loop prefetch: an underestimate leaves rows unfrozen that already run.
    DELAY_WINDOW = 10

    def __init__(self, policy: Policy, embodiment: Embodiment, config: Optional[RuntimeConfig] = None, *,
                 backend: Optional[InferenceBackend] = None, binary_dims: Optional[Sequence[int]] = None) -> None:
        self.cfg = config or RuntimeConfig()
        cfg = self.cfg
        if cfg.handover == 'rtc' and getattr(policy, 'supports_guidance', False) is not True:
            raise ValueError(
                f"handover 'rtc' (real-time chunking) needs a policy that supports guidance "
                f"(supports_guidance = True and infer_guided(); heads that support it: {_guidance_heads()}); "
                f'{type(policy).__name__} does not. Choose another handover: '
                f'{_choices([m for m in HANDOVER_MODES if m != "rtc"])}')
        self.policy = policy
        self.embodiment = embodiment
        self.backend = backend if backend is not None else make_backend(cfg.inference)
        self.backend.bind(policy)
        if binary_dims is None:
            binary_dims = tuple(getattr(getattr(policy, 'config', None), 'binary_action_dims', ()) or ())
        self.handover = Handover(
            cfg.handover, n_action_steps=cfg.n_action_steps, chunk_size_threshold=cfg.chunk_size_threshold,
            aggregate_fn=cfg.aggregate_fn, ensemble_m=cfg.ensemble_m, blend_window=cfg.blend_window,
            blend_shape=cfg.blend_shape, rtc_execution_horizon=cfg.rtc_execution_horizon or cfg.n_action_steps,
            rtc_prefix_schedule=cfg.rtc_prefix_schedule, rtc_max_guidance_weight=cfg.rtc_max_guidance_weight,
            binary_dims=binary_dims)
        self.period = 1.0 / cfg.control_rate_hz if cfg.control_rate_hz > 0 else float(embodiment.dt)
        self.history = ObservationHistory(cfg.n_obs_steps)
        self.camera_topics: Dict[str, str] = cfg.camera_topics    # {camera: topic}, model order
        self._images: Dict[str, Tuple[np.ndarray, float]] = {}
        self._joints: Optional[Tuple[np.ndarray, Optional[np.ndarray], float]] = None
        self._instruction: Optional[str] = None
        self._last_pushed = None      # (image stamps..., joint stamp) of the last history entry
        self.status = 'waiting for inputs'
        self.refusal: Optional[str] = self.status
        self._refusal_key: Optional[Tuple[str, ...]] = ('start',)
        self.events: Deque[RuntimeEvent] = deque(maxlen=self.MAX_EVENTS)
        self._unread: Deque[RuntimeEvent] = deque(maxlen=self.MAX_EVENTS)
        self.inferences = 0
        self.inference_errors = 0
        self._generation = 0          # bumped whenever the plan is dropped: older results are stale
        self._inflight_generation: Optional[int] = None
        self._policy_error: Optional[Tuple[Tuple[str, ...], str]] = None
        self._had_chunk = False       # a chunk arrived since the plan was last dropped
        self._latencies: Deque[float] = deque(maxlen=self.LATENCY_WINDOW)
        self._delays: Deque[float] = deque(maxlen=self.DELAY_WINDOW)
        self._last_tick: Optional[float] = None
        self.ticks = 0
        self.commands = 0
        self.dropped_ticks = 0
        self.missed_ticks = 0
        self._closed = False
        self._error_tick = -1

    def _event(self, kind: str, detail: str, stamp: Optional[float] = None) -> None:
        ev = RuntimeEvent(kind, detail, stamp)
        self.events.append(ev)
        self._unread.append(ev)

    def take_events(self) -> List[RuntimeEvent]:
        """The events recorded since the last call (each is returned once; for logging)."""
        out = list(self._unread)
        self._unread.clear()
        return out

    # ------------------------------------------------------------------ inputs (arrays)
    def on_image(self, image: np.ndarray, stamp: float, camera: Optional[str] = None) -> None:
        """``image`` uint8 (H, W, 3) RGB of ``camera`` (default: the first) stamped ``stamp`` s.

        Raises:
            ValueError: a camera the runtime does not read (names the configured ones).
        """
        cam = self.cfg.camera_names[0] if camera is None else str(camera)
        if cam not in self.camera_topics:
            raise ValueError(f'image of camera {cam!r}, but the model reads cameras {list(self.camera_topics)}')
        self._images[cam] = (image, float(stamp))

    @property
    def _image(self) -> Optional[Tuple[np.ndarray, float]]:
        """The first camera's newest ``(image, stamp)`` (None: none yet)."""
        return self._images.get(self.cfg.camera_names[0])

    def on_joint_state(self, positions: np.ndarray, stamp: float, velocities: Optional[np.ndarray] = None) -> None:
        """``positions (J,)`` in embodiment order (rad / m); raises ValueError on the wrong length."""
        positions = np.asarray(positions, dtype=np.float64).reshape(-1)
        if positions.shape[0] != self.embodiment.dof:
            raise ValueError(f'joint state has {positions.shape[0]} positions, embodiment '
                             f'{self.embodiment.name!r} has {self.embodiment.dof}')
        self._joints = (positions, velocities, float(stamp))

    @property
    def instruction(self) -> Optional[str]:
        """The instruction the policy is conditioned on (None until one arrives)."""
        return self._instruction

    def on_instruction(self, text: str) -> bool:
        """A new instruction resets the policy and drops the pending chunk.

        Returns True when the instruction changed (an ``'instruction'`` event is recorded),
        False for the current one again. Raises ValueError on an empty instruction.
        """
        text = str(text).strip()
        if not text:
            raise ValueError('instruction is empty')
        if text == self._instruction:
            return False
        self._instruction = text
        self._event('instruction', text)
        self.reset()
        return True

    # ------------------------------------------------------------------ inputs (messages, any flavour)
    def on_image_msg(self, msg: Any, *, source: Optional[str] = None, bridge: Any = None,
                     camera: Optional[str] = None) -> None:
        """``sensor_msgs/Image`` or ``CompressedImage`` (rclpy or rosbags) of ``camera`` (default:
        the first), converted by :func:`robot_drivers.conversions.image_msg_to_rgb` (cv_bridge when
        ``bridge`` is a ``CvBridge``, else the built-in converter). ``source`` (default: the
        camera's topic) names the input in errors. Raises ValueError naming ``source``, or an
        unknown camera."""
        cam = self.cfg.camera_names[0] if camera is None else str(camera)
        if cam not in self.camera_topics:
            raise ValueError(f'image of camera {cam!r}, but the model reads cameras {list(self.camera_topics)}')
        src = self.camera_topics[cam] if source is None else source
        self.on_image(conv.image_msg_to_rgb(msg, source=src, bridge=bridge), conv.stamp_to_sec(msg.header.stamp), cam)

    def on_joint_state_msg(self, msg: Any, *, source: str = '/joint_states') -> None:
        pos, vel = conv.joint_state_to_state(msg, self.embodiment, source=source)
        self.on_joint_state(pos, conv.stamp_to_sec(msg.header.stamp), vel)

    def on_instruction_msg(self, msg: Any) -> bool:
        return self.on_instruction(msg.data)

    # ------------------------------------------------------------------ control tick
    def _drop_plan(self) -> None:
        """Forget the plan; a result still in flight belongs to the old plan and will be discarded."""
        self.handover.clear()
        self._generation += 1
        self._had_chunk = False

    def reset(self) -> None:
        """Episode start: clear the history and the plan, reset the policy (after a call in flight)."""
        self.history.clear()
        self._drop_plan()
        self._last_pushed = None
        self.backend.reset_policy()

    def close(self) -> None:
        """Stop the inference backend (its worker thread, if any); idempotent."""
        if not self._closed:
            self._closed = True
            self.backend.close()

    def snapshot(self, now: float) -> RuntimeSnapshot:
        """The runtime's state at ``now`` (s, the clock ``step`` gets); see :class:`RuntimeSnapshot`."""
        now = float(now)
        lat = np.asarray(self._latencies, np.float64) * 1e3
        latency = ({'last': float(lat[-1]), 'p50': float(np.percentile(lat, 50)), 'p99': float(np.percentile(lat, 99))}
                   if len(lat) else {'last': None, 'p50': None, 'p99': None})
        cam_ages = {c: None if c not in self._images else now - self._images[c][1] for c in self.camera_topics}
        ages: Dict[str, Optional[float]] = {
            'image': None if None in cam_ages.values() else max(cam_ages.values()),
            'joint_state': None if self._joints is None else now - self._joints[2]}
        if len(cam_ages) > 1:
            ages.update({f'image/{c}': a for c, a in cam_ages.items()})
        last = self.handover.last_splice
        return RuntimeSnapshot(
            status=self.status, acting=self.refusal is None, instruction=self._instruction, input_ages_s=ages,
            latency_ms=latency, inferences=self.inferences, inference_errors=self.inference_errors,
            queue_depth=self.backend.queue_depth, plan_rows_left=self.handover.rows_ahead(now),
            dropped_ticks=self.dropped_ticks, missed_ticks=self.missed_ticks, handover=self.handover.mode,
            backend=self.backend.name, ticks=self.ticks, commands=self.commands,
            last_splice_index=None if last is None else last.dropped)

    def _refuse(self, key: Tuple[str, ...], why: str, now: float, drop: bool = True) -> None:
        """Refuse this tick. ``key`` names the condition (an age in ``why`` grows every tick; the
        condition does not), so an event is recorded only when the condition starts or changes.
        ``drop``: drop the plan and discard the result of a request in flight."""
        if key != self._refusal_key:
            self._event('refusing', why, now)
            self._refusal_key = key
        self.status = self.refusal = why
        if drop:
            self._drop_plan()

    @property
    def expected_delay_s(self) -> float:
        """Expected request -> ready delay on the runtime clock (s): the largest of the last
        :data:`DELAY_WINDOW` (0 before the first chunk and with synchronous inference)."""
        return max(self._delays) if self._delays else 0.0

    def _take(self, res: Optional[InferenceResult], now: float) -> bool:
        """Handle a polled result; True when a chunk was spliced into the plan."""
        if res is None:
            return False
        generation, self._inflight_generation = self._inflight_generation, None
        self._latencies.append(res.latency_s)
        if res.error is not None:
            self.inference_errors += 1
            self._error_tick = self.ticks
            if generation != self._generation:
                return False
            err = res.error
            if isinstance(err, PolicyUnavailable):
                self._policy_error = (('policy unavailable', type(err).__name__), f'policy unavailable: {err}')
            elif isinstance(err, ValueError):
                self._policy_error = (('policy rejected', type(err).__name__),
                                      f'policy rejected the observation: {err}')
            else:
                raise err
            self._drop_plan()
            return False
        chunk = res.chunk
        self.inferences += 1
        self._delays.append(res.ready_time - res.request_time)
        if generation != self._generation:
            return False
        if tuple(chunk.joint_names) != tuple(self.embodiment.joint_names):
            raise ValueError(f'policy returned joints {chunk.joint_names}, embodiment '
                             f'{self.embodiment.name!r} expects {self.embodiment.joint_names}')
        self._policy_error = None
        self.handover.splice(chunk, res.ready_time)
        self._had_chunk = True
        return True

    def _request(self, now: float) -> None:
        history = self.history.frames()
        guide = None
        plan = self.handover.plan
        if self.handover.mode == 'rtc' and len(plan):
            t_obs = history[-1].stamp
            d = delay_rows(t_obs, float(now) + self.expected_delay_s, plan.dt, plan.horizon)
            guide = self.handover.guide(t_obs, plan.horizon, d)
        self._inflight_generation = self._generation
        self.backend.submit(history, float(now), guide)

    def step(self, now: float) -> Optional[TrajectoryCommand]:
        """One control tick at time ``now`` (s); returns the command to publish, or None.

        ``self.status`` says why no command was produced when inputs are missing or stale or the
        policy cannot answer; the start and end of each refusal are recorded in ``events``.

        Raises:
            ValueError: the policy returned other joints than the embodiment's.
            Exception: whatever the policy raised other than PolicyUnavailable / ValueError.
        """
        now = float(now)
        self.ticks += 1
        if self._last_tick is not None and now - self._last_tick > 1.5 * self.period:
            self.missed_ticks += 1
        self._last_tick = now
        cams = self.camera_topics
        what_cam = {c: 'image' if len(cams) == 1 else f'camera {c!r} image ({t})' for c, t in cams.items()}
        if len(self._images) < len(cams) or self._joints is None or self._instruction is None:
            missing = [what_cam[c] for c in cams if c not in self._images]
            missing += [n for n, v in (('joint state', self._joints), ('instruction', self._instruction)) if v is None]
            self._refuse(('waiting', *missing), f'waiting for {", ".join(missing)}', now)
            return None
        q, qd, q_stamp = self._joints
        inputs = [(what_cam[c], self._images[c][1]) for c in cams] + [('joint state', q_stamp)]
        for what, stamp in inputs:
            age = now - stamp
            if age > self.cfg.max_obs_age_s:
                self._refuse(('stale', what), f'{what} is {age:.3f} s old (max_obs_age_s = {self.cfg.max_obs_age_s})',
                             now)
                return None
        key = tuple(stamp for _, stamp in inputs)
        if key != self._last_pushed:
            self.history.push(Observation(images={c: self._images[c][0] for c in cams}, joint_positions=q,
                                          instruction=self._instruction, stamp=max(key),
                                          joint_velocities=qd))
            self._last_pushed = key
        spliced = self._take(self.backend.poll(now), now)
        # after a failed call, the next request goes out on a later tick
        if (self._error_tick != self.ticks and not self.backend.busy
                and self.handover.wants_chunk(now, self.expected_delay_s)):
            self._request(now)
            spliced = self._take(self.backend.poll(now), now) or spliced
        if self._policy_error is not None:
            key_, why = self._policy_error
            self._refuse(key_, why, now, drop=False)   # dropped when the error came; a retry may be in flight
            return None
        if self.refusal is not None:
            self._event('acting', f'acting (was: {self.refusal})', now)
            self.refusal = None
            self._refusal_key = None
        self.status = 'running'
        plan = self.handover.plan
        if self.backend.is_async or self.handover.mode != 'open_loop':
            publish = plan.rows_ahead(now) > 0
        else:
            publish = spliced
        if self._had_chunk and plan.rows_ahead(now) == 0:
            self.dropped_ticks += 1
        if not publish:
            return None
        tfs, pos = plan.ahead(now, self.cfg.publish_horizon)
        if not len(tfs):
            return None
        self.commands += 1
        return TrajectoryCommand(tuple(plan.joint_names), pos, plan.dt, now, tfs, self.embodiment)
