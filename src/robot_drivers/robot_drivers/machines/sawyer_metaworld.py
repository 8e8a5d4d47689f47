"""Sawyer of Meta-World (Farama ``metaworld`` 3.1.1): the 4-D end-effector action space as an embodiment.

Meta-World's policies command ``Box(-1, 1, (4,))``: an xyz displacement of the hand's mocap target and
a gripper effort (``SawyerXYZEnv.set_xyz_action`` / ``step``; +1 closes, -1 opens). Here that space is
an embodiment of the action-space model, in SI units:

* ``ee_x``, ``ee_y``, ``ee_z``: **velocity** DOFs of the hand in the world frame, m/s. One env step
  moves the mocap by ``clip(a, -1, 1) * action_scale`` (``action_scale = 1/100`` m) in
  ``frame_skip * timestep = 5 * 0.0025 = 0.0125`` s, so ``v = 0.8 a`` m/s and
  :data:`METAWORLD_EE_SPEED` = 0.8 m/s is the speed bound. Position limits: the union of the mocap
  bounds (``mocap_low`` / ``mocap_high``) of the 50 ``ALL_V3_ENVIRONMENTS`` tasks.
* ``gripper``: a **position** DOF whose command is Meta-World's gripper effort in [-1, 1]
  (+1 close). Its *measured* value (``JointState.position``) is Meta-World's gripper opening
  ``obs[3]`` in [0, 1] (1 = open), the state LeRobot's ``MetaworldEnv`` exposes (``agent_pos``).

The policy state is ``obs[:4]`` (hand xyz in m, gripper opening), as LeRobot's Meta-World wrapper
(``lerobot/envs/metaworld.py``) gives SmolVLA. Control rate: one policy action per env step, 80 Hz.
There is no driver: the Meta-World env applies the command (``vla_training.metaworld_env``), so no
:class:`~robot_drivers.machine.Machine` is registered.
"""
from __future__ import annotations

from robot_drivers.embodiment import POSITION, VELOCITY, Embodiment, JointSpec, register_embodiment

__all__ = ['SAWYER_METAWORLD', 'METAWORLD_EE_SPEED', 'METAWORLD_DT', 'METAWORLD_EE_LIMITS', 'METAWORLD_COMMAND_TOPIC']

#: s per env step: SawyerXYZEnv frame_skip 5 x MuJoCo timestep 0.0025 (assets/scene/basic_scene.xml).
METAWORLD_DT = 5 * 0.0025
#: m/s per unit of action: action_scale 1/100 m per step / METAWORLD_DT.
METAWORLD_EE_SPEED = 0.01 / METAWORLD_DT
#: m, world frame: union over the 50 v3 tasks of SawyerXYZEnv mocap_low / mocap_high (metaworld 3.1.1).
METAWORLD_EE_LIMITS = ((-0.5, 0.5), (0.35, 1.0), (-0.15, 0.5))
#: the policy's command topic (a JointTrajectory: velocities for ee_x/y/z, position for the gripper).
METAWORLD_COMMAND_TOPIC = '/vla/joint_trajectory'
_SOURCE = ('metaworld 3.1.1 sawyer_xyz_env.py: action_scale 1/100 m per step, frame_skip 5, timestep 0.0025 s; '
           'mocap_low/high union over ALL_V3_ENVIRONMENTS; gripper effort Box(-1, 1)')

SAWYER_METAWORLD = register_embodiment(Embodiment(
    name='sawyer_metaworld',
    joints=tuple(JointSpec(n, lo, hi, METAWORLD_EE_SPEED, kind='prismatic', interface=VELOCITY, source=_SOURCE)
                 for n, (lo, hi) in zip(('ee_x', 'ee_y', 'ee_z'), METAWORLD_EE_LIMITS))
    + (JointSpec('gripper', -1.0, 1.0, 1.0 / METAWORLD_DT, kind='prismatic', interface=POSITION, source=_SOURCE),),
    control_rate_hz=1.0 / METAWORLD_DT,
    command_topic=METAWORLD_COMMAND_TOPIC,
    state_topic='/joint_states',
    limits_source=_SOURCE,
    machine_class='arm',
))
