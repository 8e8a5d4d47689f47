"""Closed-loop episodes through messages + driver core, DART noise injection, simulated model latency, jerk."""
import os

import numpy as np
import pytest

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


def test_command_jerk_is_the_rms_third_difference_over_dt_cubed():
    from vla_training.rollout import command_jerk
    dt = 0.1
    t = np.arange(10)[:, None] * dt
    q = np.hstack([t ** 3, 2 * t ** 3])                # jerk 6 and 12 rad/s^3, exactly
    assert command_jerk(q, dt) == pytest.approx(np.sqrt((36 + 144) / 2))
    assert command_jerk(np.hstack([t, t ** 2]), dt) == pytest.approx(0.0, abs=1e-6)
    assert command_jerk(q[:3], dt) == 0.0
    with pytest.raises(ValueError, match='dt'):
        command_jerk(q, 0.0)


class _HoldPolicy:
    """Chunks that hold the measured arm pose with a step of ``jump`` rad between consecutive chunks."""

    def __init__(self, jump):
        self.jump, self.calls = jump, 0

    def infer(self, history):
        from vla_policy.contracts import ActionChunk
        self.calls += 1
        q = np.asarray(history[-1].joint_positions, np.float32).copy()
        q[:7] += self.jump * (self.calls % 2)
        return ActionChunk(np.repeat(q[None], 8, 0), FRANKA_PANDA.joint_names, FRANKA_PANDA.dt, history[-1].stamp)

    def reset(self):
        self.calls = 0


def test_runtime_controller_with_simulated_latency_streams_commands_and_jerk_grows_with_jumps():
    from vla_policy.runtime import RuntimeConfig
    from vla_training.rollout import RuntimeController
    sim = FrankaCubeSim()
    results = {}
    for jump in (0.0, 0.05):
        ctrl = RuntimeController.build(_HoldPolicy(jump), FRANKA_PANDA, RuntimeConfig(handover='aggregate'),
                                       simulated_latency_s=0.2)
        r = run_episode(sim, Task('reach', 'red'), 7, ctrl, steps=14)
        snap = ctrl.runtime.snapshot(0.0)
        assert r.commands == 12 and snap.dropped_ticks == 0       # ticks 0, 1 wait for the first chunk
        assert snap.backend == 'simulated' and r.inferences == snap.inferences >= 3
        results[jump] = r.jerk
    sim.close()
    assert results[0.05] > 10 * max(results[0.0], 1e-3)
    with pytest.raises(ValueError, match='latency'):
        RuntimeController.build(_HoldPolicy(0.0), FRANKA_PANDA, simulated_latency_s=-1.0)


def test_eval_config_checks_the_runtime_settings_before_any_simulator_starts():
    from vla_training.evaluate import EvalConfig
    cfg = EvalConfig('expert', handover='blend', latency_ms=200.0, blend_window=3)
    rc = cfg.runtime_config(n_obs_steps=2, n_action_steps=4, camera='front')
    assert (rc.handover, rc.blend_window, rc.n_obs_steps) == ('blend', 3, 2)
    assert EvalConfig('expert', temporal_ensemble=0.05).runtime_config().handover == 'temporal_ensemble'
    with pytest.raises(ValueError, match="handover must be one of 'open_loop'"):
        EvalConfig('expert', handover='chunky')
    with pytest.raises(ValueError, match='latency_ms'):
        EvalConfig('expert', latency_ms=-5.0)
