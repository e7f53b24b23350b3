"""Device profiles: validated data files that say how a target runs models.

Built-in profiles live in `device_profiles/` (installed as `edgeseg.device_profiles`); users
add one by dropping a YAML file into the user profile directory (`edgeseg devices` prints
it) or a directory named by $EDGESEG_PROFILES. A user file overrides a built-in of the
same name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgeseg.errors import EdgesegError

Precision = Literal["fp32", "fp16", "int8"]
Runtime = Literal["onnxruntime", "tensorrt", "coreml", "pytorch"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExportConstraints(_Strict):
    opset_max: Optional[int] = Field(None, description="Highest ONNX opset the target's parser accepts.")
    opset_default: Optional[int] = None
    avoid_ops: list[str] = Field(default_factory=list, description="ONNX op types the target cannot run (e.g. LayerNormalization).")
    static_shapes: bool = False
    input_size: Optional[tuple[int, int]] = None
    size_divisor: Optional[int] = None
    coreml_min_target: Optional[str] = Field(None, description="coremltools minimum_deployment_target name, e.g. iOS16.")


class Software(_Strict):
    os: Optional[str] = None
    runtime_version: Optional[str] = None
    jetpack: Optional[str] = None
    tensorrt: Optional[str] = None
    cuda: Optional[str] = None
    cudnn: Optional[str] = None
    python: Optional[str] = None
    trtexec: Optional[str] = None


class Ceiling(_Strict):
    """Throughput ceilings for the roofline latency model (measured where possible)."""

    gflops: float = Field(gt=0, description="Sustained compute, GFLOP/s (2 FLOPs per MAC).")
    gbps: float = Field(gt=0, description="Sustained memory bandwidth, GB/s.")
    layer_overhead_us: float = Field(0.0, ge=0, description="Fixed cost per layer (launch/dispatch), microseconds.")


class Access(_Strict):
    kind: Literal["local", "ssh", "macos-host"] = "local"
    python: str = "python3"
    workdir: str = "/tmp"


class DeviceProfile(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    description: str
    runtime: Runtime
    precisions: list[Precision] = Field(min_length=1)
    default_precision: Precision
    threads: Optional[int] = Field(None, ge=1)
    export: ExportConstraints = Field(default_factory=ExportConstraints)
    software: Software = Field(default_factory=Software)
    ceilings: dict[Precision, Ceiling] = Field(default_factory=dict)
    access: Access = Field(default_factory=Access)
    source: Optional[str] = Field(None, description="Where the facts come from.")

    @field_validator("default_precision")
    @classmethod
    def _default_supported(cls, v, info):
        if "precisions" in info.data and v not in info.data["precisions"]:
            raise ValueError(f"default_precision {v} is not in precisions")
        return v


def builtin_dir() -> Path:
    import edgeseg.device_profiles as pkg

    return Path(pkg.__file__).parent


def user_dir() -> Path:
    from platformdirs import user_config_dir

    return Path(user_config_dir("edgeseg")) / "device_profiles"


def _search_dirs() -> list[Path]:
    dirs = [builtin_dir(), user_dir()]
    extra = os.environ.get("EDGESEG_PROFILES")
    if extra:
        dirs.extend(Path(p) for p in extra.split(os.pathsep) if p)
    return dirs


def load_profile_file(path: Path) -> DeviceProfile:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise EdgesegError(f"device profile {path} is not valid YAML ({exc.__class__.__name__})", "fix the file's syntax") from exc
    if not isinstance(data, dict):
        raise EdgesegError(f"device profile {path} must be a mapping of fields", "see device_profiles/*.yaml for examples")
    try:
        return DeviceProfile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(root)"
        raise EdgesegError(f"device profile {path}: field '{field}': {err['msg']}", "fix that field (see `edgeseg devices show jetson-nano`)") from exc


def load_profiles() -> dict[str, DeviceProfile]:
    profiles: dict[str, DeviceProfile] = {}
    for d in _search_dirs():
        if d.is_dir():
            for f in sorted(d.glob("*.yaml")) + sorted(d.glob("*.yml")):
                p = load_profile_file(f)
                profiles[p.name] = p
    return profiles


def get_profile(name: str) -> DeviceProfile:
    profiles = load_profiles()
    if name in profiles:
        return profiles[name]
    import difflib

    close = difflib.get_close_matches(name, list(profiles), n=3)
    hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(sorted(profiles))}"
    raise EdgesegError(f"unknown device profile {name!r}", hint)
