"""ONNX Runtime Runner: the one place edgeseg creates an `InferenceSession` (export checks,
fp16 preflight, precision probes, parity, local benchmarks and host calibration all come here).

fp16 graphs run "emulated" for parity by default: fp32 ops with every tensor rounded to fp16,
which is what fp16 hardware computes; "native" runs them as ONNX Runtime's CPU provider does,
which computes ops lacking fp16 kernels in unrounded fp32 regions and so hides fp16 error.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from edgeseg.errors import BackendUnavailable, EdgesegError
from edgeseg.exporters.onnx.fp16 import emulate_fp16
from edgeseg.exporters.runner import Runner
from edgeseg.timing import Measurement, Warmup, measure

_NP = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
OPTIMIZATION = ("none", "basic", "extended", "all")


def ort_session(model_or_path: Any, *, threads: int | None = None, optimization: str = "all", providers: list[str] | None = None,
                log_level: int = 4, optimized_model_filepath: str | None = None, profile_prefix: str | None = None):
    """An `onnxruntime.InferenceSession` for a path, serialized bytes or an onnx.ModelProto.

    log_level 4: load and run errors are raised with their message; ORT's own log would repeat them.
    """
    import onnxruntime as ort  # lazy: the runtime loads only when an artifact runs

    opts = ort.SessionOptions()
    opts.log_severity_level = log_level
    levels = {"none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    opts.graph_optimization_level = levels[optimization]
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    if optimized_model_filepath:  # ask ORT to write the graph it will execute (graph passes judge by it)
        opts.optimized_model_filepath = optimized_model_filepath
    if profile_prefix:  # per-op timings (int8 op selection)
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    if hasattr(model_or_path, "SerializeToString"):
        src = model_or_path.SerializeToString()
    else:
        src = model_or_path if isinstance(model_or_path, bytes) else str(model_or_path)
    return ort.InferenceSession(src, sess_options=opts, providers=providers or ["CPUExecutionProvider"])


def input_spec(path: str | Path) -> tuple[str, list, str]:
    """(name, shape with None for symbolic dims, element type) of the model's first input, read
    from the file without loading its weights."""
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


def _precision_of(path: Path) -> str:
    """fp16 when weights are stored in half precision (our fp16 graphs keep fp32 inputs/outputs)."""
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(path), load_external_data=False)
    return "fp16" if any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer) else "fp32"


class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"

    def __init__(self, path: str | Path, *, threads: int | None = None, optimization: str = "all", fp16: str = "emulate",
                 providers: list[str] | None = None, log_level: int = 4, **_: object):
        try:
            import onnxruntime as ort  # lazy: the runtime loads only when an artifact runs
        except ImportError as exc:
            raise BackendUnavailable("onnxruntime is not installed", "pip install onnxruntime") from exc
        self.path = Path(path)
        if not self.path.is_file():
            raise EdgesegError(f"artifact {self.path} does not exist", "check the path")
        self.threads, self.optimization = threads, optimization
        try:
            self.precision = _precision_of(self.path)
        except Exception as exc:  # onnx raises protobuf decode errors for non-models
            raise EdgesegError(f"ONNX Runtime cannot load {self.path}: not an ONNX model ({type(exc).__name__})",
                               "re-export it with `edgeseg export`") from exc
        emulate = self.precision == "fp16" and fp16 == "emulate"
        self.mode = "fp16 emulated: fp32 ops, fp16 rounding of every tensor" if emulate else "native"
        t0 = time.perf_counter()
        try:
            if emulate:
                import onnx


                src: Any = emulate_fp16(onnx.load(str(self.path)))
            else:
                src = self.path
            self.session = ort_session(src, threads=threads, optimization=optimization, providers=providers, log_level=log_level)
        except Exception as exc:  # ORT raises its own exception hierarchy
            raise EdgesegError(f"ONNX Runtime cannot load {self.path}: {str(exc).strip().splitlines()[0][:300]}",
                               "re-export it with `edgeseg export`") from exc
        self.load_ms = (time.perf_counter() - t0) * 1000.0
        self.version = ort.__version__
        inputs = self.session.get_inputs()
        self.input_names = [i.name for i in inputs]
        self.input_dtypes = {i.name: _NP.get(i.type, np.float32) for i in inputs}
        self.input_shape = [d if isinstance(d, int) else None for d in inputs[0].shape]
        outputs = self.session.get_outputs()
        self.output_names = [o.name for o in outputs]
        self.output_meta = [([d if isinstance(d, int) else None for d in o.shape], o.type) for o in outputs]

    @property
    def input_name(self) -> str:
        return self.input_names[0]

    @property
    def input_dtype(self):
        return self.input_dtypes[self.input_names[0]]

    def infer(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        feed = {k: np.ascontiguousarray(v, dtype=self.input_dtypes.get(k, np.float32)) for k, v in feeds.items()}
        outs = self.session.run(None, feed)
        return [o.astype(np.float32) if o.dtype == np.float16 else o for o in outs]

    def time(self, feeds: Mapping[str, np.ndarray], *, warmup: "str | int | Warmup" = 10, iterations: int = 50) -> Measurement:
        """Session creation is `load_ms`; the feed is converted once, outside the timer."""
        feed = {k: np.ascontiguousarray(v, dtype=self.input_dtypes.get(k, np.float32)) for k, v in feeds.items()}
        last: dict[str, list] = {}

        def once():
            last["outputs"] = self.session.run(None, feed)

        m = measure(once, warmup=warmup, iterations=iterations)
        m.load_ms = self.load_ms
        m.extra.update(self.describe())
        m.extra["outputs"] = last.get("outputs")
        return m

    def describe(self) -> dict[str, Any]:
        return {"runtime": "onnxruntime", "runtime_version": self.version, "threads": self.threads or "ort-default",
                "providers": self.session.get_providers(), "graph_optimization": self.optimization}


def open_onnx(path: str | Path, **options) -> OnnxRuntimeRunner:
    return OnnxRuntimeRunner(path, **options)
