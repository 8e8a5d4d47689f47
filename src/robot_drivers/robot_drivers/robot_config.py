"""The topics of one robot, read from its ROS 2 parameter file (ROS-free).

``config/<robot>.yaml`` is the parameter file ``ros2 launch`` hands to the deployed nodes, so its
topic parameters are what runs on the robot. Recording (``record_robot``) and training (``train``
with ``data.robot_config``) read the same file through :meth:`RobotTopics.from_params_file`, so the
topics a dataset is recorded on, the topics training reads and the topics the policy subscribes to
cannot disagree.

Which parameter gives which topic:

========================  ===============================================================
``image``                 ``policy_node.image_topic``; with ``policy_node.cameras`` set, the
                          first camera's topic
``cameras``               ``policy_node.cameras``: ``name=topic`` pairs, one per model camera
                          (``"front=/camera/image_raw,wrist=/wrist_camera/image_raw"``, or a
                          YAML mapping ``{front: /camera/image_raw, ...}``); ``""`` / absent =
                          one camera, :data:`DEFAULT_CAMERA` on ``image``
``joint_states``          ``policy_node.joint_states_topic`` (= ``arm_driver_node.state_topic``)
``instruction``           ``policy_node.instruction_topic``
``policy_command``        ``policy_node.command_topic`` (= ``arm_driver_node.input_topic``)
``controller_command``    ``arm_driver_node.output_topic``: the controller's topic, what the arm
                          executed after the safety filter
========================  ===============================================================

A ``sim_node`` section, when present, must publish and subscribe on the same topics: with one
camera its ``image_topic`` is ``policy_node.image_topic``; with ``policy_node.cameras`` set, every
camera topic must be one the sim publishes (``image_topic`` or ``wrist_image_topic``).

:attr:`RobotTopics.camera_topics` is every camera's topic (``{name: topic}``, the model's order),
what ``record_robot`` records and ``policy_node`` subscribes to, one subscription per camera (the
``cameras`` syntax and the "" default are :attr:`vla_policy.runtime.RuntimeConfig.cameras` /
:func:`vla_policy.node_core.camera_topics`).

Machines driven by the generic ``machine_driver_node`` (``config/<machine>.yaml`` of the UR5e,
SO-100, humanoids, excavator, wheel loader, truck) have that section instead of
``arm_driver_node``: its ``input_topic`` must be ``policy_node.command_topic`` and its
``state_topic`` the joint states; ``controller_command`` (what training reads as the action) is
``policy_node.record_command_topic`` where set, else the policy command itself (the generic
``JointTrajectory`` form every machine's driver takes; see :mod:`robot_drivers.machine`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple, Union

__all__ = ['RobotTopics', 'DEFAULT_CAMERA', 'load_params', 'node_params', 'parse_cameras']

#: Name of the single camera on ``image`` when ``policy_node.cameras`` is unset (the
#: ``camera_names`` default of the models and ``vla_training.bag_reader.DEFAULT_CAMERA``).
DEFAULT_CAMERA = 'front'
# sim_node parameters naming a camera topic the sim publishes ('' = that camera is off)
_SIM_CAMERA_PARAMS = ('image_topic', 'wrist_image_topic')

PathLike = Union[str, Path]

# (field, node, parameter) in the order of the table above
_SOURCES: Tuple[Tuple[str, str, str], ...] = (
    ('image', 'policy_node', 'image_topic'),
    ('joint_states', 'policy_node', 'joint_states_topic'),
    ('instruction', 'policy_node', 'instruction_topic'),
    ('policy_command', 'policy_node', 'command_topic'),
    ('controller_command', 'arm_driver_node', 'output_topic'),
)
# other (node, parameter) pairs that must name the same topic as a field
_MUST_AGREE: Tuple[Tuple[str, str, str], ...] = (
    ('joint_states', 'arm_driver_node', 'state_topic'),
    ('policy_command', 'arm_driver_node', 'input_topic'),
    ('image', 'sim_node', 'image_topic'),
    ('joint_states', 'sim_node', 'joint_states_topic'),
    ('instruction', 'sim_node', 'instruction_topic'),
    ('controller_command', 'sim_node', 'command_topic'),
    ('controller_command', 'policy_node', 'record_command_topic'),
)
# Parameters checked only where the file sets them (older parameter files lack them).
_OPTIONAL = {('policy_node', 'record_command_topic')}


def load_params(path: PathLike) -> Dict[str, Any]:
    """The YAML mapping of a ROS 2 parameter file.

    Raises:
        FileNotFoundError: no such file. ValueError: not a mapping of node sections.
    """
    import yaml
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'robot config {path}: no such file')
    with open(path, encoding='utf-8') as f:
        raw = yaml.safe_load(f)
    if not isinstance(raw, dict):
        raise ValueError(f'robot config {path}: expected a mapping of node sections '
                         f'(node_name: {{ros__parameters: ...}})')
    return raw


def node_params(raw: Dict[str, Any], node: str, path: PathLike, required: bool = True) -> Dict[str, Any]:
    """``raw[node]['ros__parameters']`` (``{}`` for an absent optional section).

    Raises:
        ValueError: a required section is absent, or a section without ``ros__parameters``.
    """
    if node not in raw:
        if required:
            raise ValueError(f'robot config {path}: no {node!r} section; it has {sorted(raw)}')
        return {}
    sec = raw[node]
    if not isinstance(sec, dict) or not isinstance(sec.get('ros__parameters'), dict):
        raise ValueError(f'robot config {path}: section {node!r} needs a ros__parameters mapping')
    return dict(sec['ros__parameters'])


def parse_cameras(value: Any, where: str = 'cameras') -> Dict[str, str]:
    """``{camera name: topic}`` from ``"name=/topic,name=/topic"`` (the ``policy_node.cameras``
    parameter, the syntax of ``vla_policy.runtime.RuntimeConfig.cameras``) or a mapping, in the
    order given; ``{}`` for ``None`` / ``""`` (one camera on ``image_topic``).

    Raises:
        ValueError: a pair that is not ``name=/topic``, a camera or topic given twice, or a value
            that is neither a string nor a mapping (``where`` names the parameter).
    """
    if value is None:
        return {}
    if isinstance(value, Mapping):
        pairs = [(str(k).strip(), v.strip() if isinstance(v, str) else v) for k, v in value.items()]
    elif isinstance(value, str):
        if not value.strip():
            return {}
        pairs = [tuple(x.strip() for x in pair.partition('=')[::2]) if '=' in pair else (pair.strip(), None)
                 for pair in value.split(',')]
    else:
        raise ValueError(f'{where} must be "name=/topic" pairs separated by commas or a mapping, got {value!r}')
    out: Dict[str, str] = {}
    for name, topic in pairs:
        if not name or not isinstance(topic, str) or not topic.startswith('/'):
            raise ValueError(f'{where} must be name=/topic pairs (e.g. '
                             f'"front=/camera/image_raw,wrist=/wrist_camera/image_raw"), got camera {name!r} '
                             f'with topic {topic!r} in {value!r}')
        if name in out:
            raise ValueError(f'{where} names camera {name!r} twice: {value!r}')
        if topic in out.values():
            raise ValueError(f'{where} gives the topic {topic} to two cameras: {value!r}')
        out[name] = topic
    return out


class CameraTopics:
    """Camera accessors of a topic set with ``cameras`` (``((name, topic), ...)``, ``()`` = one camera) and
    ``image`` (the first camera's topic): :class:`RobotTopics`, ``vla_policy.rollout_recorder.RolloutTopics``."""

    cameras: Tuple[Tuple[str, str], ...]
    image: str

    @property
    def camera_topics(self) -> Dict[str, str]:
        """``{camera name: image topic}`` of every camera, in order (``{DEFAULT_CAMERA: image}`` without cameras)."""
        return dict(self.cameras) if self.cameras else {DEFAULT_CAMERA: self.image}

    @property
    def image_topics(self) -> List[str]:
        """Every camera's topic, in camera order (``[image]`` with one camera)."""
        return list(self.camera_topics.values())


@dataclass(frozen=True)
class RobotTopics(CameraTopics):
    """The topics of one robot (absolute names). See the module docstring for their sources.

    ``cameras``: every camera as ``((name, topic), ...)`` in the model's order (a mapping is
    accepted and stored as such pairs); ``()`` = one camera, :data:`DEFAULT_CAMERA` on ``image``.
    With cameras, ``image`` is the first camera's topic.

    Raises:
        ValueError: ``cameras`` malformed (:func:`parse_cameras`) or ``image`` not its first topic.
    """

    image: str
    joint_states: str
    instruction: str
    policy_command: str
    controller_command: str
    cameras: Tuple[Tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        cams = parse_cameras(self.cameras if isinstance(self.cameras, (Mapping, str)) else dict(self.cameras),
                             'RobotTopics.cameras')
        object.__setattr__(self, 'cameras', tuple(cams.items()))
        if cams and self.image != next(iter(cams.values())):
            raise ValueError(f'RobotTopics: image {self.image} must be the first camera\'s topic of {cams}')

    @classmethod
    def from_params_file(cls, path: PathLike) -> 'RobotTopics':
        """Read and cross-check the topic parameters of ``path`` (e.g. ``config/franka.yaml``).

        Raises:
            FileNotFoundError: no such file.
            ValueError: a missing section or parameter, a topic that is not an absolute name, or two
                nodes naming different topics for the same stream (the text names both parameters).
        """
        raw = load_params(path)
        if 'arm_driver_node' not in raw and 'machine_driver_node' in raw:
            return cls._from_machine_driver(raw, path)
        values: Dict[str, str] = {}
        origin: Dict[str, str] = {}
        for fld, node, param in _SOURCES:
            params = node_params(raw, node, path)
            if param not in params:
                raise ValueError(f'robot config {path}: {node}.{param} is missing')
            values[fld] = _topic(params[param], f'{node}.{param}', path)
            origin[fld] = f'{node}.{param}'
        cams = _cameras(node_params(raw, 'policy_node', path), path)
        if cams:
            values['image'] = next(iter(cams.values()))
            origin['image'] = f'policy_node.cameras ({next(iter(cams))})'
        problems: List[str] = []
        for fld, node, param in _MUST_AGREE:
            if cams and (fld, node) == ('image', 'sim_node'):
                continue          # several cameras: checked against every sim camera below
            params = node_params(raw, node, path, required=node != 'sim_node')
            if param not in params:
                if (node == 'sim_node' and not params) or (node, param) in _OPTIONAL:
                    continue
                raise ValueError(f'robot config {path}: {node}.{param} is missing')
            got = _topic(params[param], f'{node}.{param}', path)
            if got != values[fld]:
                problems.append(f'{node}.{param} is {got} but {origin[fld]} is {values[fld]}')
        sim = node_params(raw, 'sim_node', path, required=False)
        if cams and sim:
            published = {str(sim[p]): p for p in _SIM_CAMERA_PARAMS if sim.get(p)}
            for cam, topic in cams.items():
                if topic not in published:
                    problems.append(f'policy_node.cameras reads camera {cam!r} on {topic} but sim_node publishes '
                                    f'cameras only on {sorted(published) or "no topic"} '
                                    f'({", ".join(f"sim_node.{p}" for p in _SIM_CAMERA_PARAMS)})')
        if problems:
            raise ValueError(f'robot config {path}: nodes disagree on topics: ' + '; '.join(problems))
        return cls(**values, cameras=tuple(cams.items()))

    @classmethod
    def _from_machine_driver(cls, raw: Dict[str, Any], path: PathLike) -> 'RobotTopics':
        pol = node_params(raw, 'policy_node', path)
        drv = node_params(raw, 'machine_driver_node', path)
        values: Dict[str, str] = {}
        for fld, param in (('image', 'image_topic'), ('joint_states', 'joint_states_topic'),
                           ('instruction', 'instruction_topic'), ('policy_command', 'command_topic')):
            if param not in pol:
                raise ValueError(f'robot config {path}: policy_node.{param} is missing')
            values[fld] = _topic(pol[param], f'policy_node.{param}', path)
        cams = _cameras(pol, path)
        if cams:
            values['image'] = next(iter(cams.values()))
        rec = pol.get('record_command_topic')
        values['controller_command'] = (_topic(rec, 'policy_node.record_command_topic', path) if rec
                                        else values['policy_command'])
        problems = []
        for fld, param in (('policy_command', 'input_topic'), ('joint_states', 'state_topic')):
            if param in drv and _topic(drv[param], f'machine_driver_node.{param}', path) != values[fld]:
                problems.append(f'machine_driver_node.{param} is {drv[param]} but policy_node names {values[fld]}')
        if problems:
            raise ValueError(f'robot config {path}: nodes disagree on topics: ' + '; '.join(problems))
        return cls(**values, cameras=tuple(cams.items()))

    def as_dict(self) -> Dict[str, Any]:
        """The topic fields by name; with ``cameras`` also ``cameras: {name: topic}``."""
        out: Dict[str, Any] = {f: getattr(self, f) for f, _, _ in _SOURCES}
        if self.cameras:
            out['cameras'] = dict(self.cameras)
        return out


def _cameras(policy_params: Mapping[str, Any], path: PathLike) -> Dict[str, str]:
    """``policy_node.cameras`` of a parameter file as ``{name: topic}`` ({} when unset or "")."""
    try:
        return parse_cameras(policy_params.get('cameras'), 'policy_node.cameras')
    except ValueError as exc:
        raise ValueError(f'robot config {path}: {exc}') from None


def _topic(value: Any, where: str, path: PathLike) -> str:
    if not isinstance(value, str) or not value.startswith('/'):
        raise ValueError(f'robot config {path}: {where} must be an absolute topic name like "/x", got {value!r}')
    return value
