"""Augmentation: switchable, stateless (reproducible), shape- and range-preserving."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from pneumo.train.augment import AugmentConfig  # noqa: E402
from pneumo.train.augment_tf import augment_batch  # noqa: E402


def _batch():
    rng = np.random.default_rng(0)
    return tf.constant(rng.random((4, 32, 32, 1)).astype("float32"))


def test_same_seed_same_output_and_range():
    x = _batch()
    a = augment_batch(x, AugmentConfig(), tf.constant([3, 4], tf.int64)).numpy()
    b = augment_batch(x, AugmentConfig(), tf.constant([3, 4], tf.int64)).numpy()
    c = augment_batch(x, AugmentConfig(), tf.constant([3, 5], tf.int64)).numpy()
    assert a.shape == (4, 32, 32, 1)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.min() >= 0.0 and a.max() <= 1.0


def test_everything_off_is_identity():
    x = _batch()
    cfg = AugmentConfig.none()
    assert not cfg.active
    np.testing.assert_allclose(augment_batch(x, cfg, tf.constant([1, 2], tf.int64)).numpy(),
                               x.numpy(), atol=1e-6)


def test_flip_only_mirrors():
    x = _batch()
    cfg = AugmentConfig.none()
    cfg.flip = True
    out = augment_batch(x, cfg, tf.constant([9, 9], tf.int64)).numpy()
    for o, i in zip(out, x.numpy(), strict=True):
        assert np.allclose(o, i, atol=1e-5) or np.allclose(o, i[:, ::-1], atol=1e-5)


def test_presets_and_switches():
    seed = AugmentConfig.from_name("seed")
    assert seed.rotation_deg and seed.zoom and seed.shear_deg and seed.flip
    assert not (seed.gamma or seed.noise or seed.contrast)
    off = AugmentConfig().with_overrides(["rotation", "flip", "noise"])
    assert off.rotation_deg == 0 and off.flip is False and off.noise == 0
    with pytest.raises(ValueError):
        AugmentConfig().with_overrides(["warp"])
    with pytest.raises(ValueError):
        AugmentConfig.from_name("heavy")
