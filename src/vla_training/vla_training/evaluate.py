"""Closed-loop evaluation on held-out seeded episodes (ROS-free, same runtime + driver core as the nodes).

``ros2 run vla_training evaluate --policy checkpoints/film_cnn --episodes 50`` runs 50 episodes of
each task kind (reach, pick) on seeds never used for recording (``--seed``, default 1 000 000) and
prints the success rate per task. ``--policy`` is a checkpoint directory, ``expert`` or ``random``.

``--handover MODE`` picks how chunks are handed over (``open_loop``, ``aggregate``,
``temporal_ensemble``, ``blend``, ``rtc``; :mod:`vla_policy.handover`) and ``--latency-ms L``
slows the model to ``L`` ms per chunk in simulated time (the arm keeps moving while it thinks);
each episode also reports the RMS jerk of the commanded arm joints (rad/s^3), averaged per task.
"""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ['EvalConfig', 'evaluate', 'main', 'HELD_OUT_SEED', 'write_json', 'save_animation']

log = logging.getLogger('vla_training.evaluate')

# Recording uses seeds from 0 up; evaluation starts far above so no scene is shared.
HELD_OUT_SEED = 1_000_000


@dataclass
class EvalConfig:
    policy: str                      # checkpoint dir | 'expert' | 'random'
    episodes: int = 50               # per task kind
    tasks: Tuple[str, ...] = ('reach', 'pick')
    seed: int = HELD_OUT_SEED
    workers: int = 2
    n_action_steps: Optional[int] = None   # default: the checkpoint's
    max_obs_age_s: float = 0.5
    image_size: int = 96
    gif: Optional[str] = None        # save the first episode of the first task as an animation
    temporal_ensemble: Optional[float] = None   # ACT ensembling coefficient m: handover temporal_ensemble
    handover: str = 'open_loop'      # RuntimeConfig.handover
    latency_ms: Optional[float] = None   # simulated model latency per chunk (sim time); None = sync inference
    chunk_size_threshold: float = 0.5
    aggregate_fn: str = 'weighted_average'
    blend_window: int = 0
    blend_shape: str = 'linear'
    rtc_execution_horizon: int = 0
    rtc_prefix_schedule: str = 'linear'
    rtc_max_guidance_weight: float = 10.0
    policy_seed: Optional[int] = None    # noise seed of a sampling (flow) head, re-seeded every episode

    def runtime_config(self, n_obs_steps: int = 1, n_action_steps: int = 4, camera: str = 'front',
                       cameras: Sequence[str] = ()):
        """The :class:`~vla_policy.runtime.RuntimeConfig` of these settings (ValueError for a bad one).

        ``cameras``: every camera the model reads (``VLAConfig.camera_names``), each fed from the
        scene's topic of that name (:attr:`vla_training.rollout.Topics.cameras`); empty = ``camera`` only.
        """
        from vla_policy.runtime import RuntimeConfig
        from vla_training.rollout import Topics
        mode = 'temporal_ensemble' if self.temporal_ensemble is not None else self.handover
        scene = Topics().cameras
        cams = {c: scene.get(c, f'/{c}_camera/image_raw') for c in cameras}
        return RuntimeConfig(
            n_obs_steps=n_obs_steps, n_action_steps=self.n_action_steps or n_action_steps,
            max_obs_age_s=self.max_obs_age_s, camera=next(iter(cams), camera), cameras=cams, handover=mode,
            chunk_size_threshold=self.chunk_size_threshold, aggregate_fn=self.aggregate_fn,
            ensemble_m=0.01 if self.temporal_ensemble is None else float(self.temporal_ensemble),
            blend_window=self.blend_window, blend_shape=self.blend_shape,
            rtc_execution_horizon=self.rtc_execution_horizon, rtc_prefix_schedule=self.rtc_prefix_schedule,
            rtc_max_guidance_weight=self.rtc_max_guidance_weight)

    def __post_init__(self) -> None:
        if self.latency_ms is not None and not self.latency_ms >= 0:
            raise ValueError(f'latency_ms must be >= 0, got {self.latency_ms}')
        self.runtime_config()          # fails here, before any simulator starts


def _make_controller(cfg: 'EvalConfig', sim, seed: int, holder: dict):
    from vla_training.experts import RandomPolicy
    from vla_training.rollout import ExpertController, RuntimeController
    if cfg.policy == 'expert':
        return None  # built per episode (needs the task)
    if cfg.policy == 'random':
        return ExpertController(RandomPolicy(seed))
    from vla_policy.policy import VLAPolicy
    if 'policy' not in holder:
        holder['policy'] = VLAPolicy.from_checkpoint(cfg.policy, seed=cfg.policy_seed)
    pol = holder['policy']
    pcfg = pol.config
    rcfg = cfg.runtime_config(pcfg.chunk.n_obs_steps, pcfg.chunk.n_action_steps, cameras=pol.cameras)
    latency = None if cfg.latency_ms is None else cfg.latency_ms / 1e3
    return RuntimeController.build(pol, sim.embodiment, rcfg, simulated_latency_s=latency)


def _worker(args) -> List[dict]:
    cfg, jobs = args
    os.environ.setdefault('MUJOCO_GL', 'egl')
    import torch
    torch.set_num_threads(1)
    from robot_drivers.sim.franka_cubes import FrankaCubeSim, SimConfig
    from vla_training.experts import ScriptedExpert, Task
    from vla_training.rollout import ExpertController, run_episode
    sim = FrankaCubeSim(SimConfig(image_size=cfg.image_size))
    holder: dict = {}
    out = []
    for kind, colour, seed, keep in jobs:
        task = Task(kind, colour)
        if cfg.policy == 'expert':
            expert = ScriptedExpert(sim, task)
            ctrl = ExpertController(expert)
            hook = expert.reset
        else:
            ctrl = _make_controller(cfg, sim, seed, holder)
            hook = None
        t0 = time.time()
        try:
            r = run_episode(sim, task, seed, ctrl, keep_frames=keep, reset_hook=hook)
        finally:
            if hasattr(getattr(ctrl, 'runtime', None), 'close'):
                ctrl.runtime.close()
        rt = getattr(ctrl, 'runtime', None)
        out.append(dict(kind=kind, colour=colour, seed=seed, success=r.success, distance=r.final_distance,
                        lift=r.lift, seconds=time.time() - t0, inferences=r.inferences, jerk=r.jerk, jerk_steady=r.jerk_steady,
                        commands=r.commands, dropped_ticks=getattr(rt, 'dropped_ticks', 0),
                        frames=r.frames if keep else None))
    sim.close()
    return out


def evaluate(cfg: EvalConfig) -> Dict[str, object]:
    """Run the episodes; returns ``{'success': {kind: rate}, 'jerk': {kind: mean RMS jerk, rad/s^3},
    'episodes': [...], 'seconds': s}``.

    Episode ``i`` of kind ``k`` uses seed ``cfg.seed + i`` and colour ``('red', 'green', 'blue')[i % 3]``,
    so every policy sees the same scenes.
    """
    colours = ('red', 'green', 'blue')
    jobs = []
    for kind in cfg.tasks:
        for i in range(cfg.episodes):
            keep = bool(cfg.gif) and kind == cfg.tasks[0] and i == 0
            jobs.append((kind, colours[i % 3], cfg.seed + i, keep))
    shards = [jobs[i::cfg.workers] for i in range(cfg.workers)]
    shards = [s for s in shards if s]
    t0 = time.time()
    if len(shards) == 1:
        results = [_worker((cfg, shards[0]))]
    else:
        with mp.get_context('spawn').Pool(len(shards)) as pool:
            results = pool.map(_worker, [(cfg, s) for s in shards])
    episodes = [e for r in results for e in r]
    success = {k: float(np.mean([e['success'] for e in episodes if e['kind'] == k])) for k in cfg.tasks}
    jerk = {k: float(np.mean([e['jerk'] for e in episodes if e['kind'] == k])) for k in cfg.tasks}
    if cfg.gif:
        frames = next(e['frames'] for e in episodes if e['frames'])
        save_animation(frames, cfg.gif)
    for e in episodes:
        e.pop('frames', None)
    return {'success': success, 'jerk': jerk, 'episodes': episodes, 'seconds': time.time() - t0}


def write_json(path: str, obj) -> str:
    """Write ``obj`` as JSON to ``path`` atomically (temp file, then rename): no half-written results."""
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)
    return path


def save_animation(frames: Sequence[np.ndarray], path: str, fps: float = 10.0) -> str:
    """Write ``frames`` (uint8 (H, W, 3)) as GIF (or MP4 by extension) via imageio, atomically."""
    import imageio.v3 as iio
    tmp = f'{path}.tmp{os.path.splitext(path)[1]}'
    iio.imwrite(tmp, np.stack(frames), duration=1000.0 / fps, loop=0)
    os.replace(tmp, path)
    return path


def _check_policy(policy: str) -> None:
    """Fail before any simulator starts when ``policy`` is not expert/random nor a complete checkpoint.

    Raises:
        FileNotFoundError: no such directory, or it lacks a checkpoint file (named).
    """
    if policy in ('expert', 'random'):
        return
    from vla_policy.checkpoint import CHECKPOINT_FILES
    if not os.path.isdir(policy):
        raise FileNotFoundError(f"--policy: checkpoint directory not found: {policy} "
                                "(expected a checkpoint directory, 'expert' or 'random')")
    missing = [f for f in CHECKPOINT_FILES if not os.path.isfile(os.path.join(policy, f))]
    if missing:
        raise FileNotFoundError(f'--policy: checkpoint {policy} lacks {", ".join(missing)}')


def _non_negative_float(text: str) -> float:
    """argparse ``type=``: a finite number >= 0 (else a one-line usage error naming the value)."""
    import argparse
    try:
        value = float(text)
    except ValueError:
        value = float('nan')
    if not (np.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f'expected a number >= 0, got {text!r}')
    return value


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``evaluate`` console script; exit status 0, 1 (one line on stderr, e.g. no such checkpoint) or 2."""
    from robot_drivers import cli
    from vla_policy.handover import AGGREGATE_FUNCTIONS, BLEND_SHAPES, HANDOVER_MODES, PREFIX_SCHEDULES
    from vla_training.experts import TASK_KINDS
    p = cli.ArgumentParser(prog='evaluate', description=__doc__.split('\n\n')[0])
    p.add_argument('--policy', required=True, help="checkpoint directory, 'expert' or 'random'")
    p.add_argument('--episodes', type=cli.positive_int, default=50, help='episodes per task kind')
    p.add_argument('--tasks', type=cli.comma_list(TASK_KINDS), default=('reach', 'pick'),
                   help='comma-separated: ' + ','.join(TASK_KINDS))
    p.add_argument('--seed', type=cli.non_negative_int, default=HELD_OUT_SEED)
    p.add_argument('--workers', type=cli.positive_int, default=2)
    p.add_argument('--n-action-steps', type=cli.positive_int, default=None)
    p.add_argument('--gif', default=None, help='save one rollout as GIF/MP4')
    p.add_argument('--temporal-ensemble', type=float, default=None,
                   help='ACT temporal ensembling with this m (e.g. 0.01): infer every tick (= --handover '
                        'temporal_ensemble with this m)')
    p.add_argument('--handover', choices=HANDOVER_MODES, default='open_loop',
                   help='how a new chunk meets the executing one (vla_policy.handover)')
    p.add_argument('--latency-ms', type=_non_negative_float, default=None,
                   help='simulated model latency per chunk, ms of sim time (default: synchronous inference)')
    p.add_argument('--chunk-size-threshold', type=float, default=0.5,
                   help='aggregate/blend: request a chunk when rows ahead / chunk <= this')
    p.add_argument('--aggregate-fn', choices=tuple(AGGREGATE_FUNCTIONS), default='weighted_average')
    p.add_argument('--blend-window', type=cli.non_negative_int, default=0, help='blend ramp rows (0 = overlap)')
    p.add_argument('--blend-shape', choices=BLEND_SHAPES, default='linear')
    p.add_argument('--rtc-execution-horizon', type=cli.non_negative_int, default=0,
                   help='rtc: rows executed per chunk (0 = n_action_steps)')
    p.add_argument('--rtc-prefix-schedule', choices=PREFIX_SCHEDULES, default='linear')
    p.add_argument('--rtc-max-guidance-weight', type=cli.positive_float, default=10.0)
    p.add_argument('--policy-seed', type=cli.non_negative_int, default=None,
                   help='noise seed of a sampling (flow) head, re-seeded every episode')
    p.add_argument('--json', default=None, help='write the results here')
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')

    def body() -> int:
        _check_policy(a.policy)
        res = evaluate(EvalConfig(
            a.policy, a.episodes, a.tasks, a.seed, a.workers, a.n_action_steps, gif=a.gif,
            temporal_ensemble=a.temporal_ensemble, handover=a.handover, latency_ms=a.latency_ms,
            chunk_size_threshold=a.chunk_size_threshold, aggregate_fn=a.aggregate_fn, blend_window=a.blend_window,
            blend_shape=a.blend_shape, rtc_execution_horizon=a.rtc_execution_horizon,
            rtc_prefix_schedule=a.rtc_prefix_schedule, rtc_max_guidance_weight=a.rtc_max_guidance_weight,
            policy_seed=a.policy_seed))
        for k, v in res['success'].items():
            print(f"{k:>6}: {v:.0%} success over {a.episodes} episodes, RMS jerk {res['jerk'][k]:.1f} rad/s^3")
        if a.json:
            write_json(a.json, res)
        return 0

    return cli.run_main(p.prog, body, debug=a.debug)


if __name__ == '__main__':
    sys.exit(main())
