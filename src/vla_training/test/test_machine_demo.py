"""The generic machine pipeline at tiny size on the excavator: sim -> rosbag2 -> train -> runtime + driver -> sim.

Records a few short expert episodes of the excavator's ``dig`` task through its driver as MCAP bags on
the topics of ``config/excavator.yaml``, reads them back into the action vector, trains a couple of
steps with ``config/train_excavator.yaml`` through the ``train`` entry, and drives the sim closed loop
through PolicyRuntime and MachineDriverCore.
"""
import os

import numpy as np
import pytest

os.environ.setdefault('MUJOCO_GL', 'egl')

pytest.importorskip('mujoco', reason='the excavator sim needs MuJoCo')

from robot_drivers import conversions as conv  # noqa: E402
from vla_training import machine_demo as md  # noqa: E402
from vla_training.bag_dataset import BagTopics, bag_info, read_episode  # noqa: E402

STEPS = 20     # control ticks per recorded episode (2 s at 10 Hz)


@pytest.fixture(scope='module')
def setup():
    return md.resolve_machine('excavator')


@pytest.fixture(scope='module')
def sim(setup):
    s = setup.make_sim()
    yield s
    s.close()


@pytest.fixture(scope='module')
def recording(setup, tmp_path_factory):
    out = tmp_path_factory.mktemp('excavator_demos')
    return md.record_demos(setup, 3, str(out), seed=5, workers=1, steps=STEPS)


def test_machine_resolves_by_config_stem_or_registry_name(setup):
    assert setup.machine.name == 'excavator_zx200'
    assert setup.robot_config.name == 'excavator.yaml' and setup.train_config.name == 'train_excavator.yaml'
    assert 'dig' in setup.tasks
    by_name = md.resolve_machine('excavator_zx200')
    assert by_name.robot_config == setup.robot_config and by_name.topics == setup.topics
    with pytest.raises(FileNotFoundError, match='no_such_machine'):
        md.resolve_machine('no_such_machine')
    with pytest.raises(KeyError, match="no task 'fly'"):
        setup.task_class('fly')


def test_bags_hold_the_configured_topics_and_the_driver_outputs(setup, recording):
    bags = recording['bags']
    assert len(bags) == 3 and recording['limit_violations'] == 0
    topics = bag_info(bags[0])['topics']
    t = setup.topics
    for name, ty, n in ((t.image, 'sensor_msgs/msg/Image', STEPS),
                        (t.joint_states, 'sensor_msgs/msg/JointState', STEPS),
                        (t.instruction, 'std_msgs/msg/String', 1),
                        (t.policy_command, 'trajectory_msgs/msg/JointTrajectory', STEPS)):
        assert topics[name]['type'] == ty and topics[name]['count'] == n, name
    # the native COM3 commands the driver sent, at its 50 Hz tick (5 per control tick)
    for group in ('front', 'tracks'):
        topic = setup.driver_params['outputs'][group]
        assert topics[topic]['type'] == 'com3_msgs/msg/JointCmd' and topics[topic]['count'] == 5 * STEPS


def test_bag_reads_back_into_the_expert_action_vector(setup, sim, recording):
    emb = setup.embodiment
    ep = read_episode(recording['bags'][0], emb, BagTopics.from_robot_config(setup.robot_config))
    assert list(ep.joint_names) == list(emb.joint_names) and ep.dropped == 0
    assert ep.actions.shape == (STEPS, emb.dof) and ep.images.shape == (STEPS, 96, 96, 3)
    assert ep.instructions[0] in setup.task_class('dig').instructions
    # the same seeded expert episode, replayed without a bag: its commands are the recorded actions
    sent = []
    task = setup.task_class('dig')(sim)

    def capture(topic, msgtype, msg, t):
        if topic == setup.topics.policy_command:
            assert len(msg.points[0].positions) == 0          # an all-velocity machine: velocities only
            sent.append(conv.trajectory_to_actions(msg, emb, source=topic)[0][0])

    res = md.run_episode(setup, sim, task, 5, md.ExpertController(task), steps=STEPS, on_message=capture)
    assert res.instruction == ep.instructions[0] and res.limit_violations == 0
    np.testing.assert_allclose(ep.actions, np.stack(sent), rtol=1e-6, atol=1e-9)
    assert np.abs(ep.actions[:, :4]).max() > 0.1                     # the front moves ...
    assert np.all(ep.actions[:, 4:] == 0.0)                          # ... the tracks stand still
    # state: measured front angles; the tracks (no position sensor) contribute their velocity
    front = ep.joint_positions[:, :4]
    assert np.all(np.isfinite(ep.joint_positions)) and np.abs(front[-1] - front[0]).max() > 0.05


def test_expert_solves_the_task_through_the_driver_and_random_does_not(setup, sim):
    task = setup.task_class('dig')(sim)
    expert = md.run_episode(setup, sim, task, md.HELD_OUT_SEED, md.ExpertController(task))
    assert expert.success and expert.rejected == 0 and expert.limit_violations == 0
    assert expert.max_speed_ratio <= 1.0 + 1e-6
    rnd = md.run_episode(setup, sim, task, md.HELD_OUT_SEED, md.RandomController(setup.embodiment, 0))
    assert not rnd.success and rnd.limit_violations == 0 and rnd.commands == task.max_steps


def test_trained_policy_drives_the_sim_through_runtime_and_driver(setup, sim, recording, tmp_path):
    import torch
    torch.set_num_threads(1)
    from vla_policy.policy import VLAPolicy
    trained = md.train_policy(setup, [str(b) for b in recording['bags']], str(tmp_path / 'run'), steps=3,
                              data_workers=1, overrides={'warmup_steps': 1, 'batch_size': 8, 'eval_fraction': 0.0})
    assert trained['steps'] == 3 and np.isfinite(trained['final_loss'])
    policy = VLAPolicy.from_checkpoint(trained['checkpoint'])
    assert policy.embodiment.name == 'excavator_zx200'
    ctrl = md._runtime_controller(policy, setup, None)
    task = setup.task_class('dig')(sim)
    cmds = []

    def capture(topic, msgtype, msg, t):
        if topic == setup.topics.policy_command:
            cmds.append(conv.trajectory_to_actions(msg, setup.embodiment, source=topic))

    res = md.run_episode(setup, sim, task, md.HELD_OUT_SEED + 1, ctrl, steps=12, on_message=capture)
    ctrl.runtime.close()
    n_action = policy.config.chunk.n_action_steps
    assert res.inferences == 12 // n_action and res.commands == res.inferences == len(cmds)
    assert res.rejected == 0 and res.limit_violations == 0
    for actions, tfs in cmds:     # open-loop chunks of velocity rows, one per control period
        assert actions.shape == (n_action, setup.embodiment.dof)
        np.testing.assert_allclose(tfs, (np.arange(n_action) + 1) * setup.embodiment.dt, atol=1e-6)
