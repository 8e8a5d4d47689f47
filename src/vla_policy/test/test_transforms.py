"""Delta/absolute action transforms and their config checks."""
import numpy as np
import pytest

from vla_policy.models.config import VLAConfig
from vla_policy.transforms import from_delta, to_delta


def test_delta_round_trip_only_on_masked_dims():
    rng = np.random.default_rng(0)
    chunk = rng.normal(size=(5, 4, 8)).astype(np.float32)     # (T, H, A)
    state = rng.normal(size=(5, 8)).astype(np.float32)         # (T, A)
    dims = [0, 1, 2, 3, 4, 5, 6]
    rel = to_delta(chunk, state, dims)
    np.testing.assert_allclose(rel[:, :, :7], chunk[:, :, :7] - state[:, None, :7], atol=1e-6)
    np.testing.assert_array_equal(rel[:, :, 7], chunk[:, :, 7])  # gripper untouched
    np.testing.assert_allclose(from_delta(rel, state, dims), chunk, atol=1e-6)
    np.testing.assert_array_equal(to_delta(chunk, state, []), chunk)


def test_delta_errors():
    with pytest.raises(ValueError, match='same size'):
        to_delta(np.zeros((2, 8)), np.zeros(7), [0])
    with pytest.raises(ValueError, match='out of range'):
        to_delta(np.zeros((2, 8)), np.zeros(8), [8])
    with pytest.raises(ValueError, match='state_dim == action_dim'):
        VLAConfig(state_dim=7, action_dim=8, delta_action_dims=(0,), head={'use_state': True})
    with pytest.raises(ValueError, match='binary_action_dims'):
        VLAConfig(delta_action_dims=(7,), binary_action_dims=(7,))
