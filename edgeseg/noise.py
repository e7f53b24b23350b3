"""When a timing is noise: flags for runs whose numbers should not be read as results, and the
rules for which runs may be compared at all.

Thresholds follow common benchmarking practice: a median from fewer than 10 samples has no
usable confidence interval and a p90 from fewer than 10 is the maximum; a coefficient of
variation above 10% or a p90 more than 1.5x the median means the machine (thermal throttling,
other load, frequency scaling) moved the numbers more than most optimizations do.
"""

from __future__ import annotations

from typing import Any

MIN_ITERATIONS = 10
MAX_CV = 0.10
MAX_P90_OVER_MEDIAN = 1.5


def noise_flags(stats: Any) -> list[str]:
    """Reasons a LatencyStats (or its dict) is not a trustworthy result; empty when it is."""
    if stats is None:
        return []
    get = stats.get if isinstance(stats, dict) else (lambda k, d=None: getattr(stats, k, d))
    n = int(get("iterations", 0) or 0)
    median, mean, std, p90 = get("median_ms"), get("mean_ms"), get("std_ms"), get("p90_ms")
    flags = []
    if n < MIN_ITERATIONS:
        flags.append(f"too few iterations (n={n}; use --iterations {MIN_ITERATIONS} or more for a median and p90)")
    if n >= 2 and mean and std is not None and std / mean > MAX_CV:
        flags.append(f"spread too wide: coefficient of variation {100 * std / mean:.0f}% (> {100 * MAX_CV:.0f}%)")
    if n >= MIN_ITERATIONS and median and p90 and p90 / median > MAX_P90_OVER_MEDIAN:
        flags.append(f"p90 is {p90 / median:.1f}x the median (> {MAX_P90_OVER_MEDIAN}x): other load or throttling")
    return flags


def comparability_problems(a: Any, b: Any) -> list[str]:
    """Why two runs (BenchResult) cannot be gated against each other: a prediction against a
    measurement, or different devices. Empty when a gate is meaningful."""
    problems = []
    if bool(a.predicted) != bool(b.predicted):
        measured, predicted = (a, b) if b.predicted else (b, a)
        problems.append(f"run {predicted.id} is predicted by the latency model and run {measured.id} is measured")
    if a.device != b.device:
        problems.append(f"the runs are on different devices ({a.device} vs {b.device})")
    return problems
