"""Latency statistics from raw per-iteration times, as trusted harnesses report them."""

from __future__ import annotations

from dataclasses import asdict, dataclass

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

    @classmethod
    def from_times(cls, times_ms, batch: int = 1) -> "LatencyStats":
        t = np.asarray(list(times_ms), dtype=np.float64)
        if t.size == 0:
            raise ValueError("no timings")
        med = float(np.median(t))
        return cls(
            iterations=int(t.size),
            min_ms=float(t.min()),
            median_ms=med,
            mean_ms=float(t.mean()),
            p90_ms=float(np.percentile(t, 90)),
            p99_ms=float(np.percentile(t, 99)),
            max_ms=float(t.max()),
            std_ms=float(t.std(ddof=1)) if t.size > 1 else 0.0,
            throughput_per_s=batch * 1000.0 / med if med > 0 else float("inf"),
        )

    def as_dict(self) -> dict:
        return asdict(self)
