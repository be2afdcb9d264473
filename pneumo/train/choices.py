"""The training commands' fixed choices, kept where no training package is imported.

`pneumo --help` builds every subcommand's parser from these, so this module imports nothing
beyond the standard library (tests/pneumo/test_runtime_imports.py guards it).
"""

BACKENDS = ("tensorflow", "jax")
"""Keras backends `pneumo train --backend` accepts."""

GAN_SIZES = (32, 64, 96, 128, 160, 192, 224, 256)
"""Image sides (px) the GANs can generate."""
