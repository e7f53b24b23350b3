"""Measured ceilings of this machine for the latency model (the host-cpu profile).

Theoretical peaks are leads; what the roofline model should use is what the machine
sustains: a large GEMM (compute), a large copy (memory bandwidth) and the fixed cost of
dispatching one tiny layer in each runtime. Results are cached per CPU model and thread
count in the user cache directory.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

CACHE_VERSION = 1


@dataclass
class HostCalibration:
    cpu: str
    threads: int
    gemm_gflops: float
    copy_gbps: float
    overhead_us: dict[str, float] = field(default_factory=dict)  # runtime -> fixed cost per layer
    measured_at: str = ""
    torch_version: str = ""

    def ceilings(self) -> dict:
        from edgeseg.devices import Ceiling

        default = self.overhead_us.get("onnxruntime", min(self.overhead_us.values(), default=0.0))
        return {"fp32": Ceiling(gflops=self.gemm_gflops, gbps=self.copy_gbps, layer_overhead_us=default,
                                runtime_overhead_us=dict(self.overhead_us))}

    def describe(self) -> str:
        ov = ", ".join(f"{k} {v:.1f} us/layer" for k, v in sorted(self.overhead_us.items()))
        return (f"measured {self.measured_at}: GEMM {self.gemm_gflops:.1f} GFLOP/s, copy {self.copy_gbps:.1f} GB/s, {ov} "
                f"({self.threads} threads)")


def _cache_path() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("edgeseg")) / "host_calibration.json"


def _key(threads: int) -> str:
    from edgeseg.devices import cpu_model

    return f"{cpu_model()}|{threads}"


def cached_calibration(threads: int) -> HostCalibration | None:
    path = _cache_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("version") != CACHE_VERSION:
        return None
    entry = data.get("entries", {}).get(_key(threads))
    if not isinstance(entry, dict):
        return None
    try:
        return HostCalibration(**entry)
    except TypeError:
        return None


def save_calibration(cal: HostCalibration) -> Path:
    from edgeseg.atomic import atomic_output

    path = _cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(path.read_text())
        if data.get("version") != CACHE_VERSION:
            raise ValueError
    except (OSError, ValueError):
        data = {"version": CACHE_VERSION, "entries": {}}
    data["entries"][_key(cal.threads)] = asdict(cal)
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(data, indent=2))
        json.loads(tmp.read_text())
    return path


@contextlib.contextmanager
def torch_threads(n: int | None):
    import torch

    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _median_ms(fn, reps: int, warmup: int = 2) -> float:
    import statistics

    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(ts)


def measure_gemm_gflops(n: int = 1024, reps: int = 10) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    c = torch.empty(n, n)
    ms = _median_ms(lambda: torch.mm(a, b, out=c), reps)
    return 2.0 * n**3 / (ms * 1e-3) / 1e9


def measure_copy_gbps(mbytes: int = 64, reps: int = 10) -> float:
    """Read + write bandwidth of a copy much larger than the last-level cache."""
    import torch

    n = mbytes * 1024 * 1024 // 4
    src, dst = torch.randn(n), torch.empty(n)
    ms = _median_ms(lambda: dst.copy_(src), reps)
    return 2.0 * n * 4 / (ms * 1e-3) / 1e9


def measure_torch_layer_overhead_us(layers: int = 50, reps: int = 20) -> float:
    """Fixed cost of one eager layer: a chain of tiny convs, where compute is negligible."""
    import torch
    from torch import nn

    net = nn.Sequential(*[nn.Conv2d(4, 4, 1) for _ in range(layers)]).eval()
    x = torch.randn(1, 4, 4, 4)

    def run():
        with torch.inference_mode():
            net(x)

    return _median_ms(run, reps, warmup=3) * 1000.0 / layers


def measure_ort_layer_overhead_us(threads: int, layers: int = 50, reps: int = 20) -> float:
    """Fixed cost of one ONNX Runtime node: a chain of tiny 1x1 convs (not fusable)."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits = [], []
    prev = "x"
    for i in range(layers):
        w = numpy_helper.from_array(rng.standard_normal((4, 4, 1, 1)).astype(np.float32) * 0.5, f"w{i}")
        inits.append(w)
        out = "y" if i == layers - 1 else f"t{i}"
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [out]))
        prev = out
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed = {"x": rng.standard_normal((1, 4, 4, 4)).astype(np.float32)}
    return _median_ms(lambda: sess.run(None, feed), reps, warmup=3) * 1000.0 / layers


def calibrate_host(threads: int | None = None, *, save: bool = True, quick: bool = False) -> HostCalibration:
    """Measure this machine's ceilings (a few seconds) and cache them for the host-cpu profile."""
    import datetime

    import torch

    from edgeseg.devices import cpu_model, host_threads

    threads = threads or host_threads()
    reps = 4 if quick else 10
    with torch_threads(threads):
        gemm = max(measure_gemm_gflops(reps=reps), measure_gemm_gflops(n=768, reps=reps))
        copy = measure_copy_gbps(mbytes=32 if quick else 64, reps=reps)
        overhead = {"pytorch": measure_torch_layer_overhead_us(reps=reps)}
    overhead["onnxruntime"] = measure_ort_layer_overhead_us(threads, reps=reps)
    cal = HostCalibration(cpu=cpu_model(), threads=threads, gemm_gflops=gemm, copy_gbps=copy, overhead_us=overhead,
                          measured_at=datetime.datetime.now().isoformat(timespec="seconds"), torch_version=torch.__version__)
    if save:
        save_calibration(cal)
    return cal
