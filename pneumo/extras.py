"""Which commands need the `[train]` extra, and the one line that says how to install it.

The base install (`pip install .`) runs the clinic app and every runtime command; training,
export, GANs, the ablation and the recipe table need the training packages. This module is
standard library only, so building the parsers never imports a training package.
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Iterable

TRAINING_PACKAGES = ("tensorflow", "keras", "jax", "scipy", "sklearn", "matplotlib", "tf2onnx",
                     "onnx")
"""Import names of the `[train]` extra: the runtime never imports them (CI proves it)."""

INSTALL_HINT = "pip install '.[train]'"
"""What to run, from the project checkout (the project is not on PyPI)."""

KERAS_RUN = ("tensorflow", "keras", "scipy", "sklearn", "matplotlib")
"""What a Keras training or evaluation run imports (tensorflow is dropped for --backend jax)."""
EXPORT = (*KERAS_RUN, "tf2onnx", "onnx")
"""What `pneumo export` imports."""


def needs_train_extra(parser: argparse.ArgumentParser, packages: Iterable[str] = KERAS_RUN) -> None:
    """Mark a subcommand as needing these training packages (checked before it runs)."""
    parser.set_defaults(needs=tuple(packages))


def missing_packages(args: argparse.Namespace) -> list[str]:
    """The training packages this command needs that cannot be imported here."""
    needs = list(getattr(args, "needs", ()) or ())
    if getattr(args, "backend", None) == "jax":  # Keras on JAX: a GPU machine without TF
        needs = ["jax" if n == "tensorflow" else n for n in needs]
    return [n for n in dict.fromkeys(needs) if importlib.util.find_spec(n) is None]


def is_training_package(module: str | None) -> bool:
    """True when a missing module's name belongs to the `[train]` extra."""
    return bool(module) and module.split(".")[0] in TRAINING_PACKAGES


def hint(command: str, missing: Iterable[str]) -> str:
    """The one line a command without the training packages prints."""
    return (f"pneumo {command}: needs the training packages ({', '.join(missing)} not "
            f"installed): run {INSTALL_HINT} in the project checkout")
