"""Local runs of `edgeseg bench`: PyTorch eager (unfused and fused) and ONNX Runtime on this
machine, through the same Runner that parity uses for ONNX."""

from __future__ import annotations

import platform
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeseg.bench.calibrate import torch_threads
from edgeseg.bench.reference import parity_entry, reference_outputs
from edgeseg.bench.result import BenchResult, result_fields
from edgeseg.bench.subject import Subject
from edgeseg.devices import cpu_model
from edgeseg.errors import EdgesegError
from edgeseg.exporters import get_target
from edgeseg.exporters.onnx.runner import OnnxRuntimeRunner
from edgeseg.timing import Measurement, Warmup, measure

LOCAL_BACKENDS = ("pytorch-unfused", "pytorch", "onnxruntime")


def preprocess_fn(mean, std, size: tuple[int, int], batch: int = 1, seed: int = 0) -> Callable[[], np.ndarray]:
    """What an application does per frame: uint8 HWC image -> normalised float NCHW batch."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(batch, size[0], size[1], 3), dtype=np.uint8)
    m = np.asarray(mean, dtype=np.float32).reshape(1, 1, 1, 3) * 255.0
    s = np.asarray(std, dtype=np.float32).reshape(1, 1, 1, 3) * 255.0

    def run() -> np.ndarray:
        x = (image.astype(np.float32) - m) / s
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    return run


def environment() -> dict[str, Any]:
    return {"machine": platform.machine(), "cpu": cpu_model(), "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "numpy": np.__version__}


def bench_pytorch(model, input_size: tuple[int, int], *, batch: int = 1, warmup: "str | int | Warmup" = 10,
                  iterations: int = 50, threads: int | None = None, include_preprocessing: bool = False,
                  seed: int = 0) -> Measurement:
    """Eager PyTorch on the CPU under `inference_mode`, with a fixed thread count."""
    import torch  # lazy: `edgeseg --help` must not load torch

    model.eval()
    info = getattr(model, "edgeseg", None)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, *input_size, generator=gen)
    prep = preprocess_fn(info.mean, info.std, input_size, batch, seed) if (include_preprocessing and info) else None
    if include_preprocessing and prep is None:
        prep = preprocess_fn((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), input_size, batch, seed)

    def run():
        with torch.inference_mode():
            return model(torch.from_numpy(prep()) if prep else x)

    with torch_threads(threads):
        m = measure(run, warmup=warmup, iterations=iterations)
        used = torch.get_num_threads()
    m.extra.update({"runtime": "pytorch", "runtime_version": torch.__version__, "threads": used,
                    "environment": environment()})
    return m


def resolve_shape(dims: list, input_size: tuple[int, int] | None, batch: int = 1) -> list[int]:
    """Fill symbolic dims from the requested batch/size; refuse a size that a static model does not take."""
    if len(dims) != 4:
        if any(d is None for d in dims):
            raise EdgesegError(f"cannot choose a shape for a {len(dims)}-D symbolic input", "export with a static shape")
        return list(dims)
    out = list(dims)
    out[0] = out[0] or batch
    out[1] = out[1] or 3
    if input_size:
        for i, want in zip((2, 3), input_size):
            if dims[i] is not None and dims[i] != want:
                raise EdgesegError(f"the model's input is fixed at {dims[2]}x{dims[3]}, not {input_size[0]}x{input_size[1]}",
                                   "export it at that size, or drop --input-size")
            out[i] = want
    if out[2] is None or out[3] is None:
        raise EdgesegError("the model's input size is symbolic", "pass --input-size HxW")
    return [int(d) for d in out]


def bench_onnxruntime(path: str | Path, *, input_size: tuple[int, int] | None = None, batch: int = 1,
                      warmup: "str | int | Warmup" = 10, iterations: int = 50, threads: int | None = None,
                      providers: list[str] | None = None, seed: int = 0, input_array: np.ndarray | None = None,
                      optimization: str = "all") -> Measurement:
    """ONNX Runtime session creation (timed as load), first inference, warm-up, timed runs; fp16
    graphs run natively, as a deployment runs them."""
    runner = OnnxRuntimeRunner(path, threads=threads, optimization=optimization, providers=providers, fp16="native", log_level=3)
    shape = list(input_array.shape) if input_array is not None else resolve_shape(runner.input_shape, input_size, batch)
    x = input_array if input_array is not None else np.random.default_rng(seed).standard_normal(shape).astype(runner.input_dtype)
    m = runner.time({runner.input_name: x}, warmup=warmup, iterations=iterations)
    m.extra.update({"input_shape": shape, "input_name": runner.input_name, "environment": environment()})
    return m


def bench_local(subject: Subject, profile, precision: str, size, opts, say, notes: list[str]) -> list[BenchResult]:
    """PyTorch eager (unfused, fused) and ONNX Runtime on this machine; parity of the ONNX run."""
    if subject.kind != "model" and subject.kind != get_target("onnx").kind:
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
                                                        settings=dict(settings), **result_fields(subject, profile, backend, size, precision, opts)))
            continue
        with tempfile.TemporaryDirectory(prefix="edgeseg-bench-") as tmp:
            if subject.kind == "onnx":
                onnx_path, how = subject.path, "given"
            else:
                onnx_path, how = subject.export("onnx", profile, size, opts.batch, None, Path(tmp), say)
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
                ref, ref_name = reference_outputs(subject, x, None, threads)
                parity = parity_entry(subject, ref, list(cand), "fp32", ref_name)
            m.extra.pop("outputs", None)
            r = BenchResult.from_measurement(m, fused=True, settings={**settings, "onnx": how}, parity=parity,
                                             **result_fields(subject, profile, "onnxruntime", size, precision, opts))
            results.append(r)
    return results
