"""Fixed-iteration timing of a callable on the host.

Warm-up is a count ("10") or a duration ("2s", "500ms"), as trtexec warms up by time and
onnxruntime_perf_test / TFLite by count. The first call is timed on its own: it carries
lazy initialisation (allocator growth, kernel selection) that users pay once.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Callable

from edgeseg.stats import LatencyStats
from edgeseg.errors import EdgesegError

_WARMUP = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|ms|sec|secs)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Warmup:
    """Warm-up by iteration count or by time (seconds)."""

    count: int = 0
    seconds: float = 0.0

    @classmethod
    def parse(cls, spec: "str | int | float | Warmup") -> "Warmup":
        if isinstance(spec, Warmup):
            return spec
        if isinstance(spec, int):
            if spec < 0:
                raise EdgesegError(f"invalid warm-up {spec}", "use a count >= 0 or a duration like 2s / 500ms")
            return cls(count=spec)
        m = _WARMUP.match(str(spec))
        if not m:
            raise EdgesegError(f"invalid warm-up {spec!r}", "use a count (10) or a duration (2s, 500ms)")
        value, unit = float(m.group(1)), (m.group(2) or "").lower()
        if not unit:
            if value != int(value):
                raise EdgesegError(f"invalid warm-up {spec!r}", "a count must be a whole number; durations need a unit (2s)")
            return cls(count=int(value))
        return cls(seconds=value / 1000.0 if unit == "ms" else value)

    @property
    def by_time(self) -> bool:
        return self.seconds > 0

    def __str__(self) -> str:
        return f"{self.seconds:g}s" if self.by_time else str(self.count)

    def as_ms(self) -> float:
        return self.seconds * 1000.0


@dataclass
class Measurement:
    """Raw result of one timed run: per-iteration times plus the one-off costs."""

    times_ms: list[float]
    first_ms: float | None = None
    warmup_iterations: int = 0
    load_ms: float | None = None
    extra: dict = field(default_factory=dict)

    def stats(self, batch: int = 1) -> LatencyStats:
        return LatencyStats.from_times(self.times_ms, batch=batch)


def measure(fn: Callable[[], object], *, warmup: "str | int | Warmup" = 10, iterations: int = 50,
            time_first: bool = True, clock: Callable[[], float] = time.perf_counter) -> Measurement:
    """Time `fn`: one separately-timed first call, warm-up (count or time), then `iterations`."""
    if iterations < 1:
        raise EdgesegError(f"iterations must be >= 1 (got {iterations})", "pass --iterations N with N >= 1")
    w = Warmup.parse(warmup)
    first = None
    if time_first:
        t0 = clock()
        fn()
        first = (clock() - t0) * 1000.0
    done = 0
    if w.by_time:
        end = clock() + w.seconds
        while clock() < end:
            fn()
            done += 1
    else:
        for _ in range(w.count):
            fn()
            done += 1
    times = []
    for _ in range(iterations):
        t0 = clock()
        fn()
        times.append((clock() - t0) * 1000.0)
    return Measurement(times_ms=times, first_ms=first, warmup_iterations=done)


def time_callable(fn: Callable[[], object], *, warmup: int = 3, iterations: int = 20, batch: int = 1) -> tuple[LatencyStats, list[float]]:
    """Run `warmup` untimed calls, then `iterations` timed ones; returns stats and raw ms."""
    m = measure(fn, warmup=warmup, iterations=iterations, time_first=False)
    return m.stats(batch), m.times_ms


def time_torch_model(model, input_size: tuple[int, int], *, batch: int = 1, warmup: int = 3, iterations: int = 20):
    import torch

    x = torch.randn(batch, 3, *input_size)
    model.eval()

    def run():
        with torch.inference_mode():
            model(x)

    return time_callable(run, warmup=warmup, iterations=iterations, batch=batch)
