"""Closed-loop episodes through messages + driver core, and DART noise injection."""
import os

import numpy as np

os.environ.setdefault('MUJOCO_GL', 'egl')

from robot_drivers import conversions as conv  # noqa: E402
from robot_drivers.embodiment import FRANKA_PANDA  # noqa: E402
from robot_drivers.sim.franka_cubes import FrankaCubeSim  # noqa: E402
from vla_training.experts import RandomPolicy, ScriptedExpert, Task  # noqa: E402
from vla_training.rollout import ExpertController, run_episode  # noqa: E402


def _record(sim, task, seed, noise):
    ex = ScriptedExpert(sim, task)
    msgs = []
    r = run_episode(sim, task, seed, ExpertController(ex), reset_hook=ex.reset, action_noise=noise,
                    on_message=lambda topic, ty, m, t: msgs.append((topic, m)))
    return r, msgs, ex


def test_expert_through_driver_and_messages_succeeds():
    sim = FrankaCubeSim()
    for kind in ('reach', 'pick'):
        r, msgs, _ = _record(sim, Task(kind, 'green'), 11, 0.0)
        assert r.success, (kind, r.final_distance, r.lift)
        topics = [t for t, _ in msgs]
        assert topics[0] == '/vla/instruction'
        assert topics.count('/camera/image_raw') == topics.count('/arm_controller/joint_trajectory') == r.steps
    sim.close()


def test_dart_noise_perturbs_execution_but_records_the_clean_expert_command():
    sim = FrankaCubeSim()
    task = Task('reach', 'red')
    _, clean_msgs, _ = _record(sim, task, 5, 0.0)
    _, msgs, _ = _record(sim, task, 5, 0.05)
    q_clean = np.array([np.asarray(m.position) for t, m in clean_msgs if t == '/joint_states'])
    q_noisy = np.array([np.asarray(m.position) for t, m in msgs if t == '/joint_states'])
    assert np.abs(q_clean - q_noisy).max() > 0.02          # execution was perturbed
    # Every recorded command is the expert's answer to the joint state published just before it.
    js = [m for t, m in msgs if t == '/joint_states']
    cmds = [m for t, m in msgs if t == '/arm_controller/joint_trajectory']
    replay = ScriptedExpert(sim, task)
    sim.reset(5)
    for j, c in list(zip(js, cmds))[:3]:     # early ticks: replay the phase machine from the start
        q, _ = conv.joint_state_to_arrays(j, FRANKA_PANDA.joint_names)
        sim._set_joints(q)
        sim._mj.mj_forward(sim.model, sim.data)
        _, pos, _ = conv.trajectory_to_arrays(c)
        np.testing.assert_allclose(pos[0], replay.act(q), atol=1e-4)   # cubes settle by microns
    sim.close()


def test_random_baseline_fails():
    sim = FrankaCubeSim()
    r = run_episode(sim, Task('reach', 'blue'), 3, ExpertController(RandomPolicy(3)))
    assert not r.success and r.final_distance > 0.03
    sim.close()
