"""Export targets (installed as `edgeseg.exporters`): one package per runtime.

Each package (`onnx/`, `coreml/`, `tensorrt/`) owns everything about its runtime: the build
step (`export.py`), a Runner (`runner.py`: load an artifact, run it on named numpy inputs, time
it; the only place that opens the runtime), its remote driver (`remote.py`) with the script run
on the device, its manifest checks, and one registration record (`Target`, in its
`__init__.py`). The export CLI, parity and bench read the records and nothing else, so a new
target is one package plus one line in `PACKAGES`.

An exporter turns a fused model into an artifact and validates it before the artifact reaches
its final path (see `edgeseg.atomic`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from edgeseg.errors import EdgesegError

# the registration lines: each names a package whose __init__ calls register_target
PACKAGES = ("onnx", "coreml", "tensorrt")

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class CliOption:
    """One option of a target's group in `edgeseg export` (stored in ExportRequest.options)."""

    key: str  # ExportRequest.options key
    flag: str  # "--workspace"
    type: type  # bool | int | str | Path
    help: str
    default: Any = None
    min: int | None = None
    split: bool = False  # "a,b" -> ["a", "b"]


@dataclass(frozen=True)
class Target:
    """What the rest of edgeseg knows about a runtime. Code is named as "module:attribute" and
    imported on use, so listing targets (and `edgeseg --help`) loads no runtime."""

    name: str  # canonical: onnx | coreml | tensorrt
    aliases: tuple[str, ...]  # other spellings accepted by --target
    runtime: str  # the device profiles' `runtime` this target serves
    suffix: str  # artifact written by export
    kind: str  # artifact kind recorded with bench results
    default_precision: str
    precisions: tuple[str, ...]
    exporter: str  # "module:Class" with .export(ExportRequest) -> ExportResult
    runner: str  # "module:function" (path, **options) -> Runner
    remote: str | None = None  # "module:function" (session, artifact, RemoteRun) -> Measurement, on a device over SSH
    remote_takes: str | None = None  # the target whose artifact `remote` takes (default: this one's)
    opens: tuple[str, ...] = ()  # further artifact suffixes its runner opens
    options: tuple[CliOption, ...] = ()
    description: str = ""

    @property
    def suffixes(self) -> tuple[str, ...]:
        return (self.suffix, *self.opens)

    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


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


class UnknownArtifact(EdgesegError):
    """No target's runner opens files with this suffix."""


_TARGETS: dict[str, Target] = {}
_EXPORTERS: dict[str, Exporter] = {}
_EXTRA_RUNNERS: dict[str, Callable[..., Any]] = {}


def register_target(target: Target) -> Target:
    _TARGETS[target.name] = target
    return target


def targets() -> list[Target]:
    """Every registered target, in PACKAGES order."""
    for pkg in PACKAGES:
        importlib.import_module(f"{__name__}.{pkg}")
    return list(_TARGETS.values())


def target_names() -> list[str]:
    return [t.name for t in targets()]


def get_target(name: str) -> Target:
    """The target called `name` or one of its aliases (`trt`, `engine` -> tensorrt)."""
    for t in targets():
        if name in t.names():
            return t
    raise EdgesegError(f"unknown export target {name!r}", f"choose one of: {', '.join(n for t in targets() for n in t.names())}")


def target_for_suffix(suffix: str) -> Target | None:
    return next((t for t in targets() if suffix.lower() in t.suffixes), None)


def target_for_runtime(runtime: str) -> Target | None:
    return next((t for t in targets() if t.runtime == runtime), None)


def load_attr(spec: str) -> Any:
    """"module:attribute" from a record (records are code, never read from files)."""
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def get_exporter(name: str) -> Exporter:
    target = get_target(name)
    if target.name not in _EXPORTERS:
        _EXPORTERS[target.name] = load_attr(target.exporter)()
    return _EXPORTERS[target.name]


def register_runner(suffix: str) -> Callable:
    """Open artifacts with `suffix` through the decorated (path, **options) -> Runner function:
    for runtimes that are not export targets (plug-ins, tests)."""

    def deco(factory):
        _EXTRA_RUNNERS[suffix] = factory
        return factory

    return deco


def open_runner(path: str | Path, **options: Any):
    """A Runner for the artifact at `path`, chosen by its suffix; raises BackendUnavailable
    when the runtime is missing here (parity reports it as skipped)."""
    suffix = Path(path).suffix
    if suffix in _EXTRA_RUNNERS:
        return _EXTRA_RUNNERS[suffix](path, **options)
    if suffix == ".safetensors":  # an edgeseg deploy checkpoint runs in PyTorch
        from edgeseg.exporters.pytorch import open_deploy_checkpoint  # lazy: `edgeseg --help` reads this package

        return open_deploy_checkpoint(path, **options)
    target = target_for_suffix(suffix)
    if target is None:
        known = [s for t in targets() for s in t.suffixes] + [".safetensors"]
        raise UnknownArtifact(f"no parity backend for {suffix or 'files without a suffix'} ({path})", f"artifacts: {', '.join(known)}")
    return load_attr(target.runner)(path, **options)
