"""Articulated (dump) truck / hauler (Volvo A40G class, 39 t payload, 6x6, articulated steering).

Degrees of freedom (action-vector order):

=============  =========  ==================================  =====================================================
DOF            interface  position limits                     velocity / acceleration / jerk
=============  =========  ==================================  =====================================================
articulation   position   ±0.785 rad (±45°)                   0.3 rad/s / 0.5 rad/s² / not limited
drive          velocity   none (no position sensor)           15.83 m/s (57 km/h) / 1.0 m/s² / not limited
dump_body      position   [0, 1.222] rad (0..70°)             0.102 rad/s / 0.2 rad/s² / not limited
=============  =========  ==================================  =====================================================

* ``articulation``: hinge angle between tractor and trailer unit (positive: tractor turned left),
  by position; kinematics in :mod:`robot_drivers.articulated` (front axle to hinge ``l_f``, hinge to
  bogie centre ``l_r``).
* ``drive``: ground speed of the front axle (m/s), by velocity.
* ``dump_body``: body (bed) tip angle, by position: OperaSim names the bed command of its dump truck
  ``/(ns)/vessel/cmd``, ``std_msgs/Float64``, a **tilt angle in rad** (pwri-opera/OperaSim-PhysX-doc
  ``ros-topics-and-messages.rst``: "ダンプトラックの荷台の傾斜角指令値", the dump truck bed's tilt angle
  command; OperaSim-PhysX ``Assets/Scripts/VesselController.cs`` sets it as the joint drive target),
  so the ``dump`` group publishes exactly that.

Limits and their sources: :data:`A40G_SOURCES`.

**Interlocks** (:class:`DumpOnlyWhenStopped`, :class:`NoDriveWithBodyRaised`, applied in that order):

* ``dump_only_when_stopped``: while the measured ground speed exceeds :data:`STOPPED_SPEED`
  (0.2 m/s), a body target above the measured body angle or above the body-down threshold
  :data:`BODY_DOWN` (0.05 rad, about 3°) becomes the rest position (0 rad): the body cannot be
  raised, and a body that is up is brought down (a target that lowers the body is left alone).
* ``no_drive_with_body_raised``: while the measured body angle or the body target exceeds
  :data:`BODY_DOWN`, the speed target is 0 (the truck brakes at its deceleration limit).

Together: a truck that moves cannot raise its body (driving wins over raising); a stopped truck
asked to raise and to drive raises and stays (raising wins over driving); a raised body blocks
driving until it is down. Both rules change targets only, so the velocity and acceleration limits
hold on the way (Volvo's haulers similarly apply the dump brake and neutral when the body lever is
used, and limit speed with the body up).

Native outputs (groups):

* ``base`` (articulation, drive): OperaSim-style ``std_msgs/Float64`` per DOF,
  ``/a40g/articulation/cmd`` (rad) and ``/a40g/drive/cmd`` (m/s); or a ``TwistStamped``
  (``output_adapters.base: articulated_twist``).
* ``dump`` (dump_body): ``std_msgs/Float64`` on ``/a40g/vessel/cmd`` (tilt angle, rad: OperaSim).

Second command input: ``geometry_msgs/TwistStamped`` on ``/cmd_vel`` (the body holds its measured
angle meanwhile).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

from robot_drivers.articulated import ARTICULATION, DRIVE, ArticulatedGeometry, ArticulatedTwistInput
from robot_drivers.embodiment import POSITION, VELOCITY, Embodiment, Group, JointSpec, register_embodiment
from robot_drivers.machine import Interlock, Machine, MachineState, register_machine
from robot_drivers.safety import SafetyConfig

__all__ = ['ARTICULATED_TRUCK', 'ARTICULATED_TRUCK_MACHINE', 'A40G_GEOMETRY', 'A40G_SOURCES', 'NAMESPACE', 'JOINTS',
           'DUMP_BODY', 'STOPPED_SPEED', 'BODY_DOWN', 'SPEED_EPS', 'DumpOnlyWhenStopped', 'NoDriveWithBodyRaised']

NAMESPACE = '/a40g'
DUMP_BODY = 'dump_body'
JOINTS = (ARTICULATION, DRIVE, DUMP_BODY)
#: m/s: below this measured ground speed the truck counts as stopped (a creeping truck is not).
STOPPED_SPEED = 0.2
#: rad: body angles at or below this count as "down" (the body-down sensor's band, about 3°).
BODY_DOWN = 0.05
#: m/s: speed targets this small are zero (interpolation round-off), not a request to drive.
SPEED_EPS = 1e-6

_SPEC = 'Volvo A40G articulated hauler product brochure, Specifications (Volvo Construction Equipment)'
_SPOOL = ('acceleration: full rate in about 0.5 s (conservative choice, no published value); jerk: not limited '
          '(the shared limiter\'s jerk smoothing does not settle a position DOF on a constant target)')

#: Hinge geometry: front axle to hinge ~1.9 m, hinge to bogie centre ~3.6 m (approximate, read from
#: the A40G dimension drawing), articulation ±45°.
A40G_GEOMETRY = ArticulatedGeometry(l_f=1.9, l_r=3.6, max_articulation=math.radians(45.0))

A40G_SOURCES = {
    ARTICULATION: f'position: articulation ±45° ({_SPEC}); velocity 0.3 rad/s = lock to lock (90°) in 5.2 s: '
                  f'conservative choice, no published steering rate; {_SPOOL}',
    DRIVE: f'velocity: maximum speed 57 km/h = 15.83 m/s ({_SPEC}); acceleration 1.0 m/s^2: conservative choice '
           '(a loaded hauler takes > 15 s to top speed; braking at 1 m/s^2 is well within the service brakes); '
           'no jerk limit (driveline; the no_drive_with_body_raised rule needs the speed to fall at once)',
    DUMP_BODY: f'position [0, 70°]: tipping angle 70° ({_SPEC}); velocity 0.102 rad/s = 70° in the 12 s tipping '
               f'time ({_SPEC}, lowering takes 10 s: the raise rate bounds both); acceleration 0.2 rad/s^2: full '
               'rate in 0.5 s (conservative choice); no jerk limit, so the dump_only_when_stopped rule can start '
               'decelerating the body at once',
}


def _joint(name, lower, upper, vmax, amax, jerk, interface=POSITION, kind='revolute'):
    return JointSpec(name, lower, upper, vmax, kind=kind, interface=interface, max_acceleration=amax,
                     max_jerk=jerk, source=A40G_SOURCES[name])


_G = A40G_GEOMETRY
_GEOM_OPTIONS = {'l_f': _G.l_f, 'l_r': _G.l_r, 'max_articulation': _G.max_articulation, 'frame_id': 'base_link'}

ARTICULATED_TRUCK = register_embodiment(Embodiment(
    name='articulated_truck',
    joints=(
        _joint(ARTICULATION, -_G.max_articulation, _G.max_articulation, 0.3, 0.5, math.inf),
        _joint(DRIVE, -math.inf, math.inf, 57.0 / 3.6, 1.0, math.inf, interface=VELOCITY, kind='prismatic'),
        _joint(DUMP_BODY, 0.0, math.radians(70.0), math.radians(70.0) / 12.0, 0.2, math.inf),
    ),
    control_rate_hz=10.0,
    command_topic=f'{NAMESPACE}/vessel/cmd',
    state_topic=f'{NAMESPACE}/joint_states',
    limits_source=f'{_SPEC}; conservative choices where none is published '
                  '(see robot_drivers.machines.articulated_truck.A40G_SOURCES)',
    groups=(
        Group('base', (ARTICULATION, DRIVE), 'float64_per_joint', f'{NAMESPACE}/{{joint}}/cmd', _GEOM_OPTIONS),
        Group('dump', (DUMP_BODY,), 'float64_per_joint', f'{NAMESPACE}/{{joint}}/cmd',
              {'names': {DUMP_BODY: 'vessel'}}),
    ),
    machine_class='articulated_truck',
))


def _index(emb, name):
    return emb.joint_names.index(name)


def _measured_speed(state: MachineState, emb) -> float:
    """|ground speed|, m/s: the drive DOF's measured velocity, else ``extras['ground_speed']``; NaN
    counts as moving (unknown speed must not allow raising)."""
    v = float(np.asarray(state.velocities, float)[_index(emb, DRIVE)])
    if not math.isfinite(v):
        v = float((state.extras or {}).get('ground_speed', math.nan))
    return abs(v) if math.isfinite(v) else math.inf


class DumpOnlyWhenStopped(Interlock):
    """While the truck moves (|measured speed| > :data:`STOPPED_SPEED`, or unknown), a body target
    that would raise the body (above the measured angle) or hold it up (above :data:`BODY_DOWN`)
    becomes the rest position (the ``dump_body`` lower limit, 0 rad): no raising, a raised body
    comes down. Targets that lower the body within the body-down band are left alone, so the tail
    of a lowering command does not trip the rule when the truck starts to move; the rest position
    rather than the band's edge, so that a body held at that edge cannot flip
    :class:`NoDriveWithBodyRaised` on and off.

    :meth:`violated`: while moving, the body output must not rise above ``max(previous output,
    BODY_DOWN)`` unless it is decelerating (its upward step smaller than the step before: the
    acceleration limit lets a body that was rising when the truck began to move stop only
    gradually). It remembers the last step it saw; a call whose ``prev_out`` is not the last ``out``
    it saw has no previous step, and any such rise counts.
    """

    name = 'dump_only_when_stopped'

    def __init__(self, stopped_speed: float = STOPPED_SPEED, body_down: float = BODY_DOWN) -> None:
        self.stopped_speed = float(stopped_speed)
        self.body_down = float(body_down)
        self._last: Optional[Tuple[float, float]] = None      # (out, step) of the last violated() call

    def apply(self, targets, state, emb):
        speed = _measured_speed(state, emb)
        if speed <= self.stopped_speed:
            return targets, None
        i = _index(emb, DUMP_BODY)
        rest = float(emb.lower[i])
        measured = float(np.asarray(state.positions, float)[i])
        lowering = targets[i] <= self.body_down and targets[i] <= measured      # NaN measured: not lowering
        if targets[i] <= rest or lowering:
            return targets, None
        out = np.array(targets, dtype=np.float64)
        out[i] = rest
        return out, (f'truck moving at {speed:.2f} m/s (> {self.stopped_speed:g}): body target '
                     f'{targets[i]:.3f} rad set to the rest position {rest:g} rad')

    def violated(self, state, out, prev_out, emb):
        i = _index(emb, DUMP_BODY)
        o, p = float(out[i]), float(prev_out[i])
        step = o - p
        last, self._last = self._last, (o, step)
        prev_step = last[1] if last is not None and last[0] == p else None
        if _measured_speed(state, emb) <= self.stopped_speed:
            return None
        if o <= max(p, self.body_down) + 1e-9:
            return None
        if prev_step is not None and step < prev_step - 1e-12:
            return None                              # decelerating: stopping at the acceleration limit
        return (f'body output rose {p:.6f} -> {o:.6f} rad (previous step '
                f'{"unknown" if prev_step is None else f"{prev_step:.3g}"}) while moving')


class NoDriveWithBodyRaised(Interlock):
    """While the measured body angle or the body target exceeds :data:`BODY_DOWN`, the speed target
    is 0 (the truck brakes at its deceleration limit, then stays).

    :meth:`violated`: while the measured body is up, |speed output| must not grow.
    """

    name = 'no_drive_with_body_raised'

    def __init__(self, body_down: float = BODY_DOWN) -> None:
        self.body_down = float(body_down)

    def apply(self, targets, state, emb):
        i_d, i_v = _index(emb, DUMP_BODY), _index(emb, DRIVE)
        measured = float(np.asarray(state.positions, float)[i_d])
        raised = not math.isfinite(measured) or measured > self.body_down or targets[i_d] > self.body_down
        if not raised or targets[i_v] == 0.0:
            return targets, None
        out = np.array(targets, dtype=np.float64)
        out[i_v] = 0.0
        if abs(targets[i_v]) <= SPEED_EPS:
            return out, None        # the numerical tail of a stop (the driver interpolates from its last output)
        why = (f'body at {measured:.3f} rad' if not (measured <= self.body_down)
               else f'body target {targets[i_d]:.3f} rad')
        return out, f'{why} (> {self.body_down:g}): speed target {targets[i_v]:.3f} m/s set to 0'

    def violated(self, state, out, prev_out, emb):
        i_d, i_v = _index(emb, DUMP_BODY), _index(emb, DRIVE)
        measured = float(np.asarray(state.positions, float)[i_d])
        if measured <= self.body_down:
            return None
        if abs(float(out[i_v])) > abs(float(prev_out[i_v])) + 1e-9:
            return f'speed output grew {prev_out[i_v]:.6f} -> {out[i_v]:.6f} m/s with the body at {measured:.3f} rad'
        return None


ARTICULATED_TRUCK_MACHINE = register_machine(Machine(
    embodiment=ARTICULATED_TRUCK,
    interlocks=(DumpOnlyWhenStopped(), NoDriveWithBodyRaised()),
    safety=SafetyConfig(watchdog_timeout_s=0.5),
    control_rate_hz=50.0,
    sim='robot_drivers.sim.articulated:ArticulatedTruckSim',
    description='articulated dump truck (Volvo A40G class): articulation + dump body by position, speed by '
                'velocity; OperaSim-style Float64 (/a40g/vessel/cmd = body tilt, rad); dump only when stopped, '
                'no drive with the body raised',
    inputs=(ArticulatedTwistInput(A40G_GEOMETRY, '/cmd_vel'),),
))
