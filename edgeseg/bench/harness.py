"""`edgeseg bench`: measure a model the same way on the host, a Jetson, an ARM board or an
iPhone (through a Mac), or predict it where no device is attached; keep every result.

    from edgeseg.bench.harness import bench_artifact
    outcome = bench_artifact("mobileone_s0", "host-cpu", iterations=50)
    outcome = bench_artifact("model.onnx", "raspberry-pi-5", host="pi@10.0.0.7", identity="~/.ssh/id_ed25519")
    outcome = bench_artifact("fastvit_t8.pth", "jetson-nano")          # no host: predicted
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeseg.bench.result import BenchResult
from edgeseg.bench.subject import Subject, model_outputs, resolve_subject
from edgeseg.bench.timing import Warmup
from edgeseg.errors import EdgesegError

LOCAL_BACKENDS = ("pytorch-unfused", "pytorch", "onnxruntime")


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
    from edgeseg.bench.store import ResultStore

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
    from edgeseg.devices import get_profile

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
        outcome.results.extend(_bench_local(subject, profile, precision, size, opts, say, outcome.notes))
    else:
        outcome.results.extend(_bench_remote(subject, profile, precision, size, opts, host, identity, known_hosts, port, say,
                                             outcome.notes))
    if db is not None:
        for r in outcome.results:
            db.add(r)
        outcome.db = str(db.path)
    return outcome


def predict_latency(target, device: str = "host-cpu", *, precision: str | None = None, input_size: tuple[int, int] | None = None,
                    batch: int = 1, arch: str | None = None, runtime: str | None = None, threads: int | None = None):
    """Roofline estimate for a target (model object, checkpoint, artifact with a manifest, or model name).

    Returns edgeseg.bench.predict.LatencyPrediction (`.total_ms`, `.as_dict()`), always labelled predicted.
    """
    from edgeseg.bench.predict import predict_latency as _predict

    if hasattr(target, "forward"):
        model = target
        if not getattr(getattr(model, "edgeseg", None), "fused", True):
            from edgeseg.api import reparameterize

            model, _ = reparameterize(model, verify=False)
    else:
        subject = resolve_subject(target, arch, weights=False)
        subject.ensure_model()
        model = subject.fused()
    from edgeseg.devices import get_profile

    profile = get_profile(device, threads=threads) if isinstance(device, str) else device
    return _predict(model, profile, precision=precision, input_size=input_size, batch=batch, runtime=runtime)


# ---------------------------------------------------------------- shared pieces

def _base(subject: Subject, profile, backend: str, size, precision: str, opts: BenchOptions, **kw) -> dict[str, Any]:
    return dict(model=subject.name, device=profile.name, backend=backend, input_size=size, precision=precision, batch=opts.batch,
                warmup=str(Warmup.parse(opts.warmup)), artifact=str(subject.path) if subject.path else None,
                artifact_sha256=subject.sha256, artifact_kind=subject.kind, **kw)


def predict_result(subject: Subject, profile, precision: str, size, batch: int) -> BenchResult:
    from edgeseg.bench.predict import predict_latency as _predict

    subject.ensure_model()
    pred = _predict(subject.fused(), profile, precision=precision, input_size=size, batch=batch)
    return BenchResult(model=subject.name, device=profile.name, backend="predicted", input_size=size, precision=precision,
                       stats=None, batch=batch, fused=True, predicted=True, predicted_ms=pred.total_ms,
                       runtime_version="roofline-1", artifact=str(subject.path) if subject.path else None,
                       artifact_sha256=subject.sha256, artifact_kind=subject.kind,
                       settings={"runtime": pred.runtime, "fuse_pointwise": pred.fuse_pointwise},
                       extra={"prediction": pred.as_dict(top=8)})


def _export_onnx(subject: Subject, profile, size, batch: int, out_dir: Path, say) -> tuple[Path, str]:
    """ONNX for a model target, respecting the device profile's export constraints."""
    out = out_dir / f"{subject.name}.onnx"
    say(f"exporting {subject.name} to ONNX for {profile.name} ({size[0]}x{size[1]})")
    try:
        from edgeseg.export_job import export_checkpoint
    except ImportError:
        export_checkpoint = None
    if export_checkpoint is not None:
        export_checkpoint(None, out, target="onnx", model=subject.model, device=profile.name, input_size=tuple(size),
                          batch=batch, parity=False, verify_reparam=False, overwrite=True)
        return out, "edgeseg export (onnx)"
    import torch

    fused = subject.fused()
    x = torch.zeros(batch, 3, *size)
    opset = profile.export.opset_default or 17
    torch.onnx.export(fused, (x,), str(out), opset_version=opset, input_names=["input"], dynamo=False)
    return out, f"torch.onnx.export (opset {opset})"


def _parity(subject: Subject, reference: list[np.ndarray] | None, candidate: list[np.ndarray], precision: str,
            reference_name: str) -> dict[str, Any]:
    if reference is None:
        return {"status": "skipped", "reason": "no reference available"}
    try:
        from edgeseg.parity.compare import compare_outputs
    except ImportError:
        return {"status": "skipped", "reason": "edgeseg.parity.compare is not available"}
    report = compare_outputs(reference, candidate, task=subject.task, precision=precision)
    d = report.as_dict()
    d["reference"] = reference_name
    return d


def _reference(subject: Subject, x: np.ndarray, onnx_path: Path | None, threads: int | None) -> tuple[list[np.ndarray] | None, str]:
    """PyTorch (fused) on the host when we have real weights; else the same ONNX on the host."""
    if subject.kind == "model":
        return model_outputs(subject.fused(), x), "pytorch (fused, host)"
    if onnx_path is not None:
        from edgeseg.bench.local import bench_onnxruntime

        m = bench_onnxruntime(onnx_path, input_array=x, warmup=0, iterations=1, threads=threads)
        return list(m.extra["outputs"]), "onnxruntime (same ONNX, host)"
    return None, "none"


# ---------------------------------------------------------------- local

def _bench_local(subject: Subject, profile, precision: str, size, opts: BenchOptions, say, notes: list[str]) -> list[BenchResult]:
    from edgeseg.bench.local import bench_onnxruntime, bench_pytorch

    if subject.kind in ("coreml", "engine"):
        raise EdgesegError(f"{subject.path} ({subject.kind}) cannot run on {profile.name}",
                           "pass --device with a matching profile and --host, or bench the .onnx / checkpoint here")
    if precision != "fp32" and subject.kind == "model":
        raise EdgesegError(f"local PyTorch/ONNX Runtime benchmarks run fp32, not {precision}", "drop --precision")
    threads = opts.threads or profile.threads
    if subject.kind == "onnx":
        backends = opts.backends or ["onnxruntime"]
        bad = [b for b in backends if b != "onnxruntime"]
        if bad:
            raise EdgesegError(f"an ONNX file runs only under onnxruntime, not {', '.join(bad)}", "pass the checkpoint for PyTorch runs")
    else:
        backends = opts.backends or list(LOCAL_BACKENDS)
        if subject.already_fused and "pytorch-unfused" in backends:
            backends = [b for b in backends if b != "pytorch-unfused"]
            notes.append("the checkpoint is already reparameterized: no unfused run")
    results = []
    settings = {"threads": threads, "include_preprocessing": opts.include_preprocessing, "seed": opts.seed}
    for backend in backends:
        if backend in ("pytorch-unfused", "pytorch"):
            fused = backend == "pytorch"
            model = subject.fused() if fused else subject.model
            say(f"timing {subject.name} in PyTorch eager ({'fused' if fused else 'unfused'}), {size[0]}x{size[1]}")
            m = bench_pytorch(model, size, batch=opts.batch, warmup=opts.warmup, iterations=opts.iterations, threads=threads,
                              include_preprocessing=opts.include_preprocessing, seed=opts.seed)
            results.append(BenchResult.from_measurement(m, fused=fused, preprocessing_in_timer=opts.include_preprocessing,
                                                        settings=dict(settings), **_base(subject, profile, backend, size, precision, opts)))
            continue
        with tempfile.TemporaryDirectory(prefix="edgeseg-bench-") as tmp:
            if subject.kind == "onnx":
                onnx_path, how = subject.path, "given"
            else:
                onnx_path, how = _export_onnx(subject, profile, size, opts.batch, Path(tmp), say)
            say(f"timing {onnx_path.name} in ONNX Runtime, {size[0]}x{size[1]}")
            x = None
            if opts.include_preprocessing:
                notes.append("pre-processing is timed only for PyTorch runs; ONNX Runtime times the model alone")
            m = bench_onnxruntime(onnx_path, input_size=size, batch=opts.batch, warmup=opts.warmup, iterations=opts.iterations,
                                  threads=threads, seed=opts.seed)
            parity = None
            if opts.parity and subject.kind == "model":
                x = np.random.default_rng(opts.seed).standard_normal(m.extra["input_shape"]).astype(np.float32)
                cand = bench_onnxruntime(onnx_path, input_array=x, warmup=0, iterations=1, threads=threads).extra["outputs"]
                ref, ref_name = _reference(subject, x, None, threads)
                parity = _parity(subject, ref, list(cand), "fp32", ref_name)
            m.extra.pop("outputs", None)
            r = BenchResult.from_measurement(m, fused=True, settings={**settings, "onnx": how}, parity=parity,
                                             **_base(subject, profile, "onnxruntime", size, precision, opts))
            results.append(r)
    return results


# ---------------------------------------------------------------- remote

def _session(profile, host: str, identity, known_hosts, port, opts: BenchOptions):
    from edgeseg.bench.remote.ssh import SSHSession, SSHTarget, Timeouts

    return SSHSession(SSHTarget.parse(host, port), identity=identity, known_hosts=known_hosts,
                      timeouts=Timeouts.from_profile(profile, run=opts.timeout_s))


def _bench_remote(subject: Subject, profile, precision: str, size, opts: BenchOptions, host, identity, known_hosts, port, say,
                  notes: list[str]) -> list[BenchResult]:
    if opts.backends:
        notes.append(f"--backend applies to local runs; {profile.name} runs {profile.runtime}")
    if opts.include_preprocessing:
        notes.append("pre-processing is not timed on devices (the runners time the model alone)")
    workdir = opts.remote_workdir or profile.access.workdir
    if profile.runtime == "onnxruntime":
        return [_remote_ort(subject, profile, precision, size, opts, host, identity, known_hosts, port, say, workdir)]
    if profile.runtime == "tensorrt":
        return [_remote_trt(subject, profile, precision, size, opts, host, identity, known_hosts, port, say, workdir)]
    if profile.runtime == "coreml":
        return [_remote_coreml(subject, profile, precision, size, opts, host, identity, known_hosts, port, say, workdir)]
    raise EdgesegError(f"profile {profile.name} has runtime {profile.runtime}, which has no remote runner", "use onnxruntime, tensorrt or coreml")


@contextlib.contextmanager
def _onnx_for(subject: Subject, profile, size, batch: int, say):
    with tempfile.TemporaryDirectory(prefix="edgeseg-bench-") as tmp:
        if subject.kind == "onnx":
            yield subject.path, "given"
        elif subject.kind == "model":
            yield _export_onnx(subject, profile, size, batch, Path(tmp), say)
        else:
            raise EdgesegError(f"{profile.name} runs ONNX models; {subject.path} is a {subject.kind} artifact",
                               "pass the .onnx file or the checkpoint (engines are built on the device)")


def _remote_ort(subject, profile, precision, size, opts, host, identity, known_hosts, port, say, workdir) -> BenchResult:
    from edgeseg.bench.local import onnx_input_spec, resolve_shape
    from edgeseg.bench.remote.ort import run_ort_remote

    threads = opts.threads or profile.threads
    # a given artifact carries its own precision (an int8 file stays int8 whatever the profile's default)
    precision = (subject.manifest.get("precision") if subject.kind == "onnx" else None) or precision
    with _onnx_for(subject, profile, size, opts.batch, say) as (onnx_path, how):
        _, dims, _ = onnx_input_spec(onnx_path)
        shape = resolve_shape(dims, size, opts.batch)
        x = np.random.default_rng(opts.seed).standard_normal(shape).astype(np.float32) if opts.parity else None
        with _session(profile, host, identity, known_hosts, port, opts) as session:
            say(f"running {onnx_path.name} on {profile.name} ({session.target}) with ONNX Runtime")
            m = run_ort_remote(session, onnx_path, python=profile.access.python, workdir=workdir, warmup=opts.warmup,
                               iterations=opts.iterations, threads=threads, shape=shape, input_array=x,
                               run_timeout=opts.timeout_s)
            target = str(session.target)
        parity = None
        if x is not None:
            ref, ref_name = _reference(subject, x, onnx_path, threads)
            parity = _parity(subject, ref, list(m.extra.get("outputs") or []), precision, ref_name)
    return BenchResult.from_measurement(m, fused=True, host=target, parity=parity,
                                        settings={"threads": threads, "onnx": how, "seed": opts.seed},
                                        **_base(subject, profile, "onnxruntime", tuple(shape[2:]), precision, opts))


def _remote_trt(subject, profile, precision, size, opts, host, identity, known_hosts, port, say, workdir) -> BenchResult:
    import onnx

    from edgeseg.bench.local import onnx_input_spec, resolve_shape
    from edgeseg.bench.remote.tensorrt import bench_trtexec_remote

    with _onnx_for(subject, profile, size, opts.batch, say) as (onnx_path, how):
        name, dims, _ = onnx_input_spec(onnx_path)
        shape = resolve_shape(dims, size, opts.batch)
        out_names = [o.name for o in onnx.load(str(onnx_path), load_external_data=False).graph.output]
        x = np.random.default_rng(opts.seed).standard_normal(shape).astype(np.float32) if opts.parity else None
        warm = Warmup.parse(opts.warmup)
        with _session(profile, host, identity, known_hosts, port, opts) as session:
            say(f"building and timing {onnx_path.name} on {profile.name} ({session.target}) with trtexec")
            m = bench_trtexec_remote(session, onnx_path, profile, precision, warmup=warm if warm.by_time else "200ms",
                                     iterations=opts.iterations, input_array=x, input_name=name, workdir=workdir,
                                     timeout=opts.timeout_s)
            target = str(session.target)
        parity = None
        if x is not None:
            outs = m.extra.get("outputs") or {}
            missing = [n for n in out_names if n not in outs]
            if missing:
                parity = {"status": "failed", "reason": f"trtexec exported no output named {', '.join(missing)}"}
            else:
                ref, ref_name = _reference(subject, x, onnx_path, None)
                cand = [outs[n].reshape(r.shape) if outs[n].size == r.size else outs[n] for n, r in zip(out_names, ref)] if ref else []
                parity = _parity(subject, ref, cand, precision, ref_name)
    if not warm.by_time:
        m.extra["warmup_note"] = "trtexec warms up by time: a count was replaced by 200 ms"
    return BenchResult.from_measurement(m, fused=True, host=target, parity=parity,
                                        settings={"onnx": how, "seed": opts.seed, "power_mode": m.extra.get("environment", {}).get("nvpmodel")},
                                        **_base(subject, profile, "tensorrt", tuple(shape[2:]), precision, opts))


def _remote_coreml(subject, profile, precision, size, opts, host, identity, known_hosts, port, say, workdir) -> BenchResult:
    from edgeseg.bench.remote.coreml import run_coreml_remote

    with tempfile.TemporaryDirectory(prefix="edgeseg-bench-") as tmp:
        if subject.kind == "coreml":
            model_path, how = subject.path, "given"
        elif subject.kind == "model":
            from edgeseg.export_job import export_checkpoint

            model_path = Path(tmp) / f"{subject.name}.mlpackage"
            say(f"converting {subject.name} to Core ML for {profile.name}")
            export_checkpoint(None, model_path, target="coreml", model=subject.model, device=profile.name, input_size=tuple(size),
                              batch=opts.batch, precision=precision, parity=False, verify_reparam=False, overwrite=True)
            how = "edgeseg export (coreml)"
        else:
            raise EdgesegError(f"{profile.name} runs Core ML models; {subject.path} is a {subject.kind} artifact",
                               "pass the .mlpackage or the checkpoint")
        with _session(profile, host, identity, known_hosts, port, opts) as session:
            say(f"running {model_path.name} on {session.target} ({opts.coreml_target})")
            m = run_coreml_remote(session, model_path, python=profile.access.python, workdir=workdir, warmup=opts.warmup,
                                  iterations=opts.iterations, compute_units=profile.compute_units or "ALL",
                                  target=opts.coreml_target, device_name=opts.coreml_device_name, run_timeout=opts.timeout_s)
            target = str(session.target)
    parity = {"status": "skipped", "reason": "Core ML parity runs in `edgeseg export --target coreml` on macOS"}
    return BenchResult.from_measurement(m, fused=True, host=target, parity=parity,
                                        settings={"coreml": how, "compute_units": profile.compute_units, "target": opts.coreml_target},
                                        **_base(subject, profile, "coreml", size, precision, opts))
