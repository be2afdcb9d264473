"""The Ray engine: Ray Data over the paths, an actor pool holding one ONNX Runtime session per
actor (its thread count = the CPUs Ray gives the actor), rows streamed back to the driver.

Nothing leaves the machine unless ``--address`` names another: usage statistics are off
(``RAY_USAGE_STATS_ENABLED=0``), a cluster started here has no dashboard and listens on
127.0.0.1 only. The model travels to the actors as bytes (a node needs the project installed,
not the model file); an actor whose pipeline differs from the driver's refuses to start.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import numpy as np

from pneumo.scale.rows import pipeline_version, rows_table
from pneumo.scale.score import Scorer

BATCH = 8
"""Files per actor call."""
BLOCK = 64
"""Files per Ray Data block: rows reach the driver a block at a time, and a node's loss costs
at most its blocks in flight."""

LOCAL_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""0: Ray's single-machine mode (its default on Windows and macOS): nodes take 127.0.0.1 and
listen there; no other machine may join."""

log = logging.getLogger(__name__)


class RayScorer:
    """A Ray Data actor: one Scorer (one ONNX Runtime session) for its lifetime."""

    def __init__(self, model_path: str, model_bytes: bytes, mode: str, pipeline: str):
        import ray

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        self.scorer = Scorer(model_path, mode=mode, threads=max(1, int(cpus)),
                             model_bytes=model_bytes)
        if self.scorer.pipeline_version != pipeline:
            raise RuntimeError(f"this node runs pipeline {self.scorer.pipeline_version}, the "
                               f"driver {pipeline}: install the same pneumo on every node")

    def __call__(self, batch: dict[str, np.ndarray]):
        items = [{"path": str(p), "size": int(s), "mtime_ns": int(m)}
                 for p, s, m in zip(batch["path"], batch["size"], batch["mtime_ns"],
                                    strict=True)]
        return rows_table(self.scorer.score_many(items))


def quiet_environment() -> None:
    """Ray's settings for this process and the workers it starts: no usage statistics."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"


def connect(address: str | None, *, num_cpus: int | None = None):
    """ray.init: the cluster at ``address``, else a local one bound to 127.0.0.1.

    For a local one, Ray's single-machine switch is set only while Ray starts (the processes
    it starts inherit it), then put back, so that a later ``ray start`` or ``--address`` run
    from this process is a normal cluster again."""
    quiet_environment()
    import ray

    if ray.is_initialized():
        return ray
    kwargs = {"include_dashboard": False, "num_cpus": num_cpus} if address is None else {}
    if address is not None:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
        return ray
    import ray._private.ray_constants as ray_constants  # read when Ray was imported

    before_env, before_flag = os.environ.get(LOCAL_ONLY), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOCAL_ONLY] = "0"  # (else Ray replaces 127.0.0.1 by this machine's address)
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(address="local", log_to_driver=False, configure_logging=False, **kwargs)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before_flag
        if before_env is None:
            os.environ.pop(LOCAL_ONLY, None)
        else:
            os.environ[LOCAL_ONLY] = before_env
    return ray


def score_ray(items: list[dict], *, model_path: str, mode: str, address: str | None = None,
              actors: int | None = None, model_bytes: bytes | None = None,
              batch_size: int = BATCH, shutdown: bool = True,
              info: dict | None = None) -> Iterator[dict]:
    """Rows of every item, scored by an actor pool on the Ray cluster at ``address``
    (default: a local one), ``actors`` actors of one CPU each (default: every CPU it has);
    ``info`` gets the number of actors."""
    ray = connect(address, num_cpus=actors)
    try:
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # progress comes from the rows (pneumo.scale.job)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        actors = max(1, min(actors or cpus, len(items)))
        log.info("ray engine: %d files, %d actor(s) on a cluster of %d CPU(s) in %d node(s)",
                 len(items), actors, cpus, len([n for n in ray.nodes() if n["Alive"]]))
        model_bytes = model_bytes if model_bytes is not None else open(model_path, "rb").read()
        if info is not None:
            info["workers"] = actors
        blocks = max(min(len(items), 2 * actors), -(-len(items) // BLOCK))
        ds = ray.data.from_items(items, override_num_blocks=blocks)
        ds = ds.map_batches(
            RayScorer, batch_size=batch_size, num_cpus=1,
            compute=ray.data.ActorPoolStrategy(size=actors),
            fn_constructor_kwargs={"model_path": str(model_path), "model_bytes": model_bytes,
                                   "mode": mode, "pipeline": pipeline_version()})
        for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            yield from table.to_pylist()
    finally:
        if shutdown:
            ray.shutdown()
