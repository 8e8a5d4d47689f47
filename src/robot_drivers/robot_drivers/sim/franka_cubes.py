"""MuJoCo tabletop scene: a Franka Panda, a table, three coloured cubes and two RGB cameras.

The arm model is the Franka description shipped by Farama's ``gymnasium-robotics`` (Franka
Kitchen assets, derived from vikashplus/franka, Apache-2.0): it is loaded from the installed
package, not redrawn here. That model's joint 6 zero is rotated by -pi/2 from the real robot's
(its link-6 frame uses ``euler='1.57 0 1.57'``): with the offset below, the real robot's "ready"
pose ``q = [0, -pi/4, 0, -3pi/4, 0, pi/2, pi/4]`` puts the TCP at (0.307, 0, 0.487) m with the
hand pointing down, as on the real arm (checked in test_sim.py). All public values use the real
robot's joint conventions and the embodiment's names (``panda_joint1..7``, ``panda_finger_joint1``).

The class is a plain ``read()/write()`` hardware backend (ros2_control hardware-interface style)
plus ``step()`` / ``render()`` for the simulation clock and the cameras. Gravity compensation is
on for the arm bodies, as in the real Franka's torque controller, so position targets are
tracked without sag.

Cameras (:data:`CAMERAS`): ``front``, fixed in the world, looking at the table from the far side;
``wrist``, fixed to the hand (link 7) beside the flange like a wrist-mounted RealSense on a real
Panda, looking along the approach axis past the fingertips (the view of
RoboVLMs' CALVIN "gripper" camera, DROID's and ALOHA's wrist cameras). It is added to the loaded
model with ``MjSpec`` (as the ``tcp`` site is), so the robot model itself stays the package's.
"""
from __future__ import annotations

import importlib.util
import os
import pathlib
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from robot_drivers.embodiment import FRANKA_PANDA, Embodiment

__all__ = ['SimConfig', 'FrankaCubeSim', 'JointSample', 'CUBE_COLOURS', 'READY_POSE', 'franka_assets_dir', 'CAMERAS']

#: The scene's cameras (MuJoCo camera names, also the model's ``camera_names``), in order.
CAMERAS = ('front', 'wrist')

# RGB of the cubes; the names are the words used in instructions.
CUBE_COLOURS: Dict[str, Tuple[float, float, float]] = {
    'red': (0.85, 0.10, 0.10),
    'green': (0.10, 0.70, 0.15),
    'blue': (0.10, 0.25, 0.90),
}
# The Franka "ready" pose (franka_description / MoveIt "ready" state), rad; gripper open (m).
READY_POSE = np.array([0.0, -np.pi / 4, 0.0, -3 * np.pi / 4, 0.0, np.pi / 2, np.pi / 4, 0.04])
# model joint = real joint + offset (see module docstring).
_MODEL_OFFSET = np.array([0.0, 0.0, 0.0, 0.0, 0.0, -np.pi / 2, 0.0])
_MODEL_ARM_JOINTS = [f'robot:panda0_joint{i}' for i in range(1, 8)]
_TCP_Z = 0.235  # m along link 7's z axis, see FrankaCubeSim.__init__
_MODEL_FINGERS = ['robot:panda0_finger_joint1', 'robot:panda0_finger_joint2']


def franka_assets_dir() -> pathlib.Path:
    """Folder of the Franka MJCF files inside the installed ``gymnasium_robotics`` package.

    Raises:
        ModuleNotFoundError: gymnasium-robotics is not installed (``pip install gymnasium-robotics``).
    """
    spec = importlib.util.find_spec('gymnasium_robotics')
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            'the Franka model comes from the gymnasium-robotics package: pip install gymnasium-robotics')
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / 'envs/assets/kitchen_franka/franka_assets'
    if not (path / 'chain.xml').is_file():
        raise FileNotFoundError(f'Franka assets not found in gymnasium-robotics at {path}')
    return path


@dataclass
class JointSample:
    """Measured joint state: ``positions``/``velocities`` ``(J,)`` (rad, rad/s; m, m/s), ``stamp`` s."""

    names: Tuple[str, ...]
    positions: np.ndarray
    velocities: np.ndarray
    stamp: float


@dataclass
class SimConfig:
    """Scene parameters.

    image_size: camera resolution (square), px. 96 is the issue's minimum and enough for 4 cm cubes.
    control_dt: seconds per ``step()``; the embodiment's control period (10 Hz).
    physics_dt: MuJoCo timestep; 2 ms is the Franka asset's own setting.
    cube_half: cube half-size in m (4 cm cubes fit the 8 cm Franka Hand stroke).
    workspace: (x_min, x_max, y_min, y_max) of cube centres in the base frame, m; inside the
        Panda's comfortable reach with the hand pointing down.
    min_separation: minimum distance between cube centres, m (so the gripper fits between them).
    fast_render: draw the arm's low-poly collision meshes (group 3) instead of the visual meshes;
        ~6x faster software rendering, same geometry up to a few mm.
    """

    image_size: int = 96
    control_dt: float = 0.1
    physics_dt: float = 0.002
    cube_half: float = 0.02
    workspace: Tuple[float, float, float, float] = (0.40, 0.62, -0.20, 0.20)
    min_separation: float = 0.10
    fast_render: bool = True
    camera_pos: Tuple[float, float, float] = (0.95, 0.0, 0.70)
    camera_target: Tuple[float, float, float] = (0.49, 0.0, 0.06)
    camera_fovy: float = 36.0
    # wrist camera in the link-7 (flange) frame, m: beside the hand, off the finger axis (the
    # fingers open along the -45 deg diagonal of link 7), aimed along the approach axis at a point
    # 0.5 m past the flange, so the fingertips sit at the bottom of the image and the table below.
    wrist_camera_pos: Tuple[float, float, float] = (0.09, 0.09, 0.12)
    wrist_camera_target: Tuple[float, float, float] = (0.0, 0.0, 0.5)
    wrist_camera_fovy: float = 70.0   # about a RealSense D405's 87 x 58 deg, square image

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ValueError(f'image_size must be >= 16 px, got {self.image_size}')
        n = self.control_dt / self.physics_dt
        if self.physics_dt <= 0 or abs(n - round(n)) > 1e-6:
            raise ValueError(
                f'control_dt ({self.control_dt}) must be a whole multiple of physics_dt ({self.physics_dt})')
        x0, x1, y0, y1 = self.workspace
        if x0 >= x1 or y0 >= y1:
            raise ValueError(f'workspace {self.workspace} must be (x_min < x_max, y_min < y_max)')


def _look_at_xyaxes(pos: Sequence[float], target: Sequence[float]) -> str:
    f = np.asarray(target, float) - np.asarray(pos, float)
    f /= np.linalg.norm(f)
    x = np.cross(f, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(x, f)
    return ' '.join(f'{v:.6f}' for v in np.concatenate([x, y]))


def _look_at_quat(pos: Sequence[float], target: Sequence[float]) -> np.ndarray:
    """Quaternion (w, x, y, z) of a MuJoCo camera at ``pos`` looking at ``target`` in its body's
    frame (cameras look along their -z axis), image up = away from the body's z axis."""
    import mujoco
    fwd = np.asarray(target, float) - np.asarray(pos, float)
    fwd /= np.linalg.norm(fwd)
    radial = np.array([pos[0], pos[1], 0.0], float)
    up = radial / np.linalg.norm(radial)
    x = np.cross(fwd, up)
    x /= np.linalg.norm(x)
    y = np.cross(-fwd, x)   # z_cam = -fwd; y = z x x
    rot = np.stack([x, y, -fwd], axis=1)   # columns: the camera axes in the body frame
    q = np.zeros(4)
    mujoco.mju_mat2Quat(q, rot.reshape(-1))
    return q


def _scene_xml(cfg: SimConfig) -> str:
    cubes = []
    for name, rgb in CUBE_COLOURS.items():
        cubes.append(f"""
    <body name="cube_{name}" pos="0.5 0 {cfg.cube_half}">
      <freejoint name="cube_{name}_joint"/>
      <geom name="cube_{name}" type="box" size="{cfg.cube_half} {cfg.cube_half} {cfg.cube_half}"
            rgba="{rgb[0]} {rgb[1]} {rgb[2]} 1" mass="0.05" friction="1.5 0.01 0.001" group="2"
            condim="4" solref="0.005 1"/>
    </body>""")
    xyaxes = _look_at_xyaxes(cfg.camera_pos, cfg.camera_target)
    s = cfg.image_size
    return f"""
<mujoco model="franka_cubes">
  <include file="franka_assets/assets.xml"/>
  <include file="franka_assets/actuator.xml"/>
  <option timestep="{cfg.physics_dt}" cone="elliptic" impratio="10"/>
  <visual>
    <quality shadowsize="0"/>
    <global offwidth="{max(s, 640)}" offheight="{max(s, 480)}"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.5 0.5 0.5" specular="0 0 0"/>
  </visual>
  <asset>
    <texture name="wood" type="2d" builtin="flat" rgb1="0.62 0.52 0.40" width="16" height="16"/>
    <material name="table" texture="wood" specular="0"/>
  </asset>
  <worldbody>
    <light name="sun" pos="0.5 0 2.0" dir="0 0 -1" directional="true" castshadow="false" diffuse="0.45 0.45 0.45"/>
    <geom name="floor" type="plane" pos="0 0 -0.75" size="3 3 0.1" rgba="0.25 0.27 0.30 1" group="2"/>
    <geom name="table" type="box" pos="0.45 0 -0.025" size="0.55 0.6 0.025" material="table" group="2"/>
    <body name="panda_base" pos="0 0 0">
      <include file="franka_assets/chain.xml"/>
    </body>
    {''.join(cubes)}
    <camera name="front" pos="{' '.join(map(str, cfg.camera_pos))}" xyaxes="{xyaxes}" fovy="{cfg.camera_fovy}"/>
  </worldbody>
</mujoco>
"""


class FrankaCubeSim:
    """The tabletop scene as a hardware backend.

    ``write(positions (8,))`` sets joint position targets (real-robot convention, finger joint is
    the width of one finger, both fingers follow); ``step()`` advances ``control_dt``;
    ``read()`` gives a :class:`JointSample`; ``render()`` an RGB ``uint8 (S, S, 3)`` image.
    """

    def __init__(self, config: Optional[SimConfig] = None, embodiment: Embodiment = FRANKA_PANDA) -> None:
        import mujoco  # imported here so the rest of robot_drivers works without MuJoCo

        self._mj = mujoco
        self.cfg = config or SimConfig()
        self.embodiment = embodiment
        if embodiment.joint_names != FRANKA_PANDA.joint_names:
            raise ValueError(f'FrankaCubeSim drives the franka_panda joints, not {embodiment.name!r}')
        with tempfile.TemporaryDirectory(prefix='franka_cubes_') as td:
            os.symlink(franka_assets_dir(), pathlib.Path(td) / 'franka_assets')
            scene = pathlib.Path(td) / 'scene.xml'
            scene.write_text(_scene_xml(self.cfg))
            spec = mujoco.MjSpec.from_file(str(scene))
            for body in spec.bodies:
                if body.name.startswith('panda0_'):
                    body.gravcomp = 1.0  # the real arm's controller compensates gravity
            # TCP between the finger pads: this asset's fingers (scaled 1.75x) reach 0.26 m past
            # link 7, so its 'end_effector' site (0.21 m, the real hand's flange+0.1034 m TCP)
            # sits 5 cm above the fingertips. The pads span 0.20-0.26 m; 0.235 m is their middle.
            spec.body('panda0_link7').add_site(name='tcp', pos=[0.0, 0.0, _TCP_Z], size=[0.005, 0, 0])
            spec.body('panda0_link7').add_camera(
                name='wrist', pos=list(self.cfg.wrist_camera_pos), fovy=self.cfg.wrist_camera_fovy,
                quat=_look_at_quat(self.cfg.wrist_camera_pos, self.cfg.wrist_camera_target).tolist())
            self.model = spec.compile()
        self.data = mujoco.MjData(self.model)
        m = self.model
        self._arm_qadr = np.array([m.joint(n).qposadr[0] for n in _MODEL_ARM_JOINTS])
        self._arm_dadr = np.array([m.joint(n).dofadr[0] for n in _MODEL_ARM_JOINTS])
        self._finger_qadr = np.array([m.joint(n).qposadr[0] for n in _MODEL_FINGERS])
        self._finger_dadr = np.array([m.joint(n).dofadr[0] for n in _MODEL_FINGERS])
        act_names = [m.actuator(i).name for i in range(m.nu)]
        self._arm_act = np.array([act_names.index(f'panda0_joint{i}') for i in range(1, 8)])
        self._finger_act = np.array([act_names.index('r_gripper_finger_joint'),
                                     act_names.index('l_gripper_finger_joint')])
        self._ee_site = m.site('tcp').id
        self._cube_body = {c: m.body(f'cube_{c}').id for c in CUBE_COLOURS}
        self._cube_qadr = {c: m.joint(f'cube_{c}_joint').qposadr[0] for c in CUBE_COLOURS}
        self._n_sub = int(round(self.cfg.control_dt / self.cfg.physics_dt))
        self._renderer = None
        self._scene_opt = None
        self.time = 0.0
        self.reset(seed=0)

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int, joint_noise: float = 0.05) -> Dict[str, np.ndarray]:
        """Ready pose (+ uniform joint noise, rad), cubes at random non-overlapping positions.

        Returns ``{colour: (3,) cube centre in m}``. Deterministic for a given ``seed``.
        """
        mj = self._mj
        rng = np.random.default_rng(seed)
        mj.mj_resetData(self.model, self.data)
        q = READY_POSE.copy()
        q[:7] += rng.uniform(-joint_noise, joint_noise, 7)
        self._set_joints(q)
        x0, x1, y0, y1 = self.cfg.workspace
        placed: List[np.ndarray] = []
        for colour in CUBE_COLOURS:
            for _ in range(1000):
                p = np.array([rng.uniform(x0, x1), rng.uniform(y0, y1)])
                if all(np.linalg.norm(p - o) >= self.cfg.min_separation for o in placed):
                    break
            else:  # pragma: no cover - the default workspace always fits three cubes
                raise RuntimeError('could not place the cubes; enlarge workspace or lower min_separation')
            placed.append(p)
            yaw = rng.uniform(-0.4, 0.4)
            adr = self._cube_qadr[colour]
            self.data.qpos[adr:adr + 3] = [p[0], p[1], self.cfg.cube_half]
            self.data.qpos[adr + 3:adr + 7] = [np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]
        self.write(q)
        mj.mj_forward(self.model, self.data)
        self.time = 0.0
        return self.cube_positions()

    def _set_joints(self, q: np.ndarray) -> None:
        self.data.qpos[self._arm_qadr] = q[:7] + _MODEL_OFFSET
        self.data.qpos[self._finger_qadr] = q[7]
        self.data.qvel[self._arm_dadr] = 0.0
        self.data.qvel[self._finger_dadr] = 0.0

    # ------------------------------------------------------------------ hardware interface
    @property
    def joint_names(self) -> List[str]:
        return self.embodiment.joint_names

    def read(self) -> JointSample:
        d = self.data
        pos = np.concatenate([d.qpos[self._arm_qadr] - _MODEL_OFFSET, [d.qpos[self._finger_qadr[0]]]])
        vel = np.concatenate([d.qvel[self._arm_dadr], [d.qvel[self._finger_dadr[0]]]])
        return JointSample(tuple(self.joint_names), pos, vel, self.time)

    def write(self, positions: np.ndarray) -> None:
        """Set position targets ``(8,)`` (rad, finger m). Raises ValueError on wrong length / NaN."""
        q = np.asarray(positions, dtype=np.float64).reshape(-1)
        if q.shape[0] != 8 or not np.all(np.isfinite(q)):
            raise ValueError(f'FrankaCubeSim.write expects 8 finite targets, got {q}')
        self.data.ctrl[self._arm_act] = q[:7] + _MODEL_OFFSET
        self.data.ctrl[self._finger_act] = q[7]

    def step(self, duration: Optional[float] = None) -> None:
        """Advance the physics by ``duration`` s (default ``control_dt``; a multiple of physics_dt)."""
        n = self._n_sub if duration is None else int(round(duration / self.cfg.physics_dt))
        self._mj.mj_step(self.model, self.data, nstep=max(n, 1))
        self.time += n * self.cfg.physics_dt

    # ------------------------------------------------------------------ privileged state (expert, success)
    def cube_positions(self) -> Dict[str, np.ndarray]:
        return {c: self.data.xpos[b].copy() for c, b in self._cube_body.items()}

    def ee_position(self) -> np.ndarray:
        """TCP position (3,) m in the base/world frame (between the finger pads)."""
        return self.data.site_xpos[self._ee_site].copy()

    def ee_rotation(self) -> np.ndarray:
        return self.data.site_xmat[self._ee_site].reshape(3, 3).copy()

    def fk(self, q: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """TCP ``(position (3,), rotation (3, 3), jacobian (6, 7))`` at arm joints ``q (7,)``, no stepping.

        Uses a scratch MjData so the simulation state is untouched.
        """
        mj = self._mj
        if not hasattr(self, '_scratch'):
            self._scratch = mj.MjData(self.model)
        d = self._scratch
        d.qpos[:] = self.data.qpos
        d.qpos[self._arm_qadr] = np.asarray(q[:7]) + _MODEL_OFFSET
        mj.mj_kinematics(self.model, d)
        mj.mj_comPos(self.model, d)
        jp = np.zeros((3, self.model.nv))
        jr = np.zeros((3, self.model.nv))
        mj.mj_jacSite(self.model, d, jp, jr, self._ee_site)
        jac = np.vstack([jp[:, self._arm_dadr], jr[:, self._arm_dadr]])
        return d.site_xpos[self._ee_site].copy(), d.site_xmat[self._ee_site].reshape(3, 3).copy(), jac

    # ------------------------------------------------------------------ camera
    def render(self, camera: str = 'front', size: Optional[int] = None, fast: Optional[bool] = None) -> np.ndarray:
        """RGB image ``uint8 (S, S, 3)`` from ``camera`` (one of :data:`CAMERAS`; shadows off; see
        SimConfig.fast_render).

        Raises:
            ValueError: an unknown camera (the scene's cameras are listed).
        """
        if camera not in CAMERAS:
            raise ValueError(f'FrankaCubeSim has no camera {camera!r}; cameras: {list(CAMERAS)}')
        mj = self._mj
        s = size or self.cfg.image_size
        if self._renderer is None or self._renderer.height != s:
            if self._renderer is not None:
                self._renderer.close()
            self._renderer = mj.Renderer(self.model, s, s)
        fast = self.cfg.fast_render if fast is None else fast
        opt = mj.MjvOption()
        opt.geomgroup[:] = [0, 0, 1, 1, 0, 0] if fast else [1, 0, 1, 0, 0, 0]
        self._renderer.update_scene(self.data, camera=camera, scene_option=opt)
        return self._renderer.render().copy()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
