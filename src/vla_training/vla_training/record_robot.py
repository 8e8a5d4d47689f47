"""``ros2 run vla_training record_robot``: record demonstrations on a robot, one rosbag2 per episode.

    ros2 run vla_training record_robot --robot-config config/franka.yaml --output recordings
    ros2 run vla_training record_robot --episode-duration 20 --episodes 50 --instruction 'reach the red cube'

Each episode is one ``ros2 bag record`` process writing ``<output>/episode_<nnnn>/`` (numbering goes
on after the episodes already there). Episodes start and stop with Enter in the terminal, or last
``--episode-duration`` seconds each. The recorded topics are the ones the robot config
(``config/<robot>.yaml``) deploys with (:class:`robot_drivers.robot_config.RobotTopics`), so a
recording has exactly the topics ``train`` reads (``data.robot_config`` in its YAML) and
``policy_node`` subscribes to:

* every camera and the joint states (``policy_node.image_topic``, or each topic of
  ``policy_node.cameras`` when set, e.g. the scene and the wrist camera:
  :attr:`~robot_drivers.robot_config.RobotTopics.camera_topics`; with ``cameras`` "" only
  ``image_topic`` is recorded, so name every camera there to record a wrist camera;
  ``joint_states_topic``), subscribed best effort (:data:`robot_drivers.qos.SENSOR_DATA`): a best-effort subscription matches reliable
  and best-effort publishers alike and never stalls a camera driver with retransmissions;
* the instruction (``policy_node.instruction_topic``), subscribed reliable + transient local, depth 1
  (:data:`robot_drivers.qos.LATCHED`), so each episode's bag starts with the instruction latched
  before it began. Only transient-local publishers match such a subscription: the sim node and
  ``--instruction`` publish that way; by hand use
  ``ros2 topic pub --qos-durability transient_local --qos-reliability reliable ...``;
* the command the arm executed (``arm_driver_node.output_topic``, the controller's
  JointTrajectory topic). It is the training target whoever drives the arm: a teleoperation device
  publishing to the controller, a teleop publishing through the safety driver, or a policy being
  corrected; it is what the controller actually received (after the safety filter), and the same
  topic the simulated demonstrations record. ``--record-policy-command`` adds the policy's raw
  command for debugging.

Storage: MCAP with the ``rosbag2_storage_mcap`` preset ``zstd_fast`` (zstd chunk compression,
identical in Humble and Jazzy). Chosen over rosbag2's ``--compression-mode file``, which compresses a
file only when it is closed (a recording that is killed keeps an uncompressed file, and readers
must decompress whole files first), and over ``--compression-mode message``, which the MCAP plugin
refuses. ``max_bag_duration_s`` splits long episodes into several files (``--max-bag-duration``).

The command line (:func:`record_command`) and the QoS override file (:func:`qos_overrides`) are
built without ROS; the runner starts ``ros2 bag record`` with :mod:`subprocess` and ends each
episode with SIGINT, which makes rosbag2 finish the bag's ``metadata.yaml``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from robot_drivers.qos import LATCHED, SENSOR_DATA, QosSpec
from robot_drivers.robot_config import RobotTopics, load_params, node_params

__all__ = ['RecordRobotConfig', 'recorded_topics', 'qos_overrides', 'qos_overrides_yaml', 'record_command',
           'instruction_command', 'episode_dir', 'record_episodes', 'main']

PathLike = Union[str, Path]

# rosbag2 storage preset profiles (rosbag2_storage_mcap SetOptionsForPreset; sqlite3 'resilient'),
# the same names in Humble and Jazzy.
STORAGE_PRESETS = {'mcap': ('', 'none', 'fastwrite', 'zstd_fast', 'zstd_small'), 'sqlite3': ('', 'none', 'resilient')}
# How `ros2 bag record` takes topics (rosbag2 ros2bag/verb/record.py per branch): Humble and Iron only
# as positional arguments; Jazzy accepts positional topics in every release but `--topics` only from
# rosbag2 0.26.4 (backport ros2/rosbag2#1640), so positional is what works on any Jazzy; later distros
# (Kilted, Rolling) mark positional topics deprecated, so they get `--topics`. Jazzy and later read
# keyboard controls from the terminal unless `--disable-keyboard-controls` (rosbag2 0.26.0, #1607).
_POSITIONAL_TOPIC_DISTROS = ('humble', 'iron', 'jazzy')
_NO_KEYBOARD_CONTROLS = ('humble', 'iron')
SECTION = 'record_robot'


class RecordError(ValueError):
    """A recording setting or episode that cannot work; the text names the setting / file."""


@dataclass
class RecordRobotConfig:
    """Settings of a recording session; maps 1:1 onto the ``record_robot`` section of the robot config.

    Attributes:
        output: directory for the episodes (``<output>/episode_<nnnn>``).
        storage: ``mcap`` or ``sqlite3``.
        storage_preset_profile: rosbag2 storage preset (``zstd_fast`` = MCAP zstd chunks; ``''`` none).
        compression_mode: ``none`` or ``file`` (rosbag2 zstd per file; see the module docstring).
        max_bag_duration_s: split an episode's bag into files of this many seconds; 0 = one file.
        max_bag_size_bytes: split at this file size; 0 = no size limit.
        episode_duration_s: > 0: each episode lasts this long; 0: Enter starts and stops an episode.
        episodes: stop after this many episodes; 0 = until ``q`` / Ctrl-C.
        record_policy_command: also record ``policy_node.command_topic``.
    """

    output: str = 'recordings'
    storage: str = 'mcap'
    storage_preset_profile: str = 'zstd_fast'
    compression_mode: str = 'none'
    max_bag_duration_s: int = 0
    max_bag_size_bytes: int = 0
    episode_duration_s: float = 0.0
    episodes: int = 0
    record_policy_command: bool = False

    def __post_init__(self) -> None:
        if self.storage not in STORAGE_PRESETS:
            raise RecordError(f'record_robot.storage must be one of {sorted(STORAGE_PRESETS)}, got {self.storage!r}')
        if self.storage_preset_profile not in STORAGE_PRESETS[self.storage]:
            raise RecordError(f'record_robot.storage_preset_profile {self.storage_preset_profile!r} is not a '
                              f'{self.storage} preset; known: {[p for p in STORAGE_PRESETS[self.storage] if p]}')
        if self.compression_mode not in ('none', 'file'):
            raise RecordError(f"record_robot.compression_mode must be 'none' or 'file' (zstd per file), "
                              f"got {self.compression_mode!r}")
        if self.compression_mode != 'none' and 'zstd' in self.storage_preset_profile:
            raise RecordError('record_robot: compression_mode file and the zstd storage preset would compress '
                              'twice; use one of them')
        for name in ('max_bag_duration_s', 'max_bag_size_bytes', 'episodes'):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise RecordError(f'record_robot.{name} must be a whole number >= 0, got {v!r}')
        if not float(self.episode_duration_s) >= 0:
            raise RecordError(f'record_robot.episode_duration_s must be >= 0, got {self.episode_duration_s!r}')

    @classmethod
    def from_params_file(cls, path: PathLike, **overrides: Any) -> 'RecordRobotConfig':
        """The ``record_robot`` section of ``path`` (defaults where absent), then ``overrides`` (not None).

        Raises:
            FileNotFoundError: no such file. RecordError: unknown keys or bad values.
        """
        params = node_params(load_params(path), SECTION, path, required=False)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise RecordError(f'robot config {path}: {SECTION}: unknown parameter(s) {unknown}; known: {sorted(known)}')
        params.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**params)
        except RecordError as exc:
            raise RecordError(f'robot config {path}: {exc}') from None


def recorded_topics(topics: RobotTopics, cfg: RecordRobotConfig) -> List[str]:
    """Topics to record: every camera (:attr:`RobotTopics.camera_topics`, in camera order; one
    camera: ``image``), joint states, instruction, controller command (+ policy command)."""
    out = list(topics.image_topics) + [topics.joint_states, topics.instruction, topics.controller_command]
    if cfg.record_policy_command:
        out.append(topics.policy_command)
    return out


def _qos_entry(spec: QosSpec) -> Dict[str, Any]:
    return {'history': spec.history, 'depth': int(spec.depth), 'reliability': spec.reliability,
            'durability': spec.durability}


def qos_overrides(topics: RobotTopics) -> Dict[str, Dict[str, Any]]:
    """``{topic: {history, depth, reliability, durability}}`` for ``--qos-profile-overrides-path``.

    The schema is rosbag2's (README "Overriding QoS Profiles", Humble and Jazzy): policy short names
    as ``ros2bag.api.interpret_dict_as_qos_profile`` reads them. Every camera topic and the joint
    states get :data:`~robot_drivers.qos.SENSOR_DATA`, the instruction
    :data:`~robot_drivers.qos.LATCHED`; commands are left to rosbag2's adaptive QoS (reliable when
    every publisher is).
    """
    out = {t: _qos_entry(SENSOR_DATA) for t in topics.image_topics}
    out[topics.joint_states] = _qos_entry(SENSOR_DATA)
    out[topics.instruction] = _qos_entry(LATCHED)
    return out


def qos_overrides_yaml(topics: RobotTopics) -> str:
    """:func:`qos_overrides` as the YAML text written next to the episodes."""
    import yaml
    return yaml.safe_dump(qos_overrides(topics), sort_keys=False, default_flow_style=False)


def record_command(topics: Sequence[str], cfg: RecordRobotConfig, bag_dir: PathLike, qos_path: PathLike,
                   distro: str) -> List[str]:
    """``ros2 bag record`` argv for one episode (flags as in rosbag2's ``ros2bag/verb/record.py``).

    Args:
        topics: topics to record (absolute names).
        bag_dir: the episode's bag directory (must not exist: rosbag2 refuses to overwrite).
        qos_path: the QoS override YAML file.
        distro: ``$ROS_DISTRO``: Humble, Iron and Jazzy get the topics as positional arguments,
            later distros as ``--topics``; Jazzy and later get ``--disable-keyboard-controls`` so
            the recorder leaves the terminal's keys to this program (see ``_POSITIONAL_TOPIC_DISTROS``).

    Raises:
        RecordError: no distro, or a topic that is not absolute.
    """
    distro = (distro or '').strip().lower()
    if not distro:
        raise RecordError('ROS_DISTRO is not set: source /opt/ros/<distro>/setup.bash or pass --ros-distro')
    bad = [t for t in topics if not isinstance(t, str) or not t.startswith('/')]
    if bad or not topics:
        raise RecordError(f'topics to record must be absolute names, got {list(topics)}')
    argv = ['ros2', 'bag', 'record', '-o', str(bag_dir), '-s', cfg.storage,
            '--qos-profile-overrides-path', str(qos_path)]
    if cfg.storage_preset_profile:
        argv += ['--storage-preset-profile', cfg.storage_preset_profile]
    if cfg.compression_mode != 'none':
        argv += ['--compression-mode', cfg.compression_mode, '--compression-format', 'zstd']
    if cfg.max_bag_duration_s:
        argv += ['--max-bag-duration', str(int(cfg.max_bag_duration_s))]
    if cfg.max_bag_size_bytes:
        argv += ['--max-bag-size', str(int(cfg.max_bag_size_bytes))]
    if distro not in _NO_KEYBOARD_CONTROLS:
        argv.append('--disable-keyboard-controls')
    if distro in _POSITIONAL_TOPIC_DISTROS:
        return argv + list(topics)
    return argv + ['--topics'] + list(topics)


def instruction_command(topic: str, text: str) -> List[str]:
    """``ros2 topic pub`` argv publishing ``text`` latched (reliable, transient local, depth 1) at 1 Hz.

    ``--qos-reliability``/``--qos-durability``/``--qos-depth`` exist in Humble's and Jazzy's ros2topic.
    """
    return ['ros2', 'topic', 'pub', '--qos-reliability', LATCHED.reliability, '--qos-durability', LATCHED.durability,
            '--qos-depth', str(LATCHED.depth), topic, 'std_msgs/msg/String', json.dumps({'data': text})]


def episode_dir(output: PathLike) -> Path:
    """``<output>/episode_<nnnn>`` with the number after the highest one already there (0 first)."""
    out = Path(output)
    taken = []
    if out.is_dir():
        for p in out.iterdir():
            if p.name.startswith('episode_') and p.name[8:].isdigit():
                taken.append(int(p.name[8:]))
    return out / f'episode_{(max(taken) + 1) if taken else 0:04d}'


# ----------------------------------------------------------------------------- runner
def _stop(proc: subprocess.Popen, timeout_s: float = 30.0, interrupt: bool = True) -> int:
    """SIGINT (rosbag2 finishes the bag), then SIGTERM / SIGKILL if it does not exit in time.

    ``interrupt=False`` when the terminal's Ctrl-C already reached the process (same process group):
    a second SIGINT could cut rosbag2's shutdown short, so only wait.
    """
    if proc.poll() is None:
        if interrupt:
            proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                return proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                return proc.wait()
    return int(proc.returncode)


def _wait_started(proc: subprocess.Popen, bag: Path, timeout_s: float = 10.0) -> None:
    """Wait until ``ros2 bag record`` has created ``bag`` (it does so when it starts recording) or exited:
    an interrupt before that would end it without a bag."""
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and not bag.is_dir() and time.monotonic() < deadline:
        time.sleep(0.02)


def record_episodes(topics: RobotTopics, cfg: RecordRobotConfig, *, distro: str, instruction: Optional[str] = None,
                    ask: Callable[[str], str] = input, say: Callable[[str], None] = print,
                    sleep: Callable[[float], None] = time.sleep) -> List[Path]:
    """Record episodes until ``cfg.episodes`` are done, ``q`` is entered, or Ctrl-C / end of input.

    Returns:
        The episode bag directories written, in order.

    Raises:
        RecordError: ``ros2 bag record`` exited on its own (the text has its exit status and command),
            or left no ``metadata.yaml``.
    """
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    qos_path = out / 'qos_overrides.yaml'
    qos_path.write_text(qos_overrides_yaml(topics), encoding='utf-8')
    names = recorded_topics(topics, cfg)
    done: List[Path] = []
    pub = None
    if instruction:
        pub = subprocess.Popen(instruction_command(topics.instruction, instruction), stdin=subprocess.DEVNULL)
    try:
        while not cfg.episodes or len(done) < cfg.episodes:
            bag = episode_dir(out)
            if not cfg.episode_duration_s:
                try:
                    reply = ask(f'Enter: start {bag.name} (q: quit) ')
                except EOFError:
                    break
                if reply.strip().lower() == 'q':
                    break
            argv = record_command(names, cfg, bag, qos_path, distro)
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
            say(f'recording {bag} ({", ".join(names)})')
            ctrl_c = False
            try:
                if cfg.episode_duration_s:
                    deadline = time.monotonic() + float(cfg.episode_duration_s)
                    while proc.poll() is None and time.monotonic() < deadline:
                        sleep(min(0.1, max(0.0, deadline - time.monotonic())))
                else:
                    try:
                        ask(f'Enter: stop {bag.name} ')
                    except EOFError:
                        pass
            except KeyboardInterrupt:
                ctrl_c = True
                raise
            finally:
                early = None if ctrl_c else proc.poll()
                if not ctrl_c:
                    _wait_started(proc, bag)
                status = _stop(proc, interrupt=not ctrl_c)
            if early is not None:
                raise RecordError(f'ros2 bag record exited with status {early} during {bag.name}: {" ".join(argv)}')
            if not (bag / 'metadata.yaml').is_file():
                raise RecordError(f'{bag}: ros2 bag record (status {status}) left no metadata.yaml; '
                                  f'the episode was not saved')
            done.append(bag)
            say(f'saved {bag}')
    except KeyboardInterrupt:  # the terminal's SIGINT reached `ros2 bag record` too: its bag is finished
        say(f'interrupted; {len(done)} episode(s) complete in {out}')
        raise
    finally:
        if pub is not None:
            _stop(pub, timeout_s=5.0)  # a Ctrl-C reached it too; SIGINT again is harmless for ros2 topic pub
    return done


def _default_robot_config() -> str:
    """``config/franka.yaml`` of the workspace, else the installed ``share/vla_policy/config/franka.yaml``."""
    here = Path('config') / 'franka.yaml'
    if here.is_file():
        return str(here)
    try:
        from ament_index_python.packages import get_package_share_directory
        return str(Path(get_package_share_directory('vla_policy')) / 'config' / 'franka.yaml')
    except Exception:  # no ament index (no ROS): the relative path, which then fails with its own name
        return str(here)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``record_robot`` console script; exit status 0, 1 (an error, one line on stderr), 2 (usage), 130 (Ctrl-C)."""
    from robot_drivers import cli
    p = cli.ArgumentParser(prog='record_robot', description=__doc__.split('\n\n')[0])
    p.add_argument('--robot-config', default=None,
                   help='robot parameter file naming the topics (default config/franka.yaml)')
    p.add_argument('--output', default=None, help='episode directory (default: record_robot.output)')
    p.add_argument('--episodes', type=cli.non_negative_int, default=None,
                   help='stop after N episodes (0 = until q / Ctrl-C)')
    p.add_argument('--episode-duration', type=float, default=None,
                   help='seconds per episode; 0 = Enter starts and stops each episode')
    p.add_argument('--instruction', default=None,
                   help='publish this instruction latched while recording (ros2 topic pub)')
    p.add_argument('--max-bag-duration', type=cli.non_negative_int, default=None,
                   help='split bags every N s (0 = never)')
    p.add_argument('--storage', default=None, choices=sorted(STORAGE_PRESETS))
    p.add_argument('--storage-preset-profile', default=None)
    p.add_argument('--record-policy-command', action='store_true', default=None)
    p.add_argument('--ros-distro', default=os.environ.get('ROS_DISTRO', ''),
                   help='humble, jazzy, ... (default $ROS_DISTRO): decides the ros2 bag record flags')
    p.add_argument('--dry-run', action='store_true', help='print the ros2 bag record command and exit')
    a = p.parse_args(argv)

    def body() -> int:
        path = a.robot_config or _default_robot_config()
        topics = RobotTopics.from_params_file(path)
        cfg = RecordRobotConfig.from_params_file(
            path, output=a.output, episodes=a.episodes, episode_duration_s=a.episode_duration,
            max_bag_duration_s=a.max_bag_duration, storage=a.storage, storage_preset_profile=a.storage_preset_profile,
            record_policy_command=a.record_policy_command)
        if a.dry_run:
            bag = episode_dir(cfg.output)
            print(' '.join(record_command(recorded_topics(topics, cfg), cfg, bag,
                                          Path(cfg.output) / 'qos_overrides.yaml', a.ros_distro)))
            print(qos_overrides_yaml(topics), end='')
            return 0
        done = record_episodes(topics, cfg, distro=a.ros_distro, instruction=a.instruction)
        print(f'{len(done)} episode(s) in {cfg.output}')
        return 0

    return cli.run_main(p.prog, body, debug=a.debug)


if __name__ == '__main__':
    sys.exit(main())
