"""Recording on a robot: one robot config names the topics for recording, training and deployment;
the exact `ros2 bag record` command and QoS override file built from config/franka.yaml; the
episode runner driving a stand-in `ros2` executable through real subprocesses and signals."""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
import yaml

from robot_drivers.robot_config import RobotTopics
from vla_training import record_robot as rr
from vla_training.bag_reader import BagTopics
from vla_training.train_cli import load_train_yaml

ROOT = Path(__file__).resolve().parents[3]
FRANKA = ROOT / 'config' / 'franka.yaml'


def params(node):
    with open(FRANKA, encoding='utf-8') as f:
        return yaml.safe_load(f)[node]['ros__parameters']


# ----------------------------------------------------------------------------- one robot config
def test_recording_training_and_deployment_use_the_same_topics():
    policy, driver = params('policy_node'), params('arm_driver_node')
    topics = RobotTopics.from_params_file(FRANKA)
    deployed = {policy['image_topic'], policy['joint_states_topic'], policy['instruction_topic'],
                driver['output_topic']}
    # recording
    cfg = rr.RecordRobotConfig.from_params_file(FRANKA)
    recorded = rr.recorded_topics(topics, cfg)
    assert set(recorded) == deployed and len(recorded) == 4
    # training: both training configs take their topics from the robot config
    for train_yaml in ('train_franka.yaml', 'train_franka_vlm.yaml'):
        _, _, data = load_train_yaml(str(ROOT / 'config' / train_yaml))
        assert Path(data.robot_config) == FRANKA
        assert data.topics == {'image': policy['image_topic'], 'joint_states': policy['joint_states_topic'],
                               'instruction': policy['instruction_topic'], 'command': driver['output_topic']}
        assert set(data.topics.values()) == set(recorded)
    # the driver reads what the policy writes and measures what the policy reads
    assert driver['input_topic'] == policy['command_topic']
    assert driver['state_topic'] == policy['joint_states_topic']
    # the simulated demonstrations (`record`) hold the wrist camera too, which this one-camera config does not read,
    # and with --image-format jpeg/png both cameras on image_transport's <topic>/compressed instead
    from vla_training import record
    cams = {'/camera/image_raw', '/wrist_camera/image_raw'}
    assert set(record._QOS) == set(recorded) | {'/wrist_camera/image_raw'} | {c + '/compressed' for c in cams}


def two_camera_config(tmp_path, cameras='front=/camera/image_raw,wrist=/wrist_camera/image_raw'):
    """config/franka.yaml with policy_node.cameras naming the scene and the wrist camera."""
    raw = yaml.safe_load(FRANKA.read_text())
    raw['policy_node']['ros__parameters']['cameras'] = cameras
    path = tmp_path / 'franka_2cam.yaml'
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_two_cameras_are_recorded_as_the_sim_records_them_and_training_reads_them(tmp_path):
    from vla_training import record
    path = two_camera_config(tmp_path)
    topics = RobotTopics.from_params_file(path)
    assert topics.camera_topics == {'front': '/camera/image_raw', 'wrist': '/wrist_camera/image_raw'}
    recorded = rr.recorded_topics(topics, rr.RecordRobotConfig.from_params_file(path))
    assert recorded == ['/camera/image_raw', '/wrist_camera/image_raw'] + RECORDED[1:]
    # the robot recorder and the sim recorder (raw images) record the same set of topics, each camera best effort
    assert set(recorded) == {t for t in record._QOS if not t.endswith('/compressed')}
    qos = rr.qos_overrides(topics)
    assert list(qos) == ['/camera/image_raw', '/wrist_camera/image_raw', '/joint_states', '/vla/instruction']
    for cam in ('/camera/image_raw', '/wrist_camera/image_raw'):
        assert record._QOS[cam] == 'sensor'
        assert qos[cam] == qos['/joint_states'] == {'history': 'keep_last', 'depth': 5,
                                                     'reliability': 'best_effort', 'durability': 'volatile'}
    # training reads both cameras from the same file, under the same names
    bag_topics = BagTopics.from_robot_config(path)
    assert bag_topics.cameras() == topics.camera_topics
    assert set(bag_topics.cameras().values()) | {bag_topics.joint_states, bag_topics.instruction,
                                                 bag_topics.command} == set(recorded)
    # the dry run prints both cameras as positional topics and both in the QoS file
    cmd = rr.record_command(recorded, rr.RecordRobotConfig(), tmp_path / 'rec' / 'episode_0000',
                            tmp_path / 'rec' / 'qos_overrides.yaml', 'humble')
    assert cmd[-5:] == recorded and cmd[-6] == 'zstd_fast'
    assert set(yaml.safe_load(rr.qos_overrides_yaml(topics))) == set(qos)


def test_a_camera_order_with_the_wrist_first_records_the_same_set(tmp_path):
    path = two_camera_config(tmp_path, {'wrist': '/wrist_camera/image_raw', 'front': '/camera/image_raw'})
    topics = RobotTopics.from_params_file(path)
    assert topics.image == '/wrist_camera/image_raw'      # the model's first camera
    recorded = rr.recorded_topics(topics, rr.RecordRobotConfig())
    assert recorded[:2] == ['/wrist_camera/image_raw', '/camera/image_raw']
    assert sorted(recorded) == sorted(rr.recorded_topics(RobotTopics.from_params_file(two_camera_config(tmp_path)),
                                                         rr.RecordRobotConfig()))


def test_train_config_takes_topics_or_robot_config_not_both(tmp_path):
    cfg = tmp_path / 'train.yaml'
    cfg.write_text(f'data:\n  robot_config: {FRANKA}\n  topics: {{image: /cam}}\n')
    with pytest.raises(ValueError, match='either topics or robot_config'):
        load_train_yaml(str(cfg))
    cfg.write_text('data:\n  robot_config: missing_robot.yaml\n')
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / 'missing_robot.yaml'))):
        load_train_yaml(str(cfg))
    assert BagTopics.from_robot_config(FRANKA) == BagTopics()  # today's names are the reader's defaults


# ----------------------------------------------------------------------------- the command line
RECORDED = ['/camera/image_raw', '/joint_states', '/vla/instruction', '/arm_controller/joint_trajectory']


def test_record_command_for_jazzy_and_humble_from_the_robot_config():
    topics = RobotTopics.from_params_file(FRANKA)
    cfg = rr.RecordRobotConfig.from_params_file(FRANKA)
    names = rr.recorded_topics(topics, cfg)
    assert names == RECORDED
    common = ['ros2', 'bag', 'record', '-o', 'rec/episode_0003', '-s', 'mcap',
              '--qos-profile-overrides-path', 'rec/qos_overrides.yaml',
              '--storage-preset-profile', 'zstd_fast', '--max-bag-duration', '60']
    assert rr.record_command(names, cfg, 'rec/episode_0003', 'rec/qos_overrides.yaml', 'jazzy') == \
        common + ['--disable-keyboard-controls'] + RECORDED
    assert rr.record_command(names, cfg, 'rec/episode_0003', 'rec/qos_overrides.yaml', 'humble') == common + RECORDED
    assert rr.record_command(names, cfg, 'rec/episode_0003', 'rec/qos_overrides.yaml', 'rolling') == \
        common + ['--disable-keyboard-controls', '--topics'] + RECORDED
    with pytest.raises(rr.RecordError, match='ROS_DISTRO'):
        rr.record_command(names, cfg, 'x', 'q.yaml', '')
    file_cfg = rr.RecordRobotConfig(storage_preset_profile='', compression_mode='file', max_bag_duration_s=0,
                                    max_bag_size_bytes=500_000_000, record_policy_command=True)
    names = rr.recorded_topics(topics, file_cfg)
    assert names == RECORDED + ['/vla/joint_trajectory']
    assert rr.record_command(names, file_cfg, 'b', 'q.yaml', 'humble') == [
        'ros2', 'bag', 'record', '-o', 'b', '-s', 'mcap', '--qos-profile-overrides-path', 'q.yaml',
        '--compression-mode', 'file', '--compression-format', 'zstd', '--max-bag-size', '500000000'] + names


def test_qos_override_file_matches_the_stack_qos():
    topics = RobotTopics.from_params_file(FRANKA)
    assert rr.qos_overrides_yaml(topics) == (
        '/camera/image_raw:\n'
        '  history: keep_last\n  depth: 5\n  reliability: best_effort\n  durability: volatile\n'
        '/joint_states:\n'
        '  history: keep_last\n  depth: 5\n  reliability: best_effort\n  durability: volatile\n'
        '/vla/instruction:\n'
        '  history: keep_last\n  depth: 1\n  reliability: reliable\n  durability: transient_local\n')
    # every key is one rosbag2's ros2bag.api.interpret_dict_as_qos_profile accepts
    accepted = {'history', 'reliability', 'durability', 'liveliness', 'depth', 'avoid_ros_namespace_conventions',
                'deadline', 'lifespan', 'liveliness_lease_duration'}
    for profile in yaml.safe_load(rr.qos_overrides_yaml(topics)).values():
        assert set(profile) <= accepted


def test_instruction_publisher_is_latched():
    argv = rr.instruction_command('/vla/instruction', 'pick up the "red" cube')
    assert argv[:9] == ['ros2', 'topic', 'pub', '--qos-reliability', 'reliable', '--qos-durability',
                        'transient_local', '--qos-depth', '1']
    assert argv[9:11] == ['/vla/instruction', 'std_msgs/msg/String']
    assert yaml.safe_load(argv[11]) == {'data': 'pick up the "red" cube'}


def test_bad_record_settings_are_named(tmp_path):
    with pytest.raises(rr.RecordError, match="storage_preset_profile 'zstd' is not a mcap preset"):
        rr.RecordRobotConfig(storage_preset_profile='zstd')
    with pytest.raises(rr.RecordError, match='compress twice'):
        rr.RecordRobotConfig(compression_mode='file')
    with pytest.raises(rr.RecordError, match='max_bag_duration_s'):
        rr.RecordRobotConfig(max_bag_duration_s=-1)
    raw = yaml.safe_load(FRANKA.read_text())
    raw['record_robot']['ros__parameters']['episode_length'] = 5
    bad = tmp_path / 'robot.yaml'
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(rr.RecordError, match=r"unknown parameter\(s\) \['episode_length'\]"):
        rr.RecordRobotConfig.from_params_file(bad)


def test_episode_numbering_continues(tmp_path):
    assert rr.episode_dir(tmp_path / 'none') == tmp_path / 'none' / 'episode_0000'
    for n in ('episode_0000', 'episode_0007', 'episode_x', 'other'):
        (tmp_path / n).mkdir()
    assert rr.episode_dir(tmp_path) == tmp_path / 'episode_0008'


# ----------------------------------------------------------------------------- the runner, with a stand-in ros2
FAKE_ROS2 = '''#!{python}
"""Stand-in for `ros2`: logs its argv; `bag record` writes metadata.yaml when interrupted (as rosbag2 does)."""
import json, os, pathlib, signal, sys, time
log = pathlib.Path({log!r})
with open(log, 'a') as f:
    f.write(json.dumps(sys.argv[1:]) + '\\n')
if os.environ.get('FAKE_ROS2_FAIL') and sys.argv[1:3] == ['bag', 'record']:
    sys.exit(3)
stop = []
signal.signal(signal.SIGINT, lambda *a: stop.append(1))
if sys.argv[1:3] == ['bag', 'record']:
    out = pathlib.Path(sys.argv[sys.argv.index('-o') + 1])
    out.mkdir(parents=True)
while not stop:
    time.sleep(0.01)
if sys.argv[1:3] == ['bag', 'record']:
    (out / 'metadata.yaml').write_text('rosbag2_bagfile_information: {{}}\\n')
'''


@pytest.fixture
def fake_ros2(tmp_path, monkeypatch):
    bindir = tmp_path / 'bin'
    bindir.mkdir()
    log = tmp_path / 'ros2_calls.jsonl'
    exe = bindir / 'ros2'
    exe.write_text(FAKE_ROS2.format(python=sys.executable, log=str(log)))
    exe.chmod(0o755)
    monkeypatch.setenv('PATH', f'{bindir}{os.pathsep}{os.environ["PATH"]}')

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return calls


def test_fixed_length_episodes_each_get_their_own_bag(tmp_path, fake_ros2):
    topics = RobotTopics.from_params_file(FRANKA)
    cfg = rr.RecordRobotConfig.from_params_file(FRANKA, output=str(tmp_path / 'rec'), episodes=2,
                                                episode_duration_s=0.2)
    said = []
    done = rr.record_episodes(topics, cfg, distro='jazzy', instruction='reach the red cube', say=said.append)
    out = tmp_path / 'rec'
    assert done == [out / 'episode_0000', out / 'episode_0001']
    assert all((d / 'metadata.yaml').is_file() for d in done)
    calls = fake_ros2()
    records = [c for c in calls if c[:2] == ['bag', 'record']]
    assert records == [rr.record_command(RECORDED, cfg, d, out / 'qos_overrides.yaml', 'jazzy')[1:] for d in done]
    pubs = [c for c in calls if c[:2] == ['topic', 'pub']]
    assert pubs == [rr.instruction_command('/vla/instruction', 'reach the red cube')[1:]]
    assert (out / 'qos_overrides.yaml').read_text() == rr.qos_overrides_yaml(topics)
    assert said[-1] == f'saved {out / "episode_0001"}'


def test_enter_starts_and_stops_episodes(tmp_path, fake_ros2):
    topics = RobotTopics.from_params_file(FRANKA)
    cfg = rr.RecordRobotConfig(output=str(tmp_path / 'rec'))
    (tmp_path / 'rec' / 'episode_0004').mkdir(parents=True)  # an earlier session's episode stays
    replies = iter(['', '', '', '', 'q'])  # start, stop, start, stop, quit
    prompts = []

    def ask(prompt):
        prompts.append(prompt)
        return next(replies)
    done = rr.record_episodes(topics, cfg, distro='humble', ask=ask, say=lambda s: None)
    assert [d.name for d in done] == ['episode_0005', 'episode_0006']
    assert prompts == ['Enter: start episode_0005 (q: quit) ', 'Enter: stop episode_0005 ',
                       'Enter: start episode_0006 (q: quit) ', 'Enter: stop episode_0006 ',
                       'Enter: start episode_0007 (q: quit) ']
    assert not (tmp_path / 'rec' / 'episode_0007').exists()
    assert all(c[-4:] == RECORDED for c in fake_ros2())  # humble: positional topics


def test_recorder_that_exits_on_its_own_is_an_error(tmp_path, fake_ros2, monkeypatch):
    monkeypatch.setenv('FAKE_ROS2_FAIL', '1')
    topics = RobotTopics.from_params_file(FRANKA)
    cfg = rr.RecordRobotConfig(output=str(tmp_path / 'rec'), episodes=1, episode_duration_s=5.0)
    with pytest.raises(rr.RecordError, match=r'ros2 bag record exited with status 3 during episode_0000'):
        rr.record_episodes(topics, cfg, distro='jazzy', say=lambda s: None)


def test_cli_dry_run_with_the_launch_files_flags(tmp_path, capsys):
    # the flags launch/record.launch.py passes
    rc = rr.main(['--robot-config', str(FRANKA), '--output', str(tmp_path / 'rec'), '--episodes', '10',
                  '--episode-duration', '30.0', '--instruction', '', '--dry-run', '--ros-distro', 'jazzy'])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert out[0] == ' '.join(rr.record_command(RECORDED, rr.RecordRobotConfig.from_params_file(FRANKA),
                                                tmp_path / 'rec' / 'episode_0000',
                                                tmp_path / 'rec' / 'qos_overrides.yaml', 'jazzy'))


def test_cli_errors_are_one_line(tmp_path, capsys):
    rc = rr.main(['--robot-config', str(tmp_path / 'nope.yaml'), '--ros-distro', 'jazzy', '--dry-run'])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.count('\n') == 1 and err.startswith('record_robot: error: ') and 'nope.yaml' in err


def test_launch_file_runs_record_robot(tmp_path):
    pytest.importorskip('launch_ros', reason='launch_ros is part of a ROS 2 installation')
    import importlib.util

    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
    spec = importlib.util.spec_from_file_location('record_launch', ROOT / 'launch' / 'record.launch.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ld = mod.generate_launch_description()
    context = LaunchContext()
    args = {'params_file': str(FRANKA), 'output': str(tmp_path / 'rec'), 'episodes': '2', 'episode_duration': '5',
            'instruction': ''}
    declared = [e.name for e in ld.entities if isinstance(e, DeclareLaunchArgument)]
    assert sorted(declared) == sorted(args)
    context.launch_configurations.update(args)
    (opaque,) = [e for e in ld.entities if isinstance(e, OpaqueFunction)]
    (proc,) = opaque.execute(context)
    assert isinstance(proc, ExecuteProcess)
    cmd = [''.join(s.perform(context) for s in part) for part in proc.cmd]
    assert cmd[:4] == ['ros2', 'run', 'vla_training', 'record_robot'] and '--instruction' not in cmd
    # the flags are record_robot's own
    assert rr.main(cmd[4:] + ['--dry-run', '--ros-distro', 'jazzy']) == 0
