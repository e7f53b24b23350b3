"""Exporters (installed as `edgeseg.exporters`): one registry, one module per target.

An exporter turns a fused model into an artifact and validates it before the artifact
reaches its final path (see `edgeseg.atomic`). Adding a target = one module that calls
`@register_exporter` plus its tests, and one entry in `_MODULES`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from edgeseg.errors import EdgesegError

_MODULES = {"onnx": "edgeseg.exporters.onnx", "coreml": "edgeseg.exporters.coreml", "trt": "edgeseg.exporters.tensorrt"}
_EXPORTERS: dict[str, "Exporter"] = {}


@dataclass
class ExportRequest:
    model: Any  # fused torch model carrying `.edgeseg` (ModelInfo)
    output: Path
    input_size: tuple[int, int]
    batch: int = 1
    precision: str = "fp32"
    opset: int | None = None
    dynamic: bool = False
    postprocess: str = "none"  # segmentation: none | upsample | argmax
    profile: Any = None  # edgeseg.devices.DeviceProfile
    overwrite: bool = False
    options: dict[str, Any] = field(default_factory=dict)  # target-specific (image_input, workspace, ...)


@dataclass
class ExportResult:
    path: Path
    manifest: dict[str, Any]
    manifest_path: Path | None = None


class Exporter(Protocol):
    name: str
    suffix: str  # ".onnx", ".mlpackage", ".engine"

    def export(self, request: ExportRequest) -> ExportResult: ...


def register_exporter(name: str) -> Callable:
    def deco(cls):
        _EXPORTERS[name] = cls()
        return cls

    return deco


# other names users give a target (the engine suffix, the runtime's full name)
TARGET_ALIASES = {"tensorrt": "trt", "engine": "trt", "mlpackage": "coreml", "mlprogram": "coreml"}


def canonical_target(name: str) -> str:
    key = name.strip().lower()
    key = TARGET_ALIASES.get(key, key)
    if key not in _MODULES:
        raise EdgesegError(f"unknown export target {name!r}", f"choose one of: {', '.join(_MODULES)} (or tensorrt, engine)")
    return key


def get_exporter(name: str) -> Exporter:
    name = TARGET_ALIASES.get(name, name)
    if name not in _EXPORTERS and name in _MODULES:
        importlib.import_module(_MODULES[name])
    if name not in _EXPORTERS:
        raise EdgesegError(f"unknown export target {name!r}", f"choose one of: {', '.join(_MODULES)}")
    return _EXPORTERS[name]


def targets() -> list[str]:
    return list(_MODULES)
