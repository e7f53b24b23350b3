"""The deploy workflow from Python: `edgeseg.export`, `edgeseg.parity`, `edgeseg.bench`,
`edgeseg.predict`. Each returns the object the CLI renders; its `.as_dict()` is what the
command's `--json` prints.

    s = edgeseg.export("fastvit_sa12.pth", device="raspberry-pi-5") # ExportSummary
    p = edgeseg.parity("fastvit_sa12.pth", [s.output])               # ParitySummary (p.passed, p.verdict)
    b = edgeseg.bench(s.output, iterations=100, store=False)         # BenchOutcome (b.results[0].median_ms)
    r = edgeseg.predict(s.output, ["cat.jpg"])                       # PredictResult (r.predictions[0].top)

`edgeseg.parity`, `edgeseg.bench` and `edgeseg.predict` are also the packages that implement
them: calling the package calls the function (see `edgeseg.callable`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


class Summary(dict):
    """A result as the CLI shows it: a dict (exactly what `--json` prints) whose keys also
    read as attributes (`summary.status`, `summary.verdict`)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field {name!r} (fields: {', '.join(self)})") from None

    def as_dict(self) -> dict[str, Any]:
        return dict(self)


class ParitySummary(Summary):
    """`edgeseg parity`: status (passed | failed | skipped), verdict ('2 passed, 1 skipped (needs macOS)'), artifacts."""


def export(checkpoint: str | Path, output: str | Path | None = None, **options: Any):
    """Reparameterize, export, check and parity-test `checkpoint` (see `edgeseg export --help`).

    Keyword options: target, device, precision, opset, input_size, batch, dynamic, postprocess,
    simplify, labels, overwrite, parity, images, samples, seed, tolerances and the target's own
    (image_input, workspace_mib, timing_cache, calib_images, host). A list or tuple of devices
    exports once per device and returns one summary each. Raises `edgeseg.EdgesegError` on a
    refusal and `edgeseg.parity.job.ParityFailure` (with `.summary`) when parity fails.
    """
    from edgeseg.export_job import export_many

    return export_many(checkpoint, output, **options)  # ExportSummary (a dict with .parity and attribute access), or a list


def parity(checkpoint, artifacts: Sequence[str | Path] | str | Path, *, check: bool = False, **options: Any) -> ParitySummary:
    """Compare each artifact with `checkpoint` (a path or an edgeseg-loaded model) on natural
    images and random batches. With `check=True`, raise ParityFailure when one fails."""
    from edgeseg.parity.job import run_parity

    if isinstance(artifacts, (str, Path)):
        artifacts = [artifacts]
    return ParitySummary(run_parity(checkpoint, list(artifacts), check=check, **options))


def bench(target: str | Path, device: str = "host-cpu", **options: Any):
    """Measure (or, for a remote device without `host`, predict) latency; returns BenchOutcome.
    Options as `edgeseg.bench.harness.bench_artifact` (host, iterations, warmup, store, ...)."""
    from edgeseg.bench.harness import bench_artifact

    return bench_artifact(target, device, **options)


def predict(artifact: str | Path, images: Sequence[str | Path] | str | Path, **options: Any):
    """Run an artifact on pictures; returns PredictResult (see `edgeseg.predict.predict`)."""
    from edgeseg.predict import predict as run

    if isinstance(images, (str, Path)):
        images = [images]
    return run(artifact, list(images), **options)


def __getattr__(name: str):
    if name == "ExportSummary":  # lives with the export job; imported on use
        from edgeseg.export_job import ExportSummary

        return ExportSummary
    raise AttributeError(name)
