"""Analytic simulators of the articulated machines (wheel loader, articulated truck) and their tasks.

No maintained simulation model of a wheel loader or an articulated hauler exists (OperaSim ships
excavators and a crawler dump truck), so both machines are simulated analytically on a plane:

* **Base**: the articulated-steering kinematics of :mod:`robot_drivers.articulated` (Corke & Ridley
  2001), front axle midpoint ``(x, y)``, front heading ``θ``, articulation ``γ``:
  ``θ̇ = (v sin γ + l_r γ̇) / (l_f cos γ + l_r)``, ``ẋ = v cos θ``, ``ẏ = v sin θ`` (integrated
  with the midpoint heading at a 5 ms internal step).
* **Actuators, first-order lag**. Position DOFs (articulation, boom, bucket, dump body): the
  machine's own hydraulic servo moves the joint as ``q̇ = clip((q_cmd - q) / τ, ±v_max)`` with
  mechanical stops at the position limits; ``τ = 0.15 s``: a pilot-operated spool valve and the
  pressure build-up in the cylinder lines respond within a few tenths of a second (the same
  choice as the excavator simulator), ``v_max`` the DOF's limit (the pump's flow). Drive (a
  velocity DOF): ``v̇ = (v_cmd - v) / τ_d``, ``τ_d = 0.4 s``: torque converter and a 20-60 t
  vehicle's inertia respond slower than a valve.

:meth:`ArticulatedSim.read` returns a :class:`~robot_drivers.machine.MachineState` in embodiment
order (the drive has no position sensor: NaN), with ``extras`` ``pose`` ``(x, y, θ)`` and
``ground_speed``. Every :meth:`~ArticulatedSim.step` appends the ground truth to :attr:`trace`
(what the tasks' success flags read).

Tasks (:data:`TASKS`): :class:`LoaderApproachLiftTask` (``approach_and_lift``: drive the bucket into
the left / right pile, then lift it) and :class:`TruckDriveDumpTask` (``drive_and_dump``: drive to
the left / right dump spot, stop, raise the body, lower it), each with a scripted expert.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from robot_drivers.articulated import ARTICULATION, DRIVE, ArticulatedGeometry, yaw_rate
from robot_drivers.embodiment import Embodiment
from robot_drivers.machine import MachineState
from robot_drivers.machines.articulated_truck import A40G_GEOMETRY, ARTICULATED_TRUCK, DUMP_BODY
from robot_drivers.machines.wheel_loader import BOOM_CARRY, BUCKET_REACH_M, L120H_GEOMETRY, WHEEL_LOADER

__all__ = ['ArticulatedSimConfig', 'ArticulatedSim', 'WheelLoaderSim', 'ArticulatedTruckSim',
           'LoaderApproachLiftTask', 'TruckDriveDumpTask', 'TASKS', 'SIDES', 'wrap_angle']

#: Words of the instructions: which pile / spot.
SIDES = ('left', 'right')


def wrap_angle(a: float) -> float:
    """``a`` wrapped into [-π, π)."""
    return (a + math.pi) % (2.0 * math.pi) - math.pi


@dataclass
class ArticulatedSimConfig:
    """Simulator parameters.

    Attributes:
        hydraulic_tau_s: first-order lag of the position DOFs' hydraulic servos, s (> 0).
        drive_tau_s: first-order lag of the ground speed, s (> 0).
        internal_dt_s: integration step, s (> 0).
        initial_pose_noise: ``(position m, heading rad)`` half-widths of the random start pose.

    Raises:
        ValueError: a non-positive time constant or step.
    """

    hydraulic_tau_s: float = 0.15
    drive_tau_s: float = 0.4
    internal_dt_s: float = 0.005
    initial_pose_noise: Sequence[float] = (0.3, 0.05)

    def __post_init__(self) -> None:
        for name in ('hydraulic_tau_s', 'drive_tau_s', 'internal_dt_s'):
            v = float(getattr(self, name))
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f'ArticulatedSimConfig.{name} must be > 0, got {v}')


class ArticulatedSim:
    """Plane kinematics of an articulated machine with lagged actuators (module docstring).

    Args:
        embodiment: the machine (``articulation`` and ``drive`` DOFs plus implements by position).
        geom: its hinge geometry.
        config: :class:`ArticulatedSimConfig`.
        seed: start pose noise.

    Attributes:
        trace: ground truth after every :meth:`step`: dicts with ``t, x, y, theta, v`` and each
            position DOF's angle.
    """

    def __init__(self, embodiment: Embodiment, geom: ArticulatedGeometry,
                 config: Optional[ArticulatedSimConfig] = None, seed: int = 0) -> None:
        self.embodiment = embodiment
        self.geom = geom
        self.config = config if config is not None else ArticulatedSimConfig()
        names = embodiment.joint_names
        if ARTICULATION not in names or DRIVE not in names:
            raise ValueError(f'embodiment {embodiment.name!r} lacks the {ARTICULATION!r} / {DRIVE!r} DOFs')
        self._is_vel = embodiment.is_velocity
        self._i_art, self._i_drv = names.index(ARTICULATION), names.index(DRIVE)
        self._lower, self._upper = embodiment.lower, embodiment.upper
        self._vmax = embodiment.max_velocity
        self.reset(seed)

    #: ``{DOF: position}`` at reset (others: 0, clipped into the limits).
    initial_positions: Dict[str, float] = {}

    def reset(self, seed: int) -> None:
        """Start pose near the origin heading +x (noise from ``seed``), every DOF at rest at its
        :attr:`initial_positions` entry or 0 (clipped into its limits)."""
        rng = np.random.default_rng(seed)
        dp, dh = (float(v) for v in self.config.initial_pose_noise)
        self.x, self.y = (float(v) for v in rng.uniform(-dp, dp, 2))
        self.theta = float(rng.uniform(-dh, dh))
        J = self.embodiment.dof
        init = np.array([self.initial_positions.get(n, 0.0) for n in self.embodiment.joint_names])
        self.q = np.where(self._is_vel, np.nan, np.clip(init, self._lower, self._upper))  # (J,)
        self.qd = np.zeros(J)                                                              # (J,)
        self.cmd = np.where(self._is_vel, 0.0, self.q)                                     # (J,)
        self.t = 0.0
        self.trace: List[Dict[str, float]] = []
        self._record()

    # ------------------------------------------------------------------ hardware interface
    def read(self) -> MachineState:
        """The measurement (embodiment order); see the module docstring."""
        return MachineState(positions=self.q.copy(), velocities=self.qd.copy(), stamp=self.t,
                            extras={'pose': (self.x, self.y, self.theta), 'ground_speed': float(self.qd[self._i_drv])})

    def write(self, setpoint: Sequence[float]) -> None:
        """Set the command: ``(J,)`` positions of position DOFs, velocities of velocity DOFs.

        Raises:
            ValueError: wrong length or non-finite values (DOFs named).
        """
        sp = np.asarray(setpoint, dtype=np.float64).reshape(-1)
        if sp.shape[0] != self.embodiment.dof:
            raise ValueError(f'{type(self).__name__}.write: {sp.shape[0]} values for {self.embodiment.dof} DOFs '
                             f'{self.embodiment.joint_names}')
        bad = [n for n, v in zip(self.embodiment.joint_names, sp) if not math.isfinite(v)]
        if bad:
            raise ValueError(f'{type(self).__name__}.write: non-finite setpoint for {bad}')
        self.cmd = sp.copy()

    def step(self, duration: float) -> None:
        """Advance ``duration`` s (ValueError if negative or not finite)."""
        duration = float(duration)
        if not (math.isfinite(duration) and duration >= 0):
            raise ValueError(f'step duration must be finite and >= 0 s, got {duration}')
        cfg, pos = self.config, ~self._is_vel
        n = max(1, int(math.ceil(duration / cfg.internal_dt_s - 1e-9))) if duration > 0 else 0
        for _ in range(n):
            h = duration / n
            q0 = np.nan_to_num(self.q)
            qd = np.where(pos, np.clip((self.cmd - q0) / cfg.hydraulic_tau_s, -self._vmax, self._vmax),
                          self.qd + (self.cmd - self.qd) * (h / cfg.drive_tau_s))
            q_new = np.where(pos, np.clip(q0 + qd * h, self._lower, self._upper), np.nan)
            qd = np.where(pos, (q_new - q0) / h, qd)          # end stops stop the joint
            gamma0, gamma1 = self.q[self._i_art], q_new[self._i_art]
            v = float(qd[self._i_drv])
            w = yaw_rate(v, 0.5 * (gamma0 + gamma1), qd[self._i_art], self.geom)
            th_mid = self.theta + 0.5 * w * h
            self.x += v * math.cos(th_mid) * h
            self.y += v * math.sin(th_mid) * h
            self.theta = wrap_angle(self.theta + w * h)
            self.q, self.qd = q_new, qd
            self.t += h
        self._record()

    def _record(self) -> None:
        entry = {'t': self.t, 'x': self.x, 'y': self.y, 'theta': self.theta, 'v': float(self.qd[self._i_drv])}
        for n, p, q in zip(self.embodiment.joint_names, ~self._is_vel, self.q):
            if p:
                entry[n] = float(q)
        self.trace.append(entry)

    # ------------------------------------------------------------------ geometry
    @property
    def pose(self):
        """``(x, y, θ)`` of the front axle midpoint and front heading."""
        return self.x, self.y, self.theta

    def rear_axle(self) -> np.ndarray:
        """``(2,)`` rear axle (bogie centre) midpoint, m."""
        g, th = self.geom, self.theta
        th_r = th - float(self.q[self._i_art])
        return np.array([self.x - g.l_f * math.cos(th) - g.l_r * math.cos(th_r),
                         self.y - g.l_f * math.sin(th) - g.l_r * math.sin(th_r)])


class WheelLoaderSim(ArticulatedSim):
    """The wheel loader (:mod:`robot_drivers.machines.wheel_loader`) in :class:`ArticulatedSim`;
    it starts with the boom in the carry position."""

    initial_positions = {'boom': BOOM_CARRY}

    def __init__(self, config: Optional[ArticulatedSimConfig] = None, seed: int = 0) -> None:
        super().__init__(WHEEL_LOADER, L120H_GEOMETRY, config, seed)

    def bucket_edge(self) -> np.ndarray:
        """``(2,)`` bucket cutting edge (:data:`~robot_drivers.machines.wheel_loader.BUCKET_REACH_M`
        ahead of the front axle), m."""
        return np.array([self.x + BUCKET_REACH_M * math.cos(self.theta),
                         self.y + BUCKET_REACH_M * math.sin(self.theta)])


class ArticulatedTruckSim(ArticulatedSim):
    """The articulated truck (:mod:`robot_drivers.machines.articulated_truck`) in :class:`ArticulatedSim`."""

    def __init__(self, config: Optional[ArticulatedSimConfig] = None, seed: int = 0) -> None:
        super().__init__(ARTICULATED_TRUCK, A40G_GEOMETRY, config, seed)


def _steer(sim: ArticulatedSim, target: np.ndarray, gain: float = 1.5, limit: float = 0.6) -> tuple:
    """Pursuit steering of the front axle toward ``target``: ``(articulation target, distance, bearing error)``.
    Turning the front frame by γ turns its heading toward the target (the steady-circle relation
    γ̇ = 0: θ̇ ∝ sin γ), so a proportional law on the bearing error converges."""
    dx, dy = float(target[0] - sim.x), float(target[1] - sim.y)
    err = wrap_angle(math.atan2(dy, dx) - sim.theta)
    lim = min(limit, sim.geom.max_articulation)
    return float(np.clip(gain * err, -lim, lim)), math.hypot(dx, dy), err


class LoaderApproachLiftTask:
    """``approach_and_lift``: drive the bucket, lowered and level, into the instructed pile
    (left / right, about 14 m ahead and 4 m to the side), then stop, roll the bucket back and lift.

    Success (ground truth in :attr:`ArticulatedSim.trace`): the bucket edge came within
    :attr:`reach_tol` of the instructed pile's face with the boom down (bucket at the ground: it
    filled), and now the boom is up (>= 0.35 rad), the bucket rolled back (>= 0.4 rad) and the
    loader stopped (|v| < 0.2 m/s). Driving into the other pile is a failure.
    """

    name = 'approach_and_lift'
    instructions = tuple(f'load from the {s} pile' for s in SIDES)
    max_steps = 300          # 30 s at the 10 Hz policy rate
    reach_tol = 0.8          # m
    boom_down = -0.3         # rad: boom at or below = bucket at the ground
    lift_boom, lift_bucket = 0.45, 0.6      # rad: the expert's lift targets

    def __init__(self, sim: WheelLoaderSim) -> None:
        self.sim = sim
        emb = sim.embodiment
        self._idx = {n: i for i, n in enumerate(emb.joint_names)}
        self.piles: Dict[str, np.ndarray] = {}
        self.side = SIDES[0]
        self._phase = 'approach'

    def reset(self, seed: int) -> str:
        """Reset the sim, place the piles, return the instruction (the side alternates with the seed)."""
        rng = np.random.default_rng(seed)
        self.sim.reset(seed)
        ahead, side = 14.0 + rng.uniform(-1.0, 1.0), 4.0 + rng.uniform(-0.5, 0.5)
        self.piles = {'left': np.array([ahead, side]), 'right': np.array([ahead, -side])}
        self.side = SIDES[seed % 2]
        self._phase = 'approach'
        return f'load from the {self.side} pile'

    def expert(self, state: MachineState) -> np.ndarray:
        """Next action row ``(J,)``: [articulation target, speed, boom target, bucket target]."""
        sim, i = self.sim, self._idx
        pile = self.piles[self.side]
        a = np.zeros(sim.embodiment.dof)
        edge = sim.bucket_edge()
        dist_edge = float(np.hypot(*(pile - edge)))
        if self._phase == 'approach' and dist_edge < 0.4:
            self._phase = 'lift'
        if self._phase == 'approach':
            gamma, _, _ = _steer(sim, pile)
            a[i[ARTICULATION]] = gamma
            a[i[DRIVE]] = float(np.clip(0.6 * dist_edge, 0.4, 2.5))
            a[i['boom']], a[i['bucket']] = -0.45, 0.0
        else:
            a[i[ARTICULATION]] = float(state.positions[i[ARTICULATION]])
            a[i[DRIVE]] = 0.0
            a[i['boom']], a[i['bucket']] = self.lift_boom, self.lift_bucket
        return a

    def success(self) -> bool:
        pile = self.piles[self.side]
        filled = any(e['boom'] <= self.boom_down and math.hypot(
            e['x'] + BUCKET_REACH_M * math.cos(e['theta']) - pile[0],
            e['y'] + BUCKET_REACH_M * math.sin(e['theta']) - pile[1]) <= self.reach_tol for e in self.sim.trace)
        last = self.sim.trace[-1]
        return bool(filled and last['boom'] >= 0.35 and last['bucket'] >= 0.4 and abs(last['v']) < 0.2)


class TruckDriveDumpTask:
    """``drive_and_dump``: drive the truck to the instructed dump spot (left / right, about 25 m ahead
    and 6 m to the side), stop, raise the body, lower it again.

    Success (ground truth): while the front axle was within :attr:`spot_tol` of the instructed spot
    and the truck stopped (|v| < 0.2 m/s), the body was up (>= 1.0 rad); now it is down (<= 0.05 rad).
    """

    name = 'drive_and_dump'
    instructions = tuple(f'dump at the {s} spot' for s in SIDES)
    max_steps = 450          # 45 s at 10 Hz
    spot_tol = 2.0           # m
    raise_to = 1.15          # rad, the expert's body target (70 deg = 1.22 rad is the stop)

    def __init__(self, sim: ArticulatedTruckSim) -> None:
        self.sim = sim
        self._idx = {n: i for i, n in enumerate(sim.embodiment.joint_names)}
        self.spots: Dict[str, np.ndarray] = {}
        self.side = SIDES[0]
        self._phase = 'drive'

    def reset(self, seed: int) -> str:
        rng = np.random.default_rng(seed)
        self.sim.reset(seed)
        ahead, side = 25.0 + rng.uniform(-2.0, 2.0), 6.0 + rng.uniform(-1.0, 1.0)
        self.spots = {'left': np.array([ahead, side]), 'right': np.array([ahead, -side])}
        self.side = SIDES[seed % 2]
        self._phase = 'drive'
        return f'dump at the {self.side} spot'

    def expert(self, state: MachineState) -> np.ndarray:
        """Next action row ``(J,)``: [articulation target, speed, dump body target]."""
        sim, i = self.sim, self._idx
        a = np.zeros(sim.embodiment.dof)
        gamma, dist, err = _steer(sim, self.spots[self.side], gain=1.2)
        body = float(state.positions[i[DUMP_BODY]])
        speed = abs(float(state.velocities[i[DRIVE]]))
        if self._phase == 'drive' and (dist < 0.8 or (dist < 3.0 and abs(err) > math.pi / 2)):
            self._phase = 'stop'             # at the spot, or passing it
        if self._phase == 'stop' and speed < 0.01:
            self._phase = 'raise'            # stopped (the driver's speed output is 0 by then)
        if self._phase == 'raise' and body >= self.raise_to - 0.05:
            self._phase = 'lower'
        if self._phase == 'drive':
            a[i[ARTICULATION]] = gamma
            # braking curve v = sqrt(2 a d) at a = 0.5 m/s^2, below the 1 m/s^2 limit (room for the drive's lag)
            a[i[DRIVE]] = float(np.clip(math.sqrt(2.0 * 0.5 * dist), 0.5, 5.0))
        else:
            a[i[ARTICULATION]] = float(state.positions[i[ARTICULATION]])
            a[i[DUMP_BODY]] = self.raise_to if self._phase == 'raise' else 0.0
        return a

    def success(self) -> bool:
        spot = self.spots[self.side]
        dumped = any(e[DUMP_BODY] >= 1.0 and abs(e['v']) < 0.2 and math.hypot(e['x'] - spot[0], e['y'] - spot[1])
                     <= self.spot_tol for e in self.sim.trace)
        return bool(dumped and self.sim.trace[-1][DUMP_BODY] <= 0.05)


TASKS = {LoaderApproachLiftTask.name: LoaderApproachLiftTask, TruckDriveDumpTask.name: TruckDriveDumpTask}
