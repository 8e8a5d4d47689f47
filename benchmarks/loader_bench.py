"""Samples/s of the training loader over cached episodes (run by ``benchmarks/bench_data.py``, under a memory cap).

``python benchmarks/loader_bench.py --entries LIST.json --num-workers 2 --seconds 30`` opens the cache
entries listed in ``LIST.json`` (no bag is touched), builds the same samples ``train`` builds for the
film_cnn recipe of ``config/train_franka_2cam.yaml`` (both cameras resized to 64x64, the joint state,
an 8-step action chunk, the instruction tokens, random-shift augmentation), iterates a
``torch.utils.data.DataLoader`` with :class:`vla_training.dataset.StepBatchSampler` (batches of 32,
shuffled across episodes) for ``--seconds`` after a warm-up, and prints one JSON line: samples/s,
batches, and the peak RSS of this process and of its workers.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--entries', required=True, help='JSON list of cache entry directories')
    p.add_argument('--num-workers', type=int, default=0)
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--seconds', type=float, default=30.0)
    p.add_argument('--warmup-batches', type=int, default=5)
    p.add_argument('--config', default=str(ROOT / 'config' / 'train_franka_2cam.yaml'))
    p.add_argument('--preset', default='film_cnn')
    a = p.parse_args(argv)
    import numpy as np
    import torch
    torch.set_num_threads(1)
    from vla_policy.models import WordTokenizer
    from vla_training import train_cli
    from vla_training.dataset import CacheSource, ChunkDataset, StepBatchSampler, collate
    from vla_training.dataset_cache import CacheEntry, DatasetCache
    from vla_training.train import _worker_init, compute_stats
    model_cfg, _, _ = train_cli.load_train_yaml(a.config, a.preset)
    paths = json.loads(Path(a.entries).read_text())
    cache = DatasetCache(root=Path(paths[0]).parents[1], entries=[CacheEntry(x) for x in paths])
    views = cache.lowdim_views(range(min(len(cache), 200)))        # statistics: as train does, from low-dim only
    stats = compute_stats(views, model_cfg)
    tok = WordTokenizer.build([s for v in views for s in v.instructions], model_cfg.max_tokens)
    ds = ChunkDataset(CacheSource(cache, model_cfg.camera_names, model_cfg.backbone.image_size),
                      np.arange(len(cache)), model_cfg, stats, tok, augment_shift=4, seed=0)
    sampler = StepBatchSampler(len(ds), a.batch_size, steps=10 ** 9, seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=a.num_workers,
                                         worker_init_fn=_worker_init, prefetch_factor=4 if a.num_workers else None,
                                         generator=torch.Generator().manual_seed(0))
    import gc
    gc.collect()
    gc.freeze()      # as train does: forked workers do not copy the parent's heap when their GC runs
    it = iter(loader)
    for _ in range(a.warmup_batches):
        next(it)
    n, t0 = 0, time.time()
    while time.time() - t0 < a.seconds:
        b = next(it)
        n += b['actions'].shape[0]
    dt = time.time() - t0
    del it
    print(json.dumps({'samples_per_s': n / dt, 'samples': n, 'seconds': dt, 'num_workers': a.num_workers,
                      'batch_size': a.batch_size, 'episodes': len(cache), 'dataset_samples': len(ds),
                      'peak_rss_main_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      'peak_rss_children_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
