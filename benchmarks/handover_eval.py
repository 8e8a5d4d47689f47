"""Chunk hand-over modes under model latency, closed loop in the MuJoCo scene.

    python benchmarks/handover_eval.py [--checkpoint outputs/demo/film_cnn/checkpoint]
        [--flow-checkpoint DIR] [--episodes 20] [--latencies-ms 0,50,200,500] [--workers 2]
        [--no-thread-jitter] [--out benchmarks/results/handover.json]

For every hand-over mode (``open_loop``, ``aggregate``, ``temporal_ensemble``, ``blend``; ``rtc``
too when ``--flow-checkpoint`` names a checkpoint with a flow-matching head) and every model
latency, the same held-out ``reach`` episodes (seeds from 1 000 000, as ``evaluate``) run through
``PolicyRuntime`` + the arm driver core, with the model artificially slowed in simulated time
(:class:`vla_policy.inference.SimulatedLatencyBackend`: a chunk is available ``latency`` seconds of
sim time after its request while the arm keeps executing the plan; 0 = synchronous inference, the
control tick waits, as before async inference). Reported per cell: success rate, RMS jerk of the
commanded arm joints (rad/s^3, third difference of the driver setpoints per 10 Hz tick), ticks
with no plan row ahead (``dropped``), inferences per episode.

``thread_jitter`` (skipped with ``--no-thread-jitter``): the measurement behind choosing a worker
thread over a process in :mod:`vla_policy.inference`: a 30 Hz loop of real messages through
``PolicyRuntime(inference='thread')`` while the worker runs a torch transformer back to back,
against the same loop while the worker only sleeps as long; and the round trip of one 224x224
observation through a ``multiprocessing`` pipe, what a process worker would add per request.

Writes ``--out`` (JSON) and prints Markdown tables.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for pkg in ('robot_drivers', 'vla_policy', 'vla_training'):
    p = str(ROOT / 'src' / pkg)
    if p not in sys.path:
        sys.path.insert(0, p)

MODES = ('open_loop', 'aggregate', 'temporal_ensemble', 'blend')
INSTRUCTION = 'reach the red cube'


# ----------------------------------------------------------------------------- closed loop
def _cell_worker(args) -> List[dict]:
    """One shard of one (mode, latency) cell: evaluate's worker with that EvalConfig."""
    cfg, jobs, mode, latency = args
    from vla_training.evaluate import _worker
    eps = _worker((cfg, jobs))
    for e in eps:
        e.update(mode=mode, latency_ms=latency)
    return eps


def closed_loop(checkpoint: str, flow_checkpoint: Optional[str], episodes: int, latencies: Sequence[float],
                workers: int, seed: int) -> Dict[str, Any]:
    from vla_training.evaluate import EvalConfig
    cells = [(m, m, checkpoint) for m in MODES]
    if flow_checkpoint:     # rtc needs the flow head; open_loop with the same checkpoint is its baseline
        cells += [('open_loop (flow)', 'open_loop', flow_checkpoint), ('rtc (flow)', 'rtc', flow_checkpoint)]
    tasks = []
    colours = ('red', 'green', 'blue')
    jobs = [('reach', colours[i % 3], seed + i, False) for i in range(episodes)]
    for name, mode, ckpt in cells:
        for lat in latencies:
            cfg = EvalConfig(ckpt, episodes, ('reach',), seed, workers=1, handover=mode,
                             latency_ms=None if lat == 0 else float(lat),
                             policy_seed=0 if ckpt == flow_checkpoint else None)
            for shard in (jobs[i::workers] for i in range(workers)):
                if shard:
                    tasks.append((cfg, shard, name, lat))
    t0 = time.time()
    with mp.get_context('spawn').Pool(workers) as pool:
        results = [e for r in pool.imap_unordered(_cell_worker, tasks) for e in r]
    out: Dict[str, Any] = {}
    for mode, _, ckpt in cells:
        out[mode] = {'checkpoint': os.path.relpath(ckpt, ROOT) if os.path.isabs(ckpt) else ckpt}
        for lat in latencies:
            eps = [e for e in results if e['mode'] == mode and e['latency_ms'] == lat]
            eps.sort(key=lambda e: e['seed'])
            out[mode][str(int(lat))] = {
                'success': float(np.mean([e['success'] for e in eps])),
                'jerk_rms_rad_s3': float(np.mean([e['jerk'] for e in eps])),
                'jerk_steady_rms_rad_s3': float(np.mean([e['jerk_steady'] for e in eps])),
                'final_distance_m': float(np.mean([e['distance'] for e in eps])),
                'dropped_ticks_per_episode': float(np.mean([e['dropped_ticks'] for e in eps])),
                'inferences_per_episode': float(np.mean([e['inferences'] for e in eps])),
                'episodes': len(eps)}
    return {'cells': out, 'seconds': time.time() - t0}


# ----------------------------------------------------------------------------- thread vs process
def _echo(conn) -> None:
    while True:
        obs = conn.recv()
        if obs is None:
            return
        conn.send(np.zeros((8, 8), np.float32))


def pipe_round_trip_ms(iters: int = 200) -> Dict[str, float]:
    """One 224x224 RGB observation + joints to a child process and a chunk back (pickled pipe)."""
    parent, child = mp.get_context('spawn').Pipe()
    proc = mp.get_context('spawn').Process(target=_echo, args=(child,), daemon=True)
    proc.start()
    img = np.random.default_rng(0).integers(0, 256, (224, 224, 3), np.uint8)
    obs = {'image': img, 'q': np.zeros(8, np.float32), 'instruction': INSTRUCTION}
    ts = []
    for i in range(iters + 20):
        t = time.perf_counter()
        parent.send(obs)
        parent.recv()
        if i >= 20:
            ts.append((time.perf_counter() - t) * 1e3)
    parent.send(None)
    proc.join(5)
    return {'p50_ms': float(np.median(ts)), 'p99_ms': float(np.percentile(ts, 99))}


def _tick_loop(policy, seconds: float, rate_hz: float) -> Dict[str, Any]:
    import dataclasses
    from robot_drivers import conversions as conv
    from robot_drivers.embodiment import FRANKA_PANDA
    from vla_policy.runtime import PolicyRuntime, RuntimeConfig
    emb = dataclasses.replace(FRANKA_PANDA, control_rate_hz=rate_hz)
    types = conv.rosbags_types()
    img = np.random.default_rng(1).integers(0, 256, (96, 96, 3), np.uint8)
    # temporal_ensemble asks for a chunk whenever the worker is free: the model computes back to back
    rt = PolicyRuntime(policy, emb, RuntimeConfig(handover='temporal_ensemble', inference='thread',
                                                  max_obs_age_s=1.0))
    rt.on_instruction(INSTRUCTION)
    period = 1.0 / rate_hz
    late, step_ms, cmds, after_first = [], [], 0, 0
    deadline = time.monotonic()
    try:
        for _ in range(int(seconds * rate_hz)):
            wait = deadline - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            now = time.monotonic()
            late.append((now - deadline) * 1e3)
            rt.on_image_msg(conv.numpy_to_image(img, now, types))
            rt.on_joint_state_msg(conv.arrays_to_joint_state(emb.joint_names, np.zeros(8), now, types))
            cmd = rt.step(now)
            if cmds:
                after_first += 1
            if cmd is not None:
                cmd.to_msg(types)
                cmds += 1
            step_ms.append((time.monotonic() - now) * 1e3)
            deadline += period
        snap = rt.snapshot(time.monotonic())
    finally:
        rt.close()
    return {'tick_lateness_p50_ms': float(np.median(late)), 'tick_lateness_p99_ms': float(np.percentile(late, 99)),
            'tick_lateness_max_ms': float(np.max(late)), 'step_p99_ms': float(np.percentile(step_ms, 99)),
            'ticks_late_over_half_period': int(np.sum(np.asarray(late) > 0.5 * period * 1e3)),
            'ticks_without_command_after_first': after_first - (cmds - 1), 'missed_ticks': snap.missed_ticks,
            'dropped_ticks': snap.dropped_ticks, 'inferences': snap.inferences,
            'latency_p50_ms': snap.latency_ms['p50']}


def thread_jitter(seconds: float = 6.0, rate_hz: float = 30.0) -> Dict[str, Any]:
    """Tick timing of a 30 Hz runtime loop while the worker thread computes vs while it sleeps."""
    import torch
    from robot_drivers.embodiment import FRANKA_PANDA
    from vla_policy.contracts import ActionChunk
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(512, 8, 2048, batch_first=True), 8).eval()
    tokens = torch.randn(1, 192, 512)
    dt = 1.0 / rate_hz

    def chunk(history):
        q = np.asarray(history[-1].joint_positions, np.float32)
        return ActionChunk(q[None] + np.zeros((30, 1), np.float32), FRANKA_PANDA.joint_names, dt,
                           float(history[-1].stamp))

    class TorchPolicy:
        def infer(self, history):
            with torch.no_grad():
                net(tokens)
            return chunk(history)

        def reset(self):
            pass

    with torch.no_grad():
        net(tokens)
    t = time.perf_counter()
    for _ in range(5):
        with torch.no_grad():
            net(tokens)
    model_s = (time.perf_counter() - t) / 5

    class SleepPolicy:
        def infer(self, history):
            time.sleep(model_s)
            return chunk(history)

        def reset(self):
            pass

    idle = _tick_loop(SleepPolicy(), seconds, rate_hz)
    busy = _tick_loop(TorchPolicy(), seconds, rate_hz)
    return {'rate_hz': rate_hz, 'seconds': seconds,
            'model': 'torch TransformerEncoder, 8 layers x 512, 192 tokens, 1 torch thread',
            'model_ms': model_s * 1e3, 'worker_sleeping': idle, 'worker_computing': busy,
            'process_pipe_round_trip_224': pipe_round_trip_ms()}


# ----------------------------------------------------------------------------- report
def table(res: Dict[str, Any], latencies: Sequence[float]) -> str:
    def head(lat):
        return 'sync (0 ms)' if lat == 0 else f'{int(lat)} ms'
    lines = ['| mode | ' + ' | '.join(head(lat) for lat in latencies) + ' |',
             '|---|' + '---:|' * len(latencies)]
    for mode, row in res['cells'].items():
        cells = []
        for lat in latencies:
            c = row[str(int(lat))]
            cells.append(f"{c['success']:.0%} / {c['jerk_rms_rad_s3']:.1f} / {c['jerk_steady_rms_rad_s3']:.1f} / "
                         f"{c['dropped_ticks_per_episode']:.1f}")
        lines.append(f'| `{mode}` | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--checkpoint', default=str(ROOT / 'outputs/demo/film_cnn/checkpoint'))
    p.add_argument('--flow-checkpoint', default=None, help='a flow-head checkpoint: adds the rtc row')
    p.add_argument('--episodes', type=int, default=20, help='reach episodes per cell')
    p.add_argument('--latencies-ms', default='0,50,200,500', help='comma-separated; 0 = synchronous inference')
    p.add_argument('--workers', type=int, default=2)
    p.add_argument('--seed', type=int, default=1_000_000)
    p.add_argument('--no-thread-jitter', action='store_true')
    p.add_argument('--out', default=str(ROOT / 'benchmarks/results/handover.json'))
    a = p.parse_args(argv)
    os.environ.setdefault('MUJOCO_GL', 'egl')
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    for c in [a.checkpoint] + ([a.flow_checkpoint] if a.flow_checkpoint else []):
        if not os.path.isfile(os.path.join(c, 'config.json')):
            print(f'handover_eval: no checkpoint at {c} (run `make demo` first)', file=sys.stderr)
            return 1
    if a.flow_checkpoint:
        head = json.load(open(os.path.join(a.flow_checkpoint, 'config.json')))['head']['name']
        if head != 'flow':
            print(f"handover_eval: --flow-checkpoint {a.flow_checkpoint} has head {head!r}; rtc needs 'flow'",
                  file=sys.stderr)
            return 1
    if a.episodes < 1 or a.workers < 1:
        print('handover_eval: --episodes and --workers must be >= 1', file=sys.stderr)
        return 2
    latencies = [float(x) for x in a.latencies_ms.split(',') if x.strip()]
    t0 = time.time()
    res: Dict[str, Any] = {'task': 'reach', 'episodes_per_cell': a.episodes, 'seed': a.seed,
                           'latencies_ms': latencies, 'control_rate_hz': 10.0,
                           'settings': {'open_loop': 'n_action_steps = the checkpoint\'s',
                                        'aggregate': 'weighted_average, chunk_size_threshold 0.5',
                                        'temporal_ensemble': 'm = 0.01, a chunk whenever the model is free',
                                        'blend': 'linear over the whole overlap, chunk_size_threshold 0.5',
                                        'rtc': 'execution horizon = n_action_steps, linear prefix, beta 10'}}
    res.update(closed_loop(a.checkpoint, a.flow_checkpoint, a.episodes, latencies, a.workers, a.seed))
    if not a.no_thread_jitter:
        res['thread_jitter'] = thread_jitter()
    res['total_seconds'] = time.time() - t0
    tmp = a.out + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(res, f, indent=1)
    os.replace(tmp, a.out)
    print(f'reach success / RMS jerk / RMS jerk after the start (rad/s^3) / dropped ticks per episode, '
          f'{a.episodes} held-out episodes per cell, model latency in simulated time:\n')
    print(table(res, latencies))
    tj = res.get('thread_jitter')
    if tj:
        w, i = tj['worker_computing'], tj['worker_sleeping']
        print(f"\nthread worker, 30 Hz ticks, model {tj['model_ms']:.0f} ms: tick lateness p99 "
              f"{w['tick_lateness_p99_ms']:.2f} ms computing vs {i['tick_lateness_p99_ms']:.2f} ms sleeping; "
              f"late ticks {w['ticks_late_over_half_period']} vs {i['ticks_late_over_half_period']}; "
              f"pipe round trip of a 224x224 observation p50 {tj['process_pipe_round_trip_224']['p50_ms']:.2f} ms")
    print(f"\n{a.out} ({res['total_seconds']:.0f} s)")
    return 0


if __name__ == '__main__':
    sys.exit(main())
