"""Any registered machine end to end: sim -> rosbag2 demos -> ``train`` -> closed loop through its driver.

``ros2 run vla_training machine_demo --machine excavator`` (``make demo MACHINE=excavator``):

1. **record** ``--episodes`` scripted demonstrations of the machine's sim task (``TASKS`` of its sim
   module, :mod:`robot_drivers.sim`) as rosbag2 MCAP, one bag per episode, on the topics of the
   machine's parameter file ``config/<machine>.yaml``: the camera image, the ``JointState``, the
   latched instruction ``String``, the policy's command ``JointTrajectory`` in the generic form
   (:func:`robot_drivers.conversions.action_trajectory`: positions for position DOFs, velocities for
   velocity DOFs) and, at the driver rate, the driver's native outputs (e.g. ``com3_msgs/JointCmd``);
2. **train** with the same entry as ``ros2 run vla_training train`` (:func:`vla_training.train_cli.run`)
   and ``config/train_<machine>.yaml``;
3. **evaluate** closed loop on held-out seeds: sim -> image / JointState -> :class:`PolicyRuntime`
   -> ``JointTrajectory`` -> :class:`~robot_drivers.machine.MachineDriverCore` (validation,
   interpolation to the driver rate, limits, watchdog, interlocks) -> sim, ticked at the driver rate;
   the scripted expert and a random policy go through the same runtime-free command path and driver;
4. write ``benchmarks/results/<machine>.json`` (``{"trained": {"success": ...}, "expert": {...},
   "random": {...}, ...}``) and a GIF of one trained rollout.

Nothing here knows a machine: the machine is a name (``--machine``: the stem of a parameter file
``config/<name>.yaml`` or a registry name, :func:`robot_drivers.machine.available_machines`), and
everything else comes from its :class:`~robot_drivers.machine.Machine` definition, its sim module and
the two YAML files. Each control tick of :func:`run_episode` (at the embodiment's ``control_rate_hz``)::

    sim.read()/render() -> JointState + Image messages -> controller -> JointTrajectory
      -> MachineDriverCore.on_command_msg, then ``rate_hz / control_rate_hz`` driver ticks:
         MachineDriverCore.tick(state) -> sim.write(setpoint) -> sim.step(1 / rate_hz)
"""
from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ['MachineSetup', 'resolve_machine', 'make_driver', 'ExpertController', 'RandomController',
           'RuntimeController', 'EpisodeResult', 'run_episode', 'record_episode', 'record_demos', 'train_policy',
           'evaluate', 'run_pipeline', 'main', 'STAMP_OFFSET', 'HELD_OUT_SEED']

# Message stamps = sim time + this offset (s): rosbag2 tools and the bag reader treat a zero header
# stamp as "unset" (the same epoch as the Franka demo's rollouts).
STAMP_OFFSET = 1_800_000_000.0
# Recording uses seeds 0, 1, ...; evaluation starts far above, so no scene is shared.
HELD_OUT_SEED = 1_000_000
# QoS kinds of the recorded topics (robot_drivers.bag_writer.QOS_KINDS), as `ros2 bag record` saw them.
_QOS = {'image': 'sensor', 'joint_states': 'sensor', 'instruction': 'latched', 'command': 'reliable'}
# Relative tolerance of the limit check on the driver's outputs (float rounding of the limiter).
_LIMIT_RTOL = 1e-6


# ----------------------------------------------------------------------------- machine by name + config
def _config_dirs() -> List[Path]:
    """Where ``config/`` files are looked up, in order: the workspace's (above this file), the working
    directory's, then ``share/vla_policy/config`` of every prefix on ``AMENT_PREFIX_PATH``."""
    here = Path(__file__).resolve()
    dirs = [parent / 'config' for parent in here.parents]
    dirs.append(Path.cwd() / 'config')
    for prefix in filter(None, os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep)):
        dirs.append(Path(prefix) / 'share' / 'vla_policy' / 'config')
    out: List[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in out:
            out.append(d.resolve())
    return out


def _find_config(name: str) -> Optional[Path]:
    for d in _config_dirs():
        if (d / name).is_file():
            return d / name
    return None


def _driver_machine_of(path: Path) -> Optional[str]:
    """``machine_driver_node.machine`` of a parameter file, None when it has no such parameter."""
    from robot_drivers.robot_config import load_params
    try:
        raw = load_params(path)
    except (ValueError, OSError):
        return None
    sec = raw.get('machine_driver_node')
    if not isinstance(sec, dict) or not isinstance(sec.get('ros__parameters'), dict):
        return None
    m = sec['ros__parameters'].get('machine')
    return str(m) if m else None


@dataclass
class MachineSetup:
    """A machine resolved from its name and its two config files.

    Attributes:
        name: the stem of the parameter file (``excavator``): names the outputs and the results file.
        machine: the registered :class:`~robot_drivers.machine.Machine`.
        robot_config: ``config/<name>.yaml`` (``policy_node`` + ``machine_driver_node`` sections).
        train_config: ``config/train_<name>.yaml`` (model / train / data).
        topics: :class:`~robot_drivers.robot_config.RobotTopics` of ``robot_config``.
        driver_params: ``machine_driver_node`` parameters of ``robot_config``.
        tasks: the sim module's ``TASKS`` registry ``{name: task class}``.
    """

    name: str
    machine: Any
    robot_config: Path
    train_config: Path
    topics: Any
    driver_params: Dict[str, Any]
    tasks: Dict[str, type]

    @property
    def embodiment(self) -> Any:
        return self.machine.embodiment

    def make_sim(self) -> Any:
        return self.machine.make_sim()

    def task_class(self, task: Optional[str]) -> type:
        """The task ``task`` of the sim (None: the only one, else an error listing them).

        Raises:
            KeyError: unknown task, or None with several tasks (the tasks are listed).
        """
        if task is None:
            if len(self.tasks) != 1:
                raise KeyError(f'machine {self.machine.name!r} has tasks {sorted(self.tasks)}; choose one with --task')
            return next(iter(self.tasks.values()))
        if task not in self.tasks:
            raise KeyError(f'machine {self.machine.name!r} has no task {task!r}; tasks: {sorted(self.tasks)}')
        return self.tasks[task]


def resolve_machine(name: str, robot_config: Optional[str] = None,
                    train_config: Optional[str] = None) -> MachineSetup:
    """Resolve ``name`` into a :class:`MachineSetup`.

    ``name`` is the stem of a parameter file ``config/<name>.yaml`` whose ``machine_driver_node.machine``
    names a registered machine (``excavator``), or a registered machine name (``excavator_zx200``)
    for which exactly one such file exists. ``robot_config`` / ``train_config`` override the files
    (default ``config/<stem>.yaml`` and ``config/train_<stem>.yaml``).

    Raises:
        FileNotFoundError: no parameter file or training config (the places looked at are named).
        KeyError: an unknown machine (the machines are listed), or a machine without a sim or
            without ``TASKS`` in its sim module.
        ValueError: the parameter file names another machine than ``name``, or several files
            match, or its topics disagree (:class:`~robot_drivers.robot_config.RobotTopics`).
    """
    from robot_drivers.machine import available_machines, get_machine
    from robot_drivers.robot_config import RobotTopics, load_params, node_params

    if robot_config is not None:
        rc = Path(robot_config)
        if not rc.is_file():
            raise FileNotFoundError(f'--robot-config {rc}: no such file')
    else:
        rc = _find_config(f'{name}.yaml')
        if rc is None or _driver_machine_of(rc) is None:
            matches = sorted({p.resolve() for d in _config_dirs() for p in d.glob('*.yaml')
                              if _driver_machine_of(p) == name}, key=str)
            if len(matches) > 1:
                raise ValueError(f'machine {name!r}: several parameter files name it ({[str(p) for p in matches]}); '
                                 'choose one with --robot-config')
            if not matches:
                raise FileNotFoundError(
                    f'machine {name!r}: no parameter file config/{name}.yaml with a machine_driver_node section, '
                    f'and none naming machine {name!r}; looked in {[str(d) for d in _config_dirs()]}; '
                    f'machines: {available_machines()}')
            rc = matches[0]
    machine_name = _driver_machine_of(rc)
    if machine_name is None:
        raise ValueError(f'robot config {rc}: no machine_driver_node.machine parameter (this pipeline drives '
                         'machines through robot_drivers.machine.MachineDriverCore)')
    if name != rc.stem and name != machine_name:
        raise ValueError(f'--machine {name!r} but robot config {rc} is for machine {machine_name!r}')
    try:
        machine = get_machine(machine_name)
    except KeyError as exc:
        raise KeyError(f'robot config {rc}: machine_driver_node.machine: {exc.args[0]}') from None
    if not machine.sim:
        raise KeyError(f'machine {machine.name!r} has no simulator (Machine.sim); the pipeline needs one')
    sim_module = importlib.import_module(machine.sim.partition(':')[0])
    tasks = getattr(sim_module, 'TASKS', None)
    if not tasks:
        raise KeyError(f'sim module {sim_module.__name__} of machine {machine.name!r} defines no TASKS')
    if train_config is not None:
        tc = Path(train_config)
        if not tc.is_file():
            raise FileNotFoundError(f'--train-config {tc}: no such file')
    else:
        tc = _find_config(f'train_{rc.stem}.yaml')
        if tc is None:
            raise FileNotFoundError(f'machine {name!r}: no training config config/train_{rc.stem}.yaml; looked in '
                                    f'{[str(d) for d in _config_dirs()]}')
    topics = RobotTopics.from_params_file(rc)
    params = node_params(load_params(rc), 'machine_driver_node', rc)
    return MachineSetup(name=rc.stem, machine=machine, robot_config=rc, train_config=tc, topics=topics,
                        driver_params=params, tasks=dict(tasks))


def make_driver(setup: MachineSetup) -> Tuple[Any, float]:
    """The :class:`~robot_drivers.machine.MachineDriverCore` and its tick rate (Hz) as ``machine_driver_node``
    builds them from the ``machine_driver_node`` parameters of the robot config (``rate_hz``,
    ``watchdog_timeout_s``, ``velocity_scale``, ``position_margin``: 0 = the machine's; ``outputs`` /
    ``output_adapters`` per group).

    Raises:
        ValueError: a parameter out of range. KeyError: an output group or adapter that does not exist.
    """
    from robot_drivers.adapters import build_adapters
    from robot_drivers.machine import MachineDriverCore
    from robot_drivers.safety import SafetyConfig
    m, p = setup.machine, setup.driver_params
    rate = float(p.get('rate_hz', 0.0) or m.control_rate_hz)
    if not np.isfinite(rate) or rate <= 0:
        raise ValueError(f'robot config {setup.robot_config}: machine_driver_node.rate_hz must be > 0, got {rate}')
    base = m.safety
    cfg = SafetyConfig(position_margin=float(p.get('position_margin', 0.0) or base.position_margin),
                       velocity_scale=float(p.get('velocity_scale', 1.0)), max_step=base.max_step,
                       watchdog_timeout_s=float(p.get('watchdog_timeout_s', 0.0) or base.watchdog_timeout_s),
                       prismatic_margin=base.prismatic_margin, condition_clear_s=base.condition_clear_s)
    core = MachineDriverCore(m, cfg, max_tick_dt=4.0 / rate)
    outputs = p.get('outputs') or {}
    kinds = p.get('output_adapters') or {}
    core._adapters = build_adapters(m.embodiment, {k: str(v) for k, v in outputs.items()},
                                    {k: str(v) for k, v in kinds.items()})
    return core, rate


# ----------------------------------------------------------------------------- controllers
class ExpertController:
    """The sim task's scripted expert as a publisher of one-point trajectories (the generic form)."""

    needs_image = False

    def __init__(self, task: Any) -> None:
        self.task = task

    def __call__(self, now: float, state: Any, image_msg: Any, joint_msg: Any, types: Any) -> Optional[Any]:
        from robot_drivers import conversions as conv
        emb = self.task.sim.embodiment
        return conv.action_trajectory(emb, np.asarray(self.task.expert(state), np.float64)[None], now, types,
                                      dt=emb.dt)


class RandomController:
    """Uniform random action rows within the action bounds (position DOFs: their limits; velocity DOFs:
    +-``max_velocity``), one one-point trajectory per tick, seeded per episode."""

    needs_image = False

    def __init__(self, embodiment: Any, seed: int) -> None:
        self.embodiment = embodiment
        self.rng = np.random.default_rng([int(seed), 104_729])

    def __call__(self, now: float, state: Any, image_msg: Any, joint_msg: Any, types: Any) -> Optional[Any]:
        from robot_drivers import conversions as conv
        emb = self.embodiment
        row = self.rng.uniform(emb.action_lower, emb.action_upper)
        return conv.action_trajectory(emb, row[None], now, types, dt=emb.dt)


class RuntimeController:
    """Feeds a :class:`~vla_policy.runtime.PolicyRuntime` the messages; returns its trajectory (or None)."""

    needs_image = True

    def __init__(self, runtime: Any, topics: Any) -> None:
        self.runtime, self.topics = runtime, topics

    def on_instruction(self, msg: Any) -> None:
        self.runtime.on_instruction_msg(msg)

    def __call__(self, now: float, state: Any, image_msg: Any, joint_msg: Any, types: Any) -> Optional[Any]:
        self.runtime.on_image_msg(image_msg, source=self.topics.image)
        self.runtime.on_joint_state_msg(joint_msg, source=self.topics.joint_states)
        cmd = self.runtime.step(now)
        return None if cmd is None else cmd.to_msg(types)


# ----------------------------------------------------------------------------- one episode
@dataclass
class EpisodeResult:
    """One closed-loop episode.

    Attributes:
        instruction: the task's instruction. seed: the sim seed. success: the task's flag at the end.
        steps: control ticks run. commands: trajectories the controller published.
        rejected: commands the driver rejected (:class:`~robot_drivers.safety.CommandRejected`).
        safety_events: edges the driver recorded. inferences: policy calls (runtime controllers).
        limit_violations: driver ticks whose output left a DOF's position, velocity or acceleration
            limit (relative tolerance 1e-6); the driver's guarantee, so 0.
        max_speed_ratio: the largest ``|output velocity| / max_velocity`` over the episode.
        frames: RGB frames of each tick when asked for.
    """

    instruction: str
    seed: int
    success: bool
    steps: int
    commands: int = 0
    rejected: int = 0
    safety_events: int = 0
    inferences: int = 0
    limit_violations: int = 0
    max_speed_ratio: float = 0.0
    frames: List[np.ndarray] = field(default_factory=list)


def _joint_state_msg(emb: Any, state: Any, stamp: float, types: Any) -> Any:
    """The sim's state as ``sensor_msgs/JointState`` (every DOF; NaN position where it has no sensor)."""
    from robot_drivers import conversions as conv
    vel = np.nan_to_num(np.asarray(state.velocities, np.float64), nan=0.0)
    return conv.arrays_to_joint_state(emb.joint_names, np.asarray(state.positions, np.float64), stamp, types,
                                      velocities=vel)


def run_episode(setup: MachineSetup, sim: Any, task: Any, seed: int, controller: Callable, *,
                steps: Optional[int] = None, on_message: Optional[Callable[[str, str, Any, float], None]] = None,
                record_outputs: bool = False, image_size: int = 96, keep_frames: bool = False,
                frame_size: int = 160, action_noise: float = 0.0, noise_hold: int = 5) -> EpisodeResult:
    """Run one seeded episode of ``task`` (module docstring); the instruction is ``task.reset(seed)``.

    Args:
        controller: ``(now, state, image_msg, joint_msg, types) -> JointTrajectory | None``
            (:class:`ExpertController`, :class:`RandomController`, :class:`RuntimeController`).
        steps: control ticks (default ``task.max_steps``).
        on_message: ``(topic, msgtype, msg, t)`` for every message (how demonstrations are recorded).
        record_outputs: also pass the driver's native outputs (each group's adapter) to ``on_message``.
        image_size: camera resolution (px, square).
        action_noise: DART noise (Laskey et al. 2017): the *executed* command of the DOFs the command
            moves gets a random offset ~ N(0, ``action_noise`` x the DOF's action half-range) in a
            random half of the ``noise_hold``-tick windows, while the published (recorded) command
            stays the controller's; the driver still filters the noisy command.

    Returns:
        :class:`EpisodeResult`.
    """
    from robot_drivers import conversions as conv
    from robot_drivers.safety import CommandRejected
    types = conv.rosbags_types()
    emb = setup.embodiment
    topics = setup.topics
    steps = int(steps or task.max_steps)
    instruction = task.reset(seed)
    driver, rate = make_driver(setup)
    n_sub = max(1, int(round(rate * emb.dt)))
    dt_sub = emb.dt / n_sub
    emit = on_message or (lambda *a: None)
    instr = conv.string_msg(instruction, types)
    emit(topics.instruction, 'std_msgs/msg/String', instr, STAMP_OFFSET + float(sim.read().stamp))
    if hasattr(controller, 'on_instruction'):
        controller.on_instruction(instr)
    idx = {n: i for i, n in enumerate(emb.joint_names)}
    sel = [np.array([idx[n] for n in ad.group.joints], dtype=np.int64) for ad in driver.adapters]
    kinds = {tp: ty for ad in driver.adapters
             for tp, ty in list(ad.topics()) + list(getattr(ad, 'estop_topics', lambda: [])())}
    half = 0.5 * (emb.action_upper - emb.action_lower)
    noise_rng = np.random.default_rng([int(seed), 15_485_863])
    offset = np.zeros(emb.dof)
    vmax, amax = emb.max_velocity, emb.max_acceleration
    lo, hi, is_vel = emb.lower, emb.upper, np.asarray(emb.is_velocity, bool)
    res = EpisodeResult(instruction=instruction, seed=int(seed), success=False, steps=steps)
    frames: List[np.ndarray] = []
    prev_v: Optional[np.ndarray] = None
    prev_t = 0.0
    for k in range(steps):
        state = sim.read()                          # stamp = sim time (the sim contract)
        now = STAMP_OFFSET + float(state.stamp)
        joint_msg = _joint_state_msg(emb, state, now, types)
        emit(topics.joint_states, 'sensor_msgs/msg/JointState', joint_msg, now)
        image_msg = None
        if getattr(controller, 'needs_image', True) or on_message is not None:
            image_msg = conv.numpy_to_image(sim.render(size=image_size), now, types, frame_id='camera_optical_frame')
            emit(topics.image, 'sensor_msgs/msg/Image', image_msg, now)
        if keep_frames:
            frames.append(sim.render(size=frame_size))
        traj = controller(now, state, image_msg, joint_msg, types)
        if traj is not None:
            res.commands += 1
            emit(topics.policy_command, 'trajectory_msgs/msg/JointTrajectory', traj, now)
            if action_noise > 0:
                if k % noise_hold == 0:
                    offset = np.zeros(emb.dof)
                    if noise_rng.random() < 0.5:   # half the windows clean: the expert also shows the goal held
                        offset = noise_rng.normal(0.0, action_noise, emb.dof) * half
                acts, tfs = conv.trajectory_to_actions(traj, emb, source=topics.policy_command)
                moving = ~is_vel | np.any(acts != 0.0, axis=0)   # a velocity DOF held at 0 stays still
                traj = conv.action_trajectory(emb, acts + np.where(moving, offset, 0.0)[None],
                                              conv.stamp_to_sec(traj.header.stamp), types, times=tfs)
            try:
                driver.on_command_msg(traj, now, source=topics.policy_command)
            except CommandRejected:
                res.rejected += 1
        for i in range(n_sub):
            t = now + i * dt_sub
            st = sim.read()
            out = driver.tick(t, st)
            v = np.where(is_vel, out, driver.output_velocity)
            bad = np.abs(v) > vmax * (1 + _LIMIT_RTOL) + 1e-12
            bad |= ~is_vel & ((out < lo - 1e-9) | (out > hi + 1e-9))
            if prev_v is not None:   # over the period the driver saw (stamps ~1.8e9 s: ~1e-7 s rounding)
                bad |= np.abs(v - prev_v) > amax * (t - prev_t) * (1 + _LIMIT_RTOL) + 1e-9
            res.limit_violations += int(bad.any())
            res.max_speed_ratio = max(res.max_speed_ratio, float(np.max(np.abs(v) / vmax)))
            prev_v, prev_t = v, t
            if record_outputs and on_message is not None:
                msgs = driver.pending_messages(t, types)
                for ad, s in zip(driver.adapters, sel):
                    msgs += ad.encode(out[s], st, t, types)
                for tp, msg in msgs:
                    emit(tp, kinds.get(tp, _msgtype(msg)), msg, t)
            sim.write(out)
            sim.step(dt_sub)
    res.success = bool(task.success())
    res.safety_events = len(driver.events)
    res.inferences = int(getattr(getattr(controller, 'runtime', None), 'inferences', 0))
    res.frames = frames
    return res


def _msgtype(msg: Any) -> str:
    """``'pkg/msg/Name'`` of a rosbags message object (its ``__msgtype__``)."""
    t = getattr(msg, '__msgtype__', None)
    if not t:
        raise ValueError(f'cannot tell the message type of {type(msg).__name__}')
    return str(t)


# ----------------------------------------------------------------------------- recording
def record_episode(setup: MachineSetup, sim: Any, task: Any, seed: int, path: Path, *, storage: str = 'mcap',
                   record_outputs: bool = True, image_size: int = 96, action_noise: float = 0.0,
                   steps: Optional[int] = None) -> EpisodeResult:
    """One expert episode written to the rosbag2 directory ``path`` (topics: module docstring).

    Raises:
        FileExistsError: ``path`` exists.
    """
    from robot_drivers.bag_writer import EpisodeBagWriter
    if path.exists():
        raise FileExistsError(f'bag {path} already exists; choose another --output or remove it')
    tp = setup.topics
    qos = {getattr(tp, role if role != 'command' else 'policy_command'): kind for role, kind in _QOS.items()}
    with EpisodeBagWriter(str(path), storage=storage, qos=qos) as writer:
        added = set()

        def on_message(topic: str, msgtype: str, msg: Any, t: float) -> None:
            if topic not in added:
                writer.add_topic(topic, msgtype)
                added.add(topic)
            writer.write(topic, msg, t)

        return run_episode(setup, sim, task, seed, ExpertController(task), on_message=on_message,
                           record_outputs=record_outputs, image_size=image_size, action_noise=action_noise,
                           steps=steps)


def _record_worker(args) -> List[Tuple[int, str, bool, int]]:
    name, rc, tc, task_name, seeds, out, storage, record_outputs, image_size, action_noise, steps = args
    os.environ.setdefault('MUJOCO_GL', 'egl')
    from robot_drivers.msgs import register_all
    register_all()          # the machines' own message types (e.g. com3_msgs) into the bag type store
    setup = resolve_machine(name, rc, tc)
    sim = setup.make_sim()
    task = setup.task_class(task_name)(sim)
    done = []
    try:
        for s in seeds:
            r = record_episode(setup, sim, task, s, Path(out) / f'episode_{s:06d}', storage=storage,
                               record_outputs=record_outputs, image_size=image_size, action_noise=action_noise,
                               steps=steps)
            done.append((s, r.instruction, r.success, r.limit_violations))
    finally:
        if hasattr(sim, 'close'):
            sim.close()
    return done


def _pool_map(fn: Callable, jobs: List[Any]) -> List[Any]:
    if len(jobs) == 1:
        return [fn(jobs[0])]
    with mp.get_context('spawn').Pool(len(jobs)) as pool:
        return pool.map(fn, jobs)


def record_demos(setup: MachineSetup, episodes: int, output: str, *, task: Optional[str] = None, seed: int = 0,
                 workers: int = 2, storage: str = 'mcap', record_outputs: bool = True, image_size: int = 96,
                 action_noise: float = 0.0, steps: Optional[int] = None) -> Dict[str, Any]:
    """Record ``episodes`` expert demonstrations (seeds ``seed .. seed + episodes - 1``) under ``output``.

    Returns:
        ``{'bags': [paths], 'expert_success': rate, 'limit_violations': n, 'instructions': {text: count},
        'seconds': s}``.

    Raises:
        ValueError: ``episodes`` < 1. FileExistsError: a bag exists already.
    """
    if episodes < 1:
        raise ValueError(f'episodes must be >= 1, got {episodes}')
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(range(seed, seed + episodes))
    shards = [seeds[i::workers] for i in range(workers) if seeds[i::workers]]
    t0 = time.time()
    jobs = [(setup.name, str(setup.robot_config), str(setup.train_config), task, s, str(out), storage, record_outputs,
             image_size, action_noise, steps) for s in shards]
    flat = sorted(x for r in _pool_map(_record_worker, jobs) for x in r)
    instructions: Dict[str, int] = {}
    for _, text, _, _ in flat:
        instructions[text] = instructions.get(text, 0) + 1
    return {'bags': [out / f'episode_{s:06d}' for s, _, _, _ in flat],
            'expert_success': float(np.mean([ok for _, _, ok, _ in flat])),
            'limit_violations': int(sum(v for _, _, _, v in flat)), 'instructions': instructions,
            'seconds': time.time() - t0}


# ----------------------------------------------------------------------------- training
def train_policy(setup: MachineSetup, bags: Sequence[str], output: str, *, steps: Optional[int] = None,
                 num_threads: int = 1, data_workers: int = 2, progress: bool = False,
                 overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Train with ``config/train_<machine>.yaml`` through :func:`vla_training.train_cli.run` (the entry
    of ``ros2 run vla_training train``); the checkpoint goes to ``<output>/checkpoint``.

    Returns:
        ``{'checkpoint', 'val_loss', 'seconds', 'first_loss', 'final_loss', 'steps', 'parameters'}``.
    """
    from vla_training.train_cli import run
    ov = {'steps': steps, 'num_threads': num_threads}
    ov.update(overrides or {})
    res = run(list(bags), str(setup.train_config), output, ov, progress=progress, data_workers=data_workers)
    tail = res.losses[-50:]
    from vla_policy.checkpoint import load_checkpoint
    model = load_checkpoint(res.checkpoint_dir)[0]
    return {'checkpoint': str(res.checkpoint_dir), 'val_loss': res.val_loss, 'seconds': res.seconds,
            'first_loss': res.losses[0][1], 'final_loss': float(sum(v for _, v in tail) / len(tail)),
            'steps': len(res.losses), 'parameters': int(sum(p.numel() for p in model.parameters()))}


# ----------------------------------------------------------------------------- evaluation
def _runtime_controller(policy: Any, setup: MachineSetup, n_action_steps: Optional[int]) -> RuntimeController:
    from vla_policy.runtime import PolicyRuntime, RuntimeConfig
    pc = policy.config
    rcfg = RuntimeConfig(n_obs_steps=pc.chunk.n_obs_steps, n_action_steps=n_action_steps or pc.chunk.n_action_steps,
                         camera=policy.camera)
    return RuntimeController(PolicyRuntime(policy, setup.embodiment, rcfg), setup.topics)


def _eval_worker(args) -> List[Dict[str, Any]]:
    name, rc, tc, task_name, jobs, image_size, n_action_steps, gif_size = args
    os.environ.setdefault('MUJOCO_GL', 'egl')
    setup = resolve_machine(name, rc, tc)
    sim = setup.make_sim()
    task = setup.task_class(task_name)(sim)
    policies: Dict[str, Any] = {}
    out = []
    try:
        for policy, seed, keep in jobs:
            if policy == 'expert':
                ctrl: Any = ExpertController(task)
            elif policy == 'random':
                ctrl = RandomController(setup.embodiment, seed)
            else:
                if policy not in policies:
                    import torch
                    torch.set_num_threads(1)
                    from vla_policy.policy import VLAPolicy
                    policies[policy] = VLAPolicy.from_checkpoint(policy)
                policies[policy].reset()
                ctrl = _runtime_controller(policies[policy], setup, n_action_steps)
            t0 = time.time()
            try:
                r = run_episode(setup, sim, task, seed, ctrl, image_size=image_size, keep_frames=keep,
                                frame_size=gif_size)
            finally:
                if hasattr(getattr(ctrl, 'runtime', None), 'close'):
                    ctrl.runtime.close()
            out.append({'policy': policy, 'seed': r.seed, 'instruction': r.instruction, 'success': r.success,
                        'commands': r.commands, 'rejected': r.rejected, 'safety_events': r.safety_events,
                        'inferences': r.inferences, 'limit_violations': r.limit_violations,
                        'max_speed_ratio': round(r.max_speed_ratio, 4), 'seconds': round(time.time() - t0, 3),
                        'frames': r.frames if keep else None})
    finally:
        if hasattr(sim, 'close'):
            sim.close()
    return out


def evaluate(setup: MachineSetup, policies: Dict[str, str], episodes: int, *, task: Optional[str] = None,
             seed: int = HELD_OUT_SEED, workers: int = 2, image_size: int = 96, n_action_steps: Optional[int] = None,
             gif: Optional[str] = None, gif_key: Optional[str] = None,
             gif_size: int = 160) -> Dict[str, Dict[str, Any]]:
    """Closed-loop evaluation of ``policies`` (``{key: checkpoint dir | 'expert' | 'random'}``) on
    seeds ``seed .. seed + episodes - 1`` each (every policy sees the same scenes).

    Returns:
        ``{key: {'success': rate, 'per_instruction': {text: rate}, 'episodes': n, 'limit_violations': n,
        'rejected': n, 'max_speed_ratio': r, 'seconds': s, 'runs': [per-episode dicts]}}``; with ``gif``,
        the first episode of ``gif_key`` (default the first policy) is saved there as an animation.
    """
    from vla_training.evaluate import save_animation
    if episodes < 1:
        raise ValueError(f'episodes must be >= 1, got {episodes}')
    gif_key = gif_key or next(iter(policies))
    jobs = [(policies[key], seed + i, bool(gif) and key == gif_key and i == 0)
            for key in policies for i in range(episodes)]
    shards = [jobs[i::workers] for i in range(workers) if jobs[i::workers]]
    t0 = time.time()
    args = [(setup.name, str(setup.robot_config), str(setup.train_config), task, s, image_size, n_action_steps,
             gif_size) for s in shards]
    runs = [e for r in _pool_map(_eval_worker, args) for e in r]
    by_policy: Dict[str, List[Dict[str, Any]]] = {}
    for e in runs:
        by_policy.setdefault(e.pop('policy'), []).append(e)
    results: Dict[str, Dict[str, Any]] = {}
    for key, pol in policies.items():
        mine = sorted(by_policy[pol], key=lambda e: e['seed'])
        by_instr: Dict[str, List[bool]] = {}
        for e in mine:
            by_instr.setdefault(e['instruction'], []).append(e['success'])
        if gif and key == gif_key:
            frames = next(e['frames'] for e in mine if e['frames'])
            Path(gif).parent.mkdir(parents=True, exist_ok=True)
            save_animation(frames, gif)
        for e in mine:
            e.pop('frames', None)
        results[key] = {
            'success': float(np.mean([e['success'] for e in mine])),
            'per_instruction': {k: float(np.mean(v)) for k, v in sorted(by_instr.items())},
            'episodes': len(mine), 'limit_violations': int(sum(e['limit_violations'] for e in mine)),
            'rejected': int(sum(e['rejected'] for e in mine)),
            'max_speed_ratio': float(max(e['max_speed_ratio'] for e in mine)),
            'seconds': round(sum(e['seconds'] for e in mine), 1), 'runs': mine}
    results['_wall_s'] = {'seconds': time.time() - t0}   # popped by the caller
    return results


# ----------------------------------------------------------------------------- the whole pipeline
def run_pipeline(machine: str, output: Optional[str] = None, *, episodes: int = 300, eval_episodes: int = 50,
                 task: Optional[str] = None, steps: Optional[int] = None, workers: int = 2,
                 train_threads: int = 2, action_noise: float = 0.0, record_outputs: bool = True,
                 results_path: Optional[str] = None, gif_path: Optional[str] = '',
                 robot_config: Optional[str] = None, train_config: Optional[str] = None,
                 eval_seed: int = HELD_OUT_SEED, progress: bool = True) -> Dict[str, Any]:
    """record -> train -> evaluate -> results file (module docstring).

    Everything the run makes goes under ``output`` (default ``outputs/demo_<machine>``), which is
    cleared first; the results file (default ``benchmarks/results/<machine>.json``) is replaced
    atomically at the end. ``gif_path`` '' = ``benchmarks/results/<machine>_rollout.gif``, None = none.
    """
    from vla_training.evaluate import write_json
    from vla_training.train_cli import load_train_yaml

    def say(text: str) -> None:
        if progress:
            print(text, flush=True)

    t0 = time.time()
    setup = resolve_machine(machine, robot_config, train_config)
    task_cls = setup.task_class(task)
    _, train_cfg, _ = load_train_yaml(str(setup.train_config))      # fails here on a bad config
    if steps is not None:
        try:
            type(train_cfg)(**dict(vars(train_cfg), steps=steps))
        except ValueError as exc:
            raise ValueError(f'--steps {steps} with {setup.train_config}: {exc}') from exc
    output = output or f'outputs/demo_{setup.name}'
    results_path = results_path or f'benchmarks/results/{setup.name}.json'
    if gif_path == '':
        gif_path = f'benchmarks/results/{setup.name}_rollout.gif'
    out = Path(output)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    timings: Dict[str, float] = {}

    say(f'[1/3] {setup.machine.name}: recording {episodes} scripted {task_cls.name!r} demonstrations '
        f'(rosbag2 MCAP) ...')
    t = time.time()
    rec = record_demos(setup, episodes, str(out / 'demos'), task=task, workers=workers, action_noise=action_noise,
                       record_outputs=record_outputs)
    timings['record_s'] = time.time() - t
    say(f'      {len(rec["bags"])} bags in {timings["record_s"]:.0f} s; expert success {rec["expert_success"]:.0%}')

    say(f'[2/3] training ({setup.train_config.name}) ...')
    t = time.time()
    trained = train_policy(setup, [str(out / 'demos')], str(out / 'film_cnn'), steps=steps,
                           num_threads=train_threads, data_workers=workers)
    timings['train_s'] = time.time() - t
    say(f'      {trained["steps"]} steps in {trained["seconds"]:.0f} s, loss {trained["first_loss"]:.3f} -> '
        f'{trained["final_loss"]:.3f}, val {trained["val_loss"]}, {trained["parameters"]} parameters')

    say(f'[3/3] closed-loop evaluation through the driver, {eval_episodes} held-out episodes per policy ...')
    t = time.time()
    ev = evaluate(setup, {'trained': trained['checkpoint'], 'expert': 'expert', 'random': 'random'}, eval_episodes,
                  task=task, seed=eval_seed, workers=workers, gif=gif_path, gif_key='trained')
    ev.pop('_wall_s')
    timings['eval_s'] = time.time() - t
    minutes = (time.time() - t0) / 60.0

    results: Dict[str, Any] = {k: {kk: vv for kk, vv in v.items() if kk != 'runs'} for k, v in ev.items()}
    results.update({
        'machine': setup.machine.name, 'task': task_cls.name, 'minutes': round(minutes, 2),
        'details': {
            'episodes_recorded': episodes, 'eval_episodes': eval_episodes,
            'eval_seeds': [eval_seed, eval_seed + eval_episodes - 1],
            'recorded_instructions': rec['instructions'], 'recording_expert_success': rec['expert_success'],
            'recording_limit_violations': rec['limit_violations'], 'action_noise': action_noise,
            'train_config': setup.train_config.name, 'robot_config': setup.robot_config.name,
            'film_cnn': {k: v for k, v in trained.items() if k != 'checkpoint'},
            'timings_s': {k: round(v, 1) for k, v in timings.items()}, 'cpu_count': os.cpu_count(),
            'per_episode': {k: v['runs'] for k, v in ev.items()}}})
    Path(results_path).parent.mkdir(parents=True, exist_ok=True)
    write_json(results_path, results)
    say('')
    say(format_table(results, eval_episodes))
    say(f'total {minutes:.1f} min; results -> {results_path}' + (f'; rollout -> {gif_path}' if gif_path else ''))
    return results


def format_table(results: Dict[str, Any], n: int) -> str:
    """The success table of :func:`run_pipeline`'s results (overall and per instruction)."""
    keys = [k for k in ('trained', 'expert', 'random') if k in results]
    instr = sorted({i for k in keys for i in results[k].get('per_instruction', {})})
    rows = [f"{'policy':<28}{'success':>9}" + ''.join(f'{i[-24:]:>26}' for i in instr)]
    names = {'trained': 'trained (film_cnn)', 'expert': 'scripted expert', 'random': 'random'}
    for k in keys:
        r = results[k]
        rows.append(f'{names[k]:<28}{r["success"]:>9.0%}' +
                    ''.join(f'{r["per_instruction"].get(i, float("nan")):>26.0%}' for i in instr))
    rows.append(f'success rate over {n} held-out seeded episodes, closed loop through the machine driver')
    return '\n'.join(rows)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``machine_demo`` console script; exit status 0, 1 (one line on stderr) or 2 (usage)."""
    from robot_drivers import cli
    p = cli.ArgumentParser(prog='machine_demo', description=__doc__.split('\n\n')[0])
    p.add_argument('--machine', required=True,
                   help='config/<name>.yaml stem (excavator) or machine registry name (excavator_zx200)')
    p.add_argument('--output', '--out', dest='output', default=None, help='run directory (default outputs/demo_<name>)')
    p.add_argument('--task', default=None, help="the sim's task (default: its only one)")
    p.add_argument('--episodes', type=cli.positive_int, default=300, help="demonstrations to record")
    p.add_argument('--eval-episodes', type=cli.positive_int, default=50, help='held-out episodes per policy')
    p.add_argument('--eval-seed', type=cli.non_negative_int, default=HELD_OUT_SEED)
    p.add_argument('--steps', type=cli.positive_int, default=None, help='training steps (default: the config)')
    p.add_argument('--workers', type=cli.positive_int, default=2, help='processes for recording / evaluation')
    p.add_argument('--train-threads', type=cli.positive_int, default=2, help='torch threads while training')
    p.add_argument('--action-noise', type=float, default=0.0,
                   help="DART noise on the executed demo commands, fraction of each DOF's action half-range")
    p.add_argument('--no-record-outputs', action='store_true', help="leave the driver's native outputs out of the bags")
    p.add_argument('--robot-config', default=None, help='default config/<name>.yaml')
    p.add_argument('--train-config', default=None, help='default config/train_<name>.yaml')
    p.add_argument('--results', default=None, help='default benchmarks/results/<name>.json')
    p.add_argument('--gif', default='', help="default benchmarks/results/<name>_rollout.gif; 'none' = no GIF")
    p.add_argument('--quick', action='store_true', help='miniature run: 10 demos, 200 steps, 4 eval episodes')
    a = p.parse_args(argv)
    os.environ.setdefault('MUJOCO_GL', 'egl')
    if not (np.isfinite(a.action_noise) and a.action_noise >= 0):
        p.error(f'--action-noise must be >= 0, got {a.action_noise}')
    gif: Optional[str] = None if a.gif == 'none' else a.gif
    if a.quick:
        a.episodes, a.eval_episodes = 10, 4
        a.steps = a.steps or 200
        a.results = a.results or f'outputs/{a.machine}_quick.json'
        gif = None

    def body() -> int:
        run_pipeline(a.machine, a.output, episodes=a.episodes, eval_episodes=a.eval_episodes, task=a.task,
                     steps=a.steps, workers=a.workers, train_threads=a.train_threads, action_noise=a.action_noise,
                     record_outputs=not a.no_record_outputs, results_path=a.results, gif_path=gif,
                     robot_config=a.robot_config, train_config=a.train_config, eval_seed=a.eval_seed)
        return 0

    return cli.run_main(p.prog, body, debug=a.debug)


if __name__ == '__main__':
    sys.exit(main())
