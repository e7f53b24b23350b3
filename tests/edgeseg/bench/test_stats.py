"""Statistics and timing on known synthetic timings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeseg.stats import LatencyStats, trimmed_times
from edgeseg.timing import Warmup, measure, time_callable
from edgeseg.errors import EdgesegError


def test_stats_of_1_to_100():
    s = LatencyStats.from_times(range(1, 101))
    assert s.iterations == 100
    assert (s.min_ms, s.max_ms) == (1.0, 100.0)
    assert s.median_ms == 50.5 and s.mean_ms == 50.5
    # linear interpolation between order statistics: index 0.9 * 99 = 89.1 -> 90 + 0.1
    assert s.p90_ms == pytest.approx(90.1)
    assert s.p95_ms == pytest.approx(95.05)
    assert s.p99_ms == pytest.approx(99.01)
    assert s.std_ms == pytest.approx(math.sqrt(sum((x - 50.5) ** 2 for x in range(1, 101)) / 99))
    assert s.throughput_per_s == pytest.approx(1000 / 50.5)


def test_stats_batch_throughput_and_odd_count():
    s = LatencyStats.from_times([4.0, 2.0, 8.0], batch=4)
    assert s.median_ms == 4.0 and s.mean_ms == pytest.approx(14 / 3)
    assert s.throughput_per_s == pytest.approx(4 * 1000 / 4.0)


def test_single_time_and_bad_input():
    s = LatencyStats.from_times([3.5])
    assert s.std_ms == 0.0 and s.p99_ms == 3.5
    with pytest.raises(ValueError):
        LatencyStats.from_times([])
    with pytest.raises(ValueError):
        LatencyStats.from_times([1.0, float("nan")])
    with pytest.raises(ValueError):
        LatencyStats.from_times([1.0, -2.0])


def test_outlier_moves_mean_not_median():
    base = [10.0] * 99
    s = LatencyStats.from_times(base + [1000.0])
    assert s.median_ms == 10.0 and s.mean_ms == pytest.approx(19.9)
    assert s.max_ms == 1000.0 and s.p90_ms == 10.0


def test_round_trip_dict():
    s = LatencyStats.from_times(np.linspace(1, 2, 11))
    assert LatencyStats.from_dict(s.as_dict()) == s


def test_trimmed_like_modelbench():
    t = list(range(30))
    assert trimmed_times(t, 10) == list(range(10, 20))
    with pytest.raises(ValueError):
        trimmed_times(range(20), 10)


@pytest.mark.parametrize("spec,count,seconds", [("10", 10, 0.0), (5, 5, 0.0), ("2s", 0, 2.0), ("500ms", 0, 0.5), ("0.25s", 0, 0.25),
                                                ("0", 0, 0.0)])
def test_warmup_parse(spec, count, seconds):
    w = Warmup.parse(spec)
    assert (w.count, w.seconds) == (count, seconds)


@pytest.mark.parametrize("spec", ["1.5", "ten", "-3", "2m", ""])
def test_warmup_parse_rejects(spec):
    with pytest.raises(EdgesegError):
        Warmup.parse(spec)


class FakeClock:
    """Each call of the timed function advances time by the next scripted duration."""

    def __init__(self, durations):
        self.t = 0.0
        self.durations = list(durations)
        self.calls = 0

    def __call__(self):
        return self.t

    def work(self):
        self.t += self.durations[self.calls % len(self.durations)]
        self.calls += 1


def test_measure_separates_first_call_and_warmup():
    clock = FakeClock([0.5, 0.01, 0.01, 0.002, 0.004, 0.003])
    m = measure(clock.work, warmup=2, iterations=3, clock=clock)
    assert m.first_ms == pytest.approx(500.0)
    assert m.warmup_iterations == 2
    assert m.times_ms == pytest.approx([2.0, 4.0, 3.0])
    assert m.stats().median_ms == pytest.approx(3.0)
    assert clock.calls == 6


def test_measure_warmup_by_time():
    clock = FakeClock([0.1])
    m = measure(clock.work, warmup="0.35s", iterations=2, clock=clock)
    # first call (0.1 s) is outside the warm-up window; then calls until 0.35 s have elapsed
    assert m.warmup_iterations == 4
    assert m.times_ms == pytest.approx([100.0, 100.0])


def test_measure_rejects_zero_iterations():
    with pytest.raises(EdgesegError):
        measure(lambda: None, iterations=0)


def test_time_callable_keeps_its_signature():
    calls = []
    stats, times = time_callable(lambda: calls.append(1), warmup=2, iterations=5)
    assert len(calls) == 7 and len(times) == 5 and stats.iterations == 5
