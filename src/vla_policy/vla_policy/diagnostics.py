"""``policy_node``'s health as ``diagnostic_msgs/DiagnosticArray`` and a one-line status (ROS-free).

:func:`assess` turns a :class:`vla_policy.runtime.RuntimeSnapshot` (``PolicyRuntime.snapshot(now)``)
and the node's lifecycle state into a :class:`DiagnosticReport`: a level, a one-line reason and
key/value pairs. :func:`to_diagnostic_array` builds the message from any message classes with the
ROS field names (rclpy's generated types on a robot, the rosbags Jazzy type store in tests), as
:mod:`robot_drivers.conversions` does for the other messages; :func:`status_line` is the
``~/status`` string for humans.

Levels (``diagnostic_msgs/DiagnosticStatus`` OK=0, WARN=1, ERROR=2), in the order they are tested:

============  ==================================================================================
ERROR         active, and an input (image, joint state) is older than ``max_obs_age_s``: the
              runtime's input watchdog refuses to act and no command goes out (the arm driver's
              own watchdog then holds the arm);
ERROR         active, all inputs fresh and an instruction set, but the runtime refuses anyway:
              the policy cannot answer (``PolicyUnavailable``: server down or too slow), or its
              answer was unusable; the message is the runtime's reason;
WARN          active and waiting for a first image, joint state or instruction;
WARN          active and acting, but since the previous report the plan ran dry on some control
              ticks (``dropped_ticks`` grew: a chunk arrived later than the rows left, i.e. the
              inference latency exceeds what ``chunk_size_threshold`` leaves room for) or ticks came
              late (``missed_ticks`` grew: the executor could not keep the control rate);
WARN          active and new inference errors since the previous report while still acting;
OK            active and acting; or not active (``unconfigured`` / ``inactive``: the node
              publishes no command by design, the message says so).
============  ==================================================================================

Counters are compared with the previous report's snapshot, so a WARN for dropped ticks is raised
for the period in which they happened and clears by itself (an edge, not a latch).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

__all__ = ['OK', 'WARN', 'ERROR', 'STALE', 'LEVEL_NAMES', 'DiagnosticReport', 'DiagnosticTypes', 'assess',
           'status_line', 'to_diagnostic_array', 'rosbags_diagnostic_types', 'DIAGNOSTIC_NAME', 'level_of',
           'values_of']

OK, WARN, ERROR, STALE = 0, 1, 2, 3
LEVEL_NAMES = {OK: 'OK', WARN: 'WARN', ERROR: 'ERROR', STALE: 'STALE'}
#: ``DiagnosticStatus.name`` prefix: ``<node name>: policy runtime`` (the aggregator's convention).
DIAGNOSTIC_NAME = 'policy runtime'
INPUTS = ('image', 'joint_state')


@dataclass(frozen=True)
class DiagnosticReport:
    """One assessment.

    Attributes:
        level: :data:`OK`, :data:`WARN` or :data:`ERROR`.
        message: why, in one line (the first reason found in the module docstring's order).
        values: ``(key, value)`` strings, in a fixed order: state, status, instruction, input ages
            (s), latency last/p50/p99 (ms), inferences, inference errors, queue depth, plan rows
            left, dropped ticks, missed ticks, handover, backend.
        snapshot: the snapshot assessed (kept to compare the counters next time); None when the
            node has no runtime (unconfigured).
        state: the lifecycle state name given to :func:`assess`.
    """

    level: int
    message: str
    values: Tuple[Tuple[str, str], ...]
    snapshot: Any = None
    state: str = 'active'

    @property
    def level_name(self) -> str:
        return LEVEL_NAMES[self.level]

    def value(self, key: str) -> str:
        """The value of ``key``; raises KeyError naming the keys there are."""
        for k, v in self.values:
            if k == key:
                return v
        raise KeyError(f'diagnostic key {key!r} not in {[k for k, _ in self.values]}')


def _fmt(x: Optional[float], digits: int = 3) -> str:
    return 'none' if x is None else f'{float(x):.{digits}f}'


def _get(snap: Any, name: str, default: Any = None) -> Any:
    return getattr(snap, name, default) if snap is not None else default


def _values(snap: Any, state: str) -> Tuple[Tuple[str, str], ...]:
    ages: Mapping[str, Optional[float]] = _get(snap, 'input_ages_s', None) or {}
    lat: Mapping[str, Optional[float]] = _get(snap, 'latency_ms', None) or {}
    out: List[Tuple[str, str]] = [('state', state), ('status', str(_get(snap, 'status', 'no runtime'))),
                                  ('instruction', str(_get(snap, 'instruction', None) or ''))]
    for k in INPUTS:
        out.append((f'{k} age (s)', _fmt(ages.get(k))))
    for k in ('last', 'p50', 'p99'):
        out.append((f'inference latency {k} (ms)', _fmt(lat.get(k), 1)))
    for k in ('inferences', 'inference_errors', 'queue_depth', 'plan_rows_left', 'dropped_ticks', 'missed_ticks'):
        v = _get(snap, k, None)
        out.append((k.replace('_', ' '), 'none' if v is None else str(int(v))))
    out.append(('handover', str(_get(snap, 'handover', ''))))
    out.append(('backend', str(_get(snap, 'backend', ''))))
    return tuple(out)


def _grew(snap: Any, previous: Optional['DiagnosticReport'], name: str) -> int:
    now = int(_get(snap, name, 0) or 0)
    before = int(_get(previous.snapshot, name, 0) or 0) if previous is not None and previous.snapshot is not None \
        else 0
    return max(0, now - before)


def assess(snapshot: Any, *, state: str = 'active', max_obs_age_s: float,
           previous: Optional[DiagnosticReport] = None) -> DiagnosticReport:
    """Assess the runtime (see the module docstring for the rules).

    Args:
        snapshot: ``PolicyRuntime.snapshot(now)`` (any object with the ``RuntimeSnapshot`` fields
            ``status, acting, instruction, input_ages_s, latency_ms, inferences, inference_errors,
            queue_depth, plan_rows_left, dropped_ticks, missed_ticks, handover, backend``), or None
            when there is no runtime (unconfigured node).
        state: lifecycle state name: ``'unconfigured'``, ``'inactive'``, ``'active'``, ...
        max_obs_age_s: the runtime's input watchdog limit (s), ``RuntimeConfig.max_obs_age_s``.
        previous: the previous report, to see which counters grew since.

    Returns:
        A :class:`DiagnosticReport`.

    Raises:
        ValueError: ``max_obs_age_s`` not > 0.
    """
    if not max_obs_age_s > 0:
        raise ValueError(f'max_obs_age_s must be > 0, got {max_obs_age_s}')
    values = _values(snapshot, state)

    def report(level: int, message: str) -> DiagnosticReport:
        return DiagnosticReport(level, message, values, snapshot, state)

    if state != 'active' or snapshot is None:
        what = {'unconfigured': 'unconfigured: no model loaded',
                'inactive': 'inactive: model loaded, publishing no command (the arm driver holds)'}
        return report(OK, what.get(state, f'{state}: publishing no command'))
    status = str(_get(snapshot, 'status', ''))
    ages: Mapping[str, Optional[float]] = _get(snapshot, 'input_ages_s', None) or {}
    if not _get(snapshot, 'acting', False):
        stale = [f'{k.replace("_", " ")} is {a:.3f} s old' for k, a in ((k, ages.get(k)) for k in INPUTS)
                 if a is not None and a > max_obs_age_s]
        if stale:
            return report(ERROR, f'input watchdog: {", ".join(stale)} (max_obs_age_s = {max_obs_age_s:g}); '
                                 'no command')
        missing = [k.replace('_', ' ') for k in INPUTS if ages.get(k) is None]
        if _get(snapshot, 'instruction', None) is None:
            missing.append('instruction')
        if missing:
            return report(WARN, f'waiting for {", ".join(missing)}')
        return report(ERROR, f'not acting: {status}')
    problems = []
    dropped, missed, errors = (_grew(snapshot, previous, k) for k in ('dropped_ticks', 'missed_ticks',
                                                                       'inference_errors'))
    if dropped:
        p99 = (_get(snapshot, 'latency_ms', None) or {}).get('p99')
        problems.append(f'{dropped} control ticks without a plan row (inference latency p99 {_fmt(p99, 1)} ms)')
    if missed:
        problems.append(f'{missed} control ticks late')
    if errors:
        problems.append(f'{errors} inference errors')
    if problems:
        return report(WARN, 'acting; since the last report: ' + '; '.join(problems))
    return report(OK, 'acting')


def status_line(report: DiagnosticReport) -> str:
    """The ``~/status`` string: ``OK acting | instruction 'reach the red cube' | latency p50 41.2 ms
    p99 57.9 ms | image 0.031 s joint_state 0.012 s | queue 1 | dropped 0 missed 0``."""
    v = dict(report.values)
    parts = [f'{report.level_name} {report.message}']
    if report.snapshot is not None:
        parts.append(f"instruction {v['instruction']!r}")
        parts.append(f"latency p50 {v['inference latency p50 (ms)']} ms p99 {v['inference latency p99 (ms)']} ms")
        parts.append(' '.join(f"{k} {v[f'{k} age (s)']} s" for k in INPUTS))
        parts.append(f"queue {v['queue depth']} | dropped {v['dropped ticks']} missed {v['missed ticks']}")
    return ' | '.join(parts)


@dataclass(frozen=True)
class DiagnosticTypes:
    """The message classes :func:`to_diagnostic_array` builds (rclpy's or rosbags')."""

    DiagnosticArray: Any
    DiagnosticStatus: Any
    KeyValue: Any
    Header: Any
    Time: Any


def rosbags_diagnostic_types() -> DiagnosticTypes:
    """The classes from the rosbags ROS 2 Jazzy type store (no ROS needed)."""
    from robot_drivers.conversions import typestore
    t = typestore().types
    return DiagnosticTypes(t['diagnostic_msgs/msg/DiagnosticArray'], t['diagnostic_msgs/msg/DiagnosticStatus'],
                           t['diagnostic_msgs/msg/KeyValue'], t['std_msgs/msg/Header'],
                           t['builtin_interfaces/msg/Time'])


def to_diagnostic_array(report: DiagnosticReport, stamp: float, types: DiagnosticTypes, *,
                        name: str, hardware_id: str = '') -> Any:
    """``diagnostic_msgs/DiagnosticArray`` with one status for ``report``.

    ``level`` is set from the class constant (``DiagnosticStatus.OK`` ...): a ``byte`` field, which
    rclpy holds as ``bytes`` of length 1 and rosbags as an int. ``stamp``: header time (s).

    Raises:
        ValueError: negative or non-finite ``stamp``.
    """
    import math
    if not (math.isfinite(stamp) and stamp >= 0):
        raise ValueError(f'diagnostics stamp must be a finite time >= 0 s, got {stamp}')
    ns = int(round(stamp * 1e9))
    header = types.Header(stamp=types.Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000), frame_id='')
    level = getattr(types.DiagnosticStatus, report.level_name)
    status = types.DiagnosticStatus(level=level, name=name, message=report.message, hardware_id=hardware_id,
                                    values=[types.KeyValue(key=k, value=v) for k, v in report.values])
    return types.DiagnosticArray(header=header, status=[status])


def level_of(status_msg: Any) -> int:
    """The int level of a ``DiagnosticStatus`` built by rclpy (bytes) or rosbags (int)."""
    lv = status_msg.level
    return lv[0] if isinstance(lv, (bytes, bytearray)) else int(lv)


def values_of(status_msg: Any) -> Dict[str, str]:
    """``{key: value}`` of a ``DiagnosticStatus``."""
    return {kv.key: kv.value for kv in status_msg.values}
