"""Latency statistics from raw per-iteration times, as trusted harnesses report them.

Percentiles use linear interpolation between order statistics (numpy's default), so a
p99 over 50 runs is an interpolated value, not "the 2nd worst run"; the run count is
always reported next to it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    iterations: int
    min_ms: float
    median_ms: float
    mean_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    std_ms: float
    throughput_per_s: float  # items per second at the median (batch items per iteration)
    p95_ms: float = math.nan

    @classmethod
    def from_times(cls, times_ms, batch: int = 1) -> "LatencyStats":
        t = np.asarray(list(times_ms), dtype=np.float64)
        if t.size == 0:
            raise ValueError("no timings")
        if not np.all(np.isfinite(t)) or np.any(t < 0):
            raise ValueError("timings must be finite and non-negative")
        med = float(np.median(t))
        p90, p95, p99 = (float(v) for v in np.percentile(t, [90, 95, 99]))
        return cls(
            iterations=int(t.size),
            min_ms=float(t.min()),
            median_ms=med,
            mean_ms=float(t.mean()),
            p90_ms=p90,
            p99_ms=p99,
            max_ms=float(t.max()),
            std_ms=float(t.std(ddof=1)) if t.size > 1 else 0.0,
            throughput_per_s=batch * 1000.0 / med if med > 0 else float("inf"),
            p95_ms=p95,
        )

    @classmethod
    def from_dict(cls, data: dict) -> "LatencyStats":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (f"median {self.median_ms:.3f} ms, p90 {self.p90_ms:.3f}, p99 {self.p99_ms:.3f}, "
                f"min {self.min_ms:.3f}, max {self.max_ms:.3f}, std {self.std_ms:.3f} (n={self.iterations})")


def trimmed_times(times_ms, trim: int) -> list[float]:
    """Drop the `trim` lowest and highest times (Apple ModelBench trims 10 each way)."""
    t = sorted(times_ms)
    if trim <= 0:
        return list(t)
    if len(t) <= 2 * trim:
        raise ValueError(f"cannot trim {trim} from each end of {len(t)} timings")
    return t[trim:-trim]
