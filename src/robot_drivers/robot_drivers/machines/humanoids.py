"""Humanoids: Unitree G1 (29 DOF), Unitree H1 and Fourier GR1, upper body by position, base by velocity.

A policy drives a humanoid the way its vendor lets a developer drive it while the robot's own
locomotion controller keeps it balanced: **upper-body joints** (arms, waist, head where present)
as position targets, and the **base** as a velocity command (``base_vx`` m/s forward,
``base_vy`` m/s left, ``base_wz`` rad/s counter-clockwise, REP-103 ``base_link`` axes) for the
robot's walking controller. **Leg joints are never streamed**: they are listed in
``forbidden_joints`` and a command naming one is rejected (reason ``forbidden_joints``).

Action vector: the upper-body joints in the order below, then ``base_vx, base_vy, base_wz``.

Outputs (groups):

=========  =====================================================  ==========================================
machine    ``upper_body``                                         ``base``
=========  =====================================================  ==========================================
G1         ``unitree_arm_sdk``: ``unitree_hg/LowCmd`` on          ``unitree_sport``: ``unitree_api/Request``
           ``/arm_sdk`` (weight in ``motor_cmd[29].q``)           SetVelocity (api_id 7105) on
                                                                  ``/api/sport/request``
H1         ``unitree_arm_sdk``: ``unitree_go/LowCmd`` on          ``unitree_sport``: SetVelocity (api_id 8105)
           ``/arm_sdk`` (weight in ``motor_cmd[9].q``)            on ``/api/loco/request``
GR1        ``joint_trajectory`` on                                ``twist_stamped`` on ``/cmd_vel``
           ``/upper_body_controller/joint_trajectory``
=========  =====================================================  ==========================================

The Unitree groups also carry the options of the generic adapters (``time_from_start``,
``fields``, ``frame_id``), so a deployment behind a ros2_control / ``/cmd_vel`` bridge selects
``output_adapters.upper_body: joint_trajectory`` and ``output_adapters.base: twist_stamped`` in
its config (``config/unitree_g1.yaml`` documents it). Unitree itself has no ``/cmd_vel``.

Limits:

* **Position**: the vendor models. G1: ``unitree_robots/g1/g1_29dof.xml`` and H1:
  ``unitree_robots/h1/h1.xml`` of unitreerobotics/unitree_mujoco (commit
  c598f103acb87a5fd3de7c9037f4dab6aa7f232b; the same ranges as unitree_ros ``g1_29dof.urdf`` /
  ``h1.urdf``); GR1: robosuite 1.5.2 ``robosuite/models/assets/robots/gr1/robot.xml`` (checked
  against the installed file by the tests).
* **Velocity**: :data:`UPPER_BODY_VMAX` = 2 rad/s for every upper-body joint, a conservative
  driver limit well below the URDF joint speeds (G1 ``g1_29dof.urdf``: 37 rad/s arms, 22 rad/s
  wrist pitch/yaw; H1 ``h1.urdf``: 9 rad/s shoulder pitch/roll, 20 rad/s shoulder yaw/elbow,
  23 rad/s torso). GR1's MJCF has no velocity limit; the same 2 rad/s applies. Unitree's own
  arm-SDK example moves at ``max_joint_velocity = 0.5`` rad/s.
* **Acceleration**: :data:`UPPER_BODY_AMAX` = 10 rad/s², chosen here (no vendor publishes one):
  a 2 rad/s swing starts and stops within 0.2 s, gentle for a balancing robot.
* **Base**: vendors publish top walking speeds (G1 2 m/s, H1 3.3 m/s, GR1 5 km/h on their product
  pages), not command limits, and LocoClient does not document its clamp. The driver is
  conservative: |vx| <= 0.5 m/s, |vy| <= 0.3 m/s, |omega| <= 0.6 rad/s, accelerations 0.5 m/s²,
  0.5 m/s², 1.0 rad/s² (:data:`BASE_LIMITS`). Raise them per site only with the vendor's figures.
"""
from __future__ import annotations

import math
from typing import Dict, Sequence, Tuple

from robot_drivers.embodiment import POSITION, VELOCITY, Embodiment, Group, JointSpec, register_embodiment
from robot_drivers.machine import Machine, register_machine
from robot_drivers.safety import SafetyConfig

__all__ = ['G1', 'H1', 'GR1', 'G1_MACHINE', 'H1_MACHINE', 'GR1_MACHINE', 'HUMANOIDS', 'BASE_DOFS', 'BASE_LIMITS',
           'UPPER_BODY_VMAX', 'UPPER_BODY_AMAX', 'G1_UPPER_BODY', 'H1_UPPER_BODY', 'GR1_UPPER_BODY',
           'G1_LEGS', 'H1_LEGS', 'GR1_LEGS', 'G1_MOTOR_INDEX', 'H1_MOTOR_INDEX', 'POLICY_RATE_HZ', 'DRIVER_RATE_HZ']

#: Policy rate (Hz) and driver tick (Hz; the arm-SDK examples' ``control_dt`` = 0.02 s).
POLICY_RATE_HZ = 10.0
DRIVER_RATE_HZ = 50.0
UPPER_BODY_VMAX = 2.0        # rad/s, see the module docstring
UPPER_BODY_AMAX = 10.0       # rad/s^2
#: The base's velocity DOFs, in action-vector order.
BASE_DOFS = ('base_vx', 'base_vy', 'base_wz')
#: ``{dof: (max |velocity|, max |acceleration|, kind)}`` (m/s, m/s^2 / rad/s, rad/s^2).
BASE_LIMITS: Dict[str, Tuple[float, float, str]] = {
    'base_vx': (0.5, 0.5, 'prismatic'),
    'base_vy': (0.3, 0.5, 'prismatic'),
    'base_wz': (0.6, 1.0, 'revolute'),
}
BASE_SOURCE = ('conservative driver limits chosen here: no vendor publishes locomotion command limits '
               '(G1 / H1 LocoClient SetVelocity, GR1 fourier-grx); product pages give top walking speeds only')

_UNITREE_MUJOCO = 'unitreerobotics/unitree_mujoco@c598f103acb87a5fd3de7c9037f4dab6aa7f232b'
G1_SOURCE = (f'position: {_UNITREE_MUJOCO} unitree_robots/g1/g1_29dof.xml joint ranges (= unitree_ros '
             'robots/g1_description/g1_29dof.urdf); velocity 2 rad/s, acceleration 10 rad/s^2: conservative '
             'driver limits (URDF joint speeds 22-37 rad/s)')
H1_SOURCE = (f'position: {_UNITREE_MUJOCO} unitree_robots/h1/h1.xml joint ranges (= unitree_ros '
             'robots/h1_description/urdf/h1.urdf); velocity 2 rad/s, acceleration 10 rad/s^2: conservative '
             'driver limits (URDF joint speeds 9-23 rad/s)')
GR1_SOURCE = ('position: robosuite 1.5.2 robosuite/models/assets/robots/gr1/robot.xml joint ranges; velocity '
              '2 rad/s, acceleration 10 rad/s^2: conservative driver limits (the MJCF has none)')

# ----------------------------------------------------------------------------- Unitree G1 (29 DOF)
#: (name, lower, upper) from g1_29dof.xml, action-vector order (waist, left arm, right arm).
G1_UPPER_BODY: Tuple[Tuple[str, float, float], ...] = (
    ('waist_yaw_joint', -2.618, 2.618),
    ('waist_roll_joint', -0.52, 0.52),
    ('waist_pitch_joint', -0.52, 0.52),
    ('left_shoulder_pitch_joint', -3.0892, 2.6704),
    ('left_shoulder_roll_joint', -1.5882, 2.2515),
    ('left_shoulder_yaw_joint', -2.618, 2.618),
    ('left_elbow_joint', -1.0472, 2.0944),
    ('left_wrist_roll_joint', -1.97222, 1.97222),
    ('left_wrist_pitch_joint', -1.61443, 1.61443),
    ('left_wrist_yaw_joint', -1.61443, 1.61443),
    ('right_shoulder_pitch_joint', -3.0892, 2.6704),
    ('right_shoulder_roll_joint', -2.2515, 1.5882),
    ('right_shoulder_yaw_joint', -2.618, 2.618),
    ('right_elbow_joint', -1.0472, 2.0944),
    ('right_wrist_roll_joint', -1.97222, 1.97222),
    ('right_wrist_pitch_joint', -1.61443, 1.61443),
    ('right_wrist_yaw_joint', -1.61443, 1.61443),
)
G1_LEGS = tuple(f'{side}_{j}_joint' for side in ('left', 'right')
                for j in ('hip_pitch', 'hip_roll', 'hip_yaw', 'knee', 'ankle_pitch', 'ankle_roll'))
#: LowCmd motor index of each upper-body joint: ``G1Arm7JointIndex`` of unitree_ros2
#: ``example/src/include/g1/g1.hpp`` (= unitree_mujoco ``g1_joint_index_dds.md``, 29-DOF table).
G1_MOTOR_INDEX: Dict[str, int] = {name: 12 + i for i, (name, _, _) in enumerate(G1_UPPER_BODY)}
G1_WEIGHT_INDEX = 29         # G1Arm7JointIndex::NOT_USED_JOINT
# g1_arm_sdk_dds_example.cpp: kp 60, kd 1.5; the three waist motors kp * 4, kd * 4.
_G1_KP = {n: (240.0 if n.startswith('waist') else 60.0) for n, _, _ in G1_UPPER_BODY}
_G1_KD = {n: (6.0 if n.startswith('waist') else 1.5) for n, _, _ in G1_UPPER_BODY}

# ----------------------------------------------------------------------------- Unitree H1
H1_UPPER_BODY: Tuple[Tuple[str, float, float], ...] = (
    ('torso_joint', -2.35, 2.35),
    ('left_shoulder_pitch_joint', -2.87, 2.87),
    ('left_shoulder_roll_joint', -0.34, 3.11),
    ('left_shoulder_yaw_joint', -1.3, 4.45),
    ('left_elbow_joint', -1.25, 2.61),
    ('right_shoulder_pitch_joint', -2.87, 2.87),
    ('right_shoulder_roll_joint', -3.11, 0.34),
    ('right_shoulder_yaw_joint', -4.45, 1.3),
    ('right_elbow_joint', -1.25, 2.61),
)
H1_LEGS = tuple(f'{side}_{j}_joint' for side in ('left', 'right')
                for j in ('hip_yaw', 'hip_roll', 'hip_pitch', 'knee', 'ankle'))
#: ``JointIndex`` of unitree_sdk2 ``example/h1/high_level/h1_arm_sdk_dds_example.cpp``.
H1_MOTOR_INDEX: Dict[str, int] = {
    'torso_joint': 6,
    'right_shoulder_pitch_joint': 12, 'right_shoulder_roll_joint': 13, 'right_shoulder_yaw_joint': 14,
    'right_elbow_joint': 15,
    'left_shoulder_pitch_joint': 16, 'left_shoulder_roll_joint': 17, 'left_shoulder_yaw_joint': 18,
    'left_elbow_joint': 19,
}
H1_WEIGHT_INDEX = 9          # kNotUsedJoint
_H1_KP = {n: 60.0 for n, _, _ in H1_UPPER_BODY}     # h1_arm_sdk_dds_example.cpp: kp 60, kd 1.5
_H1_KD = {n: 1.5 for n, _, _ in H1_UPPER_BODY}

# ----------------------------------------------------------------------------- Fourier GR1
GR1_UPPER_BODY: Tuple[Tuple[str, float, float], ...] = (
    ('torso_waist_yaw', -1.05, 1.05),
    ('torso_waist_pitch', -0.52, 1.22),
    ('torso_waist_roll', -0.7, 0.7),
    ('head_yaw', -math.pi / 2, math.pi / 2),
    ('head_roll', -0.2617993877991494, 0.2617993877991494),
    ('head_pitch', -0.2617993877991494, 0.2617993877991494),
    ('r_shoulder_pitch', -3.0, 3.0),
    ('r_shoulder_roll', -3.0, 0.0),
    ('r_shoulder_yaw', -3.0, 3.0),
    ('r_elbow_pitch', -3.0, 0.0),
    ('r_wrist_yaw', -3.0, 3.0),
    ('r_wrist_roll', -1.5, 1.5),
    ('r_wrist_pitch', -1.5, 1.5),
    ('l_shoulder_pitch', -3.0, 3.0),
    ('l_shoulder_roll', 0.0, 3.0),
    ('l_shoulder_yaw', -3.0, 3.0),
    ('l_elbow_pitch', -3.0, 0.0),
    ('l_wrist_yaw', -3.0, 3.0),
    ('l_wrist_roll', -1.5, 1.5),
    ('l_wrist_pitch', -1.5, 1.5),
)
GR1_LEGS = tuple(f'{side}_leg_{j}' for side in ('l', 'r')
                 for j in ('hip_roll', 'hip_yaw', 'hip_pitch', 'knee_pitch', 'ankle_pitch', 'ankle_roll'))
GR1_UPPER_BODY_TOPIC = '/upper_body_controller/joint_trajectory'

_TWIST = {'fields': ['linear.x', 'linear.y', 'angular.z'], 'frame_id': 'base_link'}


def _joints(upper: Sequence[Tuple[str, float, float]], source: str) -> Tuple[JointSpec, ...]:
    arm = tuple(JointSpec(n, lo, hi, UPPER_BODY_VMAX, interface=POSITION, max_acceleration=UPPER_BODY_AMAX,
                          source=source) for n, lo, hi in upper)
    base = tuple(JointSpec(n, -math.inf, math.inf, v, kind=kind, interface=VELOCITY, max_acceleration=a,
                           source=BASE_SOURCE) for n, (v, a, kind) in BASE_LIMITS.items())
    return arm + base


def _humanoid(name: str, upper, legs, source: str, upper_group: Group, base_group: Group) -> Embodiment:
    return register_embodiment(Embodiment(
        name=name,
        joints=_joints(upper, source),
        control_rate_hz=POLICY_RATE_HZ,
        command_topic=upper_group.topic,
        state_topic='/joint_states',
        limits_source=f'{source}; base: {BASE_SOURCE}',
        groups=(upper_group, base_group),
        forbidden_joints=tuple(legs),
        machine_class='humanoid',
    ))


def _unitree_groups(upper, index, weight_index, kp, kd, message, sport_topic, api_id) -> Tuple[Group, Group]:
    names = tuple(n for n, _, _ in upper)
    ub = Group('upper_body', names, 'unitree_arm_sdk', '/arm_sdk', options={
        'message': message, 'motor_index': dict(index), 'weight_index': weight_index, 'kp': dict(kp),
        'kd': dict(kd), 'weight_rate': 0.2, 'time_from_start': 1.0 / DRIVER_RATE_HZ})
    base = Group('base', BASE_DOFS, 'unitree_sport', sport_topic,
                 options={'api_id': api_id, 'duration': 0.25, 'noreply': True, **_TWIST})
    return ub, base


G1 = _humanoid('unitree_g1', G1_UPPER_BODY, G1_LEGS, G1_SOURCE,
               *_unitree_groups(G1_UPPER_BODY, G1_MOTOR_INDEX, G1_WEIGHT_INDEX, _G1_KP, _G1_KD,
                                'unitree_hg/msg/LowCmd', '/api/sport/request', 7105))
H1 = _humanoid('unitree_h1', H1_UPPER_BODY, H1_LEGS, H1_SOURCE,
               *_unitree_groups(H1_UPPER_BODY, H1_MOTOR_INDEX, H1_WEIGHT_INDEX, _H1_KP, _H1_KD,
                                'unitree_go/msg/LowCmd', '/api/loco/request', 8105))
GR1 = _humanoid('fourier_gr1', GR1_UPPER_BODY, GR1_LEGS, GR1_SOURCE,
                Group('upper_body', tuple(n for n, _, _ in GR1_UPPER_BODY), 'joint_trajectory', GR1_UPPER_BODY_TOPIC,
                      options={'time_from_start': 1.0 / DRIVER_RATE_HZ}),
                Group('base', BASE_DOFS, 'twist_stamped', '/cmd_vel', options=dict(_TWIST)))

_SAFETY = SafetyConfig(watchdog_timeout_s=0.5)


def _machine(emb: Embodiment, sim: str, description: str) -> Machine:
    import robot_drivers.msgs.unitree  # noqa: F401  (registers the unitree adapters)
    return register_machine(Machine(embodiment=emb, safety=_SAFETY, control_rate_hz=DRIVER_RATE_HZ, sim=sim,
                                    description=description))


G1_MACHINE = _machine(G1, 'robot_drivers.sim.humanoid:G1Sim',
                      'humanoid, 17 upper-body joints + base velocity; unitree_ros2 arm SDK + LocoClient')
H1_MACHINE = _machine(H1, 'robot_drivers.sim.humanoid:H1Sim',
                      'humanoid, 9 upper-body joints + base velocity; unitree_ros2 arm SDK + LocoClient')
GR1_MACHINE = _machine(GR1, 'robot_drivers.sim.humanoid:GR1Sim',
                       'humanoid, 20 upper-body joints + base velocity; JointTrajectory + /cmd_vel')
HUMANOIDS = ('unitree_g1', 'unitree_h1', 'fourier_gr1')
