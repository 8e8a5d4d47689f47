"""MuJoCo UR5e, the model robosuite ships, as a hardware backend, and its reach task.

The arm is robosuite's UR5e MJCF (``robosuite/models/assets/robots/ur5e/robot.xml``, robosuite
1.5.2, MIT licence), loaded from the installed package with ``mujoco.MjSpec.from_file`` (never
copied; robosuite pins an older MuJoCo, so install it with ``pip install --no-deps robosuite==1.5.2``).
Its joint names are the UR driver's (``shoulder_pan_joint`` ... ``wrist_3_joint``), so no mapping
is needed. Edits made on the spec before compiling (the package file is untouched):

* a position servo per joint (``kp`` N·m/rad, ``kv`` N·m·s/rad; UR's controller is a stiff
  joint-position loop); robosuite's own torque motors stay in the model with zero input;
* gravity compensation on every link (the UR controller compensates gravity), so targets are
  tracked without sag; joint armature (rotor inertia through the harmonic drive, a simulation
  value, not a datasheet one) keeps the servos stable at the 2 ms step;
* a ``tcp`` site at robosuite's ``right_hand`` frame (the tool flange), a ``target`` marker, an
  ``overview`` camera.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np

from robot_drivers.machines.ur5e import UR5E, UR5E_JOINT_NAMES
from robot_drivers.sim.mujoco_arm import MujocoArmSim, ReachTask, add_position_servo, add_scene, package_dir

__all__ = ['UR5eSimConfig', 'UR5eSim', 'UR5eReachTask', 'TASKS', 'HOME', 'ur5e_model_dir']

#: UR "home" pose with the tool pointing down (rad), TCP at about (0.49, 0.13, 0.49) m.
HOME = np.array([0.0, -np.pi / 2, np.pi / 2, -np.pi / 2, -np.pi / 2, 0.0])


def ur5e_model_dir():
    """Folder of the UR5e MJCF in the installed robosuite package (errors: see ``package_dir``)."""
    return package_dir('robosuite', 'models/assets/robots/ur5e', 'robot.xml', 'robosuite==1.5.2')


@dataclass
class UR5eSimConfig:
    """physics_dt: MuJoCo step, s. kp / kv: servo gains. armature: kg·m² per joint. image_size: px.
    reset_noise: rad, uniform around :data:`HOME` at reset."""

    physics_dt: float = 0.002
    kp: float = 2000.0
    kv: float = 100.0
    armature: float = 0.1
    image_size: int = 96
    reset_noise: float = 0.05


class UR5eSim(MujocoArmSim):
    """UR5e in MuJoCo (see the module docstring): ``write`` joint position targets (rad),
    ``step``, ``read`` a :class:`~robot_drivers.machine.MachineState`.

    Raises:
        ModuleNotFoundError: robosuite is not installed.
    """

    def __init__(self, config: Optional[UR5eSimConfig] = None, seed: int = 0) -> None:
        import mujoco
        cfg = self.config = config or UR5eSimConfig()
        spec = mujoco.MjSpec.from_file(str(ur5e_model_dir() / 'robot.xml'))
        spec.option.timestep = cfg.physics_dt
        spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
        for body in spec.bodies:
            body.gravcomp = 1.0
        for name in UR5E_JOINT_NAMES:
            spec.joint(name).armature = cfg.armature
            add_position_servo(spec, name, cfg.kp, cfg.kv)
        spec.body('right_hand').add_site(name='tcp', pos=[0.0, 0.0, 0.0], size=[0.005, 0.0, 0.0])
        add_scene(spec, camera_pos=[1.4, -1.0, 1.0], look_at=[0.2, 0.0, 0.3], target_radius=0.02)
        super().__init__(spec.compile(), UR5E, UR5E_JOINT_NAMES, HOME, np.full(6, cfg.reset_noise),
                         image_size=cfg.image_size, seed=seed)


class UR5eReachTask(ReachTask):
    """Reach a random point 0.25 m or more from the start, in front of and around the arm (z 0.1-0.8 m,
    0.3 m or more from the base axis), within 2 cm. wrist_3 (which turns the flange about its own
    axis) is not used by the IK."""

    instructions = ('reach the target', 'move the tool to the red sphere')
    max_steps = 80                          # 8 s at 10 Hz
    tolerance = 0.02
    spread = (1.0, 0.5, 0.6, 0.5, 0.5, 0.0)
    ik_dofs = (0, 1, 2, 3, 4)
    workspace = ((-0.8, 0.8), (-0.8, 0.8), (0.1, 0.8))
    min_radius = 0.3
    min_distance = 0.25


TASKS: Dict[str, type] = {'reach': UR5eReachTask}
