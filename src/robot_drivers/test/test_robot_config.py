"""robot_drivers.robot_config: the topics of a robot from its ROS 2 parameter file, cross-checked."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from robot_drivers.robot_config import RobotTopics

FRANKA = Path(__file__).resolve().parents[3] / 'config' / 'franka.yaml'


def test_franka_topics():
    t = RobotTopics.from_params_file(FRANKA)
    raw = yaml.safe_load(FRANKA.read_text())
    policy, driver = raw['policy_node']['ros__parameters'], raw['arm_driver_node']['ros__parameters']
    assert t.as_dict() == {'image': policy['image_topic'], 'joint_states': policy['joint_states_topic'],
                           'instruction': policy['instruction_topic'], 'policy_command': policy['command_topic'],
                           'controller_command': driver['output_topic']}
    assert t.controller_command == '/arm_controller/joint_trajectory' and t.policy_command == '/vla/joint_trajectory'


def test_without_a_sim_section(tmp_path):
    raw = yaml.safe_load(FRANKA.read_text())
    del raw['sim_node']
    f = tmp_path / 'robot.yaml'
    f.write_text(yaml.safe_dump(raw))
    assert RobotTopics.from_params_file(f) == RobotTopics.from_params_file(FRANKA)


def test_rollout_recording_topic_must_be_the_controller_topic_where_set(tmp_path):
    raw = yaml.safe_load(FRANKA.read_text())
    policy = raw['policy_node']['ros__parameters']
    f = tmp_path / 'robot.yaml'
    policy['record_command_topic'] = '/vla/joint_trajectory'   # would record the wrong stream as the action
    f.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=r'policy_node\.record_command_topic is /vla/joint_trajectory but '
                                         r'arm_driver_node\.output_topic is /arm_controller/joint_trajectory'):
        RobotTopics.from_params_file(f)
    del policy['record_command_topic']                          # older parameter files: not checked
    f.write_text(yaml.safe_dump(raw))
    assert RobotTopics.from_params_file(f) == RobotTopics.from_params_file(FRANKA)


def test_disagreeing_nodes_are_named(tmp_path):
    raw = yaml.safe_load(FRANKA.read_text())
    raw['arm_driver_node']['ros__parameters']['input_topic'] = '/teleop/joint_trajectory'
    raw['sim_node']['ros__parameters']['image_topic'] = '/camera/color/image_raw'
    bad = tmp_path / 'robot.yaml'
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError) as ei:
        RobotTopics.from_params_file(bad)
    msg = str(ei.value)
    assert str(bad) in msg
    assert 'arm_driver_node.input_topic is /teleop/joint_trajectory but policy_node.command_topic is ' \
           '/vla/joint_trajectory' in msg
    assert 'sim_node.image_topic is /camera/color/image_raw but policy_node.image_topic is /camera/image_raw' in msg
    del raw['policy_node']['ros__parameters']['image_topic']
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=r'policy_node\.image_topic is missing'):
        RobotTopics.from_params_file(bad)
    with pytest.raises(FileNotFoundError, match='nope.yaml'):
        RobotTopics.from_params_file(tmp_path / 'nope.yaml')


def test_not_a_parameter_file(tmp_path):
    f = tmp_path / 'robot.yaml'
    f.write_text('- a\n- b\n')
    with pytest.raises(ValueError, match='mapping of node sections'):
        RobotTopics.from_params_file(f)
    f.write_text('policy_node: {image_topic: /x}\n')
    with pytest.raises(ValueError, match="section 'policy_node' needs a ros__parameters mapping"):
        RobotTopics.from_params_file(f)
    raw = yaml.safe_load(FRANKA.read_text())
    raw['policy_node']['ros__parameters']['image_topic'] = 'camera'
    f.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=r'policy_node\.image_topic must be an absolute topic name'):
        RobotTopics.from_params_file(f)


def test_machine_driver_config_topics(tmp_path):
    """A machine driven by machine_driver_node: the policy command is what training reads, unless
    record_command_topic names another; the driver must take the policy's command and joint states."""
    import yaml
    from robot_drivers.robot_config import RobotTopics
    cfg = {'policy_node': {'ros__parameters': {
        'image_topic': '/cab_camera/image_raw', 'joint_states_topic': '/zx200/joint_states',
        'instruction_topic': '/vla/instruction', 'command_topic': '/vla/joint_trajectory'}},
        'machine_driver_node': {'ros__parameters': {'machine': 'excavator_zx200',
                                                    'input_topic': '/vla/joint_trajectory',
                                                    'state_topic': '/zx200/joint_states'}}}
    p = tmp_path / 'm.yaml'
    p.write_text(yaml.safe_dump(cfg))
    rt = RobotTopics.from_params_file(p)
    assert rt.controller_command == '/vla/joint_trajectory' and rt.image == '/cab_camera/image_raw'
    cfg['policy_node']['ros__parameters']['record_command_topic'] = '/zx200/executed'
    p.write_text(yaml.safe_dump(cfg))
    assert RobotTopics.from_params_file(p).controller_command == '/zx200/executed'
    cfg['machine_driver_node']['ros__parameters']['input_topic'] = '/other'
    p.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match='machine_driver_node.input_topic'):
        RobotTopics.from_params_file(p)


def _with_cameras(tmp_path, cameras, **sim):
    raw = yaml.safe_load(FRANKA.read_text())
    raw['policy_node']['ros__parameters']['cameras'] = cameras
    raw['sim_node']['ros__parameters'].update(sim)
    f = tmp_path / 'robot.yaml'
    f.write_text(yaml.safe_dump(raw, sort_keys=False))
    return f


def test_one_camera_when_cameras_is_unset_or_empty(tmp_path):
    t = RobotTopics.from_params_file(FRANKA)      # cameras: "" in config/franka.yaml
    assert t.cameras == () and t.camera_topics == {'front': '/camera/image_raw'}
    assert t.image_topics == ['/camera/image_raw']
    raw = yaml.safe_load(FRANKA.read_text())
    del raw['policy_node']['ros__parameters']['cameras']      # older parameter files have none
    f = tmp_path / 'old.yaml'
    f.write_text(yaml.safe_dump(raw))
    assert RobotTopics.from_params_file(f) == t


@pytest.mark.parametrize('cameras', ['front=/camera/image_raw,wrist=/wrist_camera/image_raw',
                                     ' front = /camera/image_raw , wrist=/wrist_camera/image_raw ',
                                     {'front': '/camera/image_raw', 'wrist': '/wrist_camera/image_raw'}])
def test_every_camera_of_policy_node_cameras(tmp_path, cameras):
    t = RobotTopics.from_params_file(_with_cameras(tmp_path, cameras))
    assert t.camera_topics == {'front': '/camera/image_raw', 'wrist': '/wrist_camera/image_raw'}
    assert t.image_topics == ['/camera/image_raw', '/wrist_camera/image_raw']
    assert t.image == '/camera/image_raw'          # image_topic keeps working: the first camera
    assert t.as_dict()['cameras'] == t.camera_topics
    assert hash(t) == hash(RobotTopics(**{**t.as_dict(), 'cameras': t.camera_topics}))   # frozen, hashable


def test_cameras_order_is_the_models_and_image_is_the_first(tmp_path):
    t = RobotTopics.from_params_file(_with_cameras(tmp_path, 'wrist=/wrist_camera/image_raw,front=/camera/image_raw'))
    assert list(t.camera_topics) == ['wrist', 'front'] and t.image == '/wrist_camera/image_raw'
    with pytest.raises(ValueError, match="image /camera/image_raw must be the first camera's topic"):
        RobotTopics(image='/camera/image_raw', joint_states='/j', instruction='/i', policy_command='/p',
                    controller_command='/c', cameras=t.camera_topics)


def test_cameras_the_sim_does_not_publish_are_named(tmp_path):
    f = _with_cameras(tmp_path, 'front=/camera/image_raw,wrist=/wrist_camera/image_raw', wrist_image_topic='')
    with pytest.raises(ValueError, match=r"policy_node\.cameras reads camera 'wrist' on /wrist_camera/image_raw but "
                                         r"sim_node publishes cameras only on \['/camera/image_raw'\]"):
        RobotTopics.from_params_file(f)
    raw = yaml.safe_load(f.read_text())
    del raw['sim_node']                                       # a real robot: nothing to cross-check
    f.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert list(RobotTopics.from_params_file(f).camera_topics) == ['front', 'wrist']


@pytest.mark.parametrize('cameras, match', [
    ('front', r"camera 'front' with topic None"),
    ('front=camera/image_raw', r"camera 'front' with topic 'camera/image_raw'"),
    ('front=/a,front=/b', r"names camera 'front' twice"),
    ('front=/a,wrist=/a', r'gives the topic /a to two cameras'),
    (3, r'must be "name=/topic" pairs separated by commas or a mapping, got 3'),
])
def test_bad_cameras_are_named(tmp_path, cameras, match):
    f = _with_cameras(tmp_path, cameras)
    with pytest.raises(ValueError, match=match) as ei:
        RobotTopics.from_params_file(f)
    assert str(f) in str(ei.value) and 'policy_node.cameras' in str(ei.value)


def test_machine_driver_config_reads_cameras(tmp_path):
    cfg = {'policy_node': {'ros__parameters': {
        'image_topic': '/cab_camera/image_raw', 'joint_states_topic': '/zx200/joint_states',
        'instruction_topic': '/vla/instruction', 'command_topic': '/vla/joint_trajectory',
        'cameras': 'cab=/cab_camera/image_raw,boom=/boom_camera/image_raw/compressed'}},
        'machine_driver_node': {'ros__parameters': {'machine': 'excavator_zx200'}}}
    p = tmp_path / 'm.yaml'
    p.write_text(yaml.safe_dump(cfg))
    t = RobotTopics.from_params_file(p)
    assert t.camera_topics == {'cab': '/cab_camera/image_raw', 'boom': '/boom_camera/image_raw/compressed'}
    assert t.image == '/cab_camera/image_raw'
