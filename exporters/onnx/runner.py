"""ONNX Runtime (CPU) as a parity backend for .onnx artifacts, fp32 or fp16."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.parity.backends import BackendUnavailable, register_backend

_NP = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def _precision_of(path: Path) -> str:
    """fp16 when weights are stored in half precision (our fp16 graphs keep fp32 inputs/outputs)."""
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(path), load_external_data=False)
    return "fp16" if any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer) else "fp32"


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, path: str | Path, *, threads: int | None = None, optimization: str = "all", fp16: str = "emulate", **_: object):
        """`fp16="emulate"` runs an fp16 graph as fp32 ops with every tensor rounded to fp16 (what
        fp16 hardware computes); "native" runs it as ONNX Runtime's CPU provider does, which
        computes ops lacking fp16 kernels in unrounded fp32 regions and so hides fp16 error."""
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable("onnxruntime is not installed", "pip install onnxruntime") from exc
        self.path = Path(path)
        if not self.path.is_file():
            raise EdgesegError(f"artifact {self.path} does not exist", "check the path")
        opts = ort.SessionOptions()
        opts.log_severity_level = 4  # load and run errors are raised with their message
        levels = {"none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                  "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
        opts.graph_optimization_level = levels[optimization]
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        try:
            self.precision = _precision_of(self.path)
        except Exception as exc:  # onnx raises protobuf decode errors for non-models
            raise EdgesegError(f"ONNX Runtime cannot load {self.path}: not an ONNX model ({type(exc).__name__})",
                               "re-export it with `edgeseg export`") from exc
        self.mode = "fp16 emulated: fp32 ops, fp16 rounding of every tensor" if self.precision == "fp16" and fp16 == "emulate" else "native"
        try:
            if self.mode == "native":
                src = str(self.path)
            else:
                import onnx

                from edgeseg.exporters.onnx.fp16 import emulate_fp16

                src = emulate_fp16(onnx.load(str(self.path))).SerializeToString()
            self.session = ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception hierarchy
            raise EdgesegError(f"ONNX Runtime cannot load {self.path}: {str(exc).strip().splitlines()[0][:300]}",
                               "re-export it with `edgeseg export`") from exc
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = _NP.get(inp.type, np.float32)
        self.input_shape = [d if isinstance(d, int) else None for d in inp.shape]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.output_meta = [([d if isinstance(d, int) else None for d in o.shape], o.type) for o in self.session.get_outputs()]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        outs = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=self.input_dtype)})
        return [o.astype(np.float32) if o.dtype == np.float16 else o for o in outs]


@register_backend(".onnx")
def open_onnx(path: str | Path, **options) -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend(path, **options)
