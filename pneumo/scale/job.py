"""One archive job: list and stat the inputs, skip what was scored, score the rest on an
engine, write the rows once each, then the CSV and the summary."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pneumo.app.pipeline.onnx_model import read_metadata
from pneumo.scale.manifest import list_inputs, read_bytes, stat_items
from pneumo.scale.output import (
    CSV_NAME,
    SUMMARY_NAME,
    ArchiveStore,
    Tally,
    format_summary,
    summarise,
    write_csv,
)
from pneumo.scale.rows import KEY_FIELDS, Pseudonymiser, pipeline_version

ENGINES = ("local", "ray")
log = logging.getLogger(__name__)


@dataclass
class Job:
    """What `pneumo predict --engine ...` was asked to do."""

    paths: Sequence[str]
    out: Path
    model_path: str
    engine: str = "local"
    manifests: Sequence[str] = ()
    mode: str = "balanced"
    workers: int | None = None  # processes (local) or actors (ray); None: one per CPU
    address: str | None = None  # ray: the cluster (None: a local one)
    csv_path: Path | None = None  # default: OUT/predictions.csv
    verify: bool = False  # the resume key also compares the file's sha256
    pseudonymise_key: bytes | None = None
    batch_size: int = 8  # files per Ray actor call
    extra: dict = field(default_factory=dict)  # engine keyword arguments (tests, benchmarks)


class Progress:
    """A progress line in the log every tenth of the work or every 10 s."""

    def __init__(self, total: int):
        self.total, self.done, self.start = total, 0, time.perf_counter()
        self._next, self._last = max(1, total // 10), self.start

    def tick(self) -> None:
        """One more file done."""
        self.done += 1
        now = time.perf_counter()
        if self.done >= self._next or now - self._last >= 10.0 or self.done == self.total:
            rate = self.done / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate else 0.0
            log.info("scored %d/%d (%d %%), %.1f images/s, about %.0f s left", self.done,
                     self.total, 100 * self.done // max(1, self.total), rate, eta)
            self._next = self.done + max(1, self.total // 10)
            self._last = now


def _todo(job: Job, items: list[dict], done: set[tuple], model_sha256: str, pipeline: str,
          pseud: Pseudonymiser | None) -> list[dict]:
    """The items not yet scored by this model and pipeline."""
    base_done = {k[:len(KEY_FIELDS)] for k in done}
    todo = []
    for item in items:
        path = pseud.path(item["path"]) if pseud else item["path"]
        key = (path, item["size"], item["mtime_ns"], model_sha256, pipeline)
        if key not in base_done:
            todo.append(item)
        elif job.verify:
            try:
                digest = hashlib.sha256(read_bytes(item["path"])).hexdigest()
            except OSError:
                digest = None
            if (*key, pseud.digest(digest) if pseud else digest) not in done:
                todo.append(item)
    return todo


def _engine_rows(job: Job, todo: list[dict], model_bytes: bytes, info: dict
                 ) -> Iterator[dict]:
    if job.engine == "ray":
        from pneumo.scale.ray_engine import score_ray

        return score_ray(todo, model_path=job.model_path, mode=job.mode, address=job.address,
                         actors=job.workers, model_bytes=model_bytes,
                         batch_size=job.batch_size, info=info, **job.extra)
    from pneumo.scale.local import score_local

    return score_local(todo, model_path=job.model_path, mode=job.mode, workers=job.workers,
                       model_bytes=model_bytes, info=info, **job.extra)


def run_job(job: Job) -> dict:
    """Score what is left to score; returns the summary (also OUT/summary.json)."""
    if job.engine not in ENGINES:
        raise ValueError(f"unknown engine {job.engine!r}; choose from {ENGINES}")
    start = time.perf_counter()
    thresholds = read_metadata(job.model_path)[0]["thresholds"]
    if job.mode not in thresholds:
        raise ValueError(f"unknown mode {job.mode!r}: the model defines {', '.join(thresholds)}")
    job.out.mkdir(parents=True, exist_ok=True)
    model_bytes = Path(job.model_path).read_bytes()
    model_sha256, pipeline = hashlib.sha256(model_bytes).hexdigest(), pipeline_version()
    pseud = Pseudonymiser(job.pseudonymise_key) if job.pseudonymise_key else None
    items = stat_items(list_inputs(job.paths, job.manifests))
    if not items:
        raise FileNotFoundError("no image files found in " + ", ".join(
            [*job.paths, *job.manifests]))
    store = ArchiveStore(job.out)
    todo = _todo(job, items, store.done(model_sha256, pipeline, verify=job.verify),
                 model_sha256, pipeline, pseud)
    log.info("%d files, %d already scored by this model and pipeline (%s), %d to score",
             len(items), len(items) - len(todo), pipeline, len(todo))
    new = Tally()
    progress = Progress(len(todo))
    info = {"workers": None}
    if todo:
        for row in _engine_rows(job, todo, model_bytes, info):
            row = pseud.row(row) if pseud else row
            if store.add(row):
                new.add(row)
                progress.tick()
            else:
                log.info("a row came twice (a retried task): written once")
    store.flush()
    current = store.current(model_sha256, pipeline)
    csv_path = job.csv_path or job.out / CSV_NAME
    write_csv(csv_path, current)
    first = current.slice(0, 1).to_pylist()
    model = f"{first[0]['model_name']} {first[0]['model_version']}" if first else "-"
    summary = summarise(new, total=current, skipped=len(items) - len(todo),
                        seconds=time.perf_counter() - start, engine=job.engine,
                        workers=info["workers"])
    summary.update(model=model, model_sha256=model_sha256, pipeline_version=pipeline,
                   csv=str(csv_path), out=str(job.out), pseudonymised=pseud is not None)
    (job.out / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n")
    summary["text"] = format_summary(summary, model=model, where=f"{job.out} (CSV {csv_path})")
    return summary
