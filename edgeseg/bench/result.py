"""One benchmark result: what was measured (or predicted), how, where, and the raw times."""

from __future__ import annotations

import datetime
from dataclasses import asdict, dataclass, field
from typing import Any

from edgeseg.stats import LatencyStats
from edgeseg.timing import Measurement, Warmup

# Backends: how the model ran. "predicted" rows come from the latency model, not a device.
BACKENDS = ("pytorch", "pytorch-unfused", "onnxruntime", "tensorrt", "coreml", "predicted")


@dataclass
class BenchResult:
    model: str
    device: str
    backend: str
    input_size: tuple[int, int]
    precision: str
    stats: LatencyStats | None
    times_ms: list[float] = field(default_factory=list)
    batch: int = 1
    threads: int | str | None = None
    fused: bool | None = None
    predicted: bool = False
    predicted_ms: float | None = None
    preprocessing_in_timer: bool = False
    warmup: str = ""
    warmup_iterations: int = 0
    iterations: int = 0
    load_ms: float | None = None
    compile_ms: float | None = None
    first_ms: float | None = None
    runtime_version: str | None = None
    artifact: str | None = None
    artifact_sha256: str | None = None
    artifact_kind: str | None = None
    host: str | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    id: int | None = None

    @property
    def median_ms(self) -> float | None:
        if self.stats is not None:
            return self.stats.median_ms
        return self.predicted_ms

    @property
    def emulated(self) -> str | None:
        """What emulated the device (e.g. qemu-user), as the device declared it; None on real hardware."""
        return self.environment.get("emulated") or None

    @property
    def label(self) -> str:
        return "predicted" if self.predicted else "emulated" if self.emulated else "measured"

    @classmethod
    def from_measurement(cls, m: Measurement, *, model: str, device: str, backend: str, input_size, precision: str,
                         batch: int = 1, warmup: str = "", **kw: Any) -> "BenchResult":
        extra = dict(m.extra)
        extra.pop("outputs", None)  # arrays are compared by the caller, never stored
        env = extra.pop("environment", {}) or {}
        runtime_version = extra.pop("runtime_version", None)
        threads = kw.pop("threads", None) or extra.pop("threads", None)
        compile_ms = kw.pop("compile_ms", None) or extra.pop("compile_ms", None)
        return cls(model=model, device=device, backend=backend, input_size=tuple(input_size), precision=precision,
                  stats=m.stats(batch), times_ms=list(m.times_ms), batch=batch, threads=threads, warmup=warmup,
                  warmup_iterations=m.warmup_iterations, iterations=len(m.times_ms), load_ms=m.load_ms,
                  compile_ms=compile_ms, first_ms=m.first_ms, runtime_version=runtime_version, environment=env,
                  extra=extra, **kw)

    def as_dict(self, with_times: bool = True) -> dict[str, Any]:
        d = asdict(self)
        d["stats"] = self.stats.as_dict() if self.stats else None
        d["input_size"] = list(self.input_size)
        d["label"] = self.label
        d["median_ms"] = self.median_ms
        if not with_times:
            d.pop("times_ms")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BenchResult":
        d = dict(d)
        d.pop("label", None)
        d.pop("median_ms", None)
        stats = d.pop("stats", None)
        d["stats"] = LatencyStats.from_dict(stats) if stats else None
        d["input_size"] = tuple(d["input_size"])
        return cls(**d)


def result_fields(subject, profile, backend: str, size, precision: str, opts, **kw: Any) -> dict[str, Any]:
    """The fields every measured result of one bench run shares (subject, device, settings)."""
    return dict(model=subject.name, device=profile.name, backend=backend, input_size=size, precision=precision, batch=opts.batch,
                warmup=str(Warmup.parse(opts.warmup)), artifact=str(subject.path) if subject.path else None,
                artifact_sha256=subject.sha256, artifact_kind=subject.kind, **kw)
