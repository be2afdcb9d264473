"""One GAN training step, on the Keras backend in use: TensorFlow (`GradientTape`) or JAX
(`stateless_call` with `jax.grad`), behind one interface.

The losses, DiffAugment and the random draws are written once in `keras.ops`; only the
gradient step differs. Every random number of a step comes from the run's seed and the step
number (`Draws`), so a resumed run draws exactly what an uninterrupted one would, with no
random-generator state to checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


class Draws:
    """The random numbers of one step: the k-th draw uses the seed (run seed, 16 * step + k)."""

    def __init__(self, seed: Any):
        import keras

        self.seed = seed
        self.k = 0
        self.backend = keras.backend.backend()

    def _next(self):
        self.k += 1
        return self.seed + np.array([0, self.k], dtype=np.int32)

    def normal(self, shape: tuple) -> Any:
        """Standard normal float32 numbers."""
        if self.backend == "tensorflow":
            import tensorflow as tf

            return tf.random.stateless_normal(shape, seed=self._next())
        import keras

        return keras.random.normal(shape, seed=self._next().astype("uint32"))

    def uniform(self, shape: tuple, low: float = 0.0, high: float = 1.0) -> Any:
        """Uniform float32 numbers in [low, high)."""
        if self.backend == "tensorflow":
            import tensorflow as tf

            return tf.random.stateless_uniform(shape, seed=self._next(), minval=low,
                                               maxval=high)
        import keras

        return keras.random.uniform(shape, low, high, seed=self._next().astype("uint32"))

    def integers(self, shape: tuple, low: int, high: int) -> Any:
        """Uniform int32 numbers in [low, high)."""
        if self.backend == "tensorflow":
            import tensorflow as tf

            return tf.random.stateless_uniform(shape, seed=self._next(), minval=low,
                                               maxval=high, dtype=tf.int32)
        import keras

        return keras.random.randint(shape, low, high, seed=self._next().astype("uint32"))


def step_seed(run_seed: int, step: int) -> np.ndarray:
    """The seed pair of one step's draws."""
    return np.array([run_seed, 16 * step], dtype=np.int32)


def diff_augment(x: Any, draws: Draws) -> Any:
    """DiffAugment: differentiable brightness/contrast, translation and cutout (same for G and D)."""
    from keras import ops

    n, size = x.shape[0], x.shape[1]
    x = x + (draws.uniform((n, 1, 1, 1)) - 0.5) * 0.5
    mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)
    x = (x - mean) * (draws.uniform((n, 1, 1, 1)) + 0.5) + mean
    pad = size // 8
    xp = ops.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="reflect")
    offset = draws.integers((2,), 0, 2 * pad + 1)
    x = ops.slice(xp, ops.stack([0, offset[0], offset[1], 0]), (n, size, size, 1))
    cut = size // 2
    cy = draws.integers((n, 1, 1, 1), 0, size)
    cx = draws.integers((n, 1, 1, 1), 0, size)
    yy = ops.reshape(ops.arange(size, dtype="int32"), (1, size, 1, 1))
    xx = ops.reshape(ops.arange(size, dtype="int32"), (1, 1, size, 1))
    inside = ops.logical_and(ops.abs(yy - cy) < cut // 2, ops.abs(xx - cx) < cut // 2)
    return ops.where(inside, ops.zeros_like(x), x)


def gan_losses(kind: str, generator: Callable, discriminator: Callable, real: Any, labels: Any,
               z_dim: int, draws: Draws) -> tuple[Any, Any]:
    """(discriminator loss, generator loss) of one batch; `generator` and `discriminator`
    call the models in training mode (directly, or statelessly on JAX)."""
    from keras import ops

    conditional = kind == "sngan"

    def inputs(x):
        return [x, labels] if conditional else [x]

    z = draws.normal((real.shape[0], z_dim))
    fake = generator(inputs(z))
    if conditional:  # DiffAugment, the same kind of transform for real and fake
        real, fake = diff_augment(real, draws), diff_augment(fake, draws)
    d_real = discriminator(inputs(real))
    d_fake = discriminator(inputs(fake))
    if conditional:  # hinge loss
        loss_d = ops.mean(ops.relu(1 - d_real)) + ops.mean(ops.relu(1 + d_fake))
        return loss_d, -ops.mean(d_fake)
    bce = ops.binary_crossentropy
    loss_d = (ops.mean(bce(ops.ones_like(d_real), d_real, from_logits=True))
              + ops.mean(bce(ops.zeros_like(d_fake), d_fake, from_logits=True)))
    return loss_d, ops.mean(bce(ops.ones_like(d_fake), d_fake, from_logits=True))


class TensorFlowStep:
    """The step as a `tf.function` with two gradient tapes; the Keras variables are the state."""

    def __init__(self, G, D, opt_g, opt_d, kind: str, z_dim: int):
        import tensorflow as tf

        self.G, self.D, self.opt_g, self.opt_d = G, D, opt_g, opt_d
        self.kind, self.z_dim = kind, z_dim
        self._fn = tf.function(self._step)

    def _step(self, real, labels, seed):
        import tensorflow as tf

        with tf.GradientTape() as tg, tf.GradientTape() as td:
            loss_d, loss_g = gan_losses(self.kind, lambda i: self.G(i, training=True),
                                        lambda i: self.D(i, training=True), real, labels,
                                        self.z_dim, Draws(seed))
        self.opt_d.apply_gradients(zip(td.gradient(loss_d, self.D.trainable_variables),
                                       self.D.trainable_variables, strict=True))
        self.opt_g.apply_gradients(zip(tg.gradient(loss_g, self.G.trainable_variables),
                                       self.G.trainable_variables, strict=True))
        return loss_d, loss_g

    def __call__(self, real: np.ndarray, labels: np.ndarray, seed: np.ndarray
                 ) -> tuple[float, float]:
        """Train on one batch; the two losses."""
        import tensorflow as tf

        loss_d, loss_g = self._fn(tf.constant(real), tf.constant(labels), tf.constant(seed))
        return float(loss_d), float(loss_g)

    def sync(self) -> None:
        """The Keras variables already hold the state."""

    def reload(self) -> None:
        """Nothing to reload: the Keras variables are the state."""


class JaxStep:
    """The step as one jitted pure function of (models', optimizers' variables); the Keras
    variables are written back by `sync` (before sampling or a checkpoint)."""

    def __init__(self, G, D, opt_g, opt_d, kind: str, z_dim: int):
        import jax

        self.G, self.D, self.opt_g, self.opt_d = G, D, opt_g, opt_d
        self.kind, self.z_dim = kind, z_dim
        self._fn = jax.jit(self._step)
        self.reload()

    def reload(self) -> None:
        """Take the state from the Keras variables (after building or restoring)."""
        def values(vs):
            return [v.value for v in vs]

        self.state = (values(self.G.trainable_variables), values(self.G.non_trainable_variables),
                      values(self.D.trainable_variables), values(self.D.non_trainable_variables),
                      values(self.opt_g.variables), values(self.opt_d.variables))

    def _losses(self, g_tr, g_nt, d_tr, d_nt, real, labels, seed):
        boxes = {"g": g_nt, "d": d_nt}

        def call(model, trainable, key):
            def run(inputs):
                out, boxes[key] = model.stateless_call(trainable, boxes[key], inputs,
                                                       training=True)
                return out
            return run

        loss_d, loss_g = gan_losses(self.kind, call(self.G, g_tr, "g"), call(self.D, d_tr, "d"),
                                    real, labels, self.z_dim, Draws(seed))
        return loss_d, loss_g, boxes["g"], boxes["d"]

    def _step(self, state, real, labels, seed):
        import jax

        g_tr, g_nt, d_tr, d_nt, og, od = state

        def d_loss(d):
            loss_d, loss_g, new_g_nt, new_d_nt = self._losses(g_tr, g_nt, d, d_nt, real,
                                                               labels, seed)
            return loss_d, (loss_g, new_g_nt, new_d_nt)

        def g_loss(g):
            return self._losses(g, g_nt, d_tr, d_nt, real, labels, seed)[1]

        (loss_d, (loss_g, new_g_nt, new_d_nt)), grad_d = jax.value_and_grad(
            d_loss, has_aux=True)(d_tr)
        grad_g = jax.grad(g_loss)(g_tr)
        new_d_tr, new_od = self.opt_d.stateless_apply(od, grad_d, d_tr)
        new_g_tr, new_og = self.opt_g.stateless_apply(og, grad_g, g_tr)
        return (new_g_tr, new_g_nt, new_d_tr, new_d_nt, new_og, new_od), loss_d, loss_g

    def __call__(self, real: np.ndarray, labels: np.ndarray, seed: np.ndarray
                 ) -> tuple[float, float]:
        """Train on one batch; the two losses."""
        self.state, loss_d, loss_g = self._fn(self.state, real, labels, seed.astype("uint32"))
        return float(loss_d), float(loss_g)

    def sync(self) -> None:
        """Write the state into the Keras variables."""
        groups = (self.G.trainable_variables, self.G.non_trainable_variables,
                  self.D.trainable_variables, self.D.non_trainable_variables,
                  self.opt_g.variables, self.opt_d.variables)
        for variables, values in zip(groups, self.state, strict=True):
            for v, value in zip(variables, values, strict=True):
                v.assign(value)


def make_step(G, D, opt_g, opt_d, kind: str, z_dim: int) -> TensorFlowStep | JaxStep:
    """The train step for the Keras backend Keras was imported with."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        return TensorFlowStep(G, D, opt_g, opt_d, kind, z_dim)
    if backend == "jax":
        return JaxStep(G, D, opt_g, opt_d, kind, z_dim)
    raise SystemExit(f"pneumo gan train runs on the tensorflow or jax Keras backend, not "
                     f"{backend!r}")
