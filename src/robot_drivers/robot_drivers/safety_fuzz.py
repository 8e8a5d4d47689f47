"""Fuzzing a machine's driver with arbitrary command streams, and the invariants it must keep (ROS-free).

:func:`fuzz_machine` drives a :class:`~robot_drivers.machine.MachineDriverCore` with a random stream
(the property tests draw the seed and the mix with ``hypothesis``, ``make bench-safety`` runs a
million commands) and a plant that executes its outputs, and checks on every tick:

* **position**: a position DOF's output is within its limits (less margins);
* **velocity**: every DOF's output velocity is within ``max_velocity · velocity_scale``;
* **acceleration**: the output velocity changes by at most ``max_acceleration · dt`` per tick,
  ``dt`` the period the driver moved over (a clock that jumps back moves nothing; one that jumps
  ahead moves at most ``max_tick_dt``);
* **velocity DOFs at a limit**: at or past a position limit a velocity DOF never speeds up outward;
* **watchdog**: once no command came for ``watchdog_timeout_s``, the driver drops the command
  within one tick (``watchdog_latency_ticks``);
* **e-stop**: latched until :meth:`~robot_drivers.machine.MachineDriverCore.rearm`: every command in
  between is rejected, velocities only decrease, position DOFs head for the held position;
* **interlocks**: no rule's :meth:`~robot_drivers.machine.Interlock.violated` fires.

The stream mixes valid chunks, chunks far beyond the limits (huge steps), NaN / Inf, unknown,
missing and leg (forbidden) joint names, bursts (several commands in one tick), silences longer than
the watchdog, e-stop toggling, clock jumps back and ahead, and measured states pushed outside the
limits. The plant follows position setpoints with a first-order lag and integrates velocity DOFs.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from robot_drivers.machine import Machine, MachineDriverCore, MachineState, get_machine
from robot_drivers.safety import MIN_DT, CommandRejected

__all__ = ['FuzzMix', 'FuzzReport', 'fuzz_machine', 'TOL']

#: Round-off allowed in the checks (rad, m, per second): the limiter's own tolerance is 1e-9.
TOL = 1e-7


@dataclass
class FuzzMix:
    """Probabilities of each kind of event per policy period (the rest are valid commands)."""

    invalid: float = 0.15       # NaN / Inf / unknown / missing / leg joints / wrong lengths
    huge: float = 0.2           # targets far beyond the limits
    burst: float = 0.05         # 2..6 commands within one tick
    silence: float = 0.03       # no command for longer than the watchdog
    estop: float = 0.02         # e-stop engaged (re-armed later)
    time_jump: float = 0.01     # the clock steps back, or ahead by up to 2 s
    push: float = 0.02          # the measured state is pushed (outside the limits, sometimes)


@dataclass
class FuzzReport:
    """What one run tried and found."""

    machine: str
    commands_tried: int = 0
    commands_rejected: int = 0
    ticks: int = 0
    limit_violations: int = 0
    watchdog_latency_ticks_max: int = 0
    estop_violations: int = 0
    interlock_violations: int = 0
    seconds: float = 0.0
    examples: List[str] = field(default_factory=list)

    @property
    def violations(self) -> int:
        return self.limit_violations + self.estop_violations + self.interlock_violations

    @property
    def commands_per_s(self) -> float:
        return self.commands_tried / self.seconds if self.seconds > 0 else float('nan')

    def note(self, text: str) -> None:
        if len(self.examples) < 5:
            self.examples.append(text)


def _targets(emb, rng: np.random.Generator, scale: float, n: int) -> np.ndarray:
    """(n, J) action rows: positions around the range, velocities around ±vmax, times ``scale``."""
    lo = np.where(np.isfinite(emb.action_lower), emb.action_lower, -1.0)
    hi = np.where(np.isfinite(emb.action_upper), emb.action_upper, 1.0)
    mid, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
    return mid + half * scale * rng.uniform(-1.0, 1.0, (n, emb.dof))


def fuzz_machine(machine, n_commands: int, seed: int = 0, mix: Optional[FuzzMix] = None) -> FuzzReport:
    """Run ``n_commands`` random commands through a fresh driver of ``machine`` and check the invariants.

    Args:
        machine: a :class:`~robot_drivers.machine.Machine` or a registered name.
        n_commands: commands to send (valid and invalid), >= 1.
        seed: the random stream.
        mix: event probabilities (default :class:`FuzzMix`).

    Returns:
        :class:`FuzzReport` (``violations == 0`` when every invariant held).
    """
    m: Machine = get_machine(machine) if isinstance(machine, str) else machine
    mix = mix or FuzzMix()
    emb = m.embodiment
    rng = np.random.default_rng(seed)
    core = MachineDriverCore(m)
    lim = core.limiter
    J, is_vel, names = emb.dof, emb.is_velocity, list(emb.joint_names)
    tick = 1.0 / m.control_rate_hz
    period = emb.dt
    timeout = core.config.watchdog_timeout_s
    rep = FuzzReport(m.name)
    # the plant: position inside the limits, at rest
    lo_fin = np.where(np.isfinite(lim.lower), lim.lower, -5.0)
    hi_fin = np.where(np.isfinite(lim.upper), lim.upper, 5.0)
    pos = lo_fin + (hi_fin - lo_fin) * rng.uniform(0.2, 0.8, J)
    vel = np.zeros(J)
    no_pos = is_vel & ~np.isfinite(emb.lower) & (rng.uniform(size=J) < 0.5)   # some have no position sensor
    now = 100.0
    last_accept: Optional[float] = None
    prev_vel: Optional[np.ndarray] = None
    prev_out: Optional[np.ndarray] = None
    prev_tick: Optional[float] = None
    estopped_since: Optional[float] = None
    rearm_at = math.inf
    silence_until = -math.inf
    expired_ticks = 0
    start = time.perf_counter()
    next_cmd = now

    def send(rows_pos, rows_vel, tfs, cmd_names):
        nonlocal last_accept
        rep.commands_tried += 1
        was_estopped = estopped_since is not None      # the stream's own record: latched until it re-arms
        try:
            core.on_trajectory(cmd_names, rows_pos, rows_vel, tfs, now, now, source='fuzz')
        except CommandRejected as exc:
            rep.commands_rejected += 1
            if was_estopped and exc.reason != 'estop_active' and core.estopped:
                pass                              # invalid as well: any rejection is fine while latched
            return
        if was_estopped:
            rep.estop_violations += 1
            rep.note(f'{m.name}: command accepted while the e-stop was latched at t={now:.3f}')
        last_accept = now

    def command():
        """One command of the mix at ``now``."""
        r = rng.uniform()
        P = int(rng.integers(1, 6))
        rows = _targets(emb, rng, 30.0 if r < mix.huge else 1.2, P)
        tfs = period * (np.arange(P) + 1) * float(rng.choice([0.5, 1.0, 1.0, 3.0]))
        cmd_names = list(names)
        pos_rows = np.where(is_vel[None], np.nan, rows)
        vel_rows = np.where(is_vel[None], rows, np.nan)
        if rng.uniform() < mix.invalid:
            kind = int(rng.integers(0, 6))
            if kind == 0:
                (vel_rows if rng.uniform() < 0.5 and is_vel.any() else pos_rows)[
                    int(rng.integers(0, P)), int(rng.integers(0, J))] = rng.choice([np.nan, np.inf, -np.inf])
                bad = np.where(is_vel[None], vel_rows, pos_rows)
                if np.all(np.isfinite(bad)):      # the NaN landed in an unused field: make it a used one
                    j = int(rng.integers(0, J))
                    (vel_rows if is_vel[j] else pos_rows)[0, j] = np.nan
            elif kind == 1:
                cmd_names[int(rng.integers(0, J))] = 'no_such_joint'
            elif kind == 2 and J > 1:
                k = int(rng.integers(0, J))
                cmd_names.pop(k)
                pos_rows, vel_rows = np.delete(pos_rows, k, 1), np.delete(vel_rows, k, 1)
            elif kind == 3 and emb.forbidden_joints:
                cmd_names[int(rng.integers(0, J))] = str(rng.choice(list(emb.forbidden_joints)))
            elif kind == 4:
                tfs = tfs[::-1] - 1.0            # decreasing / negative times
            else:
                pos_rows = pos_rows[:, :-1]       # wrong length
        order = rng.permutation(len(cmd_names))   # any joint order
        pos_rows = pos_rows[:, order] if pos_rows.shape[1] == len(cmd_names) else pos_rows
        vel_rows = vel_rows[:, order] if vel_rows.shape[1] == len(cmd_names) else vel_rows
        send(pos_rows if (~is_vel).any() else None, vel_rows if is_vel.any() else None, tfs,
             [cmd_names[i] for i in order])

    while rep.commands_tried < n_commands:
        # ---- events at the policy rate
        if now >= next_cmd:
            next_cmd = now + period
            r = rng.uniform()
            if now >= rearm_at and core.estopped:
                core.rearm()
                estopped_since, rearm_at = None, math.inf
            if r < mix.estop and not core.estopped:
                core.estop()
                estopped_since, rearm_at = now, now + float(rng.uniform(0.2, 2.0))
            elif r < mix.estop + mix.silence:
                silence_until = now + timeout + float(rng.uniform(0.1, 1.0))
            if now >= silence_until:
                for _ in range(int(rng.integers(2, 7)) if rng.uniform() < mix.burst else 1):
                    command()
            if rng.uniform() < mix.push:
                k = int(rng.integers(0, J))
                span = hi_fin[k] - lo_fin[k]
                pos[k] = rng.uniform(lo_fin[k] - 0.2 * span, hi_fin[k] + 0.2 * span)
        # ---- the clock
        dt_clock = tick
        if rng.uniform() < mix.time_jump * tick / period:
            dt_clock = float(rng.choice([-0.3, -0.05, 0.5, 2.0]))
        now += dt_clock
        meas_pos = np.where(no_pos, np.nan, pos)
        state = MachineState(meas_pos, vel.copy(), now)
        had_cmd = core.has_command
        out = core.tick(now, state)
        out_vel = core.output_velocity.copy()
        rep.ticks += 1
        # ---- invariants
        dt_used = 0.0 if prev_tick is None or now < prev_tick else min(now - prev_tick, core.max_tick_dt)
        if dt_used < MIN_DT:
            dt_used = 0.0
        bad: List[str] = []
        pos_out = out[~is_vel]
        if np.any(pos_out < lim.lower[~is_vel] - TOL) or np.any(pos_out > lim.upper[~is_vel] + TOL):
            bad.append('position')
        if np.any(np.abs(out_vel) > lim.vmax + TOL):
            bad.append('velocity')
        if prev_vel is not None:
            dv = np.abs(out_vel - prev_vel)
            with np.errstate(invalid='ignore'):            # inf * 0: no acceleration limit
                acc_bound = np.where(np.isfinite(emb.max_acceleration), emb.max_acceleration * dt_used, np.inf)
            if np.any(dv > acc_bound + TOL):
                bad.append('acceleration')
            here = np.where(is_vel, meas_pos, np.nan)
            out_up = is_vel & (here >= lim.upper - TOL) & (out_vel > TOL) & (out_vel > prev_vel + TOL)
            out_dn = is_vel & (here <= lim.lower + TOL) & (out_vel < -TOL) & (out_vel < prev_vel - TOL)
            if np.any(out_up | out_dn):
                bad.append('outward at a limit')
            if core.estopped and estopped_since is not None and now > estopped_since:
                if np.any(np.abs(out_vel[is_vel]) > np.abs(prev_vel[is_vel]) + TOL):
                    rep.estop_violations += 1
                    rep.note(f'{m.name}: a velocity grew under the e-stop at t={now:.3f}')
        for rule in m.interlocks:
            why = rule.violated(state, out, prev_out if prev_out is not None else out, emb)
            if why:
                rep.interlock_violations += 1
                rep.note(f'{m.name}: interlock {rule.name}: {why}')
        if bad:
            rep.limit_violations += 1
            rep.note(f'{m.name}: {"/".join(bad)} at t={now:.3f}: out={np.round(out, 5).tolist()} '
                     f'v={np.round(out_vel, 5).tolist()}')
        # watchdog: ticks past the timeout with the command still running
        if had_cmd and last_accept is not None and now - last_accept > timeout and now >= (prev_tick or now):
            expired_ticks = expired_ticks + 1 if core.has_command else 0
            rep.watchdog_latency_ticks_max = max(rep.watchdog_latency_ticks_max, expired_ticks + 1)
        else:
            expired_ticks = 0
        prev_vel, prev_out = out_vel, out.copy()
        if now >= (prev_tick if prev_tick is not None else now):
            prev_tick = now
        # ---- the plant
        step = max(dt_clock, 0.0)
        a = 1.0 - math.exp(-step / 0.05) if step > 0 else 0.0
        new_pos = np.where(is_vel, pos + out * step, pos + a * (out - pos))
        vel = (new_pos - pos) / step if step > 0 else vel
        pos = new_pos
    rep.seconds = time.perf_counter() - start
    return rep
