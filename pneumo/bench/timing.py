"""Timing primitives: warm-up, repetitions bounded in count and time, and order statistics.

Every figure the benchmark reports comes through `measure` (or `summarize` for samples
collected elsewhere, e.g. HTTP requests), so all of them carry the same fields: how many
warm-up runs were discarded, how many repetitions were timed, p50/p95/p99, min/max, mean
and standard deviation, all in milliseconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class Settings:
    """How hard to measure one figure: warm-up runs, target repetitions, time cap."""

    warmup: int = 3
    repeat: int = 50
    min_repeat: int = 5
    max_seconds: float = 10.0


@dataclass
class Stats:
    """Order statistics of a set of durations, in milliseconds."""

    n: int
    warmup: int
    p50: float
    p95: float
    p99: float
    min: float
    max: float
    mean: float
    std: float
    total_s: float
    samples_ms: list[float] = field(default_factory=list, repr=False)

    def to_dict(self, *, with_samples: bool = True) -> dict:
        """JSON-ready dict (samples rounded to microseconds)."""
        d = asdict(self)
        d["samples_ms"] = [round(s, 4) for s in self.samples_ms] if with_samples else []
        return d


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics."""
    if len(samples) == 0:
        raise ValueError("no samples")
    return float(np.percentile(np.asarray(samples, dtype=np.float64), q, method="linear"))


def summarize(samples_ms: Sequence[float], *, warmup: int = 0, total_s: float | None = None
              ) -> Stats:
    """Stats of durations already measured, in milliseconds."""
    a = np.asarray(list(samples_ms), dtype=np.float64)
    if a.size == 0:
        raise ValueError("no samples")
    return Stats(
        n=int(a.size),
        warmup=int(warmup),
        p50=percentile(a, 50),
        p95=percentile(a, 95),
        p99=percentile(a, 99),
        min=float(a.min()),
        max=float(a.max()),
        mean=float(a.mean()),
        std=float(a.std(ddof=1)) if a.size > 1 else 0.0,
        total_s=float(a.sum() / 1000.0 if total_s is None else total_s),
        samples_ms=[float(v) for v in a],
    )


def measure(fn: Callable[[], object], settings: Settings | None = None,
            clock: Callable[[], float] = time.perf_counter) -> Stats:
    """Call fn `warmup` times untimed, then time up to `repeat` calls within `max_seconds`.

    At least `min_repeat` calls are timed even if that overruns `max_seconds`, so a slow
    configuration still gets a distribution (its `n` says how many samples it rests on).
    """
    s = settings or Settings()
    for _ in range(s.warmup):
        fn()
    samples: list[float] = []
    start = clock()
    while len(samples) < max(s.repeat, 1):
        t0 = clock()
        fn()
        t1 = clock()
        samples.append((t1 - t0) * 1000.0)
        if len(samples) >= s.min_repeat and t1 - start >= s.max_seconds:
            break
    return summarize(samples, warmup=s.warmup, total_s=clock() - start)


def ratio(slow_ms: float, fast_ms: float) -> float | None:
    """Speed-up of `fast` over `slow` (slow / fast), None when undefined."""
    if not fast_ms or fast_ms <= 0 or slow_ms is None:
        return None
    return float(slow_ms / fast_ms)
