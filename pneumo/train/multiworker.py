"""Training on more than one device: `pneumo train --strategy multiworker` (TensorFlow:
tf.distribute.MultiWorkerMirroredStrategy from the standard ``TF_CONFIG``, made to work with
Keras 3) and `--backend jax --strategy mirrored` (keras.distribution.DataParallel over every
JAX device). tests/train/test_multiworker.py runs both: two workers on loopback, and two CPU
devices (``XLA_FLAGS=--xla_force_host_platform_device_count=2``).

What Keras 3.15 with TensorFlow 2.21 leaves to the caller (keras-team/keras#20585):

- the strategy must exist before TensorFlow runs any op (`trainer.train` makes it first);
- Keras reduces a whole (x, y, weights) batch at once and scalar logs along axis 0, which the
  collective strategy refuses: `strategy` reduces each value on its own, scalars over workers;
- batch-norm moving statistics are each worker's own (mirrored variables without
  aggregation): `sync_statistics` averages them over the workers after every epoch, so that
  every worker holds the same weights (timm's ``distribute_bn``, reduce "mean");
- only the chief (task "chief", else worker 0) writes the run folder: the other workers write
  to a scratch copy (`worker_folder`), removed at the end.

On JAX every batch must split evenly over the devices: `whole_batches` trims an epoch's last
batch, `predict` pads what it scores (the padding is dropped from the answer).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

RESUME_FILES = ("config.json", "split.json", "state.json", "checkpoint.keras")
"""What a non-chief worker copies from the run folder to resume with the chief."""

log = logging.getLogger(__name__)


def strategy() -> Any:
    """A MultiWorkerMirroredStrategy whose reduce takes what Keras 3 gives it."""
    import tensorflow as tf

    class KerasMultiWorker(tf.distribute.MultiWorkerMirroredStrategy):
        """Reduces nests value by value; a scalar is reduced over the workers only."""

        def reduce(self, reduce_op, value, axis):  # noqa: D102 - tf.distribute.Strategy API
            def one(v):
                rank = self.experimental_local_results(v)[0].shape.rank
                return super(KerasMultiWorker, self).reduce(reduce_op, v,
                                                            axis if rank else None)

            return tf.nest.map_structure(one, value)

    return KerasMultiWorker()


def is_chief(tf_config: str | None = None) -> bool:
    """True for the task that writes the run folder: "chief", else worker 0 (TF's rule)."""
    config = json.loads(tf_config if tf_config is not None else os.environ["TF_CONFIG"])
    task = config.get("task", {})
    if "chief" in config.get("cluster", {}):
        return task.get("type") == "chief"
    return task.get("type", "worker") == "worker" and int(task.get("index", 0)) == 0


def worker_folder(out: Path) -> tuple[Path, Path | None]:
    """(where this worker writes, a scratch folder to remove afterwards or None): the chief
    writes ``out``; another worker a scratch copy of its resume files."""
    if is_chief():
        return out, None
    scratch = Path(tempfile.mkdtemp(prefix="pneumo-worker-"))
    for name in RESUME_FILES:
        if (out / name).is_file():
            shutil.copy2(out / name, scratch / name)
    log.info("multiworker: not the chief; this worker writes to %s (removed at the end), the "
             "chief writes %s", scratch, out)
    return scratch, scratch


def sync_statistics(model: Any) -> None:
    """Average the model's non-trainable variables (batch-norm statistics) over the workers
    of a multi-worker strategy (nothing otherwise)."""
    import tensorflow as tf

    strat = model.distribute_strategy
    if not isinstance(strat, tf.distribute.MultiWorkerMirroredStrategy):
        return
    variables = model.non_trainable_variables
    local = strat.run(lambda: [tf.identity(v.value) for v in variables])
    for var, mean in zip(variables, strat.reduce("MEAN", local, axis=None), strict=True):
        var.assign(mean)


# --- Keras on JAX: keras.distribution.DataParallel (`--backend jax --strategy mirrored`) ---

def data_parallel_devices() -> int:
    """How many devices each batch is split over (1 without a Keras distribution)."""
    import keras

    dist = keras.distribution.distribution()
    return int(dist.device_mesh.devices.size) if dist is not None else 1


def whole_batches(batches: Any) -> Any:
    """An epoch's batches (keras_data.EpochBatches) trimmed so that every batch splits evenly
    over the devices: at most devices - 1 images sit out an epoch (another each epoch)."""
    devices = data_parallel_devices()
    if devices > 1 and hasattr(batches, "order"):
        batches.order = batches.order[:len(batches.order) // devices * devices]
    return batches


def predict(model: Any, data: Any):
    """model.predict of every row of ``data``, padded to split evenly over the devices."""
    import numpy as np

    devices = data_parallel_devices()
    if devices == 1 or not isinstance(data, np.ndarray) or len(data) % devices == 0:
        return model.predict(data, verbose=0).ravel()
    pad = devices - len(data) % devices
    padded = np.concatenate([data, np.zeros((pad, *data.shape[1:]), data.dtype)])
    return model.predict(padded, verbose=0).ravel()[:len(data)]
