"""pneumo/train/shifts.py on its own: each acquisition shift does what its name says."""

import numpy as np
import pytest

from pneumo.train.shifts import SHIFTS, apply_shift, shifted_versions


@pytest.fixture
def batch() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(0.3, 0.7, (2, 16, 16, 1)).astype(np.float32)


def test_no_shift_is_the_identity(batch):
    out = apply_shift(batch)
    assert out.dtype == np.float32 and out.shape == batch.shape
    np.testing.assert_allclose(out, batch, atol=1e-6)


def test_gamma_above_one_darkens(batch):
    np.testing.assert_allclose(apply_shift(batch, gamma=1.4), batch ** 1.4, rtol=1e-5)
    assert apply_shift(batch, gamma=1.4).mean() < batch.mean() < apply_shift(batch,
                                                                             gamma=0.7).mean()


def test_contrast_scales_around_each_image_mean(batch):
    out = apply_shift(batch, contrast=1.3)
    mean = batch.mean(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(out, (batch - mean) * 1.3 + mean, atol=1e-6)
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), mean.ravel(), atol=1e-5)


def test_brightness_shift_is_added_and_clipped():
    x = np.array([0.5, 0.95], dtype=np.float32).reshape(1, 1, 2, 1)
    np.testing.assert_allclose(apply_shift(x, shift=0.08).ravel(), [0.58, 1.0], atol=1e-6)
    np.testing.assert_allclose(apply_shift(x, shift=-0.08).ravel(), [0.42, 0.87], atol=1e-6)


def test_noise_is_seeded(batch):
    a, b = apply_shift(batch, noise=0.03), apply_shift(batch, noise=0.03)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, apply_shift(batch, noise=0.03, seed=1))
    assert 0.02 < float(np.std(a - batch)) < 0.04


def test_blur_smooths_edges():
    x = np.zeros((1, 16, 16, 1), dtype=np.float32)
    x[:, :, 8:] = 1.0
    out = apply_shift(x, blur=1.5)
    assert 0.0 < out[0, 8, 7, 0] < 0.5 < out[0, 8, 8, 0] < 1.0  # the step is now a ramp
    assert out[0, 8, 0, 0] == 0.0 and out[0, 8, 15, 0] == 1.0


def test_shifted_versions_has_every_named_shift(batch):
    out = shifted_versions(batch)
    assert list(out) == list(SHIFTS)
    for name, x in out.items():
        assert x.shape == batch.shape and 0.0 <= x.min() and x.max() <= 1.0, name
    assert not np.allclose(out["gamma 0.7"], batch)
