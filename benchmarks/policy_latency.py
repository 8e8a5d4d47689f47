"""Policy latency benchmark: one `VLAPolicy.infer` (preprocess + model + unnormalize) per backbone.

    python benchmarks/policy_latency.py [--threads 1] [--runs 50] [--out benchmarks/results/policy_latency.json]

Builds each model from the Franka training configs with random weights (latency does not depend
on the weights), runs ``--runs`` calls after 5 warm-up calls on a 96x96 camera image and prints
median / p90 milliseconds. The control loop runs at 10 Hz with a new chunk every 4 ticks, so a
policy must answer well inside 400 ms; 100 ms keeps a chunk per tick possible.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import platform
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
for pkg in ('robot_drivers', 'vla_policy', 'vla_training'):
    sys.path.insert(0, str(ROOT / 'src' / pkg))


def build_policy(config_path: str):
    import torch
    from robot_drivers.embodiment import FRANKA_PANDA
    from vla_policy.models.tokenizer import WordTokenizer
    from vla_policy.models.vla import VLA
    from vla_policy.normalization import NormalizationStats
    from vla_policy.policy import VLAPolicy
    from vla_training.train_cli import load_train_yaml
    cfg, _, _ = load_train_yaml(config_path)
    tok = WordTokenizer.build(['reach the red cube', 'pick up the blue cube', 'reach the green cube'], cfg.max_tokens)
    cfg.backbone.vocab_size = tok.vocab_size
    torch.manual_seed(0)
    model = VLA(cfg).eval()
    rng = np.random.default_rng(0)
    q = (FRANKA_PANDA.lower + (FRANKA_PANDA.upper - FRANKA_PANDA.lower) * rng.uniform(0.3, 0.7, (256, 8))).astype('float32')
    stats = {'state': NormalizationStats.from_data(q), 'action': NormalizationStats.from_data(q - q.mean(0))}
    return VLAPolicy(model, cfg, stats, tok), sum(p.numel() for p in model.parameters())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--runs', type=int, default=50)
    p.add_argument('--out', default=str(ROOT / 'benchmarks/results/policy_latency.json'))
    a = p.parse_args()
    import torch
    torch.set_num_threads(a.threads)
    from vla_policy.contracts import Observation
    rows = []
    for name, cfg in (('film_cnn (default)', 'config/train_franka.yaml'), ('hf_vlm idefics3 tiny', 'config/train_franka_vlm.yaml')):
        pol, n_params = build_policy(str(ROOT / cfg))
        img = np.random.default_rng(1).integers(0, 255, (96, 96, 3), dtype=np.uint8)
        hist = [Observation({'front': img}, np.zeros(8, np.float32) + 0.1, 'reach the red cube', float(i))
                for i in range(pol.config.chunk.n_obs_steps)]
        for _ in range(5):
            pol.infer(hist)
        ts = []
        for _ in range(a.runs):
            t = time.perf_counter()
            pol.infer(hist)
            ts.append((time.perf_counter() - t) * 1e3)
        rows.append({'policy': name, 'parameters': n_params, 'median_ms': float(np.median(ts)),
                     'p90_ms': float(np.percentile(ts, 90)), 'runs': a.runs, 'threads': a.threads})
    print(f"{'policy':<24}{'params':>10}{'median ms':>12}{'p90 ms':>10}")
    for r in rows:
        print(f"{r['policy']:<24}{r['parameters']:>10,}{r['median_ms']:>12.2f}{r['p90_ms']:>10.2f}")
    out = {'rows': rows, 'cpu': platform.processor() or platform.machine(), 'cpu_count': os.cpu_count(),
           'torch': torch.__version__}
    from vla_training.evaluate import write_json
    write_json(a.out, out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
