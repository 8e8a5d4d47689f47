"""TemporalEnsembler: aligns overlapping chunks by time and averages them with ACT weights."""
import numpy as np
import pytest

from robot_drivers.embodiment import FRANKA_PANDA
from vla_policy.contracts import ActionChunk, Observation
from vla_policy.wrappers import TemporalEnsembler

NAMES = FRANKA_PANDA.joint_names


class Scripted:
    """Chunk made at tick n: row j = n + j + 1 + offset_n on every joint (so row j targets tick n + j + 1)."""

    def __init__(self, offsets):
        self.offsets, self.n = offsets, 0

    def infer(self, history):
        off = self.offsets[self.n]
        acts = np.tile((self.n + np.arange(4) + 1 + off)[:, None], (1, 8)).astype(np.float32)
        self.n += 1
        return ActionChunk(acts, NAMES, 0.1, history[-1].stamp)

    def reset(self):
        self.n = 0


def _obs(t):
    return [Observation({'front': np.zeros((4, 4, 3), np.uint8)}, np.zeros(8), 'x', t)]


def test_ensemble_averages_predictions_for_the_same_tick():
    offs = [0.0, 0.3, -0.6, 0.9, 0.0]
    te = TemporalEnsembler(Scripted(offs), m=0.0, binary_dims=[7])
    outs = [te.infer(_obs(10.0 + 0.1 * n)) for n in range(5)]
    # tick n's row 0 targets n + 1; with m = 0 it is the plain mean of the chunks alive for it
    assert outs[0].actions[0, 0] == pytest.approx(1.0)
    assert outs[1].actions[0, 0] == pytest.approx(2.0 + 0.3 / 2)
    assert outs[3].actions[0, 0] == pytest.approx(4.0 + (0.0 + 0.3 - 0.6 + 0.9) / 4)
    assert outs[4].actions[0, 0] == pytest.approx(5.0 + (0.3 - 0.6 + 0.9 + 0.0) / 4)   # oldest expired
    assert outs[3].actions[0, 7] == pytest.approx(4.0 + 0.9)                             # binary: newest
    np.testing.assert_allclose(outs[3].actions[1:, 0], 3.0 + np.arange(2, 5) + 0.9)     # newest chunk's rows
    assert outs[3].info['ensembled'] == 4.0


def test_weights_favour_old_predictions_and_reset_clears():
    te = TemporalEnsembler(Scripted([0.0, 1.0] * 3), m=1.0)
    te.infer(_obs(0.0))
    out = te.infer(_obs(0.1))
    w = np.exp(-np.arange(2.0))
    assert out.actions[0, 0] == pytest.approx(2.0 + (w[1] * 1.0) / w.sum())
    te.reset()
    assert te.infer(_obs(5.0)).actions[0, 0] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        TemporalEnsembler(Scripted([0]), m=-1)
