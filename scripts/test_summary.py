#!/usr/bin/env python3
"""Sum up the JUnit results that ``colcon test`` wrote for one or more dependency sets.

Usage: ``test_summary.py NAME=BUILD_BASE [NAME=BUILD_BASE ...]``, e.g.
``test_summary.py pinned=build jazzy=build-jazzy``. For every package under ``src/`` it reads
``BUILD_BASE/<package>/pytest.xml`` (colcon's pytest task writes it there).

Prints one line per set and package, then a last line ``Summary: P passed, F failed, S skipped``
over all sets (F counts failures and errors). Exit status 1 when any test failed or errored, when
a package has no result file, or when a package ran no test (pytest's exit 5, "no tests
collected", which colcon reports as success); 0 otherwise.
"""
from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

WORKSPACE = Path(__file__).resolve().parent.parent


def packages(src: Path) -> list:
    """Names of the packages under ``src`` (directories with a package.xml), sorted."""
    return sorted(p.parent.name for p in src.glob('*/package.xml'))


def read_junit(path: Path) -> dict:
    """Counts in one JUnit file: ``{'tests', 'failures', 'errors', 'skipped'}``.

    Accepts a ``<testsuites>`` root (pytest >= 5.1) or a bare ``<testsuite>`` root.
    Raises ValueError naming the file when it is not JUnit XML.
    """
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ValueError(f'{path}: not XML ({exc})') from exc
    suites = [root] if root.tag == 'testsuite' else root.findall('testsuite')
    if not suites:
        raise ValueError(f'{path}: no <testsuite> element')
    counts = dict(tests=0, failures=0, errors=0, skipped=0)
    for suite in suites:
        for key in counts:
            counts[key] += int(suite.get(key, 0))
    return counts


def summarize(sets: list, src: Path) -> tuple:
    """Report lines and the exit status for ``sets`` = [(name, build_base Path), ...]."""
    lines, status = [], 0
    total = dict(passed=0, failed=0, skipped=0)
    names = packages(src)
    if not names:
        return [f'no packages under {src}'], 1
    for set_name, base in sets:
        for pkg in names:
            path = base / pkg / 'pytest.xml'
            if not path.is_file():
                lines.append(f'{set_name} {pkg}: no test results ({path} missing: build or test step failed)')
                status = 1
                continue
            c = read_junit(path)
            failed = c['failures'] + c['errors']
            passed = c['tests'] - failed - c['skipped']
            total['passed'] += passed
            total['failed'] += failed
            total['skipped'] += c['skipped']
            lines.append(f"{set_name} {pkg}: {passed} passed, {failed} failed, {c['skipped']} skipped")
            if failed:
                status = 1
            if passed == 0:
                lines.append(f'{set_name} {pkg}: no test executed (pytest collected nothing or skipped all)')
                status = 1
    lines.append(f"Summary: {total['passed']} passed, {total['failed']} failed, {total['skipped']} skipped")
    return lines, status


def main(argv: list) -> int:
    if not argv or any('=' not in a for a in argv):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    sets = []
    for arg in argv:
        name, base = arg.split('=', 1)
        sets.append((name, (WORKSPACE / base) if not Path(base).is_absolute() else Path(base)))
    try:
        lines, status = summarize(sets, WORKSPACE / 'src')
    except ValueError as exc:
        print(f'test_summary: {exc}', file=sys.stderr)
        return 1
    print('\n'.join(lines))
    return status


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
