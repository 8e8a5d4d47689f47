"""The main job (``make demo``): MuJoCo Franka -> rosbag2 demos -> trained VLAs -> closed-loop table.

1. record ``--episodes`` (400) scripted demonstrations with DART noise as rosbag2 MCAP (seeds 0..N-1);
2. train the default model (``config/train_franka.yaml``, film_cnn) and the tiny HF VLM
   (``config/train_franka_vlm.yaml``, Idefics3 from config) side by side, one process and one
   torch thread each (on 2 cores two 1-thread jobs beat one 2-thread job);
3. evaluate both, the scripted expert and a random policy closed loop on ``--eval-episodes``
   held-out seeds per task through the same runtime + driver core as the ROS nodes;
4. print the table, write ``benchmarks/results/demo.json`` and a GIF of one rollout.

Everything the run makes goes under ``--output`` (default ``outputs/demo``), which is cleared at
the start; the results file is replaced atomically at the end.
"""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
import multiprocessing as mp
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

__all__ = ['main', 'run_demo', 'format_table']


def _config_path(name: str) -> str:
    """``config/<name>`` (see :func:`vla_training.train_cli.find_config`)."""
    from vla_training.train_cli import find_config
    return find_config(name)


def _train_job(args):
    bags, config, out, steps, log_path = args
    os.environ['OMP_NUM_THREADS'] = '1'
    with open(log_path, 'w') as log:
        sys.stdout = log
        sys.stderr = log
        from vla_training.train_cli import run
        # both jobs share the 2 cores: one bag-decoding process each
        res = run([bags], config, out, {'steps': steps, 'num_threads': 1}, progress=False, data_workers=1)
        n_params = None
        try:
            from vla_policy.checkpoint import load_checkpoint
            model = load_checkpoint(res.checkpoint_dir)[0]
            n_params = sum(p.numel() for p in model.parameters())
        except Exception as exc:  # noqa: BLE001 - report, the checkpoint is evaluated next anyway
            print(f'could not count parameters: {exc}')
        return {'checkpoint': str(res.checkpoint_dir), 'val_loss': res.val_loss, 'seconds': res.seconds,
                'first_loss': res.losses[0][1], 'final_loss': float(sum(l for _, l in res.losses[-50:]) /
                                                                     len(res.losses[-50:])),
                'steps': len(res.losses), 'parameters': n_params}


def format_table(results: Dict[str, Dict[str, float]], tasks: Sequence[str], n: int) -> str:
    rows = [f"{'policy':<34}" + ''.join(f'{t:>10}' for t in tasks)]
    names = {'trained': 'trained default (film_cnn)', 'vlm': 'tiny HF VLM (Idefics3, scratch)',
             'expert': 'scripted expert', 'random': 'random'}
    for key in ('trained', 'vlm', 'expert', 'random'):
        if key in results:
            rows.append(f'{names[key]:<34}' + ''.join(f'{results[key][t]:>10.0%}' for t in tasks))
    rows.append(f'success rate over {n} held-out seeded episodes per task')
    return '\n'.join(rows)


def run_demo(output: str = 'outputs/demo', episodes: int = 400, eval_episodes: int = 50,
             cnn_steps: Optional[int] = None, vlm_steps: Optional[int] = None,
             results_path: str = 'benchmarks/results/demo.json',
             gif_path: str = 'benchmarks/results/demo_rollout.gif', workers: int = 2) -> Dict[str, object]:
    from vla_training.evaluate import EvalConfig, evaluate, write_json
    from vla_training.record import RecordConfig, record_demos

    t0 = time.time()
    out = Path(output)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    tasks = ('reach', 'pick')
    timings: Dict[str, float] = {}

    print(f'[1/3] recording {episodes} scripted demonstrations (rosbag2 MCAP) ...', flush=True)
    t = time.time()
    record_demos(RecordConfig(episodes=episodes, output=str(out / 'demos'), workers=workers))
    timings['record_s'] = time.time() - t

    print('[2/3] training film_cnn (default) and the tiny Idefics3 VLM side by side ...', flush=True)
    t = time.time()
    jobs = [(str(out / 'demos'), _config_path('train_franka.yaml'), str(out / 'film_cnn'), cnn_steps,
             str(out / 'train_film_cnn.log')),
            (str(out / 'demos'), _config_path('train_franka_vlm.yaml'), str(out / 'hf_vlm'), vlm_steps,
             str(out / 'train_hf_vlm.log'))]
    # ProcessPoolExecutor workers are not daemonic, so each may decode bags in a pool of its own.
    with ProcessPoolExecutor(2, mp_context=mp.get_context('spawn')) as pool:
        cnn, vlm = pool.map(_train_job, jobs)
    timings['train_s'] = time.time() - t
    for name, r in (('film_cnn', cnn), ('hf_vlm', vlm)):
        print(f'      {name}: {r["steps"]} steps in {r["seconds"]:.0f} s, loss {r["first_loss"]:.3f} -> '
              f'{r["final_loss"]:.3f}, val {r["val_loss"]:.3f}, {r["parameters"]} parameters', flush=True)

    print(f'[3/3] closed-loop evaluation, {eval_episodes} held-out episodes per task ...', flush=True)
    t = time.time()
    Path(gif_path).parent.mkdir(parents=True, exist_ok=True)
    evals = {}
    for key, policy, gif in (('trained', cnn['checkpoint'], gif_path), ('vlm', vlm['checkpoint'], None),
                             ('expert', 'expert', None), ('random', 'random', None)):
        te = time.time()
        evals[key] = evaluate(EvalConfig(policy, eval_episodes, tasks, workers=workers, gif=gif))
        print(f'      {key:<8} ' + '  '.join(f'{k} {v:.0%}' for k, v in evals[key]['success'].items()) +
              f'  ({time.time() - te:.0f} s)', flush=True)
    timings['eval_s'] = time.time() - t
    minutes = (time.time() - t0) / 60.0

    results: Dict[str, object] = {k: v['success'] for k, v in evals.items()}
    results['minutes'] = round(minutes, 2)
    results['details'] = {
        'episodes_recorded': episodes, 'eval_episodes_per_task': eval_episodes,
        'timings_s': {k: round(v, 1) for k, v in timings.items()},
        'film_cnn': {k: v for k, v in cnn.items() if k != 'checkpoint'},
        'hf_vlm': {k: v for k, v in vlm.items() if k != 'checkpoint'},
        'mean_final_distance_m': {k: {task: round(sum(e['distance'] for e in v['episodes'] if e['kind'] == task) /
                                                  max(1, sum(1 for e in v['episodes'] if e['kind'] == task)), 4)
                                      for task in tasks} for k, v in evals.items()},
        'cpu_count': os.cpu_count(),
    }
    Path(results_path).parent.mkdir(parents=True, exist_ok=True)
    write_json(results_path, results)
    print()
    print(format_table(results, tasks, eval_episodes))
    print(f'total {minutes:.1f} min; results -> {results_path}; rollout -> {gif_path}')
    return results


def _check_train_configs(cnn_steps: Optional[int], vlm_steps: Optional[int]) -> None:
    """Validate both training configs with the step overrides before anything is recorded.

    Raises:
        FileNotFoundError: a config file is missing. ValueError: a config is invalid, or a
            ``--cnn-steps``/``--vlm-steps`` value is not above that config's ``warmup_steps``.
    """
    from vla_training.train_cli import load_train_yaml
    for name, steps, flag in (('train_franka.yaml', cnn_steps, '--cnn-steps'),
                              ('train_franka_vlm.yaml', vlm_steps, '--vlm-steps')):
        path = _config_path(name)
        _, train_cfg, _ = load_train_yaml(path)
        if steps is not None:
            try:
                type(train_cfg)(**dict(vars(train_cfg), steps=steps))
            except ValueError as exc:
                raise ValueError(f'{flag} {steps} with {path}: {exc}') from exc


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``demo`` console script; exit status 0, 1 (one line on stderr) or 2 (usage)."""
    from robot_drivers import cli
    p = cli.ArgumentParser(prog='demo', description=__doc__.split('\n\n')[0])
    p.add_argument('--output', default='outputs/demo')
    p.add_argument('--episodes', type=cli.positive_int, default=400, help='demonstrations to record')
    p.add_argument('--eval-episodes', type=cli.positive_int, default=50, help='held-out episodes per task')
    p.add_argument('--cnn-steps', type=cli.positive_int, default=None, help='default: config/train_franka.yaml')
    p.add_argument('--vlm-steps', type=cli.positive_int, default=None,
                   help='default: config/train_franka_vlm.yaml')
    p.add_argument('--results', default='benchmarks/results/demo.json')
    p.add_argument('--gif', default='benchmarks/results/demo_rollout.gif')
    p.add_argument('--quick', action='store_true', help='miniature run: 20 demos, 200 steps, 6 eval episodes')
    a = p.parse_args(argv)
    os.environ.setdefault('MUJOCO_GL', 'egl')
    if a.quick:
        a.episodes, a.eval_episodes = 20, 6
        a.cnn_steps = a.cnn_steps or 200
        a.vlm_steps = a.vlm_steps or 200
        if a.results == 'benchmarks/results/demo.json':
            a.results = 'outputs/demo_quick.json'
            a.gif = 'outputs/demo_quick.gif'

    def body() -> int:
        _check_train_configs(a.cnn_steps, a.vlm_steps)
        run_demo(a.output, a.episodes, a.eval_episodes, a.cnn_steps, a.vlm_steps, a.results, a.gif)
        return 0

    return cli.run_main(p.prog, body, debug=a.debug)


if __name__ == '__main__':
    sys.exit(main())
