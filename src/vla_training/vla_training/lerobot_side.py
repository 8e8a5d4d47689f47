"""LeRobot's side of the interop checks: run by LeRobot's OWN interpreter, never imported by our code.

    .venv-lerobot/bin/python src/vla_training/vla_training/lerobot_side.py load --root DIR [--dump OUT.npz]
    .venv-lerobot/bin/python .../lerobot_side.py create --from DIR --out DIR2 --mode video|images
    .venv-lerobot/bin/python .../lerobot_side.py bench-loader --root DIR --num-workers N --batch-size B --seconds S

Each subcommand prints one JSON object on stdout (LeRobot's and the encoders' logs go to stderr).
Imports: lerobot, torch, numpy, PIL and the standard library only (this file runs where our packages
are not installed, and our venv cannot import lerobot). Written against LeRobot 0.4.4
(``lerobot.datasets.lerobot_dataset.LeRobotDataset``).

Offline: ``HF_HUB_OFFLINE=1`` / ``HF_DATASETS_OFFLINE=1`` are set before lerobot is imported (the hub
is not reachable; ``LeRobotDataset(repo_id, root=DIR)`` reads a complete local dataset without it), and
``datasets``' arrow cache goes to a temporary directory removed at exit unless ``HF_DATASETS_CACHE``
is set. Video decoding: ``--video-backend auto`` (default) uses LeRobot's default ``torchcodec`` when
its FFmpeg libraries load (torchcodec needs a system FFmpeg 4-8: ``libavutil.so.56..60``) and
``pyav`` (torchvision's PyAV reader, bundled FFmpeg) otherwise; the JSON says which and why.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('HF_HUB_DISABLE_TELEMETRY', '1')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
_CACHE = None
if 'HF_DATASETS_CACHE' not in os.environ:
    _CACHE = tempfile.mkdtemp(prefix='lerobot_side_hf_')
    os.environ['HF_DATASETS_CACHE'] = _CACHE


def _cleanup_cache() -> None:
    if _CACHE is not None:
        shutil.rmtree(_CACHE, ignore_errors=True)


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + '\n')
    sys.stdout.flush()


def _video_backend(choice: str):
    """(backend, reason) for LeRobotDataset(video_backend=...)."""
    if choice != 'auto':
        return choice, 'requested'
    try:
        from torchcodec.decoders import VideoDecoder  # loads libtorchcodec and FFmpeg
        return 'torchcodec', f'torchcodec loaded ({VideoDecoder.__module__})'
    except Exception as exc:  # RuntimeError / OSError when no system FFmpeg is found
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return 'pyav', f'torchcodec unavailable: {first}'


def _repo_id(root: Path, given):
    if given:
        return given
    try:
        with open(root / 'meta' / 'info.json') as f:
            return json.load(f).get('vla', {}).get('repo_id') or 'local/dataset'
    except (OSError, ValueError):
        return 'local/dataset'


def _open(root: Path, repo_id, backend: str, **kw):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    return LeRobotDataset(_repo_id(root, repo_id), root=root, video_backend=backend, **kw)


def _to_uint8_hwc(t):
    """LeRobot's float32 CHW in [0, 1] -> uint8 HWC (exact for frames that came from uint8)."""
    import torch
    return (t * 255.0).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def _features_json(features: dict) -> dict:
    return {k: {kk: (list(vv) if isinstance(vv, tuple) else vv) for kk, vv in ft.items()} for k, ft in features.items()}


# ----------------------------------------------------------------------------- load
def cmd_load(args) -> dict:
    import numpy as np
    backend, reason = _video_backend(args.video_backend)
    root = Path(args.root)
    t0 = time.perf_counter()
    ds = _open(root, args.repo_id, backend)
    open_s = time.perf_counter() - t0
    meta = ds.meta
    out = {'num_episodes': ds.num_episodes, 'num_frames': ds.num_frames, 'fps': ds.fps,
           'codebase_version': meta.info['codebase_version'], 'features': _features_json(meta.features),
           'camera_keys': list(meta.camera_keys), 'video_keys': list(meta.video_keys),
           'image_keys': list(meta.image_keys), 'tasks': [str(t) for t in meta.tasks.index],
           'video_backend': backend, 'video_backend_reason': reason, 'open_s': open_s,
           'lerobot_version': _lerobot_version()}
    if args.dump:
        t0 = time.perf_counter()
        n = len(ds)
        arrays = {'state': [], 'action': [], 'episode_index': [], 'frame_index': [], 'timestamp': [],
                  'index': [], 'task_index': []}
        images = {k: [] for k in meta.camera_keys}
        tasks = []
        for i in range(n):
            item = ds[i]
            arrays['state'].append(item['observation.state'].numpy())
            arrays['action'].append(item['action'].numpy())
            for k in ('episode_index', 'frame_index', 'timestamp', 'index', 'task_index'):
                arrays[k].append(item[k].item())
            tasks.append(item['task'])
            for k in meta.camera_keys:
                images[k].append(_to_uint8_hwc(item[k]))
        dump = {k: np.asarray(v) for k, v in arrays.items()}
        dump['state'] = dump['state'].astype(np.float32)
        dump['action'] = dump['action'].astype(np.float32)
        dump['task'] = np.asarray(tasks, dtype=str)
        for j, k in enumerate(meta.camera_keys):
            dump[f'image_{j}'] = np.stack(images[k]) if images[k] else np.zeros((0,), np.uint8)
        dump['image_keys'] = np.asarray(list(meta.camera_keys), dtype=str)
        np.savez(args.dump, **dump)
        out['dump'] = str(args.dump)
        out['dump_s'] = time.perf_counter() - t0
    return out


def _lerobot_version() -> str:
    try:
        from importlib.metadata import version
        return version('lerobot')
    except Exception:
        return 'unknown'


# ----------------------------------------------------------------------------- create
def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob('*') if p.is_file())


def cmd_create(args) -> dict:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    backend, reason = _video_backend(args.video_backend)
    src_root, out_root = Path(args.src), Path(args.out)
    if out_root.exists():
        raise SystemExit(f'--out {out_root} exists (LeRobotDataset.create makes it)')
    src = _open(src_root, args.repo_id, backend)
    meta = src.meta
    features = {}
    for k, ft in meta.features.items():
        if k in ('timestamp', 'frame_index', 'episode_index', 'index', 'task_index'):
            continue
        ft = {kk: vv for kk, vv in ft.items() if kk != 'info'}
        if ft['dtype'] in ('image', 'video'):
            ft['dtype'] = 'video' if args.mode == 'video' else 'image'
        features[k] = ft
    write_s = 0.0
    t0 = time.perf_counter()
    dst = LeRobotDataset.create(_repo_id(src_root, args.repo_id), fps=meta.fps, features=features, root=out_root,
                                robot_type=meta.robot_type, use_videos=args.mode == 'video',
                                vcodec=args.vcodec)
    settings = {k: getattr(args, k) for k in ('chunks_size', 'data_files_size_in_mb', 'video_files_size_in_mb')
                if getattr(args, k) is not None}
    if settings:
        dst.meta.update_chunk_settings(**settings)
    write_s += time.perf_counter() - t0
    read_s = 0.0
    frames = 0
    cam_keys = [k for k, ft in features.items() if ft['dtype'] in ('image', 'video')]
    for ep in range(meta.total_episodes):
        t0 = time.perf_counter()
        lo, hi = meta.episodes[ep]['dataset_from_index'], meta.episodes[ep]['dataset_to_index']
        buf = []
        for i in range(lo, hi):
            item = src[i]
            frame = {k: item[k].numpy() for k in features if k not in cam_keys}
            frame.update({k: _to_uint8_hwc(item[k]) for k in cam_keys})
            frame['task'] = item['task']
            buf.append(frame)
        read_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        for frame in buf:
            dst.add_frame(frame)
        dst.save_episode()
        write_s += time.perf_counter() - t0
        frames += len(buf)
    t0 = time.perf_counter()
    dst.finalize()
    write_s += time.perf_counter() - t0
    nbytes = _du(out_root)
    return {'out': str(out_root), 'mode': args.mode, 'vcodec': args.vcodec if args.mode == 'video' else None,
            'num_episodes': meta.total_episodes, 'num_frames': frames, 'write_s': write_s, 'read_s': read_s,
            'bytes': nbytes, 'bytes_per_frame': nbytes / max(frames, 1), 'video_backend': backend,
            'video_backend_reason': reason, 'lerobot_version': _lerobot_version()}


# ----------------------------------------------------------------------------- bench-loader
def _tree_rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants (Linux /proc)."""
    children = {}
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            with open(f'/proc/{d}/stat') as f:
                ppid = int(f.read().rsplit(')', 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    total, stack = 0, [pid]
    page = os.sysconf('SC_PAGE_SIZE')
    while stack:
        p = stack.pop()
        try:
            with open(f'/proc/{p}/statm') as f:
                total += int(f.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            pass
        stack.extend(children.get(p, []))
    return total


def cmd_bench_loader(args) -> dict:
    import torch
    torch.set_num_threads(args.torch_threads)
    backend, reason = _video_backend(args.video_backend)
    delta = json.loads(args.delta_timestamps) if args.delta_timestamps else None
    ds = _open(Path(args.root), args.repo_id, backend, delta_timestamps=delta)
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=args.num_workers,
                                         persistent_workers=args.num_workers > 0, drop_last=False)
    peak = [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _tree_rss_bytes(os.getpid()))
            stop.wait(0.1)

    th = threading.Thread(target=sample, daemon=True)
    th.start()

    def batches():
        while True:
            yield from loader

    it = batches()
    t0 = time.perf_counter()
    warm = 0
    while warm < args.warmup_batches or time.perf_counter() - t0 < args.warmup_s:
        b = next(it)
        warm += 1
    warm_s = time.perf_counter() - t0
    samples, nb = 0, 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < args.seconds:
        b = next(it)
        samples += int(b['index'].shape[0])
        nb += 1
    elapsed = time.perf_counter() - t0
    stop.set()
    th.join()
    keys = {k: list(v.shape) for k, v in b.items() if hasattr(v, 'shape')}
    it.close()
    return {'samples_per_s': samples / elapsed, 'samples': samples, 'batches': nb, 'seconds': elapsed,
            'warmup_batches': warm, 'warmup_s': warm_s, 'num_workers': args.num_workers,
            'batch_size': args.batch_size, 'peak_rss_bytes': peak[0], 'peak_rss_mb': peak[0] / 2 ** 20,
            'batch_shapes': keys, 'num_frames': ds.num_frames, 'video_backend': backend,
            'video_backend_reason': reason, 'delta_timestamps': delta, 'lerobot_version': _lerobot_version()}


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = p.add_subparsers(dest='cmd', required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--repo-id', default=None, help='default: info.json vla.repo_id, else local/dataset')
    common.add_argument('--video-backend', default='auto', choices=('auto', 'torchcodec', 'pyav'))
    q = sub.add_parser('load', parents=[common], help='load with LeRobotDataset, report, dump arrays')
    q.add_argument('--root', required=True)
    q.add_argument('--dump', default=None, help='npz with per-frame arrays (images uint8 HWC)')
    q = sub.add_parser('create', parents=[common], help='rewrite a dataset with LeRobot\'s own writer')
    q.add_argument('--from', dest='src', required=True)
    q.add_argument('--out', required=True)
    q.add_argument('--mode', choices=('video', 'images'), required=True)
    q.add_argument('--vcodec', default='libsvtav1')
    q.add_argument('--chunks-size', type=int, default=None, help='LeRobotDatasetMetadata.update_chunk_settings')
    q.add_argument('--data-files-size-in-mb', type=float, default=None)
    q.add_argument('--video-files-size-in-mb', type=float, default=None)
    q = sub.add_parser('bench-loader', parents=[common], help='shuffled DataLoader throughput')
    q.add_argument('--root', required=True)
    q.add_argument('--num-workers', type=int, default=0)
    q.add_argument('--batch-size', type=int, default=32)
    q.add_argument('--seconds', type=float, default=10.0)
    q.add_argument('--warmup-batches', type=int, default=2)
    q.add_argument('--warmup-s', type=float, default=0.0)
    q.add_argument('--torch-threads', type=int, default=1)
    q.add_argument('--delta-timestamps', default=None, help='JSON {key: [seconds, ...]}')
    args = p.parse_args(argv)
    # keep stdout for the one JSON line: LeRobot, datasets and the encoders (SVT-AV1 writes to the C
    # streams) print progress, so fd 1 points at stderr until the result is ready
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            fn = {'load': cmd_load, 'create': cmd_create, 'bench-loader': cmd_bench_loader}[args.cmd]
            result = fn(args)
    finally:
        sys.stderr.flush()
        with contextlib.suppress(Exception):      # C stdio buffers of the libraries, before fd 1 returns
            import ctypes
            ctypes.CDLL(None).fflush(None)
        os.dup2(saved, 1)
        os.close(saved)
        _cleanup_cache()
    _emit(result)
    return 0


if __name__ == '__main__':
    sys.exit(main())
