"""`edgeseg bench`: measure a model the same way on the host, a Jetson, an ARM board or an
iPhone (through a Mac), or predict it where no device is attached; keep every result.
Options and dispatch only: local runs are in `bench.local`, device runs go through the target's
remote driver in `bench.remote`, predictions come from `bench.predict`.

    from edgeseg.bench.harness import bench_artifact
    outcome = bench_artifact("mobileone_s0", "host-cpu", iterations=50)
    outcome = bench_artifact("model.onnx", "raspberry-pi-5", host="pi@10.0.0.7", identity="~/.ssh/id_ed25519")
    outcome = bench_artifact("fastvit_t8.pth", "jetson-nano")          # no host: predicted
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from edgeseg.bench.local import LOCAL_BACKENDS, bench_local
from edgeseg.bench.predict import predict_result
from edgeseg.bench.remote import bench_remote
from edgeseg.bench.result import BenchResult
from edgeseg.bench.store import ResultStore
from edgeseg.bench.subject import resolve_subject
from edgeseg.devices import get_profile
from edgeseg.errors import EdgesegError
from edgeseg.timing import Warmup

@dataclass
class BenchOptions:
    warmup: str | int = "10"
    iterations: int = 50
    threads: int | None = None
    precision: str | None = None
    input_size: tuple[int, int] | None = None
    batch: int = 1
    backends: list[str] | None = None  # local only: pytorch-unfused, pytorch, onnxruntime
    include_preprocessing: bool = False
    parity: bool = True
    seed: int = 0
    timeout_s: float | None = None  # longest remote build/run step (default: the profile's)
    remote_workdir: str | None = None
    coreml_target: str = "mac"  # mac | iphone (attached to the Mac)
    coreml_device_name: str | None = None

    @classmethod
    def from_kwargs(cls, kw: dict[str, Any]) -> "BenchOptions":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(kw) - names)
        if unknown:
            raise TypeError(f"unknown bench option(s): {', '.join(unknown)}")
        opts = cls(**kw)
        Warmup.parse(opts.warmup)
        if opts.iterations < 1:
            raise EdgesegError(f"iterations must be >= 1 (got {opts.iterations})", "pass --iterations N")
        if opts.batch < 1:
            raise EdgesegError(f"batch must be >= 1 (got {opts.batch})", "pass --batch N")
        if opts.threads is not None and opts.threads < 1:
            raise EdgesegError(f"threads must be >= 1 (got {opts.threads})", "pass --threads N")
        if opts.coreml_target not in ("mac", "iphone"):
            raise EdgesegError(f"unknown Core ML target {opts.coreml_target!r}", "use mac or iphone")
        for b in opts.backends or []:
            if b not in LOCAL_BACKENDS:
                raise EdgesegError(f"unknown backend {b!r}", f"choose from {', '.join(LOCAL_BACKENDS)}")
        return opts


@dataclass
class BenchOutcome:
    target: str
    device: str
    results: list[BenchResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    db: str | None = None

    @property
    def parity_failed(self) -> list[BenchResult]:
        return [r for r in self.results if r.parity and r.parity.get("status") == "failed"]

    def as_dict(self, with_times: bool = False) -> dict[str, Any]:
        return {"target": self.target, "device": self.device, "db": self.db, "notes": self.notes,
                "results": [r.as_dict(with_times=with_times) for r in self.results]}


def _open_store(store):
    if store is False:
        return None
    if store is None or isinstance(store, (str, Path)):
        return ResultStore(store)
    return store


def bench_artifact(target: str | Path, device: str = "host-cpu", *, host: str | None = None, identity: str | None = None,
                   known_hosts: str | None = None, port: int | None = None, predict: bool = False, arch: str | None = None,
                   store: Any = None, progress: Callable[[str], None] | None = None, **options: Any) -> BenchOutcome:
    """Benchmark (or predict) `target` on the `device` profile and store the results.

    target: an .onnx/.mlpackage artifact, a checkpoint, or a registered model name.
    device: a profile name (`edgeseg devices`). Remote profiles need `host` (user@addr[:port]);
    without it, or with `predict=True`, the result is the roofline model's estimate,
    labelled "predicted". `store`: None (default database), a path, a ResultStore, or False.
    options: see BenchOptions (warmup, iterations, threads, precision, input_size, batch,
    backends, include_preprocessing, parity, seed, timeout_s, remote_workdir, coreml_target).
    """
    say = progress or (lambda msg: None)
    opts = BenchOptions.from_kwargs(options)
    profile = get_profile(device, threads=opts.threads)
    precision = opts.precision or profile.default_precision
    if precision not in profile.precisions:
        raise EdgesegError(f"{profile.name} does not run {precision}", f"choose one of: {', '.join(profile.precisions)}")
    if host and not profile.is_remote:
        raise EdgesegError(f"{profile.name} runs on this machine; --host is for device profiles reached over SSH",
                           "drop --host, or pick the device's profile with --device")
    db = _open_store(store)
    predicting = predict or (profile.is_remote and not host)
    # non-trivial weights matter only where outputs are compared; timing does not depend on values
    compares = opts.parity and (profile.is_remote or "onnxruntime" in (opts.backends or LOCAL_BACKENDS))
    subject = resolve_subject(target, arch, opts.seed, weights=compares and not predicting)
    size = tuple(opts.input_size) if opts.input_size else subject.default_size()
    if size is None:
        raise EdgesegError(f"cannot tell the input size of {target}", "pass --input-size HxW")
    outcome = BenchOutcome(target=str(target), device=profile.name, notes=list(subject.notes))
    if predicting:
        if not predict:
            outcome.notes.append(f"no --host for {profile.name}: showing the latency model's estimate (predicted, not measured)")
        say(f"predicting {subject.name} on {profile.name} ({precision}, {size[0]}x{size[1]})")
        outcome.results.append(predict_result(subject, profile, precision, size, opts.batch))
    elif not profile.is_remote:
        outcome.results.extend(bench_local(subject, profile, precision, size, opts, say, outcome.notes))
    else:
        outcome.results.extend(bench_remote(subject, profile, precision, size, opts, host, identity, known_hosts, port, say,
                                            outcome.notes))
    if db is not None:
        for r in outcome.results:
            db.add(r)
        outcome.db = str(db.path)
    return outcome
