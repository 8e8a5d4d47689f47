"""Record policy rollouts as rosbag2 (MCAP) episodes that ``train`` reads (ROS-free; DAgger data).

``policy_node`` with ``record_rollouts:=<dir>`` opens one :class:`RolloutRecorder` episode per
activation (``activate`` starts it, ``deactivate`` / shutdown closes it) and writes, with the node
clock's receive times:

============================  ==================================  =====================================
topic (parameter)             type                                what
============================  ==================================  =====================================
``image_topic`` (one topic    sensor_msgs/Image (CompressedImage) every camera message received, one
per camera: ``cameras``)                                          topic per camera the runtime reads
``joint_states_topic``        sensor_msgs/JointState              every joint state received
``instruction_topic``         std_msgs/String (latched QoS)       the instruction at the episode start
                                                                  and each change
``record_command_topic``      trajectory_msgs/JointTrajectory     per control tick, the plan row the
(default: the controller's                                        runtime executes at that tick
``/arm_controller/...``)                                          (:func:`executed_row`), one point
``command_topic``             trajectory_msgs/JointTrajectory     each command the node published
============================  ==================================  =====================================

The first four are the topics ``vla_training``'s bag reader reads with the robot's parameter file
(``BagTopics.from_robot_config``: the cameras (``image_topic``, or every camera of ``cameras``),
joint states and instruction from ``policy_node``, the command from
``arm_driver_node.output_topic``), so a directory of rollouts is a training set as it is:
``ros2 run vla_training train --bags <dir>``; with several cameras every camera's images are in the
bag, each on its own topic, so a model with the same ``camera_names`` trains on them. The per-tick
row is what the runtime asked the arm for, before the arm driver's safety filter; a correction
sent by a person straight to the controller is not in it (record those with ``record_robot``).

Messages are serialized as CDR: rosbags messages (``__msgtype__``) with the rosbags Jazzy type
store, anything else with the ``serialize`` callable given (``rclpy.serialization.serialize_message``
in the node), so both produce the bytes ``ros2 bag record`` stores. The offered QoS recorded per
topic is what a live ``ros2 bag record`` stores for such publishers (sensor data: best effort depth
5; commands: reliable depth 10; instruction: reliable transient local depth 1), so ``ros2 bag play``
re-offers it (:data:`robot_drivers.bag_writer.QOS_KINDS`).

Each episode is a :class:`robot_drivers.bag_writer.EpisodeBagWriter`: written into a temporary
directory beside ``<dir>/rollout_NNNN`` and renamed onto it when closed;
:meth:`RolloutRecorder.abort` (or an error while closing) removes it, so a crash never leaves a
half-written bag under a bag's name.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import numpy as np

from robot_drivers.bag_writer import STORAGES, EpisodeBagWriter
from robot_drivers.robot_config import DEFAULT_CAMERA, CameraTopics   # DEFAULT_CAMERA: the models' camera_names default

__all__ = ['RolloutTopics', 'RolloutRecorder', 'executed_row', 'image_type', 'EPISODE_PREFIX', 'DEFAULT_CAMERA',
           'DEFAULT_IMAGE_TOPIC']

PathLike = Union[str, Path]
EPISODE_PREFIX = 'rollout_'
IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED = 'sensor_msgs/msg/CompressedImage'
JOINT_STATE = 'sensor_msgs/msg/JointState'
STRING = 'std_msgs/msg/String'
TRAJECTORY = 'trajectory_msgs/msg/JointTrajectory'
DEFAULT_IMAGE_TOPIC = '/camera/image_raw'


def image_type(topic: str) -> str:
    """``CompressedImage`` for a topic ending in ``/compressed`` (as policy_node subscribes), else ``Image``."""
    return COMPRESSED if topic.rstrip('/').endswith('/compressed') else IMAGE


@dataclass(frozen=True)
class RolloutTopics(CameraTopics):
    """Topic names of a rollout bag (absolute names; see the module docstring's table).

    ``cameras``: every camera the runtime reads, ``{name: image topic}`` in its order
    (:attr:`vla_policy.runtime.PolicyRuntime.camera_topics`; stored as ``((name, topic), ...)``);
    each topic is recorded. ``()`` = one camera, :data:`DEFAULT_CAMERA` on ``image``.
    ``image``: the first camera's topic; ``''`` (default) = the first of ``cameras``, or
    :data:`DEFAULT_IMAGE_TOPIC` without cameras.
    ``command`` may be ``''``: the published commands are then not recorded.

    Raises:
        ValueError: a name (other than an empty ``command``) that is not absolute, ``image`` that is
            not the first camera's topic, a camera named twice, or two roles / cameras on one topic.
    """

    image: str = ''
    joint_states: str = '/joint_states'
    instruction: str = '/vla/instruction'
    executed: str = '/arm_controller/joint_trajectory'
    command: str = '/vla/joint_trajectory'
    cameras: Tuple[Tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        cams = self.cameras
        pairs = list(cams.items()) if isinstance(cams, Mapping) else [tuple(p) for p in cams]
        if any(len(p) != 2 for p in pairs):
            raise ValueError(f'rollout cameras must be {{name: topic}} or (name, topic) pairs, got {cams!r}')
        pairs = [(str(n), t) for n, t in pairs]
        names = [n for n, _ in pairs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f'rollout cameras name {dup} twice: {cams!r}')
        for name, topic in pairs:
            if not name or not isinstance(topic, str) or not topic.startswith('/'):
                raise ValueError(f'rollout camera {name!r} topic must be an absolute topic name like "/x", '
                                 f'got {topic!r}')
        object.__setattr__(self, 'cameras', tuple(pairs))
        if self.image == '':
            object.__setattr__(self, 'image', pairs[0][1] if pairs else DEFAULT_IMAGE_TOPIC)
        for role in ('image', 'joint_states', 'instruction', 'executed', 'command'):
            v = getattr(self, role)
            if role == 'command' and v == '':
                continue
            if not isinstance(v, str) or not v.startswith('/'):
                raise ValueError(f'rollout topic {role} must be an absolute topic name like "/x", got {v!r}')
        if pairs and self.image != pairs[0][1]:
            raise ValueError(f'rollout topic image {self.image} must be the first camera\'s topic of '
                             f'{dict(pairs)} (or left empty)')
        names = self.image_topics + [t for t in (self.joint_states, self.instruction, self.executed, self.command) if t]
        if len(set(names)) != len(names):
            raise ValueError(f'rollout topics must differ, got {names}')

    @property
    def image_type(self) -> str:
        """The message type of ``image`` (:func:`image_type`)."""
        return image_type(self.image)

    def types(self) -> Dict[str, Tuple[str, str]]:
        """``{topic: (msgtype, QoS kind)}`` of the topics recorded: each camera (its image type,
        ``sensor``), joint states, instruction, executed command (+ published command)."""
        out = {t: (image_type(t), 'sensor') for t in self.image_topics}
        out.update({self.joint_states: (JOINT_STATE, 'sensor'), self.instruction: (STRING, 'latched'),
                    self.executed: (TRAJECTORY, 'reliable')})
        if self.command:
            out[self.command] = (TRAJECTORY, 'reliable')
        return out


def executed_row(positions: np.ndarray, stamp: float, dt: float, now: float) -> Tuple[np.ndarray, int]:
    """The row of a trajectory command the arm is moving to at control time ``now``.

    A command published at ``stamp`` with ``positions (P, J)`` asks for row ``k`` at
    ``stamp + (k + 1) * dt`` (:class:`vla_policy.runtime.TrajectoryCommand`), so at the control
    tick ``stamp + k * dt`` the arm heads for row ``k``: ``k = round((now - stamp) / dt)`` (control
    ticks fall on multiples of ``dt`` after the tick that published the command; rounding absorbs
    timer jitter and the float error of epoch times), clipped to ``[0, P - 1]`` (after the last
    row it holds it). Training reads point 0 of a command as the action, the position due one
    period later, which is this row. Returns ``(row (J,), k)``.

    Raises:
        ValueError: ``positions`` not (P >= 1, J) or ``dt`` not > 0.
    """
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[0] < 1:
        raise ValueError(f'positions must be (P >= 1, J), got {positions.shape}')
    if not dt > 0:
        raise ValueError(f'dt must be > 0, got {dt}')
    k = int(round((float(now) - float(stamp)) / float(dt)))
    k = min(max(k, 0), positions.shape[0] - 1)
    return positions[k], k


class RolloutRecorder:
    """Writes rollout episodes under ``directory``; one open episode at a time.

    Args:
        directory: where episodes go (created if needed): ``rollout_0000``, ``rollout_0001``, ...
            (the next free number).
        topics: :class:`RolloutTopics`.
        serialize: ``msg -> CDR bytes`` for messages that are not rosbags messages (the node
            passes ``rclpy.serialization.serialize_message``); None = rosbags messages only.
        storage: ``'mcap'`` (default, what ``record_robot`` records) or ``'sqlite3'``.

    Attributes:
        path: the open episode's final path (None when none is open).
        counts: ``{topic: messages written}`` of the open (or last) episode.

    Raises:
        ValueError: unknown storage.
    """

    def __init__(self, directory: PathLike, topics: RolloutTopics, *,
                 serialize: Optional[Callable[[Any], bytes]] = None, storage: str = 'mcap') -> None:
        if storage not in STORAGES:
            raise ValueError(f'rollout storage must be one of {STORAGES}, got {storage!r}')
        self.directory = Path(directory)
        self.topics = topics
        self.serialize = serialize
        self.storage = storage
        self.path: Optional[Path] = None
        self.counts: Dict[str, int] = {}
        self._writer: Any = None
        self._instruction: Optional[str] = None

    @property
    def recording(self) -> bool:
        return self._writer is not None

    def _next_path(self) -> Path:
        taken = {p.name for p in self.directory.iterdir()} if self.directory.is_dir() else set()
        i = 0
        while f'{EPISODE_PREFIX}{i:04d}' in taken:
            i += 1
        return self.directory / f'{EPISODE_PREFIX}{i:04d}'

    def start(self, t_sec: float, instruction: Optional[str] = None) -> Path:
        """Open a new episode at ``t_sec`` (s since the epoch); the instruction in force, if any, is
        its first message. Returns the path the episode will have once closed.

        Raises:
            RuntimeError: an episode is open. OSError: the directory cannot be written.
        """
        if self._writer is not None:
            raise RuntimeError(f'rollout {self.path} is still open; stop() it first')
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._next_path()
        writer = EpisodeBagWriter(path, storage=self.storage)   # temp dir + rename: atomic
        writer.open()
        try:
            for topic, (msgtype, kind) in self.topics.types().items():
                writer.add_topic(topic, msgtype, qos=kind)
        except BaseException:
            writer.abort()
            raise
        self._writer, self.path = writer, path
        self.counts = {t: 0 for t in writer.topics}
        self._instruction = None
        if instruction:
            self.instruction(instruction, t_sec)
        return path

    def write(self, topic: str, msg: Any, t_sec: float) -> None:
        """Record ``msg`` on ``topic`` at receive time ``t_sec`` (s). Does nothing when no episode is open.

        Raises:
            KeyError: ``topic`` is not one of the episode's. ValueError: ``t_sec`` negative or not
                finite, a rosbags message of another type, or an rclpy message without ``serialize``.
        """
        if self._writer is None:
            return
        if topic not in self._writer.topics:
            raise KeyError(f'rollout {self.path}: topic {topic} is not recorded; topics: {sorted(self._writer.topics)}')
        if getattr(msg, '__msgtype__', None) is not None:
            self._writer.write(topic, msg, t_sec)            # checks the type and the time
        elif self.serialize is not None:
            t = float(t_sec)
            if not (math.isfinite(t) and t >= 0):
                raise ValueError(f'rollout {self.path}: topic {topic}: time must be finite and >= 0 s, got {t_sec}')
            self._writer.write_raw(topic, bytes(self.serialize(msg)), int(round(t * 1e9)))
        else:
            raise ValueError(f'rollout {self.path}: topic {topic}: {type(msg).__name__} is not a rosbags message '
                             'and no serialize function was given')
        self.counts[topic] += 1

    def instruction(self, text: str, t_sec: float, string_type: Any = None) -> None:
        """Record the instruction ``text`` at ``t_sec`` when it differs from the last one recorded.

        ``string_type``: the ``std_msgs/String`` class to build (rclpy's in the node, then
        serialized with ``serialize``); default the rosbags one.
        """
        if self._writer is None or text == self._instruction:
            return
        if string_type is None:
            from robot_drivers.conversions import typestore
            string_type = typestore().types[STRING]
        self.write(self.topics.instruction, string_type(data=str(text)), t_sec)
        self._instruction = text

    def executed(self, command: Any, now: float, types: Any) -> Optional[int]:
        """Record, at control tick ``now``, the row of ``command`` (a
        :class:`~vla_policy.runtime.TrajectoryCommand`: ``joint_names, positions (P, J), dt, stamp``)
        that the arm is moving to (:func:`executed_row`) as a one-point JointTrajectory stamped
        ``now`` on the executed topic, built from ``types``
        (:class:`robot_drivers.conversions.MessageTypes`). Returns the row index (None when no
        episode is open or ``command`` is None: nothing is executed, the driver holds).
        """
        if self._writer is None or command is None:
            return None
        from robot_drivers.conversions import action_trajectory, arrays_to_trajectory
        row, k = executed_row(command.positions, command.stamp, command.dt, now)
        emb = getattr(command, 'embodiment', None)
        msg = (action_trajectory(emb, row[None], now, types, dt=command.dt) if emb is not None
               else arrays_to_trajectory(command.joint_names, row[None], now, types, dt=command.dt))
        self.write(self.topics.executed, msg, now)
        return k

    def stop(self) -> Optional[Path]:
        """Close the open episode and rename it onto its final path; returns it (None when none was
        open). An episode with no executed command is discarded (None): ``train`` could not use it.

        Raises:
            OSError / rosbags errors while finishing the file (the episode is removed first).
        """
        if self._writer is None:
            return None
        writer = self._writer
        self._writer = None
        if not self.counts.get(self.topics.executed):
            writer.abort()
            return None
        return writer.close()      # on error the writer removes the episode and re-raises

    def abort(self) -> None:
        """Discard the open episode (nothing is left on disk)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.abort()
