"""The backend protocol and registry for parity runs."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from edgeseg.errors import EdgesegError

# suffix -> module that registers the backend
_MODULES = {
    ".onnx": "edgeseg.exporters.onnx.runner",
    ".mlpackage": "edgeseg.exporters.coreml.runner",
    ".mlmodel": "edgeseg.exporters.coreml.runner",
    ".engine": "edgeseg.parity.tensorrt_backend",
    ".plan": "edgeseg.parity.tensorrt_backend",
    ".safetensors": "edgeseg.exporters.pytorch",
}
_BACKENDS: dict[str, Callable[..., "Backend"]] = {}


class BackendUnavailable(EdgesegError):
    """The runtime for this artifact is not installed here (e.g. Core ML off macOS):
    parity reports 'skipped' with this reason, never a pass."""


class Backend(Protocol):
    name: str  # "onnxruntime", "coreml", "tensorrt"
    precision: str

    def run(self, inputs: np.ndarray) -> list[np.ndarray]:
        """NCHW float32 batch in (preprocessed), the artifact's outputs out, in order."""
        ...


def register_backend(suffix: str) -> Callable:
    def deco(factory):
        _BACKENDS[suffix] = factory
        return factory

    return deco


def get_backend(path: str | Path, **options) -> Backend:
    """Open `path` with the backend its suffix names; raises BackendUnavailable if absent."""
    suffix = Path(path).suffix
    if suffix not in _BACKENDS and suffix in _MODULES:
        importlib.import_module(_MODULES[suffix])
    if suffix not in _BACKENDS:
        raise EdgesegError(f"no parity backend for {suffix or 'files without a suffix'} ({path})", f"artifacts: {', '.join(_MODULES)}")
    return _BACKENDS[suffix](path, **options)
