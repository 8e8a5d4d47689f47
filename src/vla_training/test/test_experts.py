"""Scripted expert and language tasks on the real MuJoCo scene."""
import os

import numpy as np
import pytest

os.environ.setdefault('MUJOCO_GL', 'egl')

from robot_drivers.sim.franka_cubes import FrankaCubeSim  # noqa: E402
from vla_training.experts import RandomPolicy, ScriptedExpert, Task, parse_instruction, task_success  # noqa: E402


@pytest.fixture(scope='module')
def sim():
    s = FrankaCubeSim()
    yield s
    s.close()


def _run(sim, actor, task, seed, steps):
    cubes = sim.reset(seed)
    if hasattr(actor, 'reset'):
        actor.reset()
    for _ in range(steps):
        sim.write(actor.act(sim.read().positions))
        sim.step()
    return task_success(sim, task, cubes)


@pytest.mark.parametrize('kind,steps', [('reach', 40), ('pick', 60)])
def test_expert_solves_tasks_and_random_does_not(sim, kind, steps):
    wins, rand = [], []
    for seed, colour in zip(range(100, 106), ['red', 'green', 'blue'] * 2):
        task = Task(kind, colour)
        wins.append(_run(sim, ScriptedExpert(sim, task), task, seed, steps))
        rand.append(_run(sim, RandomPolicy(seed), task, seed, steps))
    assert np.mean(wins) >= 5 / 6
    assert np.mean(rand) <= 1 / 6


def test_reach_ends_at_the_named_cube_not_another(sim):
    cubes = sim.reset(7)
    task = Task('reach', 'blue')
    ex = ScriptedExpert(sim, task)
    for _ in range(40):
        sim.write(ex.act(sim.read().positions))
        sim.step()
    ee = sim.ee_position()
    d = {c: np.linalg.norm(ee - p) for c, p in sim.cube_positions().items()}
    assert min(d, key=d.get) == 'blue' and d['blue'] < 0.03


def test_instructions_round_trip_and_reject_unknown():
    for kind in ('reach', 'pick'):
        for colour in ('red', 'green', 'blue'):
            t = Task(kind, colour)
            assert parse_instruction(t.instruction) == t
    with pytest.raises(ValueError, match='purple'):
        parse_instruction('reach the purple cube')
    with pytest.raises(ValueError, match='task kind'):
        Task('push', 'red')
