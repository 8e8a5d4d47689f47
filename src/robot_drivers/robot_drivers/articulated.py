"""Articulated-steering kinematics (wheel loaders, articulated haulers), ROS-free.

An articulated (centre-pivot, "frame-steered") vehicle is two rigid bodies joined by a vertical
hinge; hydraulic cylinders set the **articulation angle** γ between them. Each body has one axle
(a bogie counts as one axle at the bogie centre) that rolls without lateral slip. Notation:

* front body: axle midpoint ``P_f`` (the reference point, ``base_link``), heading ``θ_f``, ground
  speed ``v`` along ``θ_f`` (the ``drive`` DOF);
* rear body: heading ``θ_r``; articulation ``γ = θ_f - θ_r`` (positive = front body turned left,
  REP-103);
* ``l_f``: front axle to hinge, ``l_r``: hinge to rear axle (m).

No lateral slip at the rear axle gives (Corke & Ridley, "Steering kinematics for a
center-articulated mobile robot", IEEE Trans. Robotics and Automation 17(2):215-218, 2001, eq. 9;
the same model as Nayl, Nikolakopoulos & Gustafsson, "Effect of kinematic parameters on MPC based
on-line motion planning for an articulated vehicle", Robotics and Autonomous Systems 70:16-24,
2015, eq. 1)::

    θ̇_f = (v sin γ + l_r γ̇) / (l_f cos γ + l_r)              (yaw rate of the front body)
    ẋ_f = v cos θ_f,   ẏ_f = v sin θ_f                          (front axle midpoint)
    v_r = v cos γ + l_f θ̇_f sin γ                               (rear axle speed along θ_r)

Derivation: ``P_r = P_f - l_f u(θ_f) - l_r u(θ_r)``; setting the component of ``Ṗ_r`` normal to
``u(θ_r)`` to zero gives ``v sin γ - l_f θ̇_f cos γ - l_r θ̇_r = 0`` with ``θ̇_r = θ̇_f - γ̇``.

Special cases: γ = 0 and γ̇ = 0 drive straight; γ̇ = 0 drives a steady circle, the front axle on
radius ``R_f = (l_f cos γ + l_r) / sin γ`` and the rear axle on ``R_r = (l_f + l_r cos γ) / sin γ``
(equal radii, both axles in the same track, when ``l_f = l_r``: the centre-pivot loader); at
``v = 0`` the front body still yaws by ``l_r γ̇ / (l_f cos γ + l_r)`` ("steering in place").

This module converts between the machine's DOFs (articulation γ and its rate, speed ``v``) and a
``geometry_msgs/Twist`` of the front body (``linear.x = v``, ``angular.z = θ̇_f``):
:func:`yaw_rate` (DOFs -> twist) and :func:`articulation_rate` (twist -> γ̇, its exact inverse at
the current γ), :func:`steady_state_articulation` (the γ that drives a twist's curvature for ever).
:class:`ArticulatedTwistInput` lets a machine driver accept ``TwistStamped`` commands (teleop,
Nav2) and :class:`ArticulatedTwistAdapter` (registry key ``articulated_twist``) publishes the safe
articulation + speed as a ``TwistStamped`` for stacks that take ``cmd_vel``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import numpy as np

from robot_drivers.adapters import OutputAdapter, register_adapter
from robot_drivers.embodiment import Embodiment
from robot_drivers.machine import CommandInput, MachineState

__all__ = ['ArticulatedGeometry', 'yaw_rate', 'articulation_rate', 'rear_speed', 'steady_state_articulation',
           'turning_radii', 'twist_to_targets', 'ArticulatedTwistInput', 'ArticulatedTwistAdapter',
           'ARTICULATION', 'DRIVE']

#: DOF names of the articulated base, shared by the wheel loader and the articulated truck.
ARTICULATION = 'articulation'
DRIVE = 'drive'


@dataclass(frozen=True)
class ArticulatedGeometry:
    """Hinge geometry of an articulated vehicle.

    Attributes:
        l_f: front axle to hinge, m (> 0).
        l_r: hinge to rear axle (bogie centre), m (> 0).
        max_articulation: articulation limit, rad (in (0, π/2)).

    Raises:
        ValueError: a non-finite or non-positive length, a limit outside (0, π/2).
    """

    l_f: float
    l_r: float
    max_articulation: float

    def __post_init__(self) -> None:
        for name in ('l_f', 'l_r'):
            v = float(getattr(self, name))
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f'ArticulatedGeometry.{name} must be a finite length > 0 m, got {v}')
        g = float(self.max_articulation)
        if not (math.isfinite(g) and 0 < g < math.pi / 2):
            raise ValueError(f'ArticulatedGeometry.max_articulation must be in (0, pi/2) rad, got {g}')


def yaw_rate(v: Any, gamma: Any, gamma_dot: Any, geom: ArticulatedGeometry) -> Any:
    """Yaw rate of the front body, rad/s: ``(v sin γ + l_r γ̇) / (l_f cos γ + l_r)`` (module docstring).

    Args:
        v: front axle speed, m/s; gamma: articulation, rad; gamma_dot: articulation rate, rad/s.
            Scalars or broadcastable arrays.

    Returns:
        θ̇_f in rad/s (same shape as the broadcast inputs).
    """
    v, g, gd = np.asarray(v, float), np.asarray(gamma, float), np.asarray(gamma_dot, float)
    out = (v * np.sin(g) + geom.l_r * gd) / (geom.l_f * np.cos(g) + geom.l_r)
    return float(out) if out.ndim == 0 else out


def articulation_rate(v: Any, omega: Any, gamma: Any, geom: ArticulatedGeometry) -> Any:
    """Articulation rate, rad/s, that gives the front body the yaw rate ``omega`` at speed ``v`` and
    articulation ``gamma``: the exact inverse of :func:`yaw_rate`,
    ``γ̇ = (ω (l_f cos γ + l_r) - v sin γ) / l_r``."""
    v, w, g = np.asarray(v, float), np.asarray(omega, float), np.asarray(gamma, float)
    out = (w * (geom.l_f * np.cos(g) + geom.l_r) - v * np.sin(g)) / geom.l_r
    return float(out) if out.ndim == 0 else out


def rear_speed(v: Any, gamma: Any, gamma_dot: Any, geom: ArticulatedGeometry) -> Any:
    """Speed of the rear axle midpoint along the rear heading, m/s: ``v cos γ + l_f θ̇_f sin γ``."""
    w = yaw_rate(v, gamma, gamma_dot, geom)
    out = np.asarray(v, float) * np.cos(gamma) + geom.l_f * np.asarray(w) * np.sin(gamma)
    return float(out) if np.ndim(out) == 0 else out


def turning_radii(gamma: float, geom: ArticulatedGeometry) -> Tuple[float, float]:
    """``(R_f, R_r)``: radii of the front and rear axle midpoints on a steady circle at articulation
    ``gamma`` (γ̇ = 0), m, signed like ``gamma``; ``(inf, inf)`` at γ = 0."""
    s = math.sin(gamma)
    if s == 0.0:
        return math.inf, math.inf
    return (geom.l_f * math.cos(gamma) + geom.l_r) / s, (geom.l_f + geom.l_r * math.cos(gamma)) / s


def steady_state_articulation(v: float, omega: float, geom: ArticulatedGeometry) -> float:
    """The articulation γ* whose steady circle (γ̇ = 0) has the curvature ``κ = omega / v`` of the
    front axle: the root of ``sin γ - κ l_f cos γ = κ l_r`` in (-π/2, π/2), clipped to
    ``±geom.max_articulation``.

    Raises:
        ValueError: ``v`` is (almost) zero (|v| < 1e-6 m/s): a twist without speed has no
            curvature, the articulation is not determined by it; non-finite inputs.
    """
    if not (math.isfinite(v) and math.isfinite(omega)):
        raise ValueError(f'steady_state_articulation: non-finite v={v} / omega={omega}')
    if abs(v) < 1e-6:
        raise ValueError(f'steady_state_articulation: speed {v} m/s is zero, the curvature omega/v is undefined')
    k = omega / v
    # sin(γ) + B cos(γ) = C, B = -k l_f, C = k l_r:  R sin(γ + φ) = C, R = sqrt(1 + B²), φ = atan2(B, 1)
    big_r = math.hypot(1.0, k * geom.l_f)
    phi = math.atan2(-k * geom.l_f, 1.0)
    s = max(-1.0, min(1.0, k * geom.l_r / big_r))
    gamma = math.asin(s) - phi
    return max(-geom.max_articulation, min(geom.max_articulation, gamma))


def twist_to_targets(v: float, omega: float, gamma: float, geom: ArticulatedGeometry, horizon_s: float
                     ) -> Tuple[float, float, float]:
    """A twist of the front body -> ``(articulation target, speed, articulation rate)``.

    The rate is :func:`articulation_rate` at the current articulation ``gamma``; the target is where
    that rate leads in ``horizon_s``, clipped to ``±geom.max_articulation`` (the driver interpolates
    from its last output to it over ``horizon_s``, so the commanded rate is the one the twist asks
    for; on a steady circle the rate is 0 and the target is the current articulation).

    Raises:
        ValueError: non-finite inputs or a horizon <= 0 (the value named).
    """
    for name, val in (('v', v), ('omega', omega), ('gamma', gamma), ('horizon_s', horizon_s)):
        if not math.isfinite(val):
            raise ValueError(f'twist_to_targets: {name} is not finite ({val})')
    if horizon_s <= 0:
        raise ValueError(f'twist_to_targets: horizon_s must be > 0 s, got {horizon_s}')
    rate = articulation_rate(v, omega, gamma, geom)
    target = max(-geom.max_articulation, min(geom.max_articulation, gamma + rate * horizon_s))
    return target, float(v), rate


_LATERAL_FIELDS = (('linear', 'y'), ('linear', 'z'), ('angular', 'x'), ('angular', 'y'))


def _twist_values(msg: Any, source: str) -> Tuple[float, float]:
    """``(linear.x, angular.z)`` of a Twist / TwistStamped; ValueError naming a bad field."""
    tw = getattr(msg, 'twist', msg)
    try:
        v = float(tw.linear.x)
        w = float(tw.angular.z)
        others = {f'{a}.{b}': float(getattr(getattr(tw, a), b)) for a, b in _LATERAL_FIELDS}
    except (AttributeError, TypeError, ValueError) as exc:
        raise ValueError(f'{source}: not a geometry_msgs/Twist(Stamped): {exc}') from None
    for name, val in (('linear.x', v), ('angular.z', w), *others.items()):
        if not math.isfinite(val):
            raise ValueError(f'{source}: twist.{name} is not finite ({val})')
    bad = {k: val for k, val in others.items() if abs(val) > 1e-9}
    if bad:
        raise ValueError(f'{source}: an articulated vehicle cannot follow twist components {bad} '
                         '(only linear.x and angular.z)')
    return v, w


class ArticulatedTwistInput(CommandInput):
    """``geometry_msgs/TwistStamped`` commands for an articulated machine (teleop, Nav2's ``cmd_vel``).

    ``twist.linear.x`` is the front axle speed (m/s, the ``drive`` DOF), ``twist.angular.z`` the
    front body's yaw rate (rad/s), converted by :func:`twist_to_targets` at the measured
    articulation into an articulation target ``horizon_s`` ahead. Every other DOF (boom, bucket,
    dump body) holds its measured position. The result goes through
    :meth:`~robot_drivers.machine.MachineDriverCore.on_trajectory`, so the machine's limits,
    interlocks and watchdog apply (a twist stream that stops is a stopped command stream).

    Args:
        geom: the machine's hinge geometry.
        topic: default topic (the node's ``inputs.cmd_vel`` parameter overrides it).
        horizon_s: s, how far ahead the articulation target lies; also ``time_from_start`` of the
            command (0.1 s = one policy period at 10 Hz; teleop publishes at >= 10 Hz).
    """

    name = 'cmd_vel'
    msg_type = 'geometry_msgs/msg/TwistStamped'

    def __init__(self, geom: ArticulatedGeometry, topic: str, *, horizon_s: float = 0.1) -> None:
        if not (math.isfinite(horizon_s) and horizon_s > 0):
            raise ValueError(f'ArticulatedTwistInput: horizon_s must be > 0 s, got {horizon_s}')
        self.geom = geom
        self.topic = topic
        self.horizon_s = float(horizon_s)

    def to_command(self, msg: Any, state: Optional[MachineState], emb: Embodiment
                   ) -> Tuple[List[str], Optional[np.ndarray], Optional[np.ndarray], np.ndarray]:
        """``TwistStamped`` -> ``(names, positions (1, J), velocities (1, J), time_from_start (1,))``.

        Raises:
            ValueError: no measured state yet, a non-finite measured position of a position DOF
                (the DOF named), a non-finite twist or one with lateral / vertical / roll / pitch
                components (the field named).
        """
        source = self.topic or self.name
        v, w = _twist_values(msg, source)
        if state is None:
            raise ValueError(f'{source}: no joint state received yet; a twist needs the measured {ARTICULATION}')
        names = emb.joint_names
        pos = np.asarray(state.positions, dtype=np.float64).reshape(-1)
        if pos.shape[0] != len(names):
            raise ValueError(f'{source}: state has {pos.shape[0]} positions for {len(names)} DOFs')
        is_vel = emb.is_velocity
        bad = [n for n, p, iv in zip(names, pos, is_vel) if not iv and not math.isfinite(p)]
        if bad:
            raise ValueError(f'{source}: measured positions of {bad} are not finite; cannot hold them')
        i_art, i_drv = names.index(ARTICULATION), names.index(DRIVE)
        target, speed, _ = twist_to_targets(v, w, float(pos[i_art]), self.geom, self.horizon_s)
        positions = np.where(is_vel, np.nan, pos)
        velocities = np.where(is_vel, 0.0, np.nan)
        positions[i_art] = target
        velocities[i_drv] = speed
        return list(names), positions[None], velocities[None], np.array([self.horizon_s])


@register_adapter('articulated_twist')
class ArticulatedTwistAdapter(OutputAdapter):
    """The articulated base (``articulation`` position, ``drive`` velocity) as a
    ``geometry_msgs/TwistStamped`` of the front body: ``linear.x = v``, ``angular.z`` =
    :func:`yaw_rate` at the safe articulation and its rate (the difference of consecutive
    setpoints), for stacks that steer through ``cmd_vel`` (OperaSim's machines take
    ``/<ns>/cmd_vel``).

    Group joints: exactly ``('articulation', 'drive')``. Options: ``l_f``, ``l_r``,
    ``max_articulation`` (the geometry, required), ``frame_id`` (default ``base_link``).

    :meth:`decode` reads a recorded twist back into ``{'drive': v, 'articulation': γ*}`` with γ* the
    :func:`steady_state_articulation`; it raises ValueError for a twist with zero speed (its
    articulation is not observable), so record the per-joint topics for training.

    Raises:
        ValueError: (construction) other joints or missing geometry options.
    """

    msg_type = 'geometry_msgs/msg/TwistStamped'

    def __init__(self, group, embodiment, topic):
        super().__init__(group, embodiment, topic)
        if self.joints != (ARTICULATION, DRIVE):
            raise ValueError(f'articulated_twist group {group.name!r}: joints must be '
                             f'{(ARTICULATION, DRIVE)}, got {self.joints}')
        try:
            self.geom = ArticulatedGeometry(float(self.options['l_f']), float(self.options['l_r']),
                                            float(self.options['max_articulation']))
        except KeyError as exc:
            raise ValueError(f'articulated_twist group {group.name!r}: option {exc} is missing') from None
        self.frame_id = str(self.options.get('frame_id', 'base_link'))
        self._last: Optional[Tuple[float, float]] = None      # (time, articulation) of the last setpoint

    def encode(self, setpoint, state, now, types):
        from robot_drivers import conversions as conv
        gamma, v = (float(x) for x in self._check(setpoint))
        rate = 0.0
        if self._last is not None and now > self._last[0]:
            rate = (gamma - self._last[1]) / (now - self._last[0])
        self._last = (float(now), gamma)
        w = yaw_rate(v, gamma, rate, self.geom)
        vec = types.lookup('geometry_msgs/msg/Vector3')
        twist = types.lookup('geometry_msgs/msg/Twist')(linear=vec(x=v, y=0.0, z=0.0), angular=vec(x=0.0, y=0.0, z=w))
        msg = types.lookup(self.msg_type)(header=conv.header(max(float(now), 0.0), self.frame_id, types), twist=twist)
        return [(self.topic, msg)]

    def decode(self, msg, *, source=''):
        v, w = _twist_values(msg, source or self.topic)
        return {DRIVE: v, ARTICULATION: steady_state_articulation(v, w, self.geom)}

