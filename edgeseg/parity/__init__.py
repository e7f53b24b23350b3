"""Parity: run the PyTorch reference and each exported artifact on the same inputs and
compare tensor-wise and task-wise. Backends (ONNX Runtime, Core ML, TensorRT) plug in through
`register_backend`; the comparison code never knows which runtime produced an output."""

from edgeseg.parity.backends import Backend, BackendUnavailable, get_backend, register_backend
from edgeseg.parity.compare import ParityReport, Tolerances, compare_outputs

__all__ = ["Backend", "BackendUnavailable", "ParityReport", "Tolerances", "compare_outputs", "get_backend", "register_backend"]

# `edgeseg.parity(...)` runs the workflow (edgeseg.workflows.parity); the package stays importable
from edgeseg.workflows import callable_module  # noqa: E402

callable_module(__name__, "parity")
