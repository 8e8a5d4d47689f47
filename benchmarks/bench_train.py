"""``make bench-train``: the training engine on the demo data -> ``benchmarks/results/train.json`` + a table in
``benchmarks/README.md``.

* **Processes**: the film_cnn recipe (``config/train_franka_2cam.yaml --preset film_cnn``, both cameras)
  for ``--steps`` steps through the ``train`` entry point: 1 process (batch 32), 2 processes under
  torchrun / gloo with batch 16 each (the same 32-sample step: the same loss curve) and with batch 32
  each (64 per step). Samples/s = samples per step x steps / seconds between the log lines at step
  ``--steps / 5`` and the last (start-up and the cache excluded); one torch thread per process.
* **Resume**: ``--resume-steps`` steps with a training state every ``checkpoint_every`` steps, the
  process SIGKILLed right after logging step ``kill_at`` and resumed with ``--resume``; the loss of
  every step against an uninterrupted run of the same config.

The demo bags come from ``outputs/bench_data/demo/bags`` (``make bench-data``) or are recorded here.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / 'benchmarks' / 'results' / 'train.json'
README = ROOT / 'benchmarks' / 'README.md'

KILL_DRIVER = """
import os, signal, sys
import vla_training.train as T
at = int(os.environ['KILL_AT_STEP'])
orig = T._log
def _log(rec, *a, **k):
    orig(rec, *a, **k)
    if rec.get('step') == at:
        os.kill(os.getpid(), signal.SIGKILL)
T._log = _log
from vla_training.train_cli import main
sys.exit(main(sys.argv[1:]))
"""


def log_of(run: Path) -> List[Dict[str, Any]]:
    return [json.loads(x) for x in (run / 'train_log.jsonl').read_text().splitlines() if x.strip()]


def train(args: List[str], out: Path, env, nproc: int = 1, driver: bool = False, extra_env=None) -> subprocess.CompletedProcess:
    cmd = ([sys.executable, '-c', KILL_DRIVER] if driver else [sys.executable, '-m', 'vla_training.train_cli'])
    cmd += args + ['--output', str(out), '--no-progress']
    if nproc > 1:
        cmd += ['--nproc-per-node', str(nproc)]
    return subprocess.run(cmd, env=dict(env, **(extra_env or {})), capture_output=True, text=True, timeout=7200)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--bags', default=str(ROOT / 'outputs' / 'bench_data' / 'demo' / 'bags'))
    p.add_argument('--work', default=str(ROOT / 'outputs' / 'bench_train'))
    p.add_argument('--steps', type=int, default=500)
    p.add_argument('--resume-steps', type=int, default=400)
    p.add_argument('--checkpoint-every', type=int, default=100)
    p.add_argument('--kill-at', type=int, default=250)
    a = p.parse_args(argv)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS='1', MUJOCO_GL=os.environ.get('MUJOCO_GL', 'egl'),
               VLA_CACHE_DIR=str(work / 'cache'))
    bags = Path(a.bags)
    if not bags.is_dir():
        from vla_training.record import RecordConfig, record_demos
        record_demos(RecordConfig(episodes=400, output=str(bags), workers=2))
    cfg = ['--bags', str(bags), '--config', str(ROOT / 'config' / 'train_franka_2cam.yaml'), '--preset', 'film_cnn']
    res: Dict[str, Any] = {'cpu_count': os.cpu_count(), 'steps': a.steps, 'bags': str(bags), 'processes': []}
    t0 = time.time()
    for nproc, batch in ((1, 32), (2, 16), (2, 32)):
        out = work / f'p{nproc}_b{batch}'
        r = train(cfg + ['--steps', str(a.steps), '--batch-size', str(batch)], out, env, nproc)
        if r.returncode != 0:
            print(r.stderr[-3000:], file=sys.stderr)
            return 1
        log = log_of(out)
        first = next(x for x in log if x['step'] >= a.steps // 5)
        last = log[-1]
        per_step = nproc * batch
        sps = per_step * (last['step'] - first['step']) / (last['time_s'] - first['time_s'])
        res['processes'].append({'processes': nproc, 'batch_per_process': batch, 'samples_per_step': per_step,
                                 'samples_per_s': sps, 'final_loss': last['loss'],
                                 'val_loss': next((x['val_loss'] for x in reversed(log) if 'val_loss' in x), None)})
        print(res['processes'][-1], flush=True)
    base = res['processes'][0]['samples_per_s']
    for row in res['processes']:
        row['speedup'] = row['samples_per_s'] / base

    # resume after kill -9
    rcfg = cfg + ['--steps', str(a.resume_steps)]
    ycfg = work / 'resume.yaml'
    import yaml
    raw = yaml.safe_load((ROOT / 'config' / 'train_franka_2cam.yaml').read_text())
    raw['train'].update({'checkpoint_every': a.checkpoint_every, 'log_every': 1})
    raw['data']['robot_config'] = str(ROOT / 'config' / 'franka.yaml')
    ycfg.write_text(yaml.safe_dump(raw))
    rcfg[rcfg.index('--config') + 1] = str(ycfg)
    ref = train(rcfg, work / 'resume_ref', env)
    killed = train(rcfg, work / 'resume_run', env, driver=True, extra_env={'KILL_AT_STEP': str(a.kill_at)})
    state = json.loads((work / 'resume_run' / 'training_state' / 'state.json').read_text())
    resumed = train(rcfg + ['--resume'], work / 'resume_run', env)
    if ref.returncode or resumed.returncode or killed.returncode != -signal.SIGKILL:
        print(ref.stderr[-2000:], killed.stderr[-2000:], resumed.stderr[-2000:], file=sys.stderr)
        return 1
    want = {x['step']: x['loss'] for x in log_of(work / 'resume_ref')}
    got = {x['step']: x['loss'] for x in log_of(work / 'resume_run')}
    diffs = [abs(got[s] - want[s]) for s in sorted(want)]
    res['resume'] = {'steps': a.resume_steps, 'checkpoint_every': a.checkpoint_every, 'killed_after_step': a.kill_at,
                     'resumed_from_step': state['step'], 'steps_redone': a.kill_at - state['step'],
                     'max_abs_loss_diff': max(diffs), 'steps_compared': len(diffs),
                     'final_loss_uninterrupted': want[a.resume_steps], 'final_loss_resumed': got[a.resume_steps]}
    res['total_minutes'] = (time.time() - t0) / 60
    tmp = RESULTS.with_suffix('.json.tmp')
    tmp.write_text(json.dumps(res, indent=1))
    os.replace(tmp, RESULTS)
    rows = ['| processes (torchrun, gloo, 1 thread each) | batch per process | samples per step | samples/s | speedup | final loss |',
            '|---|---:|---:|---:|---:|---:|']
    for r in res['processes']:
        rows.append(f"| {r['processes']} | {r['batch_per_process']} | {r['samples_per_step']} | {r['samples_per_s']:,.0f} | "
                    f"{r['speedup']:.2f}x | {r['final_loss']:.4f} |")
    rr = res['resume']
    rows += ['', f"Resume: SIGKILL after step {rr['killed_after_step']}, resumed from the training state of step "
                 f"{rr['resumed_from_step']} ({rr['steps_redone']} steps redone); loss at each of the "
                 f"{rr['steps_compared']} steps vs the uninterrupted run: max |difference| {rr['max_abs_loss_diff']:.2e}; "
                 f"final loss {rr['final_loss_resumed']:.5f} vs {rr['final_loss_uninterrupted']:.5f}."]
    block = '<!-- bench-train:begin -->\n' + '\n'.join(rows) + '\n<!-- bench-train:end -->'
    text = README.read_text(encoding='utf-8')
    if '<!-- bench-train:begin -->' in text:
        i, j = text.index('<!-- bench-train:begin -->'), text.index('<!-- bench-train:end -->') + len('<!-- bench-train:end -->')
        text = text[:i] + block + text[j:]
    else:
        text += f'\n## Training engine (`make bench-train`)\n\n{block}\n'
    README.write_text(text, encoding='utf-8')
    print('\n'.join(rows))
    return 0


if __name__ == '__main__':
    sys.exit(main())
