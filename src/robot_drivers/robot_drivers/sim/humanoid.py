"""Humanoid simulators (Unitree G1, Unitree H1, Fourier GR1) and their wave / walk-forward tasks.

What the driver commands on a humanoid is the upper body (joint positions, which the robot's
joint servos track) and a base velocity (which the robot's own walking controller realises). The
simulators model exactly that, not the walking itself:

* **Upper body**: each joint follows its position target. :class:`GR1Sim` runs robosuite's GR1
  MJCF in MuJoCo (``robosuite/models/assets/robots/gr1/robot.xml``, robosuite 1.5.2, loaded from
  the installed package with ``mujoco.MjSpec``; install it with ``pip install --no-deps
  robosuite==1.5.2``), with a position servo per upper-body joint, gravity compensation, the legs
  held at 0 by servos of their own, contacts off, and the free joint of the ``base`` body replaced
  by a mocap body that follows the integrated planar pose. :class:`G1Sim` / :class:`H1Sim` are
  analytic kinematic models, a first-order lag per joint (``q̇ = (target - q) / tau``, integrated
  exactly per physics step): no maintained pip package ships the G1 / H1 models for offline use
  (they live in the unitree_mujoco and unitree_ros repositories, not on PyPI), and the project
  never copies model files.
* **Base**: the commanded body-frame twist (``base_vx``, ``base_vy``, ``base_wz``) reaches the
  robot through a first-order lag (``base_tau``, the walking controller's response; a simulation
  value) and is integrated into a planar pose ``(x, y, yaw)`` (m, m, rad) in the world frame.

``read()`` reports the upper-body positions and velocities and, for the base DOFs, NaN positions
(no position sensor) and the body-frame velocities. Every :meth:`step` appends the ground truth to
:attr:`log` (time, upper-body positions, base pose, base velocity), which the tasks' success
checks read.

Tasks (:data:`TASKS`): ``wave`` (raise the right arm, wave the forearm twice) and ``walk`` (walk
1 m forward and stop), each with a scripted expert.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from robot_drivers.embodiment import Embodiment, get_embodiment
from robot_drivers.machine import MachineState

__all__ = ['HumanoidSimConfig', 'HumanoidSim', 'KinematicHumanoidSim', 'G1Sim', 'H1Sim', 'GR1Sim', 'WaveTask',
           'WalkTask', 'TASKS', 'WAVE', 'HOME', 'gr1_model_dir']

#: Start pose of each humanoid's upper body (rad, action-vector order is the embodiment's); joints
#: not named are 0. GR1's roll / elbow ranges end at 0, so its arms start slightly inside them.
HOME: Dict[str, Dict[str, float]] = {
    'unitree_g1': {},
    'unitree_h1': {},
    'fourier_gr1': {'r_shoulder_roll': -0.1, 'l_shoulder_roll': 0.1, 'r_elbow_pitch': -0.3, 'l_elbow_pitch': -0.3},
}

#: The wave of each humanoid: ``raise`` {joint: rad} lifts the right arm sideways, then ``joint``
#: oscillates around ``centre`` with ``amplitude`` (rad) at ``frequency`` (Hz).
WAVE: Dict[str, Dict[str, Any]] = {
    'unitree_g1': {'raise': {'right_shoulder_roll_joint': -1.3}, 'joint': 'right_elbow_joint', 'centre': 0.9,
                   'amplitude': 0.4, 'frequency': 0.5},
    'unitree_h1': {'raise': {'right_shoulder_roll_joint': -1.3}, 'joint': 'right_elbow_joint', 'centre': 0.9,
                   'amplitude': 0.4, 'frequency': 0.5},
    'fourier_gr1': {'raise': {'r_shoulder_roll': -1.3}, 'joint': 'r_elbow_pitch', 'centre': -1.0,
                    'amplitude': 0.4, 'frequency': 0.5},
}


def gr1_model_dir():
    """Folder of the GR1 MJCF in the installed robosuite package (errors: see ``package_dir``)."""
    from robot_drivers.sim.mujoco_arm import package_dir
    return package_dir('robosuite', 'models/assets/robots/gr1', 'robot.xml', 'robosuite==1.5.2')


@dataclass
class HumanoidSimConfig:
    """physics_dt: integration step, s. tau: upper-body joint time constant, s (kinematic models).
    base_tau: walking controller's velocity time constant, s. reset_noise: rad, uniform around
    :data:`HOME`. kp / kv / armature: GR1 servo gain (N·m/rad), damping (N·m·s/rad) and rotor
    inertia (kg·m²), simulation values. image_size: px."""

    physics_dt: float = 0.005
    tau: float = 0.05
    base_tau: float = 0.3
    reset_noise: float = 0.02
    kp: float = 400.0
    kv: float = 40.0
    armature: float = 0.1
    image_size: int = 96


class HumanoidSim:
    """Shared part of the humanoid simulators: the base model, the hardware interface, the log.

    Subclasses implement ``_upper_reset(q)``, ``_upper_step(n)`` (advance ``n`` physics steps toward
    ``self._target``) and ``_upper_read() -> (q, qd)``.

    Attributes:
        embodiment: the machine's DOFs (upper body, then ``base_vx, base_vy, base_wz``).
        time: simulated seconds since the last reset.
        base_pose: ``(3,)`` x m, y m, yaw rad in the world frame.
        base_velocity: ``(3,)`` body-frame vx m/s, vy m/s, wz rad/s.
        log: ``[(time, upper-body q (U,), base pose (3,), base velocity (3,))]`` after each step.
    """

    machine_name = ''

    def __init__(self, config: Optional[HumanoidSimConfig] = None, seed: int = 0) -> None:
        self.config = config or HumanoidSimConfig()
        self.embodiment: Embodiment = get_embodiment(self.machine_name)
        emb = self.embodiment
        self.upper = ~emb.is_velocity
        self.n_upper = int(self.upper.sum())
        self.upper_names = [n for n, u in zip(emb.joint_names, self.upper) if u]
        home = HOME[self.machine_name]
        self.home = np.array([home.get(n, 0.0) for n in self.upper_names])
        self.physics_dt = float(self.config.physics_dt)
        self.reset(seed)

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int) -> None:
        """Upper body at :data:`HOME` + uniform noise (deterministic in ``seed``), at rest; base at the
        origin facing +x, at rest; time 0; empty log."""
        rng = np.random.default_rng(seed)
        lo, hi = self.embodiment.lower[self.upper], self.embodiment.upper[self.upper]
        q = np.clip(self.home + rng.uniform(-1.0, 1.0, self.n_upper) * self.config.reset_noise, lo, hi)
        self._target = q.copy()
        self._base_cmd = np.zeros(3)
        self.base_pose = np.zeros(3)
        self.base_velocity = np.zeros(3)
        self.time = 0.0
        self._clock = 0.0
        self.log: List[Tuple[float, np.ndarray, np.ndarray, np.ndarray]] = []
        self._upper_reset(q)

    # ------------------------------------------------------------------ hardware interface
    def read(self) -> MachineState:
        """Upper-body positions (rad) / velocities (rad/s); base DOFs: NaN position, body-frame velocity."""
        q, qd = self._upper_read()
        emb = self.embodiment
        pos = np.full(emb.dof, np.nan)
        vel = np.zeros(emb.dof)
        pos[self.upper], vel[self.upper] = q, qd
        vel[~self.upper] = self.base_velocity
        return MachineState(pos, vel, float(self.time),
                            {'base_pose': self.base_pose.copy()})

    def write(self, setpoint: np.ndarray) -> None:
        """``(J,)``: upper-body position targets (rad), then the commanded base twist (m/s, m/s, rad/s).

        Raises:
            ValueError: wrong length or a non-finite value (the DOF is named).
        """
        sp = np.asarray(setpoint, dtype=np.float64).reshape(-1)
        emb = self.embodiment
        if sp.shape[0] != emb.dof:
            raise ValueError(f'{type(self).__name__}.write: {sp.shape[0]} values for the {emb.dof} DOFs '
                             f'{emb.joint_names}')
        bad = [n for n, v in zip(emb.joint_names, sp) if not np.isfinite(v)]
        if bad:
            raise ValueError(f'{type(self).__name__}.write: non-finite setpoint for {bad}')
        self._target = sp[self.upper].copy()
        self._base_cmd = sp[~self.upper].copy()

    def step(self, duration: float) -> None:
        """Advance by ``duration`` s (>= 0) in whole physics steps (the remainder carries over).

        Raises:
            ValueError: a negative or non-finite duration.
        """
        duration = float(duration)
        if not np.isfinite(duration) or duration < 0:
            raise ValueError(f'step duration must be finite and >= 0 s, got {duration}')
        self._clock += duration
        n = int(np.floor((self._clock - self.time) / self.physics_dt + 1e-6))
        if n <= 0:
            return
        a = 1.0 - math.exp(-self.physics_dt / self.config.base_tau)
        for _ in range(n):
            self.base_velocity = self.base_velocity + (self._base_cmd - self.base_velocity) * a
            vx, vy, wz = self.base_velocity
            yaw = self.base_pose[2]
            c, s = math.cos(yaw), math.sin(yaw)
            self.base_pose = self.base_pose + self.physics_dt * np.array([c * vx - s * vy, s * vx + c * vy, wz])
        self._upper_step(n)
        self.time += n * self.physics_dt
        q, _ = self._upper_read()
        self.log.append((self.time, q.copy(), self.base_pose.copy(), self.base_velocity.copy()))

    def close(self) -> None:
        """Release resources (renderer); the kinematic models have none."""

    # ------------------------------------------------------------------ upper body (subclasses)
    def _upper_reset(self, q: np.ndarray) -> None:
        raise NotImplementedError

    def _upper_step(self, n: int) -> None:
        raise NotImplementedError

    def _upper_read(self) -> Tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class KinematicHumanoidSim(HumanoidSim):
    """Upper body as a first-order lag per joint (``tau``), kept inside the joint limits."""

    def _upper_reset(self, q):
        self._q = q.copy()
        self._qd = np.zeros_like(q)

    def _upper_step(self, n):
        dt = self.physics_dt
        a = 1.0 - math.exp(-dt / self.config.tau)
        lo, hi = self.embodiment.lower[self.upper], self.embodiment.upper[self.upper]
        prev = self._q
        for _ in range(n):
            prev = self._q
            self._q = np.clip(self._q + (self._target - self._q) * a, lo, hi)
        self._qd = (self._q - prev) / dt        # velocity over the last physics step

    def _upper_read(self):
        return self._q.copy(), self._qd.copy()


class G1Sim(KinematicHumanoidSim):
    """Unitree G1 (29 DOF): kinematic model (see the module docstring)."""

    machine_name = 'unitree_g1'


class H1Sim(KinematicHumanoidSim):
    """Unitree H1: kinematic model (see the module docstring)."""

    machine_name = 'unitree_h1'


class GR1Sim(HumanoidSim):
    """Fourier GR1 in MuJoCo from robosuite's MJCF (see the module docstring).

    Raises:
        ModuleNotFoundError: robosuite is not installed.
    """

    machine_name = 'fourier_gr1'

    def __init__(self, config: Optional[HumanoidSimConfig] = None, seed: int = 0) -> None:
        import mujoco
        from robot_drivers.machines.humanoids import GR1_LEGS
        from robot_drivers.sim.mujoco_arm import add_position_servo, look_at_xyaxes
        cfg = config or HumanoidSimConfig()
        self._mj = mujoco
        spec = mujoco.MjSpec.from_file(str(gr1_model_dir() / 'robot.xml'))
        spec.option.timestep = cfg.physics_dt
        spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
        spec.option.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_CONTACT)
        free = [j for j in spec.joints if j.type == mujoco.mjtJoint.mjJNT_FREE]
        for j in free:
            spec.delete(j)
        spec.body('base').mocap = True
        for body in spec.bodies:
            body.gravcomp = 1.0
        upper = [n for n, v in zip(get_embodiment(self.machine_name).joint_names,
                                   get_embodiment(self.machine_name).is_velocity) if not v]
        for name in upper + list(GR1_LEGS):
            spec.joint(name).armature = cfg.armature
            act = add_position_servo(spec, name, cfg.kp, cfg.kv)
            # the MJCF's default class limits actuator inputs to [-1, 1] (its torque motors): servo
            # targets are joint angles, bounded by the joint ranges instead
            act.ctrllimited = mujoco.mjtLimited.mjLIMITED_FALSE
        cam = [2.2, -1.4, 0.6]
        spec.worldbody.add_camera(name='overview', pos=cam, xyaxes=look_at_xyaxes(cam, [0.0, 0.0, 0.2]), fovy=50.0)
        spec.worldbody.add_light(name='top', pos=[0.0, 0.0, 3.0], dir=[0.0, 0.0, -1.0], diffuse=[0.8, 0.8, 0.8],
                                 castshadow=False)
        self.model = spec.compile()
        self.data = mujoco.MjData(self.model)
        m = self.model
        self._qadr = np.array([m.joint(n).qposadr[0] for n in upper])
        self._dadr = np.array([m.joint(n).dofadr[0] for n in upper])
        act = [m.actuator(i).name for i in range(m.nu)]
        self._act = np.array([act.index(f'servo_{n}') for n in upper])
        self._leg_act = np.array([act.index(f'servo_{n}') for n in GR1_LEGS])
        self._mocap = int(m.body('base').mocapid[0])
        self._base_z = float(m.body('base').pos[2])
        self._renderer = None
        super().__init__(cfg, seed)

    def _sync_base(self):
        x, y, yaw = self.base_pose
        self.data.mocap_pos[self._mocap] = [x, y, self._base_z]
        self.data.mocap_quat[self._mocap] = [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]

    def _upper_reset(self, q):
        mj = self._mj
        mj.mj_resetData(self.model, self.data)
        self.data.qpos[self._qadr] = q
        self.data.ctrl[self._act] = q
        self.data.ctrl[self._leg_act] = 0.0
        self._sync_base()
        mj.mj_forward(self.model, self.data)

    def _upper_step(self, n):
        self.data.ctrl[self._act] = self._target
        self._sync_base()
        self._mj.mj_step(self.model, self.data, nstep=n)

    def _upper_read(self):
        return self.data.qpos[self._qadr].copy(), self.data.qvel[self._dadr].copy()

    def render(self, camera: str = 'overview', size: Optional[int] = None) -> np.ndarray:
        """``uint8 (size, size, 3)`` RGB image from ``camera`` (default ``overview``)."""
        size = int(size or self.config.image_size)
        if self._renderer is None or self._renderer.height != size:
            if self._renderer is not None:
                self._renderer.close()
            self._renderer = self._mj.Renderer(self.model, height=size, width=size)
        self._renderer.update_scene(self.data, camera=camera)
        return self._renderer.render().copy()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


# ---------------------------------------------------------------------------------------- tasks
class _Task:
    name = ''
    instructions: Tuple[str, ...] = ()
    max_steps = 0

    def __init__(self, sim: HumanoidSim) -> None:
        self.sim = sim
        self.emb = sim.embodiment
        self._steps = 0

    def reset(self, seed: int) -> str:
        """Reset the sim (``seed``) and the expert; returns the episode's instruction."""
        self.sim.reset(seed)
        self._steps = 0
        self._start = self.sim.read()
        return self.instructions[int(seed) % len(self.instructions)]

    def _row(self, upper: np.ndarray, base: np.ndarray) -> np.ndarray:
        row = np.zeros(self.emb.dof)
        row[self.sim.upper], row[~self.sim.upper] = upper, base
        return row


class WaveTask(_Task):
    """Raise the right arm (``WAVE[machine]['raise']``) and wave the forearm: success once the wave
    joint has crossed its centre four times (two full waves) with a swing of at least 60 % of the
    amplitude on each side, while the arm stayed raised (within 0.15 rad) — on the sim's logged
    ground truth. The expert holds every other joint where it started and the base still."""

    name = 'wave'
    instructions = ('wave with your right hand', 'wave hello')
    max_steps = 80                       # 8 s at 10 Hz
    raised_tolerance = 0.15              # rad
    crossings = 4

    def __init__(self, sim: HumanoidSim) -> None:
        super().__init__(sim)
        spec = WAVE[sim.machine_name]
        names = sim.upper_names
        self.raise_idx = np.array([names.index(n) for n in spec['raise']])
        self.raise_q = np.array(list(spec['raise'].values()))
        self.wave_idx = names.index(spec['joint'])
        self.centre, self.amplitude, self.frequency = spec['centre'], spec['amplitude'], spec['frequency']
        self._wave_t: Optional[float] = None

    def reset(self, seed: int) -> str:
        text = super().reset(seed)
        self._wave_t = None
        return text

    def _raised(self, q: np.ndarray) -> bool:
        return bool(np.all(np.abs(q[self.raise_idx] - self.raise_q) < self.raised_tolerance))

    def expert(self, state: MachineState) -> np.ndarray:
        """Next action row: raise (arm pose + wave joint at its centre), then ``centre + A sin(2 pi f t)``."""
        q = np.asarray(state.positions)[self.sim.upper]
        target = np.asarray(self._start.positions)[self.sim.upper].copy()
        target[self.raise_idx] = self.raise_q
        target[self.wave_idx] = self.centre
        dt = 1.0 / self.emb.control_rate_hz
        if self._wave_t is None and self._raised(q) and abs(q[self.wave_idx] - self.centre) < 0.1:
            self._wave_t = 0.0
        if self._wave_t is not None:
            self._wave_t += dt
            target[self.wave_idx] = self.centre + self.amplitude * math.sin(2 * math.pi * self.frequency * self._wave_t)
        self._steps += 1
        return self._row(target, np.zeros(3))

    def wave_count(self) -> int:
        """Centre crossings of the wave joint, each after a swing >= 60 % of the amplitude, with the arm raised."""
        count, side, peak = 0, 0, 0.0
        for _, q, _, _ in self.sim.log:
            if not self._raised(q):
                side, peak = 0, 0.0
                continue
            d = q[self.wave_idx] - self.centre
            s = 1 if d > 0 else -1
            if side == 0:
                side, peak = s, abs(d)
                continue
            if s != side:
                if peak >= 0.6 * self.amplitude:
                    count += 1
                side, peak = s, abs(d)
            else:
                peak = max(peak, abs(d))
        return count

    def success(self) -> bool:
        return self.wave_count() >= self.crossings


class WalkTask(_Task):
    """Walk ``distance`` m forward and stop: success when the logged base pose is at least 90 % of the
    distance ahead, less than 0.1 m aside and the base has stopped (< 0.05 m/s). The expert commands
    ``speed`` m/s forward until its odometry (the measured ``base_vx`` integrated) is ``brake`` m
    short of the distance, then 0; the upper body holds its start pose."""

    name = 'walk'
    instructions = ('walk forward', 'walk one metre forward')
    max_steps = 80                       # 8 s at 10 Hz
    distance = 1.0                       # m
    speed = 0.4                          # m/s, inside BASE_LIMITS
    brake = 0.2                          # m, covers the deceleration at the driver's limit and the lag

    def reset(self, seed: int) -> str:
        text = super().reset(seed)
        self._odometry = 0.0
        return text

    def expert(self, state: MachineState) -> np.ndarray:
        vx = float(np.asarray(state.velocities)[list(self.emb.joint_names).index('base_vx')])
        self._odometry += vx / self.emb.control_rate_hz
        cmd = self.speed if self._odometry < self.distance - self.brake else 0.0
        self._steps += 1
        return self._row(np.asarray(self._start.positions)[self.sim.upper], np.array([cmd, 0.0, 0.0]))

    def success(self) -> bool:
        x, y, _ = self.sim.base_pose
        return bool(x >= 0.9 * self.distance and abs(y) < 0.1 and np.linalg.norm(self.sim.base_velocity[:2]) < 0.05)


TASKS: Dict[str, type] = {'wave': WaveTask, 'walk': WalkTask}
