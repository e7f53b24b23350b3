"""edgeseg: load, reparameterize, export, check parity and benchmark efficient vision models.

Heavy libraries (torch, onnx, coremltools) load on first use, so importing edgeseg is cheap.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "load": "edgeseg.api",
    "create": "edgeseg.api",
    "reparameterize": "edgeseg.api",
    "save_deploy": "edgeseg.api",
    "ModelInfo": "edgeseg.api",
    "register_model": "edgeseg.registry",
    "list_models": "edgeseg.registry",
    "EdgesegError": "edgeseg.errors",
    "export": "edgeseg.workflows",
    "ExportSummary": "edgeseg.workflows",
    "ParitySummary": "edgeseg.workflows",
}
# packages that are also the workflow function of the same name (calling one calls the function)
_CALLABLE_PACKAGES = ("parity", "bench", "predict")

__all__ = ["__version__", *_LAZY, *_CALLABLE_PACKAGES]


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _CALLABLE_PACKAGES:
        return importlib.import_module(f"edgeseg.{name}")
    raise AttributeError(f"module 'edgeseg' has no attribute {name!r}")
