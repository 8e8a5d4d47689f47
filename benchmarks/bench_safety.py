"""Safety fuzz benchmark: >= 10^6 random commands through every machine's driver, 0 violations expected.

    python benchmarks/bench_safety.py [--commands 1000000] [--workers 2]     (make bench-safety)

Each registered machine (robot_drivers.machine.available_machines) gets an equal share of the
commands, split into chunks of 20 000 with their own seeds, run by ``--workers`` processes.
robot_drivers.safety_fuzz.fuzz_machine generates the streams (valid chunks, huge steps, NaN/Inf,
unknown / missing / leg joints, bursts, silences past the watchdog, e-stop toggling, clock jumps,
pushed states) and checks the invariants on every tick. Writes benchmarks/results/safety.json and
the table between the bench-safety markers in benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / 'benchmarks' / 'results' / 'safety.json'
README = ROOT / 'benchmarks' / 'README.md'
BEGIN, END = '<!-- bench-safety:begin -->', '<!-- bench-safety:end -->'
CHUNK = 20_000


def _run(job):
    name, n, seed = job
    from robot_drivers.safety_fuzz import fuzz_machine
    r = fuzz_machine(name, n, seed=seed)
    return name, {'commands_tried': r.commands_tried, 'commands_rejected': r.commands_rejected, 'ticks': r.ticks,
                  'limit_violations': r.limit_violations, 'estop_violations': r.estop_violations,
                  'interlock_violations': r.interlock_violations,
                  'watchdog_latency_ticks_max': r.watchdog_latency_ticks_max, 'seconds': r.seconds,
                  'examples': r.examples}


def table(machines) -> str:
    rows = ['| machine | commands tried | rejected | driver ticks | limit violations | e-stop / interlock violations '
            '| watchdog latency (ticks, max) | commands/s (one core) |',
            '|---|---|---|---|---|---|---|---|']
    for name, m in sorted(machines.items()):
        rows.append(f"| `{name}` | {m['commands_tried']:,} | {m['commands_rejected']:,} | {m['ticks']:,} | "
                    f"{m['limit_violations']} | {m['estop_violations']} / {m['interlock_violations']} | "
                    f"{m['watchdog_latency_ticks_max']} | {m['commands_per_s']:.0f} |")
    return '\n'.join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--commands', type=int, default=1_000_000, help='commands in total over all machines')
    ap.add_argument('--workers', type=int, default=2, help='processes (the reference machine has 2 cores)')
    ap.add_argument('--seed', type=int, default=0)
    args = ap.parse_args(argv)
    from robot_drivers.machine import available_machines
    names = available_machines()
    per = -(-args.commands // len(names))
    jobs = []
    for i, name in enumerate(names):
        left, k = per, 0
        while left > 0:
            n = min(CHUNK, left)
            jobs.append((name, n, args.seed * 1_000_003 + i * 10_007 + k))
            left -= n
            k += 1
    t0 = time.perf_counter()
    merged = {n: {'commands_tried': 0, 'commands_rejected': 0, 'ticks': 0, 'limit_violations': 0,
                  'estop_violations': 0, 'interlock_violations': 0, 'watchdog_latency_ticks_max': 0,
                  'seconds': 0.0, 'examples': []} for n in names}
    with ProcessPoolExecutor(max_workers=args.workers) as ex:
        for name, r in ex.map(_run, jobs):
            m = merged[name]
            for k in ('commands_tried', 'commands_rejected', 'ticks', 'limit_violations', 'estop_violations',
                      'interlock_violations', 'seconds'):
                m[k] += r[k]
            m['watchdog_latency_ticks_max'] = max(m['watchdog_latency_ticks_max'], r['watchdog_latency_ticks_max'])
            m['examples'] = (m['examples'] + r['examples'])[:5]
    wall = time.perf_counter() - t0
    for m in merged.values():
        m['commands_per_s'] = m['commands_tried'] / m['seconds'] if m['seconds'] else None
        m['seconds'] = round(m['seconds'], 2)
    total = sum(m['commands_tried'] for m in merged.values())
    violations = sum(m['limit_violations'] + m['estop_violations'] + m['interlock_violations']
                     for m in merged.values())
    out = {'machines': merged, 'commands_total': total, 'violations_total': violations,
           'wall_seconds': round(wall, 1), 'workers': args.workers,
           'machine': f'{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}',
           'command': 'make bench-safety'}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + '\n', encoding='utf-8')
    md = table(merged)
    text = README.read_text(encoding='utf-8') if README.exists() else ''
    block = (f'{BEGIN}\n{total:,} commands in {wall / 60:.1f} min on {args.workers} processes, '
             f'{violations} violations.\n\n{md}\n{END}')
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + '\n\n## Safety fuzz (`make bench-safety`)\n\n' + block + '\n'
    README.write_text(text, encoding='utf-8')
    print(md)
    print(f'{total:,} commands, {violations} violations, {wall:.0f} s -> {RESULTS.relative_to(ROOT)}')
    return 0 if violations == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
