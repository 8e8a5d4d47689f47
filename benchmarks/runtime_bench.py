"""Policy runtime benchmark: per-observation overhead outside the model, command-rate jitter while a
slow model thinks, loopback policy-server round trip, and LeRobot's processors side by side.

    python benchmarks/runtime_bench.py [--iters 500] [--image-size 96] [--lerobot-python PY]
                                       [--out benchmarks/results/runtime.json] [--readme benchmarks/README.md]

``make bench-runtime`` runs it (``make bench-runtime LEROBOT=1`` first builds LeRobot's venv
``.venv-lerobot`` and adds the side-by-side). One torch thread (the 2-core reference machine).

Parts:
* ``overhead``: one ``sensor_msgs/Image`` (rgb8, rosbags message as the node receives it) and one
  ``sensor_msgs/JointState`` go into :class:`vla_policy.runtime.PolicyRuntime` and one control tick
  runs with ``n_action_steps = 1`` (every tick infers), the policy is a :class:`VLAPolicy` whose model
  is a stub that returns a fixed ``(1, H, A)`` tensor, and the command is built as a
  ``trajectory_msgs/JointTrajectory``. So each iteration does everything the runtime does per
  observation, once: message -> image/state arrays, history push, preprocess (resize to the
  model's ``image_size``, to tensor, quantile-normalise the state, tokenize), post-process the
  chunk (unnormalise, delta -> absolute, gripper binarisation), schedule, build the message.
  Median and p99 over ``--iters`` iterations at 96x96, 224x224 and 640x480 RGB, plus the median of
  each stage timed on its own.
* ``resize``: the candidate downscaling filters for the image preprocessing (see
  :mod:`vla_policy.images`), microseconds per image.
* ``lerobot``: ``benchmarks/lerobot_overhead.py`` run by ``--lerobot-python`` (LeRobot 0.4.4's venv);
  skipped with a message when that interpreter is absent.
* ``jitter``: a 30 Hz command stream while the model takes 200 ms per chunk (the threaded
  inference backend, ``aggregate`` hand-over), once as is and once after ``gc.freeze()``
  (``jitter_gc_frozen``): a full garbage collection of the start-up objects can pause the
  interpreter for tens of milliseconds; ``loopback``: one 224x224 observation through the websocket policy server on
  loopback vs a local ``infer`` (``vla_policy.policy_server``). Each is skipped with a message
  when its module is missing.

``runtime.json`` records the load average before and after; timings on a busy machine are worse.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
for _pkg in ('robot_drivers', 'vla_policy', 'vla_training'):
    sys.path.insert(0, str(ROOT / 'src' / _pkg))

RESOLUTIONS = {'96': (96, 96), '224': (224, 224), '640x480': (480, 640)}   # key -> (H, W)
INSTRUCTION = 'pick up the red cube'
README_START = '<!-- runtime-bench:start -->'
README_END = '<!-- runtime-bench:end -->'
#: per-observation overhead (median ms) measured on the 2-core reference machine with the code
#: before the area filter and the zero-copy image view (same benchmark, 500 observations)
BEFORE_MS = {'96': 0.156, '224': 0.659, '640x480': 2.199}


def _stats_ms(ns: List[int]) -> Dict[str, float]:
    a = np.asarray(ns, dtype=np.float64) * 1e-6
    return {'median_ms': float(np.median(a)), 'p99_ms': float(np.percentile(a, 99)),
            'mean_ms': float(a.mean()), 'n': int(a.size)}


def _time(fn: Callable[[], Any], iters: int, warmup: int = 20) -> List[int]:
    for _ in range(warmup):
        fn()
    out = []
    pc = time.perf_counter_ns
    for _ in range(iters):
        t0 = pc()
        fn()
        out.append(pc() - t0)
    return out


# ----------------------------------------------------------------------------- stub policy
def build_stub_policy(image_size: int, delay_s: float = 0.0):
    """A :class:`VLAPolicy` on the Franka film_cnn config whose model returns a fixed chunk.

    ``delay_s`` > 0 makes the stub sleep that long per call (a slow model for the jitter test).
    """
    import torch
    from robot_drivers.embodiment import FRANKA_PANDA
    from vla_policy.models.tokenizer import WordTokenizer
    from vla_policy.normalization import NormalizationStats
    from vla_policy.policy import VLAPolicy
    from vla_training.train_cli import load_train_yaml

    cfg, _, _ = load_train_yaml(str(ROOT / 'config/train_franka.yaml'))
    cfg.backbone.image_size = image_size
    tok = WordTokenizer.build(['reach the red cube', 'pick up the blue cube', 'pick up the red cube'],
                              cfg.max_tokens)
    cfg.backbone.vocab_size = tok.vocab_size
    h, a = cfg.chunk.chunk_size, cfg.action_dim

    class StubModel(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer('out', torch.linspace(-0.5, 0.5, h * a).reshape(1, h, a))
            self.head = torch.nn.Module()   # a deterministic head: no guidance, no sampling

        def forward(self, batch, **kwargs):  # noqa: D401 - the stub "model"
            if delay_s:
                time.sleep(delay_s)
            return self.out

    rng = np.random.default_rng(0)
    lo, hi = FRANKA_PANDA.lower, FRANKA_PANDA.upper
    q = (lo + (hi - lo) * rng.uniform(0.3, 0.7, (256, 8))).astype('float32')
    stats = {'state': NormalizationStats.from_data(q), 'action': NormalizationStats.from_data(q - q.mean(0))}
    return VLAPolicy(StubModel(), cfg, stats, tok)


def make_messages(h: int, w: int, seed: int = 0):
    """rosbags ``sensor_msgs/Image`` (rgb8, h x w) and ``sensor_msgs/JointState`` factories."""
    from robot_drivers import conversions as conv
    from robot_drivers.embodiment import FRANKA_PANDA
    types = conv.rosbags_types()
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    q0 = 0.5 * (FRANKA_PANDA.lower + FRANKA_PANDA.upper)
    names = list(FRANKA_PANDA.joint_names)

    def image_msg(t: float):
        return conv.numpy_to_image(img, t, types)

    def joint_msg(t: float):
        return conv.arrays_to_joint_state(names, q0 + 0.01 * np.sin(t), t, types, velocities=np.zeros(len(names)))

    return types, image_msg, joint_msg


# ----------------------------------------------------------------------------- overhead
def overhead_once(h: int, w: int, image_size: int, iters: int) -> Dict[str, Any]:
    """Per-observation runtime overhead for an ``h x w`` rgb8 camera and a model input of ``image_size``."""
    import torch
    from robot_drivers import conversions as conv
    from robot_drivers.embodiment import FRANKA_PANDA
    from vla_policy.contracts import Observation
    from vla_policy.runtime import PolicyRuntime, RuntimeConfig, TrajectoryCommand

    pol = build_stub_policy(image_size)
    types, image_msg, joint_msg = make_messages(h, w)
    rt = PolicyRuntime(pol, FRANKA_PANDA, RuntimeConfig(n_obs_steps=pol.config.chunk.n_obs_steps,
                                                        n_action_steps=1, max_obs_age_s=1.0))
    rt.on_instruction(INSTRUCTION)
    # messages are built before timing (they arrive from the middleware); each tick gets new ones.
    # Ticks one control period apart with n_action_steps = 1: every tick runs a new inference.
    n = iters + 50
    dt = FRANKA_PANDA.dt
    imgs = [image_msg(1.0 + k * dt) for k in range(n)]
    joints = [joint_msg(1.0 + k * dt) for k in range(n)]
    k = [0]

    def tick():
        i = k[0]
        k[0] += 1
        rt.on_image_msg(imgs[i])
        rt.on_joint_state_msg(joints[i])
        cmd = rt.step(1.0 + i * dt + 0.001)
        if cmd is None:
            raise RuntimeError(f'no command at tick {i}: {rt.status}')
        return cmd.to_msg(types)

    try:
        total = _stats_ms(_time(tick, iters, warmup=50))
    finally:
        if hasattr(rt, 'close'):
            rt.close()
    if rt.inferences != k[0]:
        raise RuntimeError(f'{rt.inferences} inferences in {k[0]} ticks: not every tick ran the policy')

    # the stages on their own (medians)
    im, jm = imgs[0], joints[0]
    img = conv.image_msg_to_rgb(im)
    ob = Observation({pol.camera: img}, conv.joint_state_to_arrays(jm, FRANKA_PANDA.joint_names)[0],
                     INSTRUCTION, 1.0)
    hist = [ob] * pol.config.chunk.n_obs_steps
    batch = pol.make_batch(hist)

    def model_only():
        with torch.no_grad():
            return pol.model(batch)[0].float().cpu().numpy()

    chunk = pol.infer(hist)
    cmd = TrajectoryCommand(chunk.joint_names, np.asarray(chunk.actions[:1], np.float64), chunk.dt, 1.0)
    stages = {
        'image_msg_to_array': _time(lambda: conv.image_msg_to_rgb(im), iters),
        'joint_msg_to_array': _time(lambda: conv.joint_state_to_arrays(jm, FRANKA_PANDA.joint_names), iters),
        'make_batch': _time(lambda: pol.make_batch(hist), iters),
        'stub_model_call': _time(model_only, iters),
        'infer_with_stub_model': _time(lambda: pol.infer(hist), iters),
        'build_trajectory_msg': _time(lambda: cmd.to_msg(types), iters),
    }
    med = {s_: _stats_ms(v)['median_ms'] for s_, v in stages.items()}
    med['post_process'] = med['infer_with_stub_model'] - med['make_batch'] - med['stub_model_call']
    known = (med['image_msg_to_array'] + med['joint_msg_to_array'] + med['infer_with_stub_model']
             + med['build_trajectory_msg'])
    med['runtime_step_rest'] = total['median_ms'] - known   # history, checks, schedule, command
    return {'total': total, 'stages_median_ms': med, 'height': h, 'width': w, 'model_image_size': image_size}


def bench_overhead(iters: int, image_size: int) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, (h, w) in RESOLUTIONS.items():
        out[key] = overhead_once(h, w, image_size, iters)
        st = out[key]['stages_median_ms']
        print(f'overhead {key:>8} -> {image_size}: median {out[key]["total"]["median_ms"]:.3f} ms  '
              f'p99 {out[key]["total"]["p99_ms"]:.3f} ms  (' + ', '.join(f'{s_} {v:.3f}' for s_, v in st.items()) + ')',
              flush=True)
    return out


# ----------------------------------------------------------------------------- resize candidates
def bench_resize(iters: int, size: int) -> Dict[str, Dict[str, float]]:
    """Microseconds per uint8 (H, W, 3) -> (size, size, 3) resize, per candidate filter."""
    import torch
    import torch.nn.functional as F
    from PIL import Image as PILImage

    def torch_bilinear_aa(x):   # the filter used before (float, antialiased bilinear)
        t = torch.from_numpy(x).permute(2, 0, 1)[None].float()
        return F.interpolate(t, size=(size, size), mode='bilinear', align_corners=False,
                             antialias=True).round().clamp(0, 255).to(torch.uint8)

    def torch_area(x):
        t = torch.from_numpy(x).permute(2, 0, 1)[None].float()
        return F.interpolate(t, size=(size, size), mode='area').round().to(torch.uint8)

    def pil_box(x):
        return np.asarray(PILImage.fromarray(x).resize((size, size), PILImage.BOX))

    def pil_bilinear(x):
        return np.asarray(PILImage.fromarray(x).resize((size, size), PILImage.BILINEAR))

    cands: Dict[str, Callable] = {'torch_bilinear_antialias': torch_bilinear_aa, 'torch_area': torch_area,
                                  'pil_box': pil_box, 'pil_bilinear': pil_bilinear}
    try:
        import cv2
        cv2.setNumThreads(1)
        cands['cv2_inter_area'] = lambda x: cv2.resize(x, (size, size), interpolation=cv2.INTER_AREA)
    except ImportError:
        pass
    try:
        from vla_policy.images import resize_area
        cands['vla_policy.images.resize_area'] = lambda x: resize_area(x, size)
    except ImportError:
        pass
    out: Dict[str, Dict[str, float]] = {}
    rng = np.random.default_rng(0)
    for key, (h, w) in RESOLUTIONS.items():
        x = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        out[key] = {name: _stats_ms(_time(lambda: fn(x), iters))['median_ms'] * 1e3 for name, fn in cands.items()}
        print(f'resize {key:>8} -> {size}: ' + '  '.join(f'{n} {v:.0f} us' for n, v in out[key].items()),
              flush=True)
    return out


# ----------------------------------------------------------------------------- LeRobot
def bench_lerobot(python: Optional[str], iters: int, image_size: int, chunk_size: int) -> Dict[str, Any]:
    """LeRobot's per-observation cost on the same 224x224 observation (``lerobot_overhead.py``)."""
    if not python or not pathlib.Path(python).exists():
        msg = (f'LeRobot side by side skipped: no LeRobot interpreter at {python!r} '
               '(`make bench-runtime LEROBOT=1` builds .venv-lerobot with lerobot==0.4.4)')
        print(msg, flush=True)
        return {'skipped': msg}
    import tempfile
    python = os.path.abspath(python)   # not resolve(): the venv's python is a symlink out of the venv
    from robot_drivers import conversions as conv
    from robot_drivers.embodiment import FRANKA_PANDA
    pol = build_stub_policy(image_size)
    _, image_msg, joint_msg = make_messages(224, 224)            # the observation ours is timed on
    st, ac = pol.stats['state'], pol.stats['action']
    with tempfile.TemporaryDirectory() as tmp:
        obs = pathlib.Path(tmp) / 'obs.npz'
        np.savez(obs, image=np.array(conv.image_msg_to_rgb(image_msg(1.0))),
                 state=conv.joint_state_to_arrays(joint_msg(1.0), FRANKA_PANDA.joint_names)[0].astype(np.float32),
                 state_mean=st.mean, state_std=np.maximum(st.std, 1e-3),
                 action_mean=ac.mean, action_std=np.maximum(ac.std, 1e-3))
        cmd = [python, str(ROOT / 'benchmarks/lerobot_overhead.py'), '--iters', str(iters), '--obs', str(obs),
               '--chunk-sizes', f'{chunk_size},50', '--policy-image-sizes', f'224,{image_size}']
        env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
        # cwd: a scratch directory (LeRobot's loggers may create logs/ where they run)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp)
    if proc.returncode != 0:
        msg = f'LeRobot side by side failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}'
        print(msg, flush=True)
        return {'failed': msg}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    print('lerobot: ' + ', '.join(f'{k} {v}' for k, v in res.items() if k.endswith('_ms')), flush=True)
    return res


# ----------------------------------------------------------------------------- command-rate jitter
def bench_jitter(seconds: float, delay_s: float = 0.2, rate_hz: float = 30.0, freeze_gc: bool = False
                 ) -> Dict[str, Any]:
    """A ``rate_hz`` control loop (sleeping to each deadline, as a ROS timer) feeding a
    :class:`PolicyRuntime` with the threaded inference backend while the model takes ``delay_s``
    per chunk. Jitter = |interval between consecutive commands - period|.

    ``freeze_gc``: ``gc.freeze()`` once everything is set up, so that Python's full (generation 2)
    garbage collections no longer scan the objects created at start-up (torch, the model, the
    message types); the collections' pauses are recorded either way (``gc_pauses``)."""
    import dataclasses
    import gc
    from robot_drivers.embodiment import FRANKA_PANDA
    from vla_policy.contracts import ActionChunk
    from vla_policy.runtime import PolicyRuntime, RuntimeConfig
    try:
        # LeRobot-async-style hand-over: a new chunk is requested when half of the current one is left
        cfg = RuntimeConfig(n_obs_steps=1, inference='thread', handover='aggregate', control_rate_hz=rate_hz,
                            max_obs_age_s=0.5)
    except (TypeError, ValueError) as exc:
        msg = f'jitter skipped: the runtime has no threaded inference backend yet ({exc})'
        print(msg, flush=True)
        return {'skipped': msg}
    emb = dataclasses.replace(FRANKA_PANDA, control_rate_hz=rate_hz)
    horizon = int(round(rate_hz))                       # 1 s chunks at the control rate
    q0 = 0.5 * (emb.lower + emb.upper)

    class SlowPolicy:
        """Sleeps ``delay_s`` then returns a smooth chunk from the newest joint positions."""

        def __init__(self) -> None:
            self.calls = 0

        def infer(self, history):
            time.sleep(delay_s)
            self.calls += 1
            q = np.asarray(history[-1].joint_positions, np.float32)
            ramp = np.linspace(0.0, 0.01, horizon, dtype=np.float32)[:, None]
            return ActionChunk(q[None] + ramp, emb.joint_names, 1.0 / rate_hz, float(history[-1].stamp))

        def reset(self) -> None:
            pass

    policy = SlowPolicy()
    types, image_msg, joint_msg = make_messages(96, 96)
    rt = PolicyRuntime(policy, emb, cfg)
    rt.on_instruction(INSTRUCTION)
    period = 1.0 / rate_hz
    pauses: List[Tuple[int, float]] = []
    started: Dict[str, float] = {}

    def on_gc(phase: str, info: Dict[str, int]) -> None:
        if phase == 'start':
            started['t'] = time.perf_counter()
        elif 't' in started:
            pauses.append((info['generation'], (time.perf_counter() - started.pop('t')) * 1e3))

    if freeze_gc:
        gc.collect()
        gc.freeze()
    gc.callbacks.append(on_gc)
    mono = time.monotonic
    t0 = mono()
    deadline = t0
    n_ticks = int(seconds * rate_hz)
    cmd_times: List[float] = []
    late_ticks = 0
    silent_ticks = 0
    step_ms: List[float] = []
    try:
        for _ in range(n_ticks):
            im, jm = image_msg(deadline), joint_msg(deadline)   # what the middleware delivers (not timed)
            wait = deadline - mono()
            if wait > 0:
                time.sleep(wait)
            now = mono()
            if now - deadline > 0.5 * period:
                late_ticks += 1
            rt.on_image_msg(im)
            rt.on_joint_state_msg(jm)
            cmd = rt.step(now)
            if cmd is not None:
                cmd.to_msg(types)
                cmd_times.append(mono())
            elif cmd_times:
                silent_ticks += 1                         # acting, but no command this tick
            step_ms.append((mono() - now) * 1e3)
            deadline += period
        snap = rt.snapshot(mono()) if hasattr(rt, 'snapshot') else None
    finally:
        rt.close()
        gc.callbacks.remove(on_gc)
        if freeze_gc:
            gc.unfreeze()
    if len(cmd_times) < 3:
        msg = f'jitter: only {len(cmd_times)} commands in {seconds} s (status: {rt.status})'
        print(msg, flush=True)
        return {'failed': msg}
    gaps = np.diff(cmd_times)
    jit = np.abs(gaps - period) * 1e3
    res = {'rate_hz': rate_hz, 'model_delay_ms': delay_s * 1e3, 'seconds': seconds, 'ticks': n_ticks,
           'commands': len(cmd_times), 'inferences': policy.calls,
           'jitter_p50_ms': float(np.median(jit)), 'jitter_p99_ms': float(np.percentile(jit, 99)),
           'jitter_max_ms': float(jit.max()), 'gaps_over_1.5_periods': int((gaps > 1.5 * period).sum()),
           'silent_ticks_after_first_command': silent_ticks, 'late_ticks': late_ticks,
           'step_p50_ms': float(np.median(step_ms)), 'step_p99_ms': float(np.percentile(step_ms, 99)),
           'gc_frozen': freeze_gc, 'gc_collections': len(pauses),
           'gc_full_collections': sum(1 for g, _ in pauses if g == 2),
           'gc_max_pause_ms': max((ms_ for _, ms_ in pauses), default=0.0), 'load_avg': list(os.getloadavg())}
    res['missed_ticks'] = res['gaps_over_1.5_periods'] + silent_ticks
    if snap is not None:
        res['runtime_snapshot'] = {k: getattr(snap, k) for k in ('missed_ticks', 'dropped_ticks', 'inferences',
                                                                   'latency_ms', 'handover', 'backend')
                                   if hasattr(snap, k)}
    print(f"jitter at {rate_hz:.0f} Hz, model {delay_s * 1e3:.0f} ms{', gc frozen' if freeze_gc else ''}: p99 {res['jitter_p99_ms']:.3f} ms, "
          f"max {res['jitter_max_ms']:.3f} ms, missed ticks {res['missed_ticks']}, commands {len(cmd_times)}/"
          f"{n_ticks}, inferences {policy.calls}", flush=True)
    return res


# ----------------------------------------------------------------------------- loopback server
def build_film_cnn(image_size: int):
    """The default film_cnn :class:`VLAPolicy` with random weights (latency does not depend on them)."""
    import torch
    from robot_drivers.embodiment import FRANKA_PANDA
    from vla_policy.models.tokenizer import WordTokenizer
    from vla_policy.models.vla import VLA
    from vla_policy.normalization import NormalizationStats
    from vla_policy.policy import VLAPolicy
    from vla_training.train_cli import load_train_yaml
    cfg, _, _ = load_train_yaml(str(ROOT / 'config/train_franka.yaml'))
    cfg.backbone.image_size = image_size
    tok = WordTokenizer.build(['reach the red cube', 'pick up the red cube'], cfg.max_tokens)
    cfg.backbone.vocab_size = tok.vocab_size
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    lo, hi = FRANKA_PANDA.lower, FRANKA_PANDA.upper
    q = (lo + (hi - lo) * rng.uniform(0.3, 0.7, (256, 8))).astype('float32')
    stats = {'state': NormalizationStats.from_data(q), 'action': NormalizationStats.from_data(q - q.mean(0))}
    return VLAPolicy(VLA(cfg).eval(), cfg, stats, tok)


def bench_loopback(iters: int, image_size: int) -> Dict[str, Any]:
    """One 224x224 observation through ``serve_policy`` + ``RemotePolicy`` on 127.0.0.1 vs ``infer``."""
    try:
        from vla_policy.policy_server import serve_policy
        from vla_policy.remote import RemotePolicy
    except ImportError as exc:
        msg = f'loopback skipped: no policy server yet ({exc})'
        print(msg, flush=True)
        return {'skipped': msg}
    from robot_drivers import conversions as conv
    from robot_drivers.embodiment import FRANKA_PANDA
    from vla_policy.contracts import Observation
    pol = build_film_cnn(image_size)
    _, image_msg, joint_msg = make_messages(224, 224)
    hist = [Observation({pol.camera: np.array(conv.image_msg_to_rgb(image_msg(1.0)))},
                        conv.joint_state_to_arrays(joint_msg(1.0), FRANKA_PANDA.joint_names)[0], INSTRUCTION, 1.0)]
    meta = pol.metadata() if hasattr(pol, 'metadata') else {}
    srv = serve_policy(pol, '127.0.0.1', 0, metadata=meta)
    remote = RemotePolicy(f'ws://127.0.0.1:{srv.port}', timeout_s=10.0)
    try:
        remote.connect()
        local_ns = _time(lambda: pol.infer(hist), iters, warmup=5)
        timings: List[Dict[str, float]] = []

        def call():
            out = remote.infer(hist)
            timings.append(dict(getattr(remote, 'last_timing', None) or {}))
            return out

        remote_ns = _time(call, iters, warmup=5)
        same = np.allclose(remote.infer(hist).actions, pol.infer(hist).actions, atol=1e-5)
    finally:
        remote.close()
        srv.stop()
    local, rem = _stats_ms(local_ns), _stats_ms(remote_ns)
    res = {'iters': iters, 'model': 'film_cnn (random weights)', 'model_image_size': image_size,
           'observation': '224x224 rgb8 + 8 joints', 'local_infer_ms': local['median_ms'],
           'local_infer_p99_ms': local['p99_ms'], 'loopback_round_trip_ms': rem['median_ms'],
           'loopback_round_trip_p99_ms': rem['p99_ms'],
           'transport_overhead_ms': rem['median_ms'] - local['median_ms'], 'same_actions': bool(same)}
    for k in ('infer_ms', 'total_ms'):    # the server's own timing of each call (policy alone, whole request)
        v = [t[k] for t in timings[-iters:] if k in t and np.isfinite(t[k])]
        if v:
            res[f'server_{k}'] = float(np.median(v))
    print(f"loopback: round trip {rem['median_ms']:.2f} ms (p99 {rem['p99_ms']:.2f}) vs local infer "
          f"{local['median_ms']:.2f} ms (p99 {local['p99_ms']:.2f})", flush=True)
    return res


# ----------------------------------------------------------------------------- report
def _f(v: Optional[float], fmt: str = '{:.3f}') -> str:
    return '' if v is None else fmt.format(v)


def markdown_table(res: Dict[str, Any]) -> str:
    ov = res['overhead']
    size = res['image_size']
    lines = [f'Per observation outside the model: rgb8 `sensor_msgs/Image` + `JointState` -> arrays, '
             f'history, preprocess (area resize to {size}x{size}, tokenize, normalise) -> stub model -> '
             'post-process -> schedule -> `JointTrajectory`. Median (p99) ms over '
             f"{res['iters']} observations, one torch thread; load average {res['load_avg_start'][0]:.2f}.",
             '', '| | 96x96 | 224x224 | 640x480 |', '|---|---:|---:|---:|']
    before = res.get('before_ms') or {}
    if before:
        lines.append('| before (bilinear resize, copies) | '
                     + ' | '.join(_f(before.get(k)) for k in RESOLUTIONS) + ' |')
    lines.append('| ours | ' + ' | '.join(f"{_f(ov[k]['total']['median_ms'])} ({_f(ov[k]['total']['p99_ms'])})"
                                          for k in RESOLUTIONS) + ' |')
    same = res.get('overhead_same_size')
    if same:
        lines.append(f"| ours, model input 224 (no resize) | | {_f(same['total']['median_ms'])} "
                     f"({_f(same['total']['p99_ms'])}) | |")
    lr = res.get('lerobot') or {}
    if 'pre_post_ms' in lr:
        ver = lr.get('lerobot_version')
        asy, asy99 = lr.get('async_server_ms', {}), lr.get('async_server_p99_ms', {})
        n = res['chunk_size']
        rows = [(f'LeRobot {ver} async inference server, ACT 224x224 input, chunk of {n}', f'224/{n}'),
                (f'LeRobot async server, ACT {size}x{size} input (resizes like ours), chunk of {n}', f'{size}/{n}'),
                ('LeRobot async server, ACT 224x224 input, chunk of 50', '224/50')]
        for label, k in rows:
            if k in asy:
                lines.append(f'| {label} | | {_f(asy[k])} ({_f(asy99.get(k))}) | |')
        lines.append(f"| LeRobot `record_loop` tick around the policy (no resize) | | {_f(lr['record_loop_ms'])} "
                     f"({_f(lr['record_loop_p99_ms'])}) | |")
        lines.append(f"| LeRobot preprocessor + postprocessor only (no resize) | | {_f(lr['pre_post_ms'])} "
                     f"({_f(lr['pre_post_p99_ms'])}) | |")
        lines.append(f"| **ours / LeRobot async server (224, chunk {n})** | | **{_f(res['ratio_vs_lerobot'], '{:.2f}')}** | |")
        lines.append(f"| ours / LeRobot `record_loop` tick | | {_f(res['ratio_vs_lerobot_record_loop'], '{:.2f}')} | |")
        lines.append(f"| ours / LeRobot pre+post only | | {_f(res['ratio_vs_lerobot_pre_post'], '{:.2f}')} | |")
    else:
        lines.append(f"| LeRobot | | {lr.get('skipped') or lr.get('failed') or 'not run'} | |")
    ji = res.get('jitter') or {}
    lines += ['', '| 30 Hz command stream, model 200 ms per chunk | value |', '|---|---:|']
    if 'jitter_p99_ms' in ji:
        jf = res.get('jitter_gc_frozen') or {}
        lines[-2:] = ['| 30 Hz command stream, model 200 ms per chunk | as is | after `gc.freeze()` |',
                      '|---|---:|---:|']
        rows = [('jitter p50 / p99 / max (ms)',
                 lambda d: f"{_f(d['jitter_p50_ms'])} / {_f(d['jitter_p99_ms'])} / {_f(d['jitter_max_ms'])}"),
                ('missed ticks', lambda d: f"{d['missed_ticks']} of {d['ticks']}"),
                ('control tick (callbacks + step + message) p50 / p99 (ms)',
                 lambda d: f"{_f(d['step_p50_ms'])} / {_f(d['step_p99_ms'])}"),
                ('full GC collections, longest GC pause (ms)',
                 lambda d: f"{d['gc_full_collections']}, {_f(d['gc_max_pause_ms'], '{:.1f}')}")]
        for label, fmt in rows:
            lines.append(f"| {label} | {fmt(ji)} | {fmt(jf) if 'jitter_p99_ms' in jf else ''} |")
    else:
        lines.append(f"| not run | {ji.get('skipped') or ji.get('failed') or ''} |")
    lb = res.get('loopback') or {}
    lines += ['', '| one 224x224 observation, film_cnn | median ms | p99 ms |', '|---|---:|---:|']
    if 'loopback_round_trip_ms' in lb:
        lines += [f"| local `infer` | {_f(lb['local_infer_ms'])} | {_f(lb['local_infer_p99_ms'])} |",
                  f"| loopback websocket server round trip | {_f(lb['loopback_round_trip_ms'])} | "
                  f"{_f(lb['loopback_round_trip_p99_ms'])} |"]
        if 'server_total_ms' in lb:
            lines.append(f"| of which the server's request handling (its `server_timing.total_ms`) | "
                         f"{_f(lb['server_total_ms'])} | |")
    else:
        lines.append(f"| not run: {lb.get('skipped') or lb.get('failed') or ''} | | |")
    return '\n'.join(lines)


def write_readme(path: pathlib.Path, body: str) -> None:
    """Replace the generated block between the runtime-bench markers (appended when absent)."""
    text = path.read_text(encoding='utf-8') if path.exists() else '# Benchmarks\n'
    block = f'{README_START}\n{body}\n{README_END}'
    if README_START in text and README_END in text:
        pre, rest = text.split(README_START, 1)
        text = pre + block + rest.split(README_END, 1)[1]
    else:
        text = text.rstrip('\n') + '\n\n' + block + '\n'
    path.write_text(text, encoding='utf-8')


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--iters', type=int, default=500)
    p.add_argument('--image-size', type=int, default=96, help="the model's image size (px)")
    p.add_argument('--lerobot-python', default=str(ROOT / '.venv-lerobot/bin/python'))
    p.add_argument('--jitter-seconds', type=float, default=20.0)
    p.add_argument('--out', default=str(ROOT / 'benchmarks/results/runtime.json'))
    p.add_argument('--readme', default=str(ROOT / 'benchmarks/README.md'))
    p.add_argument('--skip', default='', help='comma-separated parts to skip: resize,lerobot,jitter,loopback')
    a = p.parse_args()
    if a.iters < 1:
        p.error('--iters must be >= 1')
    skip = {s_ for s_ in a.skip.split(',') if s_}
    unknown = skip - {'resize', 'lerobot', 'jitter', 'loopback'}
    if unknown:
        p.error(f'--skip: unknown parts {sorted(unknown)}')
    import torch
    torch.set_num_threads(1)
    out = pathlib.Path(a.out)
    previous = json.loads(out.read_text()) if out.exists() else {}
    res: Dict[str, Any] = {
        'iters': a.iters, 'image_size': a.image_size, 'torch_threads': torch.get_num_threads(),
        'load_avg_start': list(os.getloadavg()), 'cpu': platform.processor() or platform.machine(),
        'cpu_count': os.cpu_count(), 'python': platform.python_version(), 'torch': torch.__version__,
        'numpy': np.__version__,
        # measured on this machine with the code before this benchmark existed (bilinear antialiased
        # float resize, copied message buffers): kept for the table
        'before_ms': previous.get('before_ms') or BEFORE_MS,
    }
    res['chunk_size'] = build_stub_policy(a.image_size).config.chunk.chunk_size
    res['overhead'] = bench_overhead(a.iters, a.image_size)
    res['overhead_ms'] = {k: v['total']['median_ms'] for k, v in res['overhead'].items()}
    res['overhead_p99_ms'] = {k: v['total']['p99_ms'] for k, v in res['overhead'].items()}
    res['overhead_same_size'] = overhead_once(224, 224, 224, a.iters)
    print(f"overhead      224 -> 224 (no resize): median {res['overhead_same_size']['total']['median_ms']:.3f} ms",
          flush=True)
    if 'resize' not in skip:
        res['resize_us'] = bench_resize(a.iters, a.image_size)
    if 'lerobot' in skip:
        lr = {'skipped': 'LeRobot side by side skipped: `make bench-runtime LEROBOT=1` builds its venv and runs it'}
        print(lr['skipped'], flush=True)
    else:
        lr = bench_lerobot(a.lerobot_python, a.iters, a.image_size, res['chunk_size'])
    res['lerobot'] = lr
    ours = res['overhead_ms']['224']
    # LeRobot in situ: its async inference server per observation (raw observation -> resize ->
    # preprocessor -> postprocessor per action of the chunk), ACT 224x224 input, our chunk length
    lr_async = (lr.get('async_server_ms') or {}).get(f"224/{res['chunk_size']}")
    res['lerobot_overhead_ms'] = lr_async
    res['lerobot_pre_post_ms'] = lr.get('pre_post_ms')
    res['lerobot_record_loop_ms'] = lr.get('record_loop_ms')
    res['ratio_vs_lerobot'] = ours / lr_async if lr_async else None
    res['ratio_vs_lerobot_record_loop'] = ours / lr['record_loop_ms'] if lr.get('record_loop_ms') else None
    res['ratio_vs_lerobot_pre_post'] = ours / lr['pre_post_ms'] if lr.get('pre_post_ms') else None
    ji = {'skipped': 'skipped (--skip jitter)'} if 'jitter' in skip else bench_jitter(a.jitter_seconds)
    res['jitter'] = ji
    if 'jitter' not in skip:
        res['jitter_gc_frozen'] = bench_jitter(a.jitter_seconds, freeze_gc=True)
    # Headline numbers: the configuration policy_node runs (it calls gc.freeze() once configured);
    # the run without it is kept beside them.
    jf = res.get('jitter_gc_frozen') or ji
    res['missed_ticks'] = jf.get('missed_ticks')
    res['jitter_p99_ms'] = jf.get('jitter_p99_ms')
    res['missed_ticks_without_gc_freeze'] = ji.get('missed_ticks')
    res['jitter_p99_ms_without_gc_freeze'] = ji.get('jitter_p99_ms')
    lb = {'skipped': 'skipped (--skip loopback)'} if 'loopback' in skip else bench_loopback(100, a.image_size)
    res['loopback'] = lb
    res['loopback_round_trip_ms'] = lb.get('loopback_round_trip_ms')
    res['local_infer_ms'] = lb.get('local_infer_ms')
    res['load_avg_end'] = list(os.getloadavg())
    table = markdown_table(res)
    print(table)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + '\n', encoding='utf-8')
    write_readme(pathlib.Path(a.readme), table)
    return 0


if __name__ == '__main__':
    sys.exit(main())
