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
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgeseg' has no attribute {name!r}")
