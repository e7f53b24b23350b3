"""Measured ceilings of this machine for the latency model (the host-cpu profile).

Theoretical peaks are leads; what the roofline model should use is what the machine
sustains: a large GEMM (compute), a large copy (memory bandwidth) and the fixed cost of
dispatching one tiny layer in each runtime. Results are cached per CPU model and thread
count in the user cache directory.
"""

from __future__ import annotations

import contextlib
import time

# the cache of measurements lives with the host profile that reads it (edgeseg.devices)
from edgeseg.devices import HostCalibration, _cache_path, cached_calibration, cpu_model, host_threads, save_calibration  # noqa: F401
from edgeseg.exporters.onnx.runner import ort_session

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
    sess = ort_session(model, threads=threads, log_level=3)
    feed = {"x": rng.standard_normal((1, 4, 4, 4)).astype(np.float32)}
    return _median_ms(lambda: sess.run(None, feed), reps, warmup=3) * 1000.0 / layers


def calibrate_host(threads: int | None = None, *, save: bool = True, quick: bool = False) -> HostCalibration:
    """Measure this machine's ceilings (a few seconds) and cache them for the host-cpu profile."""
    import datetime

    import torch

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
