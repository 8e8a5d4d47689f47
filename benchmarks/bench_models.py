"""Model zoo benchmark (``make bench-models``): every preset trained on the demo task, evaluated closed loop.

    python benchmarks/bench_models.py [--presets film_cnn,octo,...] [--episodes 400] [--eval-episodes 50]

RoboVLMs' comparison table for this workspace, on 2 CPU cores:

1. record ``--episodes`` scripted MuJoCo Franka demonstrations (rosbag2 MCAP, seeds 0..N-1; both cameras),
   or reuse ``--demos DIR``;
2. train each preset of ``config/models/`` with the same entry point as ``ros2 run vla_training train``
   (``--config <robot YAML> --preset <name>``), two single-threaded trainings at a time;
3. evaluate every checkpoint closed loop on the same held-out seeds (``vla_training.evaluate``,
   seeds from 1 000 000, never used for recording) for the reach and pick tasks;
4. time one ``VLAPolicy.infer`` (preprocess + model + sampling/decoding + unnormalize) on one thread,
   median of ``--latency-runs`` calls on a recorded observation history.

Writes ``benchmarks/results/model_zoo.json`` (a list, one row per preset: preset, backbone, structure,
head, parameters, cpu_ms_per_chunk, train_minutes, reach, pick, plus details) and the Markdown table
between the ``model-zoo`` markers of ``benchmarks/README.md``. Everything the run makes goes under
``--output``; result files are replaced atomically at the end. Rows of presets a run did not train
(``--presets`` a subset) are kept from the existing results file, each with its own run details.
"""
from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
import json
import multiprocessing as mp
import os
import pathlib
import sys
import time
from typing import Dict, List, Optional, Sequence

ROOT = pathlib.Path(__file__).resolve().parents[1]
for _pkg in ('robot_drivers', 'vla_policy', 'vla_training'):
    sys.path.insert(0, str(ROOT / 'src' / _pkg))

# longest trainings first so that two workers finish together; octo first: its extra seeds are reported too
DEFAULT_PRESETS = ('octo', 'rt2', 'robovlms', 'pi0', 'groot', 'film_cnn')
TABLE_BEGIN = '<!-- model-zoo:begin -->'
TABLE_END = '<!-- model-zoo:end -->'


def _train_job(args) -> Dict[str, object]:
    """One preset's training in a fresh single-threaded process; its log goes to ``log_path``."""
    bags, config, preset, out, overrides, log_path = args
    os.environ['OMP_NUM_THREADS'] = '1'
    with open(log_path, 'w') as log:
        sys.stdout = log
        sys.stderr = log
        import torch
        torch.set_num_threads(1)
        from vla_training.train_cli import run
        t0 = time.time()
        res = run([bags], config, out, dict(overrides, num_threads=1), progress=False, data_workers=1,
                  preset=preset)
        last = res.losses[-50:]
        return {'checkpoint': str(res.checkpoint_dir), 'train_seconds': round(res.seconds, 1),
                'wall_seconds': round(time.time() - t0, 1), 'steps': len(res.losses),
                'first_loss': round(float(res.losses[0][1]), 5),
                'final_loss': round(float(sum(v for _, v in last) / len(last)), 5),
                'val_loss': None if res.val_loss is None else round(float(res.val_loss), 5)}


def cpu_ms_per_chunk(checkpoint: str, bag: str, topics: Dict[str, object], runs: int = 20) -> float:
    """Median wall milliseconds of one ``VLAPolicy.infer`` on one torch thread.

    The observation history is the first ``n_obs_steps`` ticks of ``bag`` (a recorded demo, read with the
    training YAML's ``topics``), with every camera the checkpoint names.
    """
    import numpy as np
    import torch
    torch.set_num_threads(1)
    from robot_drivers.embodiment import get_embodiment
    from vla_policy.contracts import Observation
    from vla_policy.policy import VLAPolicy
    from vla_training.bag_dataset import BagTopics, read_episode
    pol = VLAPolicy.from_checkpoint(checkpoint, seed=0)
    cfg = pol.config
    ep = read_episode(bag, get_embodiment(cfg.embodiment), BagTopics.from_dict(topics))
    hist = [Observation({cam: ep.camera_images[cam][i] for cam in cfg.camera_names},
                        np.asarray(ep.joint_positions[i], np.float32), ep.instructions[i], i / 10.0)
            for i in range(cfg.chunk.n_obs_steps)]
    for _ in range(3):
        pol.infer(hist)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        pol.infer(hist)
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def format_table(rows: Sequence[Dict[str, object]], eval_episodes: int, cpu: str) -> str:
    """Markdown table of the model-zoo rows (success in %, parameters in millions)."""
    head = ('| preset | backbone | structure | head | cameras | parameters | CPU ms / chunk | train min | reach | pick |\n'
            '|---|---|---|---|---|---:|---:|---:|---:|---:|')
    lines = [head]
    for r in rows:
        cams = '+'.join(r.get('details', {}).get('cameras', []))
        lines.append(f"| {r['preset']} | {r['backbone']} | {r['structure']} | {r['head']} | {cams} | "
                     f"{r['parameters'] / 1e6:.2f} M | {r['cpu_ms_per_chunk']:.1f} | {r['train_minutes']:.1f} | "
                     f"{r['reach']:.0%} | {r['pick']:.0%} |")
    lines.append('')
    for r in rows:
        other = r.get('details', {}).get('other_seeds')
        if other:
            alls = [r['reach']] + [o['reach'] for o in other]
            seeds = ', '.join(f"seed {o['train_seed']}: reach {o['reach']:.0%} / pick {o['pick']:.0%}" for o in other)
            lines.append(f"{r['preset']} trained with other seeds (same config and demos): {seeds}; mean reach over "
                         f"{len(alls)} seeds {sum(alls) / len(alls):.0%}.")
            lines.append('')
    lines.append(f'Closed-loop success over {eval_episodes} held-out seeded episodes per task; one torch thread per '
                 f'training and per timing, two trainings at a time on {cpu}.')
    return '\n'.join(lines)


def _write_readme_table(readme: pathlib.Path, table: str) -> None:
    text = readme.read_text(encoding='utf-8') if readme.exists() else '# Benchmarks\n'
    block = f'{TABLE_BEGIN}\n{table}\n{TABLE_END}'
    if TABLE_BEGIN in text and TABLE_END in text:
        i, j = text.index(TABLE_BEGIN), text.index(TABLE_END) + len(TABLE_END)
        text = text[:i] + block + text[j:]
    else:
        text = text.rstrip('\n') + '\n\n## Model zoo (`make bench-models`)\n\n' + block + '\n'
    tmp = readme.with_suffix('.md.tmp')
    tmp.write_text(text, encoding='utf-8')
    os.replace(tmp, readme)


def _merge_previous(rows: List[Dict[str, object]], results: str) -> List[Dict[str, object]]:
    """``rows`` plus the rows of ``results`` (an earlier run) for presets this run did not train, each
    keeping its own ``details.run``; ordered as :data:`DEFAULT_PRESETS`, other presets after them."""
    path = pathlib.Path(results)
    if not path.is_file():
        return rows
    ran = {r['preset'] for r in rows}
    kept = [r for r in json.loads(path.read_text(encoding='utf-8')) if r.get('preset') not in ran]
    order = {name: i for i, name in enumerate(DEFAULT_PRESETS)}
    return sorted(rows + kept, key=lambda r: order.get(r['preset'], len(order)))


def parse_preset_configs(text: str) -> Dict[str, str]:
    """``'octo=config/train_franka.yaml,...'`` -> ``{'octo': '<root>/config/train_franka.yaml'}``.

    Raises:
        ValueError: an item without ``=``.
    """
    out = {}
    for item in filter(None, (t.strip() for t in text.split(','))):
        name, sep, path = item.partition('=')
        if not sep or not name or not path:
            raise ValueError(f'--preset-config: {item!r} is not NAME=YAML')
        out[name] = path if os.path.isabs(path) else str(ROOT / path)
    return out


def run(presets: Sequence[str], output: str, episodes: int, eval_episodes: int, demos: Optional[str],
        config: str, results: str, readme: str, steps: Optional[int], workers: int,
        latency_runs: int, preset_configs: Optional[Dict[str, str]] = None,
        extra_seeds: Sequence[int] = ()) -> List[Dict[str, object]]:
    from vla_policy.checkpoint import load_checkpoint
    from vla_training.evaluate import EvalConfig, evaluate, write_json
    from vla_training.train_cli import load_train_yaml
    configs = {name: (preset_configs or {}).get(name, config) for name in presets}
    for name in presets:      # every preset must load with its robot YAML before anything runs
        load_train_yaml(configs[name], name)
    t0 = time.time()
    out = pathlib.Path(output)
    out.mkdir(parents=True, exist_ok=True)
    if demos is None:
        from vla_training.record import RecordConfig, record_demos
        demos = str(out / 'demos')
        if not (pathlib.Path(demos).is_dir() and len(list(pathlib.Path(demos).iterdir())) >= episodes):
            print(f'[1/3] recording {episodes} scripted demonstrations ...', flush=True)
            record_demos(RecordConfig(episodes=episodes, output=demos, workers=workers))
    record_minutes = (time.time() - t0) / 60.0
    print(f'[2/3] training {len(presets)} presets, {workers} at a time ...', flush=True)
    base = {} if steps is None else {'steps': steps}
    jobs = [(demos, configs[name], name, str(out / name), base, str(out / f'train_{name}.log')) for name in presets]
    # the first preset trained again with other seeds (init, batches, split): how much of its number is luck
    seed_jobs = [(demos, configs[presets[0]], presets[0], str(out / f'{presets[0]}_seed{sd}'), dict(base, seed=sd),
                  str(out / f'train_{presets[0]}_seed{sd}.log')) for sd in extra_seeds]
    with ProcessPoolExecutor(workers, mp_context=mp.get_context('spawn')) as pool:
        done = list(pool.map(_train_job, jobs + seed_jobs))
    trained = dict(zip(presets, done[:len(jobs)]))
    seed_runs = done[len(jobs):]
    first_bag = sorted(pathlib.Path(demos).iterdir())[0]
    print(f'[3/3] closed-loop evaluation, {eval_episodes} held-out episodes per task ...', flush=True)
    rows = []
    for name in presets:
        tr = trained[name]
        model, cfg = load_checkpoint(tr['checkpoint'])[:2]
        te = time.time()
        ev = evaluate(EvalConfig(tr['checkpoint'], eval_episodes, ('reach', 'pick'), workers=workers, policy_seed=0))
        ms = cpu_ms_per_chunk(tr['checkpoint'], str(first_bag), load_train_yaml(configs[name])[2].topics,
                              latency_runs)
        row = {'preset': name, 'backbone': cfg.backbone.name if cfg.backbone.name != 'hf_vlm'
               else f'hf_vlm/{cfg.backbone.hf_arch}',
               'structure': getattr(cfg, 'structure', 'one_step_continuous'), 'head': cfg.head.name,
               'parameters': int(sum(p.numel() for p in model.parameters())),
               'cpu_ms_per_chunk': round(ms, 2), 'train_minutes': round(tr['train_seconds'] / 60.0, 2),
               'reach': ev['success']['reach'], 'pick': ev['success']['pick'],
               'details': {k: v for k, v in tr.items() if k != 'checkpoint'} | {
                   'eval_seconds': round(time.time() - te, 1), 'cameras': list(cfg.camera_names),
                   'n_obs_steps': cfg.chunk.n_obs_steps, 'chunk_size': cfg.chunk.chunk_size,
                   'robot_config': os.path.relpath(configs[name], ROOT), 'train_seed': 0}}
        if name == presets[0] and seed_runs:
            other = []
            for sd, sr in zip(extra_seeds, seed_runs):
                ev_s = evaluate(EvalConfig(sr['checkpoint'], eval_episodes, ('reach', 'pick'), workers=workers,
                                           policy_seed=0))
                other.append({'train_seed': sd, 'reach': ev_s['success']['reach'], 'pick': ev_s['success']['pick'],
                              'val_loss': sr['val_loss'], 'train_seconds': sr['train_seconds']})
            row['details']['other_seeds'] = other
        rows.append(row)
        print(f"      {name:<10} reach {row['reach']:.0%} pick {row['pick']:.0%}  {row['cpu_ms_per_chunk']:.1f} ms/chunk  "
              f"{row['parameters'] / 1e6:.2f} M params  {row['train_minutes']:.1f} train min", flush=True)
    minutes = (time.time() - t0) / 60.0
    cpu = f'{os.cpu_count()} CPU cores'
    meta = {'preset': '_run', 'total_minutes': round(minutes, 1), 'record_minutes': round(record_minutes, 1),
            'episodes_recorded': episodes, 'eval_episodes_per_task': eval_episodes, 'cpu_count': os.cpu_count(),
            'robot_config': os.path.relpath(config, ROOT) if os.path.isabs(config) else config}
    for r in rows:
        r['details']['run'] = meta
    rows = _merge_previous(rows, results)
    pathlib.Path(results).parent.mkdir(parents=True, exist_ok=True)
    write_json(results, rows)
    table = format_table(rows, eval_episodes, cpu)
    _write_readme_table(pathlib.Path(readme), table)
    print()
    print(table)
    print(f'total {minutes:.1f} min; results -> {results}')
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--presets', default=','.join(DEFAULT_PRESETS), help='comma-separated config/models names')
    p.add_argument('--output', default='outputs/bench_models')
    p.add_argument('--episodes', type=int, default=400)
    p.add_argument('--eval-episodes', type=int, default=50)
    p.add_argument('--demos', default=None, help='reuse recorded demos instead of recording')
    p.add_argument('--config', default=str(ROOT / 'config' / 'train_franka_2cam.yaml'),
                   help='robot training YAML the presets are overlaid on')
    p.add_argument('--preset-config', default='octo=config/train_franka.yaml',
                   help='NAME=YAML,...: presets trained on another robot YAML than --config (same demos); octo '
                        'uses the scene camera only, with both cameras an earlier recipe reached 5 %% reach')
    p.add_argument('--seeds', default='1,2',
                   help='extra training seeds for the first preset of --presets (its spread over seeds)')
    p.add_argument('--steps', type=int, default=None, help='override every preset\'s train.steps')
    p.add_argument('--workers', type=int, default=2)
    p.add_argument('--latency-runs', type=int, default=20)
    p.add_argument('--results', default=str(ROOT / 'benchmarks' / 'results' / 'model_zoo.json'))
    p.add_argument('--readme', default=str(ROOT / 'benchmarks' / 'README.md'))
    a = p.parse_args(argv)
    os.environ.setdefault('MUJOCO_GL', 'egl')
    presets = [s for s in a.presets.split(',') if s]
    try:
        seeds = [int(t) for t in a.seeds.split(',') if t.strip()]
        run(presets, a.output, a.episodes, a.eval_episodes, a.demos, a.config, a.results, a.readme, a.steps,
            a.workers, a.latency_runs, parse_preset_configs(a.preset_config), seeds)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f'bench_models: {exc}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
