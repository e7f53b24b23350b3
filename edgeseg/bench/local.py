"""Local backends: PyTorch eager (unfused and fused) and ONNX Runtime on this machine."""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeseg.timing import Measurement, Warmup, measure
from edgeseg.errors import EdgesegError


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
    from edgeseg.devices import cpu_model

    return {"machine": platform.machine(), "cpu": cpu_model(), "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "numpy": np.__version__}


def bench_pytorch(model, input_size: tuple[int, int], *, batch: int = 1, warmup: "str | int | Warmup" = 10,
                  iterations: int = 50, threads: int | None = None, include_preprocessing: bool = False,
                  seed: int = 0) -> Measurement:
    """Eager PyTorch on the CPU under `inference_mode`, with a fixed thread count."""
    import torch

    from edgeseg.bench.calibrate import torch_threads

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


def onnx_input_spec(path: str | Path) -> tuple[str, list, str]:
    """(name, shape with None for symbolic dims, element type) of the model's first input."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if not inputs:
        raise EdgesegError(f"{path} has no graph input", "export the model again")
    inp = inputs[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    etype = onnx.TensorProto.DataType.Name(inp.type.tensor_type.elem_type).lower()
    return inp.name, dims, etype


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
    """ONNX Runtime session creation (timed as load), first inference, warm-up, timed runs."""
    import onnxruntime as ort

    name, dims, etype = onnx_input_spec(path)
    shape = list(input_array.shape) if input_array is not None else resolve_shape(dims, input_size, batch)
    dtype = np.float16 if etype == "float16" else np.float32
    x = input_array if input_array is not None else np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    opts.graph_optimization_level = levels[optimization]
    t0 = time.perf_counter()
    try:
        sess = ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        raise EdgesegError(f"ONNX Runtime cannot load {path}: {str(exc).splitlines()[0]}", "check the file (edgeseg export)") from exc
    load_ms = (time.perf_counter() - t0) * 1000.0
    feed = {name: x}
    outputs: dict[str, list] = {}

    def run():
        outputs["last"] = sess.run(None, feed)

    m = measure(run, warmup=warmup, iterations=iterations)
    m.load_ms = load_ms
    m.extra.update({"runtime": "onnxruntime", "runtime_version": ort.__version__, "threads": threads or "ort-default",
                    "providers": sess.get_providers(), "input_shape": shape, "input_name": name,
                    "graph_optimization": optimization, "environment": environment(), "outputs": outputs.get("last")})
    return m
