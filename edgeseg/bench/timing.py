"""Fixed-iteration timing of a callable on the host."""

from __future__ import annotations

import time
from typing import Callable

from edgeseg.bench.stats import LatencyStats


def time_callable(fn: Callable[[], object], *, warmup: int = 3, iterations: int = 20, batch: int = 1) -> tuple[LatencyStats, list[float]]:
    """Run `warmup` untimed calls, then `iterations` timed ones; returns stats and raw ms."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return LatencyStats.from_times(times, batch=batch), times


def time_torch_model(model, input_size: tuple[int, int], *, batch: int = 1, warmup: int = 3, iterations: int = 20):
    import torch

    x = torch.randn(batch, 3, *input_size)
    model.eval()

    def run():
        with torch.inference_mode():
            model(x)

    return time_callable(run, warmup=warmup, iterations=iterations, batch=batch)
