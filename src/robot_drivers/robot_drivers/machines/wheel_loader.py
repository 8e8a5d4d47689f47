"""Wheel loader (Volvo L120H class, ~20 t, centre-pivot articulated steering).

Degrees of freedom (action-vector order):

=============  =========  ==================================  =====================================================
DOF            interface  position limits                     velocity / acceleration / jerk
=============  =========  ==================================  =====================================================
articulation   position   ±0.698 rad (±40°)                   0.35 rad/s / 0.7 rad/s² / not limited
drive          velocity   none (no position sensor)           3.61 m/s (13 km/h) / 1.0 m/s² / not limited
boom           position   [-0.52, 0.78] rad                   0.24 rad/s / 0.5 rad/s² / not limited
bucket         position   [-0.85, 0.80] rad                   1.0 rad/s / 2.0 rad/s² / not limited
=============  =========  ==================================  =====================================================

* ``articulation``: hinge angle between front and rear frame (positive: front frame turned left,
  REP-103), commanded as a **position** (the steering cylinders' servo, as an operator's steering
  wheel sets an angle). Kinematics in :mod:`robot_drivers.articulated`.
* ``drive``: ground speed of the front axle (m/s, negative = reverse), a **velocity**: the
  transmission / hydrostatic drive controls speed, and there is no position to command.
* ``boom`` (lift arm angle, boom pivot to bucket hinge pin against the horizontal) and ``bucket``
  (tilt of the bucket against the ground: positive = rolled back, negative = dumping), by
  **position**. Position, not velocity, because the loader's own electro-hydraulic implement
  control already closes the loop on these angles (the boom kick-out and return-to-dig /
  bucket-positioner functions of the L-series and of the CAT 950 GC set angle targets), the
  angles are sensed, both joints have hard end stops that a position limit describes exactly, and
  a learned policy holds a lifted bucket by repeating one number instead of integrating velocities.
  OperaSim's front joint topics are angle commands too (pwri-opera/OperaSim-PhysX-doc,
  ``ros-topics-and-messages.rst``: ``/(ns)/boom/cmd``, ``/(ns)/bucket/cmd``, std_msgs/Float64, rad).

Limits and their sources: :data:`L120H_SOURCES`. Geometry (:data:`L120H_GEOMETRY`): a centre-pivot
loader, the hinge midway between the axles (wheelbase 3.2 m).

Native outputs (groups):

* ``base`` (articulation, drive): one ``std_msgs/Float64`` per DOF, OperaSim-style
  ``/l120h/articulation/cmd`` (articulation angle target, rad) and ``/l120h/drive/cmd`` (ground
  speed target, m/s); or, with ``output_adapters.base: articulated_twist`` and
  ``outputs.base: /l120h/cmd_vel``, a ``geometry_msgs/TwistStamped`` of the front frame
  (:class:`~robot_drivers.articulated.ArticulatedTwistAdapter`).
* ``front`` (boom, bucket): ``std_msgs/Float64`` angle targets on ``/l120h/boom/cmd`` and
  ``/l120h/bucket/cmd`` (OperaSim's front-joint topics and units); or ``float64_array`` for a
  ros2_control ``forward_command_controller`` (``output_adapters.front: float64_array``).

**Interlock** :class:`SlowWithBoomRaised` (``slow_with_boom_raised``): while the boom is raised
above the carry position (measured or commanded boom > :data:`BOOM_RAISED`), the speed target is
capped at the 1st-gear speed :data:`RAISED_SPEED_LIMIT` (6.5 km/h): a loader travels with the
bucket low (operator's manuals: lift-arm pin 400-500 mm above the ground when travelling, e.g.
SDLG LG956L Operation & Maintenance Manual, "Conveying Operation"), and a raised load at speed
risks tipping over.

Second command input: ``geometry_msgs/TwistStamped`` on ``/cmd_vel`` (teleop, Nav2), converted by
the articulated-steering model into an articulation target and a speed
(:class:`~robot_drivers.articulated.ArticulatedTwistInput`); the boom and bucket hold their
measured angles meanwhile.
"""
from __future__ import annotations

import math

import numpy as np

from robot_drivers.articulated import ARTICULATION, DRIVE, ArticulatedGeometry, ArticulatedTwistInput
from robot_drivers.embodiment import POSITION, VELOCITY, Embodiment, Group, JointSpec, register_embodiment
from robot_drivers.machine import Interlock, Machine, register_machine
from robot_drivers.safety import SafetyConfig

__all__ = ['WHEEL_LOADER', 'WHEEL_LOADER_MACHINE', 'L120H_GEOMETRY', 'L120H_SOURCES', 'NAMESPACE', 'JOINTS',
           'BUCKET_REACH_M', 'BOOM_CARRY', 'BOOM_RAISED', 'RAISED_SPEED_LIMIT', 'SlowWithBoomRaised']

#: ROS namespace of the machine (OperaSim names topics /(machine name)/...).
NAMESPACE = '/l120h'
JOINTS = (ARTICULATION, DRIVE, 'boom', 'bucket')

_SPEC = 'Volvo L120H wheel loader product brochure, Specifications (Volvo Construction Equipment)'
_CAT = 'Cat 950 GC wheel loader specifications (Caterpillar)'
_SPOOL = ('acceleration: reaches the full rate in about 0.5 s, the response of a pilot-operated main valve '
          'spool (conservative choice, no published value); jerk: not limited (the acceleration limit already '
          'spreads a velocity change over >= 0.5 s, and the shared limiter\'s jerk smoothing does not settle a '
          'position DOF on a constant target)')

#: Hinge geometry: wheelbase 3.2 m with the hinge midway (centre-pivot loader), articulation ±40°.
L120H_GEOMETRY = ArticulatedGeometry(l_f=1.6, l_r=1.6, max_articulation=math.radians(40.0))
#: Front axle to the bucket cutting edge with the bucket on the ground, m (approximate, from the
#: L120H dimension drawing; used by the simulator's tasks).
BUCKET_REACH_M = 2.6

#: Where each limit comes from.
L120H_SOURCES = {
    ARTICULATION: f'position: articulation angle ±40° ({_SPEC}; {_CAT} also ±40°); velocity 0.35 rad/s = '
                  f'lock to lock (80°) in 4 s: conservative choice, no published steering rate; {_SPOOL}',
    DRIVE: f'velocity: 13 km/h = 3.61 m/s, the 2nd-gear travel speed ({_SPEC}, travel speeds per gear: 6.5 / 13 '
           f'/ 25 / 38 km/h): the '
           'gears of the load-and-carry / V-cycle; 3rd and 4th (roading, up to 38 km/h) are not offered to a '
           'policy; acceleration 1.0 m/s^2: conservative choice (0 to 13 km/h in 3.6 s, within the service '
           'brakes\' deceleration); no jerk limit (the driveline is no hydraulic cylinder)',
    'boom': f'position [-0.52, 0.78] rad: boom pivot ~1.9 m high, pivot to hinge pin ~3.0 m, hinge pin from '
            f'~0.4 m (bucket on the ground) to ~4.0 m (hinge pin height at max lift, {_SPEC}); velocity 0.24 '
            f'rad/s = 1.30 rad in the 5.4 s raise time (hydraulic cycle times, {_SPEC}); {_SPOOL}',
    'bucket': f'position [-0.85, 0.80] rad: dump angle ~49° at max height and ~46° rollback ({_SPEC}, dimension '
              f'table); velocity 1.0 rad/s = 1.65 rad in the 1.6 s dump time (hydraulic cycle times, {_SPEC}); '
              f'{_SPOOL}',
}


def _joint(name, lower, upper, vmax, amax, jerk, interface=POSITION, kind='revolute'):
    return JointSpec(name, lower, upper, vmax, kind=kind, interface=interface, max_acceleration=amax,
                     max_jerk=jerk, source=L120H_SOURCES[name])


_G = L120H_GEOMETRY
_GEOM_OPTIONS = {'l_f': _G.l_f, 'l_r': _G.l_r, 'max_articulation': _G.max_articulation, 'frame_id': 'base_link'}

WHEEL_LOADER = register_embodiment(Embodiment(
    name='wheel_loader',
    joints=(
        _joint(ARTICULATION, -_G.max_articulation, _G.max_articulation, 0.35, 0.7, math.inf),
        _joint(DRIVE, -math.inf, math.inf, 13.0 / 3.6, 1.0, math.inf, interface=VELOCITY, kind='prismatic'),
        _joint('boom', -0.52, 0.78, 0.24, 0.5, math.inf),
        _joint('bucket', -0.85, 0.80, 1.0, 2.0, math.inf),
    ),
    # 10 Hz: the rate the policy runs at (as the excavator); the driver interpolates to 50 Hz.
    control_rate_hz=10.0,
    command_topic=f'{NAMESPACE}/boom/cmd',
    state_topic=f'{NAMESPACE}/joint_states',
    limits_source=f'{_SPEC}; {_CAT}; conservative choices where none is published '
                  '(see robot_drivers.machines.wheel_loader.L120H_SOURCES)',
    groups=(
        Group('base', (ARTICULATION, DRIVE), 'float64_per_joint', f'{NAMESPACE}/{{joint}}/cmd', _GEOM_OPTIONS),
        Group('front', ('boom', 'bucket'), 'float64_per_joint', f'{NAMESPACE}/{{joint}}/cmd'),
    ),
    machine_class='wheel_loader',
))

#: rad: boom angle of the carry position, hinge pin ~0.5 m above the ground (boom pivot ~1.9 m high,
#: pivot to hinge pin ~3.0 m: asin((0.5 - 1.9) / 3.0)).
BOOM_CARRY = math.asin((0.5 - 1.9) / 3.0)
#: rad: a boom more than 0.2 rad (hinge pin ~0.6 m) above the carry position counts as raised.
BOOM_RAISED = BOOM_CARRY + 0.2
#: m/s: speed limit with the boom raised: the 1st-gear travel speed, 6.5 km/h (Volvo L120H specifications).
RAISED_SPEED_LIMIT = 6.5 / 3.6


class SlowWithBoomRaised(Interlock):
    """While the measured or the commanded boom angle exceeds :data:`BOOM_RAISED`, the speed target
    is clipped to ±:data:`RAISED_SPEED_LIMIT` (a faster loader decelerates at its limit).

    :meth:`violated`: while the measured boom is raised, a speed output beyond the limit must not grow.
    """

    name = 'slow_with_boom_raised'

    def __init__(self, boom_raised: float = BOOM_RAISED, speed_limit: float = RAISED_SPEED_LIMIT) -> None:
        self.boom_raised = float(boom_raised)
        self.speed_limit = float(speed_limit)

    def apply(self, targets, state, emb):
        i_b, i_v = emb.joint_names.index('boom'), emb.joint_names.index(DRIVE)
        boom = float(np.asarray(state.positions, float)[i_b])
        raised = not (boom <= self.boom_raised) or targets[i_b] > self.boom_raised
        if not raised or abs(targets[i_v]) <= self.speed_limit:
            return targets, None
        out = np.array(targets, dtype=np.float64)
        out[i_v] = math.copysign(self.speed_limit, targets[i_v])
        return out, (f'boom raised (measured {boom:.3f}, target {targets[i_b]:.3f} > {self.boom_raised:.3f} rad): '
                     f'speed target {targets[i_v]:.3f} m/s limited to {self.speed_limit:.3f}')

    def violated(self, state, out, prev_out, emb):
        i_b, i_v = emb.joint_names.index('boom'), emb.joint_names.index(DRIVE)
        if float(np.asarray(state.positions, float)[i_b]) <= self.boom_raised:
            return None
        v, pv = abs(float(out[i_v])), abs(float(prev_out[i_v]))
        if v > self.speed_limit + 1e-9 and v > pv + 1e-9:
            return f'speed output grew {pv:.4f} -> {v:.4f} m/s beyond {self.speed_limit:.3f} with the boom raised'
        return None


WHEEL_LOADER_MACHINE = register_machine(Machine(
    embodiment=WHEEL_LOADER,
    interlocks=(SlowWithBoomRaised(),),
    # 0.5 s as the other machines: five missed 10 Hz policy steps
    safety=SafetyConfig(watchdog_timeout_s=0.5),
    control_rate_hz=50.0,
    sim='robot_drivers.sim.articulated:WheelLoaderSim',
    description='wheel loader (Volvo L120H class): articulation + boom + bucket by position, speed by velocity; '
                'OperaSim-style Float64 per joint (or TwistStamped base); accepts TwistStamped on /cmd_vel; '
                'slow with the boom raised',
    inputs=(ArticulatedTwistInput(L120H_GEOMETRY, '/cmd_vel'),),
))
