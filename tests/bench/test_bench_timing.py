"""Timing statistics: percentiles, warm-up and repetition bounds (no real timing asserted)."""

import numpy as np
import pytest

from pneumo.bench.timing import Settings, measure, percentile, ratio, summarize


class FakeClock:
    """A clock that only moves when the timed function says so."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_summarize_known_samples():
    s = summarize([float(v) for v in range(1, 101)], warmup=2)
    assert s.n == 100 and s.warmup == 2
    assert s.p50 == pytest.approx(50.5)
    assert s.p95 == pytest.approx(95.05)
    assert s.p99 == pytest.approx(99.01)
    assert (s.min, s.max) == (1.0, 100.0)
    assert s.mean == pytest.approx(50.5)
    assert s.std == pytest.approx(np.std(np.arange(1, 101), ddof=1))
    assert s.total_s == pytest.approx(5050 / 1000)
    d = s.to_dict()
    assert {"n", "warmup", "p50", "p95", "p99", "min", "max", "mean", "std",
            "samples_ms"} <= set(d)
    assert len(d["samples_ms"]) == 100


def test_summarize_single_and_unsorted():
    s = summarize([3.0])
    assert s.p50 == s.p99 == s.min == s.max == 3.0 and s.std == 0.0
    s = summarize([5.0, 1.0, 3.0])
    assert s.p50 == 3.0 and s.min == 1.0 and s.max == 5.0


def test_percentile_rejects_empty():
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        summarize([])


def test_measure_warmup_and_repeat_count():
    clock = FakeClock()
    calls = []

    def fn():
        calls.append(1)
        clock.now += 0.002  # every call "takes" 2 ms

    s = measure(fn, Settings(warmup=3, repeat=10, min_repeat=2, max_seconds=100), clock=clock)
    assert len(calls) == 13  # warm-up calls are made but not timed
    assert s.n == 10 and s.warmup == 3
    assert s.p50 == pytest.approx(2.0) and s.max == pytest.approx(2.0)


def test_measure_stops_at_time_cap_but_keeps_min_repeat():
    clock = FakeClock()

    def fn():
        clock.now += 1.0  # 1 s per call

    s = measure(fn, Settings(warmup=0, repeat=100, min_repeat=2, max_seconds=3.0), clock=clock)
    assert s.n == 3  # stops once 3 s have passed
    s = measure(fn, Settings(warmup=0, repeat=100, min_repeat=5, max_seconds=0.5), clock=clock)
    assert s.n == 5  # overruns the cap to reach min_repeat


def test_ratio():
    assert ratio(10.0, 2.0) == pytest.approx(5.0)
    assert ratio(1.0, 0.0) is None
    assert ratio(None, 1.0) is None
