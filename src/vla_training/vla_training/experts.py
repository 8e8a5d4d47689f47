"""Language tasks and a scripted (privileged) expert for the Franka cube scene.

The expert reads the true cube poses from the simulator and plans in Cartesian space: a
waypoint above the named cube, down to it, (for pick) close the gripper and lift. Each control
step it moves the TCP target at most ``max_speed * dt`` towards the active waypoint and solves
for the joint target with damped-least-squares IK (Nakamura & Hanafusa 1986; Buss 2004,
"Introduction to inverse kinematics with Jacobian transpose, pseudoinverse and damped least
squares methods"), with a null-space pull towards the ready pose. It is closed-loop on the
measured joints: its command is a function of the current state (Markovian), which is what
behaviour cloning can imitate, and it corrects any perturbation (see ``rollout`` DART noise).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np

from robot_drivers.embodiment import FRANKA_PANDA
from robot_drivers.sim.franka_cubes import CUBE_COLOURS, READY_POSE, FrankaCubeSim

__all__ = ['Task', 'TASK_KINDS', 'sample_task', 'parse_instruction', 'ScriptedExpert', 'RandomPolicy',
           'task_success']

TASK_KINDS = ('reach', 'pick')
_TEMPLATES = {'reach': 'reach the {colour} cube', 'pick': 'pick up the {colour} cube'}
GRIPPER_OPEN = 0.04   # m per finger (Franka Hand stroke 80 mm)
GRIPPER_CLOSED = 0.0
REACH_TOLERANCE = 0.03   # m, success radius of "reach" (issue: TCP within 3 cm of the cube)
LIFT_HEIGHT = 0.05       # m, "pick" succeeds when the named cube's centre rose this much


@dataclass(frozen=True)
class Task:
    kind: str     # 'reach' | 'pick'
    colour: str   # a key of CUBE_COLOURS

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f'task kind must be one of {TASK_KINDS}, got {self.kind!r}')
        if self.colour not in CUBE_COLOURS:
            raise ValueError(f'cube colour must be one of {list(CUBE_COLOURS)}, got {self.colour!r}')

    @property
    def instruction(self) -> str:
        return _TEMPLATES[self.kind].format(colour=self.colour)


def sample_task(rng: np.random.Generator, kinds: Tuple[str, ...] = TASK_KINDS) -> Task:
    return Task(str(rng.choice(list(kinds))), str(rng.choice(list(CUBE_COLOURS))))


def parse_instruction(text: str) -> Task:
    """Inverse of ``Task.instruction``; raises ValueError naming the text if it is not one."""
    t = text.strip().lower()
    for kind, tpl in _TEMPLATES.items():
        m = re.fullmatch(tpl.format(colour='(\\w+)'), t)
        if m and m.group(1) in CUBE_COLOURS:
            return Task(kind, m.group(1))
    raise ValueError(f'not a known instruction: {text!r}')


def task_success(sim: FrankaCubeSim, task: Task, initial_cubes: Dict[str, np.ndarray]) -> bool:
    """Reach: TCP within 3 cm of the named cube's centre. Pick: the cube rose >= 5 cm."""
    cube = sim.cube_positions()[task.colour]
    if task.kind == 'reach':
        return bool(np.linalg.norm(sim.ee_position() - cube) <= REACH_TOLERANCE)
    return bool(cube[2] - initial_cubes[task.colour][2] >= LIFT_HEIGHT)


def _rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


class ScriptedExpert:
    """Waypoint + IK expert. ``act(q (8,)) -> joint targets (8,)`` for the next control step.

    max_speed: TCP step cap per period / dt, m/s. The target is planned from the *measured*
        joints (so the demonstrations are a function of what the policy observes); the
        position servo trails its target, so the arm moves at roughly half this speed.
    approach_height: m above the cube centre for the first waypoint.
    """

    def __init__(self, sim: FrankaCubeSim, task: Task, *, max_speed: float = 0.4, approach_height: float = 0.10,
                 lift_height: float = 0.15, waypoint_tolerance: float = 0.012, seed: int = 0) -> None:
        self.sim, self.task = sim, task
        self.max_speed, self.approach_height, self.lift_height = max_speed, approach_height, lift_height
        self.tol = waypoint_tolerance
        # TCP 1 cm above the cube centre: fingertips (2.5 cm below the TCP) clear the table.
        self.grasp_offset = 0.01
        self.dt = sim.cfg.control_dt
        self.vmax = FRANKA_PANDA.max_velocity[:7]
        _, self._r_ready, _ = sim.fk(READY_POSE[:7])
        self.reset()

    def reset(self) -> None:
        self.phase = 'approach'
        self._grasp_steps = 0
        self._target_cube = None

    def _cube(self) -> Tuple[np.ndarray, float]:
        adr = self.sim._cube_qadr[self.task.colour]
        quat = self.sim.data.qpos[adr + 3:adr + 7]
        yaw = 2 * np.arctan2(quat[3], quat[0])
        yaw = (yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4   # a cube is symmetric under 90 deg turns
        return self.sim.cube_positions()[self.task.colour], float(yaw)

    def _waypoint(self, ee: np.ndarray) -> Tuple[np.ndarray, float]:
        cube, _ = self._cube()
        if self._target_cube is None or self.phase in ('approach', 'descend'):
            self._target_cube = cube
        above = cube + [0.0, 0.0, self.approach_height]
        if self.phase == 'approach':
            if np.linalg.norm(ee - above) < self.tol * 1.5:
                self.phase = 'descend'
            return above, GRIPPER_OPEN
        if self.phase == 'descend':
            goal = cube + [0.0, 0.0, self.grasp_offset]
            if self.task.kind == 'pick' and np.linalg.norm(ee - goal) < self.tol:
                self.phase = 'grasp'
            return goal, GRIPPER_OPEN
        if self.phase == 'grasp':
            self._grasp_steps += 1
            if self._grasp_steps >= 6:
                self.phase = 'lift'
            return self._target_cube + [0.0, 0.0, self.grasp_offset], GRIPPER_CLOSED
        # lift
        return self._target_cube + [0.0, 0.0, self.lift_height], GRIPPER_CLOSED

    def act(self, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q, dtype=np.float64)
        ee, _, _ = self.sim.fk(q[:7])
        waypoint, grip = self._waypoint(ee)
        delta = waypoint - ee
        dist = np.linalg.norm(delta)
        step = self.max_speed * self.dt
        p_des = waypoint if dist <= step else ee + delta * (step / dist)
        _, yaw = self._cube()
        r_des = _rot_z(yaw) @ self._r_ready
        q_des = self._ik(q[:7], p_des, r_des)
        # Joint step cap: 90 % of the datasheet velocity over one period.
        lim = 0.9 * self.vmax * self.dt
        q_arm = q[:7] + np.clip(q_des - q[:7], -lim, lim)
        return np.concatenate([q_arm, [grip]])

    def _ik(self, q0: np.ndarray, p_des: np.ndarray, r_des: np.ndarray, iters: int = 15,
            damping: float = 0.05) -> np.ndarray:
        q = q0.copy()
        lo, hi = FRANKA_PANDA.lower[:7] + 0.05, FRANKA_PANDA.upper[:7] - 0.05
        for _ in range(iters):
            p, r, jac = self.sim.fk(q)
            e_pos = p_des - p
            e_rot = 0.5 * sum(np.cross(r[:, i], r_des[:, i]) for i in range(3))
            err = np.concatenate([e_pos, 0.5 * e_rot])
            if np.linalg.norm(e_pos) < 1e-4 and np.linalg.norm(e_rot) < 1e-3:
                break
            jw = jac * np.array([1, 1, 1, 0.5, 0.5, 0.5])[:, None]
            jjt = jw @ jw.T + damping ** 2 * np.eye(6)
            dq = jw.T @ np.linalg.solve(jjt, err)
            # Null-space pull towards the ready pose keeps the elbow up (no drift along the redundancy).
            n = np.eye(7) - np.linalg.pinv(jw) @ jw
            dq += n @ (0.1 * (READY_POSE[:7] - q))
            q = np.clip(q + dq, lo, hi)
        return q


class RandomPolicy:
    """Baseline: uniformly random joint targets within ``scale`` rad of the current position."""

    def __init__(self, seed: int, scale: float = 0.2) -> None:
        self.rng = np.random.default_rng(seed)
        self.scale = scale

    def act(self, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q, dtype=np.float64)
        out = q + self.rng.uniform(-self.scale, self.scale, q.shape)
        out[7] = self.rng.choice([GRIPPER_OPEN, GRIPPER_CLOSED])
        return np.clip(out, FRANKA_PANDA.lower, FRANKA_PANDA.upper)
