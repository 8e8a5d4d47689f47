"""``make bench-metaworld``: Meta-World MT10 / MT50 through the policy server -> ``benchmarks/results/metaworld.json``
and the Meta-World table in ``benchmarks/README.md``, beside published numbers.

1. **Demonstrations**: Meta-World's scripted experts in Meta-World's own venv
   (``vla_training.metaworld_env record``: the env, our topics, one rosbag2 per episode; only
   successful episodes are kept), ``--demos`` per task on seeds 0, 1, ... (evaluation uses 1000+).
2. **Training**: ``train --bags <demos> --config config/train_metaworld.yaml [--preset P]`` (the
   standard entry point; per preset, the CPU minutes are reported).
3. **Evaluation**: the checkpoint served by ``policy_server`` on loopback; Meta-World's venv runs the
   client (``vla_training.metaworld_env evaluate``: 10 episodes per task with seeds 1000-1009, success
   = ``info['success']`` at any step, 500 steps at most), the tasks split over ``--workers`` processes.

``--presets default,octo``: ``default`` is ``config/train_metaworld.yaml`` as it is (film_cnn at 96 px);
a preset name overlays ``config/models/<name>.yaml`` (and its training recipe, unless ``--steps``).
Results of other presets / suites already in ``metaworld.json`` are kept.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / 'benchmarks' / 'results' / 'metaworld.json'
README = ROOT / 'benchmarks' / 'README.md'
PYPATH = os.pathsep.join(str(ROOT / 'src' / p) for p in ('robot_drivers', 'vla_policy', 'vla_training'))

#: Published Meta-World success (%, 10 trials per task, groups easy 28 / medium 11 / hard 6 / very hard 5),
#: SmolVLA (Shukor et al. 2025, arXiv 2506.01844) Table 2, which quotes the Diffusion Policy and TinyVLA rows
#: from TinyVLA (Wen et al. 2024, arXiv 2409.12514) Table I. Octo reports no Meta-World result.
PUBLISHED = [
    {'policy': 'Diffusion Policy', 'easy': 23.1, 'medium': 10.7, 'hard': 1.9, 'very_hard': 6.1, 'average': 10.5,
     'setup': 'from scratch, 50 demos / task (TinyVLA Table I)'},
    {'policy': 'TinyVLA-H (1.3B)', 'easy': 77.6, 'medium': 21.5, 'hard': 11.4, 'very_hard': 15.8, 'average': 31.6,
     'setup': 'Pythia VLM + LoRA + diffusion head, 50 demos / task, no robot pretraining'},
    {'policy': 'pi0 (3.5B, PaliGemma init)', 'easy': 80.4, 'medium': 40.9, 'hard': 36.7, 'very_hard': 44.0,
     'average': 50.5, 'setup': 'fine-tuned by the SmolVLA authors, no robot pretraining'},
    {'policy': 'pi0 (3.5B, robot-pretrained)', 'easy': 71.8, 'medium': 48.2, 'hard': 41.7, 'very_hard': 30.0,
     'average': 47.9, 'setup': 'fine-tuned by the SmolVLA authors'},
    {'policy': 'SmolVLA (0.45B)', 'easy': 82.5, 'medium': 41.8, 'hard': 45.0, 'very_hard': 60.0, 'average': 57.3,
     'setup': 'SmolVLM-2 frozen + 100M action expert, 100k steps x batch 64 on GPU, 512 px, 50 demos / task'},
    {'policy': 'SmolVLA (2.25B)', 'easy': 87.14, 'medium': 51.82, 'hard': 70.0, 'very_hard': 64.0, 'average': 68.24,
     'setup': 'as above, larger VLM'},
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def mw_env(py: str) -> Dict[str, str]:
    return dict(os.environ, PYTHONPATH=PYPATH, MUJOCO_GL=os.environ.get('MUJOCO_GL', 'egl'), OMP_NUM_THREADS='1')


def split(tasks: List[str], n: int) -> List[List[str]]:
    return [p for p in (tasks[i::n] for i in range(n)) if p]


def record(py: str, tasks: List[str], demos: int, out: Path, image_size: int, workers: int) -> float:
    todo = [t for t in tasks if len(list((out / t).glob('episode_*'))) < demos]
    for t in todo:                                  # a partial task is recorded again
        if (out / t).exists():
            import shutil
            shutil.rmtree(out / t)
    t0 = time.time()
    procs = [subprocess.Popen([py, '-m', 'vla_training.metaworld_env', 'record', '--tasks', ','.join(part),
                               '--episodes', str(demos), '--output', str(out), '--image-size', str(image_size)],
                              env=mw_env(py), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for part in split(todo, workers)]
    for p in procs:
        out_, err = p.communicate()
        if p.returncode:
            raise RuntimeError(f'record failed: {err.strip().splitlines()[-1:]}')
    return time.time() - t0


def train(preset: str, bags: Path, out: Path, steps: Optional[int]) -> Dict[str, Any]:
    cmd = [str(ROOT / 'install' / 'vla_training' / 'lib' / 'vla_training' / 'train'), '--bags', str(bags),
           '--config', str(ROOT / 'config' / 'train_metaworld.yaml'), '--output', str(out), '--no-progress']
    if preset != 'default':
        cmd += ['--preset', preset]
    if steps:
        cmd += ['--steps', str(steps)]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS='1'))
    if r.returncode:
        raise RuntimeError(f'train {preset} failed: {r.stderr.strip().splitlines()[-1:]}')
    log = [json.loads(x) for x in (out / 'train_log.jsonl').read_text().splitlines() if x.strip()]
    meta = json.loads((out / 'checkpoint' / 'meta.json').read_text())
    return {'train_minutes': log[-1]['time_s'] / 60, 'wall_minutes': (time.time() - t0) / 60,
            'steps': log[-1]['step'], 'final_loss': log[-1]['loss'], 'val_loss': meta.get('val_loss'),
            'train_samples': meta.get('n_train_samples')}


def evaluate(py: str, ckpt: Path, tasks: List[str], episodes: int, image_size: int, workers: int,
             work: Path) -> Dict[str, Any]:
    port = free_port()
    server = subprocess.Popen([str(ROOT / 'install' / 'vla_policy' / 'lib' / 'vla_policy' / 'policy_server'),
                               '--checkpoint', str(ckpt), '--port', str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=dict(os.environ, OMP_NUM_THREADS='1'))
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=1).read()
                break
            except OSError:
                if server.poll() is not None:
                    raise RuntimeError(f'policy_server exited: {server.stdout.read()[-500:]}')
                time.sleep(0.2)
        t0 = time.time()
        parts = split(tasks, workers)
        outs = [work / f'eval_{i}.json' for i in range(len(parts))]
        procs = [subprocess.Popen([py, '-m', 'vla_training.metaworld_env', 'evaluate', '--endpoint',
                                   f'ws://127.0.0.1:{port}', '--tasks', ','.join(part), '--episodes', str(episodes),
                                   '--image-size', str(image_size), '--output', str(o)],
                                  env=mw_env(py), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for part, o in zip(parts, outs)]
        for p in procs:
            _, err = p.communicate()
            if p.returncode:
                raise RuntimeError(f'evaluate failed: {err.strip().splitlines()[-1:]}')
        res = [json.loads(o.read_text()) for o in outs]
        rates = {t: r['tasks'][t] for r in res for t in r['tasks']}
        return {'tasks': {t: rates[t] for t in tasks}, 'episodes': [e for r in res for e in r['episodes']],
                'eval_minutes': (time.time() - t0) / 60}
    finally:
        server.terminate()
        server.wait(timeout=30)


def summarize(rates: Dict[str, float]) -> Dict[str, Any]:
    sys.path.insert(0, str(ROOT / 'src' / 'vla_training'))
    from vla_training.metaworld_env import DIFFICULTY
    groups: Dict[str, List[float]] = {}
    for t, r in rates.items():
        groups.setdefault(DIFFICULTY[t], []).append(r)
    return {'average': sum(rates.values()) / len(rates),
            'by_difficulty': {g: {'success': sum(v) / len(v), 'tasks': len(v)} for g, v in groups.items()}}


def table(runs: List[Dict[str, Any]]) -> str:
    rows = ['| policy | suite | easy | medium | hard | very hard | average | setup |', '|---|---|---:|---:|---:|---:|---:|---|']

    def pct(x):
        return '–' if x is None else f'{100 * x:.1f}'

    for r in runs:
        bd = r['by_difficulty']
        cells = [pct(bd[g]['success']) + f" ({bd[g]['tasks']})" if g in bd else '–'
                 for g in ('easy', 'medium', 'hard', 'very_hard')]
        rows.append(f"| **ours: {r['preset']}** ({r['parameters_m']:.2f} M) | {r['suite']} | " + ' | '.join(cells) +
                    f" | **{pct(r['average'])}** | from scratch on {r['demos_per_task']} expert demos / task, "
                    f"{r['train_minutes']:.0f} min training on 2 CPU cores, 128 px render resized to {r['image_size']} |")
    for p in PUBLISHED:
        rows.append(f"| {p['policy']} | MT50 | {p['easy']} | {p['medium']} | {p['hard']} | {p['very_hard']} | "
                    f"{p['average']} | {p['setup']} |")
    per_task = []
    for r in runs:
        per_task.append(f"{r['preset']} / {r['suite']}: " + ', '.join(f"{t.replace('-v3', '')} {100 * v:.0f}"
                                                                      for t, v in r['tasks'].items()))
    return '\n'.join(rows) + '\n\nPer task (% of 10 episodes): ' + '; '.join(per_task) + '.'


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--metaworld-python', default=str(ROOT / '.venv-metaworld' / 'bin' / 'python'))
    p.add_argument('--suite', default='mt10', choices=['mt10', 'mt50'])
    p.add_argument('--presets', default='default,octo')
    p.add_argument('--demos', type=int, default=50, help='expert demonstrations per task')
    p.add_argument('--episodes', type=int, default=10, help='evaluation episodes per task')
    p.add_argument('--steps', type=int, default=None, help='training steps (default: the config / preset)')
    p.add_argument('--image-size', type=int, default=128, help='render size')
    p.add_argument('--workers', type=int, default=2)
    p.add_argument('--work', default=str(ROOT / 'outputs' / 'metaworld'))
    a = p.parse_args(argv)
    py = a.metaworld_python
    if not Path(py).is_file():
        print(f'bench-metaworld: error: no Meta-World venv at {py} (make .venv-metaworld/.installed)', file=sys.stderr)
        return 1
    sys.path.insert(0, str(ROOT / 'src' / 'vla_training'))
    from vla_training.metaworld_env import resolve_tasks
    tasks = resolve_tasks(a.suite)
    work = Path(a.work)
    demos = work / 'demos'
    record_s = record(py, tasks, a.demos, demos, a.image_size, a.workers)
    print(f'demonstrations: {a.demos} per task in {demos} ({record_s / 60:.1f} min)', flush=True)
    runs = json.loads(RESULTS.read_text()) if RESULTS.is_file() else []
    for preset in a.presets.split(','):
        out = work / f'{a.suite}_{preset}'
        tr = train(preset, demos, out, a.steps)
        print(f'{preset}: trained {tr}', flush=True)
        ev = evaluate(py, out / 'checkpoint', tasks, a.episodes, a.image_size, a.workers, out)
        cfg = json.loads((out / 'checkpoint' / 'config.json').read_text())
        from safetensors.numpy import load_file
        n_params = sum(v.size for v in load_file(str(out / 'checkpoint' / 'model.safetensors')).values())
        run = {'suite': a.suite, 'preset': preset, 'tasks': ev['tasks'], **summarize(ev['tasks']),
               'episodes_per_task': a.episodes, 'eval_seeds': [1000, 1000 + a.episodes - 1],
               'demos_per_task': a.demos, 'train_minutes': tr['train_minutes'], 'eval_minutes': ev['eval_minutes'],
               'record_minutes': record_s / 60, 'backbone': cfg['backbone']['name'], 'head': cfg['head']['name'],
               'image_size': cfg['backbone']['image_size'], 'parameters_m': n_params / 1e6, 'train': tr,
               'cpu_count': os.cpu_count(), 'episodes': ev['episodes']}
        runs = [r for r in runs if not (r['suite'] == a.suite and r['preset'] == preset)] + [run]
        tmp = RESULTS.with_suffix('.json.tmp')
        tmp.write_text(json.dumps(runs, indent=1))
        os.replace(tmp, RESULTS)
        print(f"{preset}: {a.suite} average {run['average']:.3f} {run['by_difficulty']}", flush=True)
    text = README.read_text(encoding='utf-8')
    begin, end = '<!-- metaworld:begin -->', '<!-- metaworld:end -->'
    block = f'{begin}\n{table(runs)}\n{end}'
    if begin in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text += f'\n## Meta-World (`make bench-metaworld`)\n\n{block}\n'
    README.write_text(text, encoding='utf-8')
    print(table(runs))
    return 0


if __name__ == '__main__':
    sys.exit(main())
