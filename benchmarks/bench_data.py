"""``make bench-data``: the dataset cache against the bags and LeRobotDataset v3, and the loader on a dataset
larger than the memory it may use -> ``benchmarks/results/data.json`` + the data table in ``benchmarks/README.md``.

Two datasets, both recorded by ``record`` in the MuJoCo Franka scene (scripted expert, reach + pick,
scene and wrist camera):

* **demo set**: what ``make demo`` records (400 episodes, 96x96 raw ``sensor_msgs/Image``). Build time
  and size of our cache (frames raw, and PNG) against the bags, against our LeRobotDataset v3 export
  (video and images) and against LeRobot 0.4.4's own writer given the same frames
  (``lerobot_side.py create``; timed alone, without reading).
* **large set**: 480x480 JPEG (``sensor_msgs/CompressedImage`` q85, as ``image_transport`` records)
  with enough episodes that the cache is at least ``--ratio`` times the memory cap. The loader
  (``benchmarks/loader_bench.py``: the film_cnn samples of ``train``, both cameras resized to 64,
  8-step chunks, batches of 32 shuffled across episodes) runs with 0 and 2 workers inside a memory
  cgroup of ``--limit-mb`` (``benchmarks/memcap.py``: anonymous memory and page cache together),
  after the dataset has been dropped from the page cache; LeRobot's ``LeRobotDataset`` +
  ``DataLoader`` (``lerobot_side.py bench-loader``: both cameras, state, the same 8-step action chunk
  through ``delta_timestamps``, no resize) runs on the same episodes exported to LeRobotDataset v3
  video, under the same cap and, when it does not fit, without one (reported). LeRobot's images mode
  (PNG in parquet) is measured on the first ``--lerobot-images-episodes`` episodes (writing PNGs of
  the whole set takes hours on 2 cores; the loader's speed does not depend on the dataset's length).

Phases reuse what a previous run left under ``--work`` (recorded bags, exports), so a rerun goes
straight to the measurements; ``--fresh`` starts over. About 2.5 hours on 2 cores the first time
(recording ~1.5 h, the video export ~40 min), most of it in ``record``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'benchmarks'))
RESULTS = ROOT / 'benchmarks' / 'results' / 'data.json'
README = ROOT / 'benchmarks' / 'README.md'
LEROBOT_SIDE = ROOT / 'src' / 'vla_training' / 'vla_training' / 'lerobot_side.py'
RAW_TOPICS = {'front': '/camera/image_raw', 'wrist': '/wrist_camera/image_raw'}
JPEG_TOPICS = {k: v + '/compressed' for k, v in RAW_TOPICS.items()}
CHUNK = 8
FPS = 10


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob('*') if f.is_file()) if Path(path).exists() else 0


def frames_of(cache) -> int:
    return int(sum(e.length * len(e.cameras) for e in cache.entries))


def spec_for(cams: Dict[str, str], images: str = 'keep'):
    from vla_training.bag_reader import BagTopics
    from vla_training.dataset_cache import CacheSpec
    return CacheSpec(embodiment='franka_panda', topics=BagTopics.from_dict({'images': cams}).as_dict(), images=images)


def record(out: Path, episodes: int, image_size: int, image_format: str, quality: int = 85) -> List[Path]:
    from vla_training.record import RecordConfig, record_demos
    have = sorted(p for p in out.glob('episode_*') if (p / 'metadata.yaml').is_file()) if out.exists() else []
    if len(have) >= episodes:
        return have[:episodes]
    seed = (int(have[-1].name.split('_')[1]) + 1) if have else 0
    print(f'recording {episodes - len(have)} episodes ({image_size} px, {image_format}) to {out}', flush=True)
    record_demos(RecordConfig(episodes=episodes - len(have), output=str(out), seed=seed, workers=2,
                              image_size=image_size, image_format=image_format, jpeg_quality=quality), progress=True)
    return sorted(p for p in out.glob('episode_*') if (p / 'metadata.yaml').is_file())[:episodes]


def build(bags: List[Path], cams, root: Path, images: str = 'keep') -> Dict[str, Any]:
    from vla_training.dataset_cache import build_cache
    if root.exists():
        shutil.rmtree(root)
    t0 = time.time()
    c = build_cache(bags, spec_for(cams, images), root, workers=2)
    return {'seconds': time.time() - t0, 'bytes': c.nbytes, 'frames': frames_of(c), 'episodes': len(c), '_cache': c}


def export(cache, out: Path, video: bool, limit: Optional[int] = None) -> Dict[str, Any]:
    from vla_training.lerobot_dataset import export_lerobot
    done = out / 'meta' / 'info.json'
    n = len(cache.entries) if limit is None else min(limit, len(cache.entries))
    if done.is_file() and json.loads(done.read_text()).get('total_episodes') == n:
        info = json.loads((out / '.bench_export.json').read_text()) if (out / '.bench_export.json').is_file() else {}
        return dict(info, bytes=du(out) - (out / '.bench_export.json').stat().st_size, reused=True)
    t0 = time.time()
    eps = (e.to_episode() for e in cache.entries[:n])
    export_lerobot(eps, out, fps=FPS, use_videos=video, robot_type='franka_panda', repo_id='local/bench', overwrite=True)
    rec = {'seconds': time.time() - t0, 'episodes': n}
    (out / '.bench_export.json').write_text(json.dumps(rec))
    return dict(rec, bytes=du(out) - (out / '.bench_export.json').stat().st_size)


def lerobot_json(py: str, args: List[str], limit_mb: Optional[float] = None, evict=(), timeout=7200) -> Dict[str, Any]:
    """Run ``lerobot_side.py`` in LeRobot's venv (under the memory cap when ``limit_mb``)."""
    cmd = [py, str(LEROBOT_SIDE)] + args
    env = dict(os.environ, OMP_NUM_THREADS='1', SVT_LOG='1')
    if limit_mb:
        from memcap import run_capped
        r = run_capped(cmd, int(limit_mb * 2 ** 20), evict, env=env, timeout=timeout)
        cap = {k: r[k] for k in ('peak_bytes', 'limit_bytes', 'limit_hits', 'oom_kills', 'cgroup')}
        out, err, rc = r['stdout'], r['stderr'], r['returncode']
    else:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        out, err, rc, cap = p.stdout, p.stderr, p.returncode, None
    lines = [ln for ln in out.splitlines() if ln.startswith('{')]
    if rc != 0 or not lines:
        return {'error': f'exit {rc}: {err.strip().splitlines()[-1] if err.strip() else "no output"}', 'memcap': cap}
    res = json.loads(lines[-1])
    res['memcap'] = cap
    return res


def ours_loader(cache, workers: int, seconds: float, limit_mb: float, work: Path) -> Dict[str, Any]:
    from memcap import run_capped
    entries = work / 'entries.json'
    entries.write_text(json.dumps([str(e.path) for e in cache.entries]))
    cmd = [sys.executable, str(ROOT / 'benchmarks' / 'loader_bench.py'), '--entries', str(entries),
           '--num-workers', str(workers), '--seconds', str(seconds)]
    r = run_capped(cmd, int(limit_mb * 2 ** 20), [str(cache.root)], env=dict(os.environ, OMP_NUM_THREADS='1'),
                   timeout=3600)
    lines = [ln for ln in r['stdout'].splitlines() if ln.startswith('{')]
    if r['returncode'] != 0 or not lines:
        return {'error': f"exit {r['returncode']}: {r['stderr'].strip().splitlines()[-1:]}",
                'memcap': {k: r[k] for k in ('peak_bytes', 'limit_bytes', 'limit_hits', 'oom_kills')}}
    res = json.loads(lines[-1])
    res['memcap'] = {k: r[k] for k in ('peak_bytes', 'limit_bytes', 'limit_hits', 'oom_kills', 'cgroup')}
    return res


def lerobot_loader(py: str, root: Path, workers: int, seconds: float, limit_mb: float) -> Dict[str, Any]:
    dt = json.dumps({'action': [i / FPS for i in range(CHUNK)]})
    args = ['bench-loader', '--root', str(root), '--num-workers', str(workers), '--seconds', str(seconds),
            '--batch-size', '32', '--delta-timestamps', dt, '--warmup-batches', '3']
    capped = lerobot_json(py, args, limit_mb, [str(root)])
    if 'error' not in capped:
        return dict(capped, capped=True)
    free = lerobot_json(py, args)
    return dict(free, capped=False, under_cap=capped)


def table(res: Dict[str, Any]) -> str:
    def mb(b):
        return f'{b / 2 ** 20:,.0f} MB' if b >= 2 ** 20 else f'{b / 1024:,.0f} kB'

    s, l = res['demo_set'], res['large_set']
    rows = ['| demo set (400 episodes, 96x96 raw, 2 cameras) | build s | size | bytes / frame |',
            '|---|---:|---:|---:|',
            f"| rosbag2 MCAP (recorded) | – | {mb(s['bags_bytes'])} | {s['bags_bytes'] / s['frames']:,.0f} |"]
    for key, name in (('cache_keep', 'our cache, frames as recorded (raw)'), ('cache_png', 'our cache, `cache_images: png`'),
                      ('export_video', 'our LeRobotDataset v3 export, video'), ('export_images', 'our LeRobotDataset v3 export, images'),
                      ('lerobot_video', 'LeRobot 0.4.4 writer, video'), ('lerobot_images', 'LeRobot 0.4.4 writer, images')):
        r = s.get(key) or {}
        if 'bytes' in r:
            rows.append(f"| {name} | {r.get('seconds', float('nan')):.1f} | {mb(r['bytes'])} | {r['bytes'] / s['frames']:,.0f} |")
        elif r:
            rows.append(f"| {name} | {r.get('error', r.get('skipped', '?'))} | | |")
    cap = l['limit_mb']
    rows += ['', f"| large set ({l['episodes']} episodes, 480x480 JPEG q85, 2 cameras; {l['frames']:,} frames) | size | bytes / frame |",
             '|---|---:|---:|',
             f"| rosbag2 MCAP | {mb(l['bags_bytes'])} | {l['bags_bytes'] / l['frames']:,.0f} |",
             f"| our cache (JPEG kept; built in {l['cache']['seconds']:.0f} s) | {mb(l['cache']['bytes'])} | {l['cache']['bytes'] / l['frames']:,.0f} |",
             f"| LeRobotDataset v3, video (AV1) | {mb(l['lerobot_video_bytes'])} | {l['lerobot_video_bytes'] / l['frames']:,.0f} |", '',
             f'| loader, batches of 32, memory cap {cap:.0f} MiB (dataset / cap = {res["dataset_over_memory_cap"]:.1f}) | 0 workers | 2 workers |',
             '|---|---:|---:|']

    def cell(r):
        if not r:
            return '–'
        if 'error' in r:
            return r['error'][:60]
        peak = (r.get('memcap') or {}).get('peak_bytes')
        extra = '' if r.get('capped', True) else ' (no cap: OOM under it)'
        return f"{r['samples_per_s']:,.0f} samples/s{extra}" + (f", peak {peak / 2 ** 20:,.0f} MiB" if peak else '')

    for key, name in (('ours', 'ours (cache)'), ('lerobot_video', 'LeRobot 0.4.4, video'),
                      ('lerobot_images', f"LeRobot 0.4.4, images (first {l.get('lerobot_images_episodes', '?')} episodes)")):
        r = l['loader'].get(key, {})
        rows.append(f"| {name} | {cell(r.get('0'))} | {cell(r.get('2'))} |")
    return '\n'.join(rows)


def write_readme(res: Dict[str, Any]) -> None:
    text = README.read_text(encoding='utf-8')
    begin, end = '<!-- bench-data:begin -->', '<!-- bench-data:end -->'
    block = f'{begin}\n{table(res)}\n{end}'
    if begin in text:
        a, b = text.index(begin), text.index(end) + len(end)
        text = text[:a] + block + text[b:]
    else:
        text += f'\n## Dataset cache and loader (`make bench-data`)\n\n{block}\n'
    README.write_text(text, encoding='utf-8')


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--work', default=str(ROOT / 'outputs' / 'bench_data'))
    p.add_argument('--demo-episodes', type=int, default=400)
    p.add_argument('--large-episodes', type=int, default=None, help='default: enough for --ratio x --limit-mb')
    p.add_argument('--limit-mb', type=float, default=512.0, help='memory cap of the loader (cgroup), MiB')
    p.add_argument('--ratio', type=float, default=4.0, help='dataset bytes / memory cap of the large set')
    p.add_argument('--seconds', type=float, default=30.0, help='measured seconds per loader run')
    p.add_argument('--lerobot-python', default=str(ROOT / '.venv-lerobot' / 'bin' / 'python'))
    p.add_argument('--lerobot-images-episodes', type=int, default=200)
    p.add_argument('--fresh', action='store_true')
    a = p.parse_args(argv)
    os.environ.setdefault('MUJOCO_GL', 'egl')
    os.environ.setdefault('SVT_LOG', '1')
    import torch
    torch.set_num_threads(1)
    from memcap import cgroup_available
    why = cgroup_available()
    if why:
        print(f'bench-data: error: the memory cap needs a cgroup: {why}', file=sys.stderr)
        return 3
    work = Path(a.work)
    if a.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    py = a.lerobot_python if Path(a.lerobot_python).is_file() else None
    t_all = time.time()
    res: Dict[str, Any] = {'cpu_count': os.cpu_count(), 'lerobot': 'lerobot==0.4.4' if py else 'absent (make .venv-lerobot/.installed)'}

    # ---- demo set: build time and size
    bags = record(work / 'demo' / 'bags', a.demo_episodes, 96, 'raw')
    keep = build(bags, RAW_TOPICS, work / 'demo' / 'cache_keep')
    png = build(bags, RAW_TOPICS, work / 'demo' / 'cache_png', images='png')
    cache = keep.pop('_cache')
    png.pop('_cache')
    s = {'episodes': len(bags), 'frames': keep['frames'], 'bags_bytes': sum(du(b) for b in bags),
         'cache_keep': keep, 'cache_png': png,
         'export_video': export(cache, work / 'demo' / 'lerobot_ours_video', True),
         'export_images': export(cache, work / 'demo' / 'lerobot_ours_images', False)}
    if py:
        for mode in ('video', 'images'):
            out = work / 'demo' / f'lerobot_own_{mode}'
            shutil.rmtree(out, ignore_errors=True)
            r = lerobot_json(py, ['create', '--from', str(work / 'demo' / 'lerobot_ours_images'), '--out', str(out),
                                  '--mode', mode])
            s[f'lerobot_{mode}'] = ({'seconds': r.get('write_s'), 'bytes': du(out), 'detail': r}
                                    if 'error' not in r else r)
    else:
        s['lerobot_video'] = s['lerobot_images'] = {'skipped': 'LeRobot venv absent'}
    res['demo_set'] = s
    print(json.dumps({k: v for k, v in s.items() if k != 'export_images'}, default=str)[:800], flush=True)

    # ---- large set: enough JPEG episodes for ratio x cap
    large = work / 'large'
    pilot = record(large / 'bags', 20, 480, 'jpeg')
    per_ep = build(pilot, JPEG_TOPICS, large / 'pilot_cache')
    shutil.rmtree(large / 'pilot_cache')
    need = a.large_episodes or math.ceil(a.ratio * a.limit_mb * 2 ** 20 / (per_ep['bytes'] / per_ep['episodes']) * 1.03)
    bags = record(large / 'bags', need, 480, 'jpeg')
    built = build(bags, JPEG_TOPICS, large / 'cache')
    cache = built.pop('_cache')
    video = export(cache, large / 'lerobot_video', True)
    l = {'episodes': len(bags), 'frames': built['frames'], 'bags_bytes': sum(du(b) for b in bags), 'cache': built,
         'lerobot_video_bytes': video['bytes'], 'lerobot_video_export_seconds': video.get('seconds'),
         'limit_mb': a.limit_mb, 'lerobot_images_episodes': a.lerobot_images_episodes, 'loader': {}}
    if py:
        img = export(cache, large / 'lerobot_images', False, limit=a.lerobot_images_episodes)
        l['lerobot_images_subset_bytes'] = img['bytes']
    # ---- loaders (quiet machine: nothing else of this script runs meanwhile)
    l['loader']['ours'] = {str(w): ours_loader(cache, w, a.seconds, a.limit_mb, large) for w in (0, 2)}
    if py:
        l['loader']['lerobot_video'] = {str(w): lerobot_loader(py, large / 'lerobot_video', w, a.seconds, a.limit_mb)
                                        for w in (0, 2)}
        l['loader']['lerobot_images'] = {str(w): lerobot_loader(py, large / 'lerobot_images', w, a.seconds, a.limit_mb)
                                         for w in (0, 2)}
    res['large_set'] = l
    best = lambda d: max((r.get('samples_per_s', 0.0) for r in (d or {}).values()), default=0.0)  # noqa: E731
    ours = best(l['loader']['ours'])
    theirs = max(best(l['loader'].get('lerobot_video')), best(l['loader'].get('lerobot_images')))
    res['loader_ratio_vs_lerobot'] = ours / theirs if theirs else None
    res['dataset_over_memory_cap'] = built['bytes'] / (a.limit_mb * 2 ** 20)
    res['size_ratio_vs_lerobot_video'] = built['bytes'] / video['bytes']
    res['total_minutes'] = (time.time() - t_all) / 60
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix('.json.tmp')
    tmp.write_text(json.dumps(res, indent=1, default=str))
    os.replace(tmp, RESULTS)
    write_readme(res)
    print(table(res))
    return 0


if __name__ == '__main__':
    sys.exit(main())
