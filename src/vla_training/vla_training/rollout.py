"""Closed-loop episodes in the MuJoCo scene through the same path a ROS 2 graph uses (ROS-free).

One control tick (10 Hz) of :func:`run_episode`:

    sim.read()/render() -> JointState + Image messages (rosbags types, real CDR-able objects)
      -> controller (scripted expert, random baseline, or PolicyRuntime + VLA) -> JointTrajectory
      -> ArmDriverCore (validation, safety clamp, watchdog) ticked at ``driver_rate_hz``
      -> sim.write()/step()

so the recorded demonstrations, the evaluation and the nodes share message conversions, the
runtime and the driver core. ``on_message(topic, msgtype, msg, t)`` sees every message, which is
how demonstrations are written to rosbag2.

A slow model is evaluated in simulated time: :meth:`RuntimeController.build` with
``simulated_latency_s`` gives the runtime a
:class:`~vla_policy.inference.SimulatedLatencyBackend`, so each chunk becomes available
``latency`` seconds of sim time after its request while the arm keeps executing the plan, with
the same runtime code as on the robot and no real sleeping. :attr:`EpisodeResult.jerk` measures
how smooth the commanded motion was (:func:`command_jerk`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from robot_drivers import conversions as conv
from robot_drivers.embodiment import FRANKA_PANDA, Embodiment
from robot_drivers.hardware import ArmDriverCore
from robot_drivers.safety import SafetyConfig
from robot_drivers.sim.franka_cubes import FrankaCubeSim
from vla_policy.runtime import PolicyRuntime, RuntimeConfig
from vla_training.experts import Task, task_success

__all__ = ['Topics', 'CAMERA_FRAMES', 'EpisodeResult', 'ExpertController', 'RuntimeController', 'run_episode',
           'EPISODE_STEPS', 'command_jerk']

# Control ticks per episode (10 Hz): the expert needs ~25 ticks to reach, ~40 to pick and lift.
EPISODE_STEPS = {'reach': 40, 'pick': 60}
# Message stamps = sim time + this offset (s): a wall-clock-like epoch, because rosbag2 tools and
# the bag reader treat a zero header stamp as "unset".
STAMP_OFFSET = 1_800_000_000.0


@dataclass(frozen=True)
class Topics:
    """Topic names of the Franka graph (REP-144 / ros2_control defaults).

    ``image`` is the ``front`` camera's topic, ``wrist_image`` the ``wrist`` camera's (None: not
    published); :attr:`cameras` maps the sim's camera names to them.
    """

    image: str = '/camera/image_raw'
    joint_states: str = '/joint_states'
    instruction: str = '/vla/instruction'
    command: str = '/arm_controller/joint_trajectory'
    wrist_image: Optional[str] = '/wrist_camera/image_raw'
    #: ``raw``: sensor_msgs/Image rgb8; ``jpeg`` / ``png``: sensor_msgs/CompressedImage on
    #: ``<topic>/compressed`` (image_transport's compressed transport naming), JPEG at ``jpeg_quality``
    image_format: str = 'raw'
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f'image_format must be one of {list(IMAGE_FORMATS)}, got {self.image_format!r}')
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f'jpeg_quality must be in [1, 100], got {self.jpeg_quality}')

    @property
    def cameras(self) -> Dict[str, str]:
        """``{camera name: image topic}`` of the published cameras, ``front`` first."""
        suffix = '' if self.image_format == 'raw' else '/compressed'
        out = {'front': self.image + suffix}
        if self.wrist_image:
            out['wrist'] = self.wrist_image + suffix
        return out

    def image_message(self, img, stamp: float, types, frame_id: str):
        """``(message type, message)`` of a rendered frame in this ``image_format``."""
        if self.image_format == 'raw':
            return 'sensor_msgs/msg/Image', conv.numpy_to_image(img, stamp, types, frame_id=frame_id)
        return 'sensor_msgs/msg/CompressedImage', conv.numpy_to_compressed_image(
            img, stamp, types, frame_id=frame_id, quality=self.jpeg_quality, fmt=self.image_format)


#: Image formats the sim can publish (:attr:`Topics.image_format`).
IMAGE_FORMATS = ('raw', 'jpeg', 'png')


#: ``header.frame_id`` of each sim camera's images (REP-103 optical frames).
CAMERA_FRAMES = {'front': 'camera_optical_frame', 'wrist': 'wrist_camera_optical_frame'}


@dataclass
class EpisodeResult:
    task: Task
    seed: int
    success: bool
    steps: int
    final_distance: float          # TCP to the named cube's centre at the end, m
    lift: float                    # rise of the named cube, m
    frames: List[np.ndarray] = field(default_factory=list)
    safety_events: int = 0
    inferences: int = 0
    jerk: float = 0.0              # RMS jerk of the commanded arm joints, rad/s^3 (command_jerk)
    commands: int = 0              # trajectories the controller published
    jerk_steady: float = 0.0       # the same over the windows that begin after the first command's tick:
    #                                without the start from rest, which dominates short episodes


def command_jerk(setpoints: np.ndarray, dt: float) -> float:
    """RMS of the third difference of commanded positions, ``sqrt(mean((diff(q, 3) / dt^3)^2))``.

    Args:
        setpoints: ``(T, J)`` commanded positions, one row per control tick (rad).
        dt: control period (s).

    Returns:
        RMS jerk in rad/s^3 over all ticks and joints; 0.0 for fewer than 4 ticks.

    Raises:
        ValueError: ``setpoints`` not 2-D or ``dt`` not > 0.
    """
    q = np.asarray(setpoints, np.float64)
    if q.ndim != 2:
        raise ValueError(f'setpoints must be (T, J), got shape {q.shape}')
    if not dt > 0:
        raise ValueError(f'dt must be > 0, got {dt}')
    if q.shape[0] < 4 or q.shape[1] == 0:
        return 0.0
    return float(np.sqrt(np.mean((np.diff(q, n=3, axis=0) / dt ** 3) ** 2)))


class ExpertController:
    """Wraps anything with ``act(q (J,)) -> target (J,)`` as a one-point-trajectory publisher."""

    needs_image = False

    def __init__(self, actor: Any, embodiment: Embodiment = FRANKA_PANDA) -> None:
        self.actor, self.embodiment = actor, embodiment

    def __call__(self, now: float, image_msg: Any, joint_msg: Any, types: conv.MessageTypes) -> Optional[Any]:
        q, _ = conv.joint_state_to_arrays(joint_msg, self.embodiment.joint_names)
        target = self.actor.act(q)
        return conv.arrays_to_trajectory(self.embodiment.joint_names, target[None], now, types,
                                         dt=self.embodiment.dt)


class RuntimeController:
    """Feeds a :class:`PolicyRuntime` with the messages and returns its trajectory (if any).

    It is called with ``{camera name: image message}`` for every camera the runtime reads
    (:attr:`cameras`; :func:`run_episode` renders those).

    Raises:
        ValueError: the runtime reads a camera that ``topics`` does not publish (names both).
    """

    needs_image = True
    takes_cameras = True    # __call__ gets {camera: message}, not one message

    def __init__(self, runtime: PolicyRuntime, topics: Topics = Topics()) -> None:
        self.runtime, self.topics = runtime, topics
        self.cameras = tuple(runtime.cfg.camera_names)
        missing = [c for c in self.cameras if c not in topics.cameras]
        if missing:
            raise ValueError(f'the policy reads cameras {list(self.cameras)} but the scene publishes '
                             f'{list(topics.cameras)}; missing {missing}')

    @classmethod
    def build(cls, policy: Any, embodiment: Embodiment, config: Optional[RuntimeConfig] = None, *,
              simulated_latency_s: Optional[float] = None, topics: Topics = Topics()) -> 'RuntimeController':
        """A controller around a new :class:`PolicyRuntime`.

        ``simulated_latency_s`` (s) given: the runtime's backend is a
        :class:`~vla_policy.inference.SimulatedLatencyBackend` (each chunk is ready that long after
        its request, in sim time); None: the backend ``config.inference`` names.

        Raises:
            ValueError: a negative latency, or what :class:`PolicyRuntime` raises (e.g. ``rtc``
                for a policy without guidance).
        """
        backend = None
        if simulated_latency_s is not None:
            from vla_policy.inference import SimulatedLatencyBackend
            backend = SimulatedLatencyBackend(simulated_latency_s)
        return cls(PolicyRuntime(policy, embodiment, config, backend=backend), topics)

    def on_instruction(self, msg: Any) -> None:
        self.runtime.on_instruction_msg(msg)

    def __call__(self, now: float, image_msg: Any, joint_msg: Any, types: conv.MessageTypes) -> Optional[Any]:
        msgs = image_msg if isinstance(image_msg, dict) else {self.cameras[0]: image_msg}
        for cam, msg in msgs.items():
            if cam in self.cameras:
                self.runtime.on_image_msg(msg, camera=cam, source=self.topics.cameras[cam])
        self.runtime.on_joint_state_msg(joint_msg, source=self.topics.joint_states)
        cmd = self.runtime.step(now)
        return None if cmd is None else cmd.to_msg(types)


def run_episode(sim: FrankaCubeSim, task: Task, seed: int, controller: Callable, *,
                steps: Optional[int] = None, topics: Topics = Topics(),
                safety: Optional[SafetyConfig] = None, driver_rate_hz: float = 50.0,
                on_message: Optional[Callable[[str, str, Any, float], None]] = None,
                keep_frames: bool = False, frame_size: int = 160,
                reset_hook: Optional[Callable[[], None]] = None,
                action_noise: float = 0.0, noise_hold: int = 5) -> EpisodeResult:
    """Run one seeded episode; see the module docstring. ``reset_hook`` runs after ``sim.reset``.

    ``action_noise`` (rad): DART noise injection (Laskey et al. 2017, "DART: Noise Injection for
    Robust Imitation Learning"): the *executed* arm targets get a random offset ~ N(0, sigma) in
    a random half of the ``noise_hold``-tick windows, while the published (recorded) command stays the
    controller's clean one. Demonstrations then show the expert correcting off-course states
    that the learned policy will meet, which plain cloning never sees.

    The instruction is published once at t = 0 (latched, as ``ros2 topic pub`` with
    transient-local durability) and handed to runtime controllers.

    Cameras: every camera of ``topics.cameras`` is rendered and published when ``on_message`` is
    given (a recording holds them all); otherwise only those the controller reads (its
    ``cameras``, default the front one). A controller with ``takes_cameras = True`` is called with
    ``{camera: Image}``, any other with the front camera's Image (or None when it needs none).
    """
    types = conv.rosbags_types()
    emb = sim.embodiment
    steps = steps or EPISODE_STEPS[task.kind]
    initial = sim.reset(seed)
    if reset_hook is not None:
        reset_hook()
    driver = ArmDriverCore(emb, sim, safety or SafetyConfig())
    dt = emb.dt
    n_sub = int(round(dt * driver_rate_hz))
    emit = on_message or (lambda *a: None)
    instr = conv.string_msg(task.instruction, types)
    emit(topics.instruction, 'std_msgs/msg/String', instr, STAMP_OFFSET + sim.time)
    if hasattr(controller, 'on_instruction'):
        controller.on_instruction(instr)
    frames: List[np.ndarray] = []
    setpoints: List[np.ndarray] = []       # driver setpoint at each control tick, for the jerk
    commands = 0
    first_command: Optional[int] = None
    events = 0
    noise_rng = np.random.default_rng(seed + 104_729)
    offset = np.zeros(emb.dof)
    cam_topics = topics.cameras
    wanted = tuple(getattr(controller, 'cameras', ('front',))) if getattr(controller, 'needs_image', True) else ()
    unpublished = [c for c in wanted if c not in cam_topics]
    if unpublished:
        raise ValueError(f'the controller reads cameras {list(wanted)} but topics publish {list(cam_topics)}; '
                         f'missing {unpublished}')
    render = tuple(cam_topics) if on_message is not None else wanted
    for k in range(steps):
        now = STAMP_OFFSET + sim.time
        sample = sim.read()
        joint_msg = conv.arrays_to_joint_state(emb.joint_names, sample.positions, now, types,
                                               velocities=sample.velocities)
        emit(topics.joint_states, 'sensor_msgs/msg/JointState', joint_msg, now)
        image_msgs: Dict[str, Any] = {}
        for cam in render:
            kind, image_msgs[cam] = topics.image_message(
                sim.render(cam), now, types, frame_id=CAMERA_FRAMES.get(cam, f'{cam}_camera_optical_frame'))
            emit(cam_topics[cam], kind, image_msgs[cam], now)
        if keep_frames:
            frames.append(sim.render(size=frame_size, fast=False))
        if getattr(controller, 'takes_cameras', False):
            traj = controller(now, image_msgs, joint_msg, types)
        else:
            traj = controller(now, image_msgs.get('front'), joint_msg, types)
        if traj is not None:
            commands += 1
            first_command = k if first_command is None else first_command
            emit(topics.command, 'trajectory_msgs/msg/JointTrajectory', traj, now)
            names, pos, tfs = conv.trajectory_to_arrays(traj, source=topics.command)
            if action_noise > 0:
                if k % noise_hold == 0:
                    offset = np.zeros(emb.dof)
                    if noise_rng.random() < 0.5:   # half the windows clean: the expert also shows the goal held
                        offset[:7] = noise_rng.normal(0.0, action_noise, 7)   # arm joints, not the gripper
                pos = pos + offset[emb.index_of(names)][None]
            driver.on_trajectory(names, pos, tfs, now, now)
        for i in range(n_sub):
            setpoint, ev = driver.tick(now + i * dt / n_sub)
            if i == 0:
                setpoints.append(setpoint)
            events += len(ev)
            sim.step(dt / n_sub)
    cube = sim.cube_positions()[task.colour]
    arm = [i for i, j in enumerate(emb.joints) if j.kind == 'revolute']
    q_arm = np.asarray(setpoints)[:, arm]
    steady = q_arm[(first_command if first_command is not None else steps) + 1:]
    return EpisodeResult(
        task=task, seed=seed, success=task_success(sim, task, initial), steps=steps,
        final_distance=float(np.linalg.norm(sim.ee_position() - cube)),
        lift=float(cube[2] - initial[task.colour][2]), frames=frames, safety_events=events,
        inferences=getattr(getattr(controller, 'runtime', None), 'inferences', 0),
        jerk=command_jerk(q_arm, dt), commands=commands, jerk_steady=command_jerk(steady, dt))
