"""Quantile normalization (RoboVLMs / openpi style) on real random data."""
import numpy as np
import pytest
import torch

from vla_policy.normalization import NormalizationStats

torch.set_num_threads(1)


def test_quantiles_map_to_unit_interval_and_invert():
    rng = np.random.default_rng(0)
    x = rng.normal([0.0, 5.0, -2.0], [1.0, 0.1, 3.0], size=(5000, 3)).astype(np.float32)
    s = NormalizationStats.from_data(x)
    np.testing.assert_allclose(s.q01, np.quantile(x.astype(np.float64), 0.01, axis=0), rtol=1e-5)
    y = s.normalize(x)
    assert y.min() == -1.0 and y.max() == 1.0
    np.testing.assert_allclose(s.normalize(s.q01[None]), -1.0, atol=1e-6)
    np.testing.assert_allclose(s.normalize(s.q99[None]), 1.0, atol=1e-6)
    inside = np.all((x >= s.q01) & (x <= s.q99), axis=1)
    np.testing.assert_allclose(s.unnormalize(y[inside]), x[inside], atol=1e-4)
    # about 1 % of each tail is clipped
    assert 0.005 < np.mean(y[:, 0] == 1.0) < 0.02
    np.testing.assert_allclose(s.mean, x.mean(0), rtol=1e-4, atol=1e-5)


def test_torch_and_numpy_agree():
    rng = np.random.default_rng(1)
    x = rng.uniform(-3, 3, size=(100, 4)).astype(np.float32)
    s = NormalizationStats.from_data(x)
    yt = s.normalize(torch.from_numpy(x))
    assert isinstance(yt, torch.Tensor)
    np.testing.assert_allclose(yt.numpy(), s.normalize(x), atol=1e-6)
    np.testing.assert_allclose(s.unnormalize(yt).numpy(), s.unnormalize(s.normalize(x)), atol=1e-5)


def test_constant_dimension_maps_to_zero_and_back():
    x = np.stack([np.linspace(0, 1, 50), np.full(50, 0.04)], axis=1)
    s = NormalizationStats.from_data(x)
    y = s.normalize(x.astype(np.float32))
    assert np.all(y[:, 1] == 0.0)
    np.testing.assert_allclose(s.unnormalize(np.zeros((3, 2), np.float32))[:, 1], 0.04, rtol=1e-6)
    np.testing.assert_allclose(s.unnormalize(torch.ones(2, 2))[:, 1].numpy(), 0.04, rtol=1e-6)


def test_bad_input_raises():
    with pytest.raises(ValueError, match=r'\(N, D\)'):
        NormalizationStats.from_data(np.zeros(5))
    with pytest.raises(ValueError, match='NaN'):
        NormalizationStats.from_data(np.array([[np.nan, 1.0]]))
    s = NormalizationStats.from_data(np.random.default_rng(0).normal(size=(10, 3)))
    with pytest.raises(ValueError, match='last dimension 3'):
        s.normalize(np.zeros((2, 4), np.float32))
    with pytest.raises(KeyError, match='q99'):
        NormalizationStats.from_dict({'q01': s.q01, 'mean': s.mean, 'std': s.std})
