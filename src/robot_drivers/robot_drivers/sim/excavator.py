"""MuJoCo ZX200 excavator with two soil piles, a dump spot and a camera; the ``dig`` task and its expert.

No maintained MuJoCo/Gazebo model of a 20 t excavator exists, so the machine is drawn here from
boxes, capsules and hinges with the kinematics of the vendor description pwri-opera/zx200_ros2
``zx200_description/urdf/zx200.xacro``: the same joint origins, pitch offsets and axes, so a joint
angle means here what it means on the machine (``boom`` 0 = boom pin line horizontal, positive =
down; ``arm`` and ``bucket`` positive = crowd / curl). Boom pin to arm pin 5.65 m, arm pin to bucket
pin 2.89 m, bucket pin to tip 1.56 m (the URDF's ``bucket_end_link``); crawlers 3.9 m x 0.6 m at
a 2.2 m gauge (2.8 m wide) and a 2.7 m x 2.5 m upper structure, approximately the Hitachi ZX200-6's
outer dimensions (the URDF has meshes only). The reach this gives (9.8 m at ground level from the
swing axis) is close to the ZX200-6 spec sheet's maximum digging reach of 9.92 m.

Dynamics are kinematic with a **first-order hydraulic lag**: each joint's velocity follows the
commanded velocity as ``dv/dt = (v_cmd - v) / tau`` (``tau`` = 0.15 s front, 0.3 s tracks), then
integrates to the angle, with mechanical stops at the position limits (cylinder end of stroke).
tau is a modelling choice: a pilot-operated spool valve plus the pressure build-up in the cylinder
lines of a 20 t machine respond within a few tenths of a second, so 0.15 s sits in that range; the
tracks (heavier travel motors, the whole machine's inertia) take twice as long. The velocity is
also saturated at the DOF's ``max_velocity`` (the pump's flow limit). The tracks move the base
kinematically as a skid-steer: ``v = (v_l + v_r)/2``, ``yaw_rate = (v_r - v_l)/gauge``.

Scene (machine frame at reset: x forward, y left, z up, REP-103): two soil piles (ellipsoid domes
of radius 1.6 m, height 1.2 m), one on the machine's **left** (+y) and one on its **right** (-y), at
a random swing angle of 55-95 deg and a random distance of 6.0-7.5 m; a dump spot (a yellow pad)
in front at 6.5 m. The RGB camera ``overview`` rides on the undercarriage behind and above the cab
looking forward, so the left pile is always on the image's left; ``cab`` looks along the boom.

:class:`ExcavatorSim` is a plain hardware backend (``read/write/step/render/reset``);
:class:`ExcavatorDigTask` is the language-conditioned task ``dig`` with a scripted expert.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from robot_drivers.machine import MachineState
from robot_drivers.machines.excavator import EXCAVATOR_ZX200, TRACK_GAUGE_M

__all__ = ['ExcavatorSimConfig', 'ExcavatorSim', 'ExcavatorDigTask', 'TASKS', 'PILES', 'front_fk', 'front_ik',
           'LINKS']

#: Pile names: the words of the instructions.
PILES = ('left', 'right')

# Kinematics of the front, from zx200.xacro (pwri-opera/zx200_ros2): (x, z) offset of each joint in
# its parent link frame (the small y offsets of the mesh-aligned frames are dropped) and the pitch
# of the joint frame, rad. Rotation about +y by a turns x toward -z.
LINKS = {
    'swing': (0.10787, 1.1206, 0.0),                          # track_link -> body_link (z axis)
    'boom': (0.22767, 0.83669, math.radians(32.0357)),        # body_link -> boom_link
    'arm': (4.7878, 2.9959, math.radians(16.9707)),           # boom_link -> arm_link
    'bucket': (1.8954, 2.1809, math.radians(-9.20083)),       # arm_link -> bucket_link
    'tip': (1.2, 1.0, 0.0),                                   # bucket_link -> bucket_end_link
}


def _rot(a, x, z):
    """Rotate the (x, z) vector by pitch ``a`` about +y (x toward -z)."""
    c, s = np.cos(a), np.sin(a)
    return c * x + s * z, -s * x + c * z


def front_fk(boom, arm, bucket):
    """Bucket tip in the swing (upper-structure) frame, from the URDF chain.

    Args:
        boom, arm, bucket: joint angles, rad (scalars or broadcastable arrays).

    Returns:
        ``(r, z)``: reach forward of the swing axis and height above the ground, m (arrays of
        the broadcast shape). The swing axis is ``LINKS['swing'][0]`` = 0.108 m ahead of the
        undercarriage centre, the boom pin 0.84 m above the swing bearing at 1.12 m.
    """
    x, z = LINKS['boom'][0], LINKS['swing'][1] + LINKS['boom'][1]
    a = LINKS['boom'][2] + np.asarray(boom, dtype=np.float64)
    for name, q in (('arm', arm), ('bucket', bucket), ('tip', None)):
        dx, dz = _rot(a, LINKS[name][0], LINKS[name][1])
        x, z = x + dx, z + dz
        if q is not None:
            a = a + LINKS[name][2] + np.asarray(q, dtype=np.float64)
    return x, z


def front_ik(r: float, z: float, bucket_abs: float, limits: Tuple[np.ndarray, np.ndarray],
             *, n: int = 121) -> Tuple[np.ndarray, float]:
    """Boom/arm/bucket angles that put the tip at reach ``r`` and height ``z`` (swing frame).

    A grid search over boom and arm within the limits, the bucket set so that the total pitch of
    the bucket link is ``bucket_abs`` (rad, the sum of all pitch angles along the chain), then
    clipped to its limits. Returns ``(angles (3,), error m)``.
    """
    lo, hi = limits
    b = np.linspace(lo[0], hi[0], n)[:, None]
    a = np.linspace(lo[1], hi[1], n)[None, :]
    base = LINKS['boom'][2] + LINKS['arm'][2] + LINKS['bucket'][2]
    k = np.clip(bucket_abs - base - b - a, lo[2], hi[2])
    x, zz = front_fk(b, a, k)
    err = np.hypot(x - r, zz - z)
    i, j = np.unravel_index(int(np.argmin(err)), err.shape)
    return np.array([b[i, 0], a[0, j], k[i, j]]), float(err[i, j])


@dataclass
class ExcavatorSimConfig:
    """Scene and dynamics parameters.

    image_size: default camera resolution (square), px.
    physics_dt: integration step, s (``step(duration)`` takes ``round(duration / physics_dt)`` steps).
    tau_front / tau_tracks: first-order hydraulic lag of the front joints and the tracks, s
        (module docstring).
    pile_radius / pile_height: the soil piles' dome, m.
    pile_distance: range of the piles' distance from the swing axis, m.
    pile_angle_deg: range of the piles' swing angle (left +, right -), degrees.
    dump_distance / dump_radius: dump pad centre in front of the swing axis and its radius, m.
    initial_swing: half-range of the random initial swing angle, rad.
    """

    image_size: int = 96
    physics_dt: float = 0.02
    tau_front: float = 0.15
    tau_tracks: float = 0.3
    pile_radius: float = 1.6
    pile_height: float = 1.2
    pile_distance: Tuple[float, float] = (6.0, 7.5)
    pile_angle_deg: Tuple[float, float] = (55.0, 95.0)
    dump_distance: float = 6.5
    dump_radius: float = 1.6
    initial_swing: float = 0.25

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ValueError(f'image_size must be >= 16 px, got {self.image_size}')
        for name in ('physics_dt', 'tau_front', 'tau_tracks', 'pile_radius', 'pile_height', 'dump_radius'):
            if not getattr(self, name) > 0:
                raise ValueError(f'{name} must be > 0, got {getattr(self, name)}')


_SOIL = '0.55 0.38 0.22 1'


def _scene_xml(cfg: ExcavatorSimConfig) -> str:
    s = cfg.image_size
    L = LINKS
    sw, bm, am, bk, tp = L['swing'], L['boom'], L['arm'], L['bucket'], L['tip']

    def quat(a):   # pitch about +y
        return f'{math.cos(a / 2):.9f} 0 {math.sin(a / 2):.9f} 0'

    return f"""
<mujoco model="zx200_dig">
  <compiler angle="radian"/>
  <option timestep="{cfg.physics_dt}" gravity="0 0 0"/>
  <visual>
    <quality shadowsize="0"/>
    <global offwidth="{max(s, 320)}" offheight="{max(s, 240)}"/>
    <headlight ambient="0.5 0.5 0.5" diffuse="0.5 0.5 0.5" specular="0 0 0"/>
  </visual>
  <worldbody>
    <light name="sun" pos="0 0 30" dir="0 0 -1" directional="true" castshadow="false" diffuse="0.4 0.4 0.4"/>
    <geom name="ground" type="plane" size="40 40 0.1" rgba="0.42 0.50 0.36 1" contype="0" conaffinity="0"/>
    <geom name="pile_left" type="ellipsoid" size="{cfg.pile_radius} {cfg.pile_radius} {cfg.pile_height}"
          pos="0 7 0" rgba="{_SOIL}" contype="0" conaffinity="0"/>
    <geom name="pile_right" type="ellipsoid" size="{cfg.pile_radius} {cfg.pile_radius} {cfg.pile_height}"
          pos="0 -7 0" rgba="{_SOIL}" contype="0" conaffinity="0"/>
    <geom name="dump" type="cylinder" size="{cfg.dump_radius} 0.03" pos="{cfg.dump_distance} 0 0.03"
          rgba="0.95 0.80 0.10 1" contype="0" conaffinity="0"/>
    <body name="track" pos="0 0 0">
      <joint name="base_x" type="slide" axis="1 0 0"/>
      <joint name="base_y" type="slide" axis="0 1 0"/>
      <joint name="base_yaw" type="hinge" axis="0 0 1"/>
      <geom name="track_l" type="box" size="1.95 0.3 0.45" pos="0 {TRACK_GAUGE_M / 2} 0.45" rgba="0.15 0.15 0.15 1"
            contype="0" conaffinity="0"/>
      <geom name="track_r" type="box" size="1.95 0.3 0.45" pos="0 {-TRACK_GAUGE_M / 2} 0.45" rgba="0.15 0.15 0.15 1"
            contype="0" conaffinity="0"/>
      <geom name="centre_frame" type="box" size="1.0 0.8 0.3" pos="0 0 0.6" rgba="0.2 0.2 0.2 1"
            contype="0" conaffinity="0"/>
      <camera name="overview" mode="fixed" pos="-6 0 13" xyaxes="0 -1 0 0.819 0 0.574" fovy="66"/>
      <body name="upper" pos="{sw[0]} 0 {sw[1]}">
        <joint name="swing" type="hinge" axis="0 0 1"/>
        <geom name="house" type="box" size="1.35 1.25 0.45" pos="-0.9 -0.1 0.45" rgba="0.95 0.55 0.05 1"
              contype="0" conaffinity="0"/>
        <geom name="counterweight" type="box" size="0.35 1.25 0.4" pos="-2.4 -0.1 0.4" rgba="0.25 0.25 0.25 1"
              contype="0" conaffinity="0"/>
        <geom name="cab" type="box" size="0.8 0.5 0.8" pos="0.5 0.75 0.8" rgba="0.95 0.55 0.05 1"
              contype="0" conaffinity="0"/>
        <camera name="cab" mode="fixed" pos="0.9 0.75 2.2" xyaxes="0 -1 0 0.45 0 0.89" fovy="75"/>
        <body name="boom_link" pos="{bm[0]} 0 {bm[1]}" quat="{quat(bm[2])}">
          <joint name="boom" type="hinge" axis="0 1 0"/>
          <geom name="boom" type="capsule" fromto="0 0 0 {am[0]} 0 {am[1]}" size="0.28" rgba="0.95 0.55 0.05 1"
                contype="0" conaffinity="0"/>
          <body name="arm_link" pos="{am[0]} 0 {am[1]}" quat="{quat(am[2])}">
            <joint name="arm" type="hinge" axis="0 1 0"/>
            <geom name="arm" type="capsule" fromto="0 0 0 {bk[0]} 0 {bk[1]}" size="0.2" rgba="0.95 0.55 0.05 1"
                  contype="0" conaffinity="0"/>
            <body name="bucket_link" pos="{bk[0]} 0 {bk[1]}" quat="{quat(bk[2])}">
              <joint name="bucket" type="hinge" axis="0 1 0"/>
              <geom name="bucket" type="box" size="0.78 0.5 0.22" pos="{tp[0] / 2} 0 {tp[1] / 2}"
                    quat="{quat(-math.atan2(tp[1], tp[0]))}" rgba="0.3 0.3 0.3 1" contype="0" conaffinity="0"/>
              <geom name="load" type="box" size="0.5 0.45 0.3" pos="{tp[0] / 2 - 0.25} 0 {tp[1] / 2 + 0.25}"
                    rgba="{_SOIL[:-1]}0" contype="0" conaffinity="0"/>
              <site name="tip" pos="{tp[0]} 0 {tp[1]}" size="0.08"/>
            </body>
          </body>
        </body>
      </body>
    </body>
  </worldbody>
</mujoco>
"""


class ExcavatorSim:
    """The ZX200 dig scene as a hardware backend (velocity interface).

    ``write(setpoint (6,))``: commanded velocities in embodiment order (rad/s; m/s for the tracks);
    ``step(duration)``; ``read()`` -> :class:`~robot_drivers.machine.MachineState` (positions of the
    front joints, NaN for the tracks (no position sensor, as on COM3); lagged velocities; ``stamp``
    = sim time; ``extras['base_pose']`` = ``(x, y, yaw)`` of the undercarriage);
    ``render(camera, size)`` -> RGB ``uint8 (size, size, 3)``.

    Ground truth for tasks: :meth:`tip_position`, :attr:`piles` (``{name: (x, y)}`` centres, world),
    :attr:`entered` (``{pile: sim time the tip first went into it, or None}``), :attr:`first_pile`,
    :attr:`dumped_at` (sim time the loaded bucket's tip first came over the dump pad after a dig).

    Args:
        config: :class:`ExcavatorSimConfig`.
        seed: the first :meth:`reset`'s seed.
    """

    def __init__(self, config: Optional[ExcavatorSimConfig] = None, seed: int = 0) -> None:
        import mujoco  # imported here so the rest of robot_drivers works without MuJoCo

        self._mj = mujoco
        self.cfg = config or ExcavatorSimConfig()
        self.embodiment = EXCAVATOR_ZX200
        self.model = mujoco.MjModel.from_xml_string(_scene_xml(self.cfg))
        self.data = mujoco.MjData(self.model)
        m = self.model
        self._qadr = {n: int(m.joint(n).qposadr[0]) for n in ('base_x', 'base_y', 'base_yaw', 'swing', 'boom',
                                                                'arm', 'bucket')}
        self._tip = m.site('tip').id
        self._pile_geom = {p: m.geom(f'pile_{p}').id for p in PILES}
        self._dump_geom = m.geom('dump').id
        self._load_geom = m.geom('load').id
        self._renderers: Dict[int, object] = {}
        emb = self.embodiment
        self.lower, self.upper, self.vmax = emb.lower, emb.upper, emb.max_velocity
        self._tau = np.array([self.cfg.tau_front] * 4 + [self.cfg.tau_tracks] * 2)
        self.reset(seed)

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int) -> None:
        """New episode: random pile places and initial front pose from ``seed``; machine at the origin,
        at rest, bucket empty."""
        rng = np.random.default_rng(int(seed))
        cfg = self.cfg
        self.rng = rng
        self.time = 0.0
        while True:   # a carry pose with the tip at least 2 m up (clear of the piles)
            front = np.array([rng.uniform(-0.9, -0.45), rng.uniform(1.4, 2.2), rng.uniform(0.8, 1.8)])
            if front_fk(*front)[1] >= 2.0:
                break
        swing = rng.uniform(-cfg.initial_swing, cfg.initial_swing)
        self.q = np.concatenate([[swing], front])                                   # swing, boom, arm, bucket
        self.v = np.zeros(6)
        self.v_cmd = np.zeros(6)
        self.base = np.zeros(3)                                                     # x, y, yaw
        self.piles: Dict[str, np.ndarray] = {}
        for name, sign in (('left', 1.0), ('right', -1.0)):
            ang = sign * math.radians(rng.uniform(*cfg.pile_angle_deg))
            dist = rng.uniform(*cfg.pile_distance)
            centre = np.array([LINKS['swing'][0] + dist * math.cos(ang), dist * math.sin(ang)])
            self.piles[name] = centre
            self.model.geom_pos[self._pile_geom[name]] = [centre[0], centre[1], 0.0]
        self.dump = np.array([LINKS['swing'][0] + cfg.dump_distance, 0.0])
        self.model.geom_pos[self._dump_geom] = [self.dump[0], self.dump[1], 0.03]
        self.entered: Dict[str, Optional[float]] = {p: None for p in PILES}
        self.first_pile: Optional[str] = None
        self.dumped_at: Optional[float] = None
        self._sync()

    def _sync(self) -> None:
        d, a = self.data, self._qadr
        d.qpos[a['base_x']], d.qpos[a['base_y']], d.qpos[a['base_yaw']] = self.base
        for i, n in enumerate(('swing', 'boom', 'arm', 'bucket')):
            d.qpos[a[n]] = self.q[i]
        self._mj.mj_kinematics(self.model, d)
        self._update_events()

    def tip_position(self) -> np.ndarray:
        """``(3,)`` world position of the bucket tip, m (ground truth)."""
        return self.data.site_xpos[self._tip].copy()

    def inside_pile(self, name: str, point: Optional[np.ndarray] = None) -> bool:
        """Whether ``point`` (default the bucket tip) is inside pile ``name``'s dome."""
        p = self.tip_position() if point is None else np.asarray(point, dtype=np.float64)
        c = self.piles[name]
        r, h = self.cfg.pile_radius, self.cfg.pile_height
        return bool(p[2] > -0.5 and ((p[0] - c[0]) / r) ** 2 + ((p[1] - c[1]) / r) ** 2 + (p[2] / h) ** 2 < 1.0)

    def over_dump(self, point: Optional[np.ndarray] = None) -> bool:
        """Whether ``point`` (default the bucket tip) is above the dump pad (within its radius, z > 0.5 m)."""
        p = self.tip_position() if point is None else np.asarray(point, dtype=np.float64)
        return bool(np.hypot(p[0] - self.dump[0], p[1] - self.dump[1]) < self.cfg.dump_radius and p[2] > 0.5)

    @property
    def loaded(self) -> bool:
        """Whether the bucket carries soil (it entered a pile and has not been over the dump pad since)."""
        return self.first_pile is not None and self.dumped_at is None

    def _update_events(self) -> None:
        tip = self.tip_position()
        for name in PILES:
            if self.entered[name] is None and self.inside_pile(name, tip):
                self.entered[name] = self.time
                if self.first_pile is None:
                    self.first_pile = name
        if self.first_pile is not None and self.dumped_at is None and self.over_dump(tip):
            self.dumped_at = self.time
        self.model.geom_rgba[self._load_geom, 3] = 1.0 if self.loaded else 0.0

    # ------------------------------------------------------------------ hardware interface
    def read(self) -> MachineState:
        pos = np.concatenate([self.q, [np.nan, np.nan]])
        return MachineState(pos, self.v.copy(), float(self.time), {'base_pose': tuple(float(b) for b in self.base)})

    def write(self, setpoint: Sequence[float]) -> None:
        """Commanded velocities ``(6,)``, embodiment order; saturated at ``max_velocity`` (pump flow).

        Raises:
            ValueError: not 6 values, or a non-finite one (the DOF is named).
        """
        sp = np.asarray(setpoint, dtype=np.float64).reshape(-1)
        names = self.embodiment.joint_names
        if sp.shape[0] != len(names):
            raise ValueError(f'ExcavatorSim.write: {sp.shape[0]} values, expected {len(names)} ({names})')
        bad = ~np.isfinite(sp)
        if bad.any():
            raise ValueError(f'ExcavatorSim.write: non-finite velocity for {[n for n, b in zip(names, bad) if b]}')
        self.v_cmd = np.clip(sp, -self.vmax, self.vmax)

    def step(self, duration: float) -> None:
        """Advance ``duration`` s (whole ``physics_dt`` steps, at least one)."""
        dt = self.cfg.physics_dt
        n = max(1, int(round(float(duration) / dt)))
        alpha = 1.0 - np.exp(-dt / self._tau)
        lo, hi = self.lower[:4], self.upper[:4]
        for _ in range(n):
            self.v += (self.v_cmd - self.v) * alpha
            q = self.q + self.v[:4] * dt
            stop = (q < lo) | (q > hi)                      # end of cylinder stroke
            self.q = np.clip(q, lo, hi)
            self.v[:4][stop] = 0.0
            vl, vr = self.v[4], self.v[5]
            x, y, yaw = self.base
            vc, w = 0.5 * (vl + vr), (vr - vl) / TRACK_GAUGE_M
            self.base = np.array([x + vc * math.cos(yaw) * dt, y + vc * math.sin(yaw) * dt, yaw + w * dt])
            self.time += dt
            self._sync()

    def render(self, camera: str = 'overview', size: Optional[int] = None) -> np.ndarray:
        """RGB image ``uint8 (size, size, 3)`` from camera ``'overview'`` or ``'cab'``.

        Raises:
            ValueError: an unknown camera.
        """
        size = int(size or self.cfg.image_size)
        if camera not in ('overview', 'cab'):
            raise ValueError(f"ExcavatorSim has cameras 'overview' and 'cab', not {camera!r}")
        r = self._renderers.get(size)
        if r is None:
            r = self._renderers[size] = self._mj.Renderer(self.model, size, size)
        self._mj.mj_kinematics(self.model, self.data)
        self._mj.mj_camlight(self.model, self.data)      # camera poses (mj_kinematics leaves them)
        r.update_scene(self.data, camera=camera)
        return r.render().copy()

    def close(self) -> None:
        for r in self._renderers.values():
            try:
                r.close()
            except Exception:  # pragma: no cover - renderer teardown on exit
                pass
        self._renderers.clear()


class ExcavatorDigTask:
    """``dig``: "dig at the left pile" / "dig at the right pile".

    Success (sim ground truth): the bucket tip went into the **instructed** pile before it went into
    the other one, and afterwards came over the dump pad (loaded bucket carried to the dump spot).

    The scripted :meth:`expert` is a phase machine on the measured joint angles, emitting velocity
    rows (rad/s, tracks 0) within each DOF's velocity and acceleration limits that brake in time
    (:meth:`_drive`), so the driver executes them unchanged: swing to the pile while raising the front over it,
    lower into the pile with the bucket open, curl the bucket and crowd the arm, lift, swing back to
    the dump pad with the front over it.

    Attributes:
        max_steps: 150 policy steps at 10 Hz (15 s); the expert succeeds after 90-120 steps through
            the driver (accelerations limited as on the machine).
    """

    name = 'dig'
    instructions = ('dig at the left pile', 'dig at the right pile')
    max_steps = 150

    def __init__(self, sim: ExcavatorSim) -> None:
        self.sim = sim
        self.embodiment = sim.embodiment
        self.target: str = 'left'
        self.phase = 'approach'
        self._v = np.zeros(self.embodiment.dof)       # the previous action row
        self._plan: Dict[str, np.ndarray] = {}

    def reset(self, seed: int) -> str:
        """Reset the sim with ``seed``; the instructed pile is drawn from the same seed."""
        self.sim.reset(seed)
        rng = np.random.default_rng([int(seed), 7])
        self.target = PILES[int(rng.integers(0, 2))]
        self.phase = 'approach'
        self._v = np.zeros(self.embodiment.dof)
        self._plan_episode()
        return f'dig at the {self.target} pile'

    def _plan_episode(self) -> None:
        sim = self.sim
        lim = (sim.lower[1:4], sim.upper[1:4])
        c = sim.piles[self.target] - np.array([LINKS['swing'][0], 0.0])
        dist = float(np.hypot(*c))
        h = sim.cfg.pile_height
        # joint targets: over the pile (tip 1 m above its top), in it (0.45 m below the top, bucket
        # open), curled (bucket closed, tip still in it), dump carry (over the pad, 2.6 m up)
        over, _ = front_ik(dist - 0.6, h + 1.0, math.radians(140), lim)
        into, _ = front_ik(dist - 0.3, h - 0.45, math.radians(160), lim)
        curl = into + np.array([0.0, 0.25, 1.1])
        lift = curl + np.array([-0.55, 0.0, 0.0])
        carry, _ = front_ik(sim.cfg.dump_distance, 2.6, math.radians(200), lim)
        self._plan = {
            'swing_pile': np.array([math.atan2(c[1], c[0])]),
            'over': over, 'into': into, 'curl': np.clip(curl, *lim), 'lift': np.clip(lift, *lim), 'carry': carry,
        }

    def _drive(self, state: MachineState, swing_t: Optional[float], front_t: Optional[np.ndarray],
               gain: float = 2.5) -> Tuple[np.ndarray, float]:
        """Velocities toward the targets (None = hold that part) and the largest remaining error.

        The speed toward a target is at most ``vmax``, ``gain * |e|`` and the speed from which
        60 % of the acceleration limit stops the joint within what is left after the lag
        (``|e| - |v| * 0.3 s``: the driver's interpolation plus the hydraulics' 0.15 s); the row's change
        from the previous row is within 90 % of ``max_acceleration * dt``, so the rows are what the
        driver can execute as they are."""
        emb = self.embodiment
        q = np.asarray(state.positions, dtype=np.float64)[:4]
        t = q.copy()
        if swing_t is not None:
            t[0] = swing_t
        if front_t is not None:
            t[1:4] = front_t
        e = t - q
        vmax, amax = emb.max_velocity[:4], emb.max_acceleration[:4]
        v_prev = self._v[:4]
        left = np.maximum(np.abs(e) - np.abs(v_prev) * 0.3, 0.0)
        speed = np.minimum(np.minimum(vmax, gain * np.abs(e)), np.sqrt(2.0 * 0.6 * amax * left))
        dv = 0.9 * amax * self.embodiment.dt
        out = np.zeros(emb.dof)
        out[:4] = np.clip(np.sign(e) * speed, v_prev - dv, v_prev + dv)
        self._v = out
        return out, float(np.max(np.abs(e)))

    def expert(self, state: MachineState) -> np.ndarray:
        """Next action row ``(6,)``: velocities in embodiment order (swing, boom, arm, bucket rad/s;
        tracks m/s, always 0)."""
        p, sim = self._plan, self.sim
        q = np.asarray(state.positions, dtype=np.float64)
        if self.phase == 'approach':
            out, err = self._drive(state, p['swing_pile'][0], p['over'])
            if err < 0.15:          # close enough over the pile: lowering finishes the swing
                self.phase = 'lower'
            return out
        if self.phase == 'lower':
            out, err = self._drive(state, p['swing_pile'][0], p['into'])
            if err < 0.08 or sim.entered[self.target] is not None and err < 0.2:
                self.phase = 'curl'
            return out
        if self.phase == 'curl':
            out, err = self._drive(state, p['swing_pile'][0], p['curl'])
            if err < 0.15:
                self.phase = 'lift'
            return out
        if self.phase == 'lift':
            out, err = self._drive(state, p['swing_pile'][0], p['lift'])
            # swing away as soon as the tip is well clear of the pile (measured angles, URDF chain)
            if err < 0.1 or front_fk(*q[1:4])[1] > sim.cfg.pile_height + 0.8:
                self.phase = 'carry'
            return out
        if self.phase == 'carry':
            out, err = self._drive(state, 0.0, p['carry'])
            if err < 0.05:
                self.phase = 'done'
            return out
        out, _ = self._drive(state, 0.0, p['carry'])
        return out

    def success(self) -> bool:
        """The instructed pile was dug first and the loaded bucket then reached the dump pad."""
        s = self.sim
        return s.first_pile == self.target and s.dumped_at is not None


#: Tasks of this sim (``vla_training`` looks them up by name).
TASKS = {ExcavatorDigTask.name: ExcavatorDigTask}
