"""The local engine: a process pool on this machine, one process (one ONNX Runtime thread)
per core by default; rows come back as the chunks finish."""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from pneumo.scale.score import Scorer

CHUNK = 8
"""Files per task: small enough to spread the work, large enough to keep the pipes quiet."""

log = logging.getLogger(__name__)
_SCORER: Scorer | None = None


def default_workers() -> int:
    """One process per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _start_worker(model_path: str, mode: str, model_bytes: bytes) -> None:
    global _SCORER
    _SCORER = Scorer(model_path, mode=mode, threads=1, model_bytes=model_bytes)


def _score_chunk(items: list[dict]) -> list[dict]:
    assert _SCORER is not None, "the worker was not started"
    return _SCORER.score_many(items)


def score_local(items: list[dict], *, model_path: str, mode: str, workers: int | None = None,
                model_bytes: bytes | None = None, info: dict | None = None) -> Iterator[dict]:
    """Rows of every item, scored by `workers` processes (default: one per core); ``info``
    gets the number of processes."""
    workers = max(1, min(workers or default_workers(), max(1, len(items))))
    if info is not None:
        info["workers"] = workers
    model_bytes = model_bytes if model_bytes is not None else open(model_path, "rb").read()
    chunks = [items[i:i + CHUNK] for i in range(0, len(items), CHUNK)]
    log.info("local engine: %d files in %d chunks on %d worker process(es)", len(items),
             len(chunks), workers)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked ORT state
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                             initargs=(model_path, mode, model_bytes)) as pool:
        pending = {pool.submit(_score_chunk, c) for c in chunks[:2 * workers]}
        queued = iter(chunks[2 * workers:])
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield from future.result()
                nxt = next(queued, None)
                if nxt is not None:
                    pending.add(pool.submit(_score_chunk, nxt))
