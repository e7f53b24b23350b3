"""Device profiles: validated data files that say how a target runs models.

Built-in profiles live in `device_profiles/` (installed as `edgeseg.device_profiles`); users
add one by dropping a YAML file into the user profile directory (`edgeseg devices` prints
it) or a directory named by $EDGESEG_PROFILES. A user file overrides a built-in of the
same name.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgeseg.atomic import atomic_output
import edgeseg.device_profiles as pkg
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
    # Dispatch cost differs between runtimes on one device (eager PyTorch vs ONNX Runtime).
    runtime_overhead_us: dict[str, float] = Field(default_factory=dict, description="Per-runtime override of layer_overhead_us.")

    def overhead_us(self, runtime: Optional[str] = None) -> float:
        return self.runtime_overhead_us.get(runtime or "", self.layer_overhead_us)


class LatencyModel(_Strict):
    """How the roofline predictor treats this target's runtime."""

    fuse_pointwise: bool = Field(True, description="The runtime fuses activations/adds into the producing layer (TensorRT, Core ML, ORT).")
    calibration: Optional[str] = Field(None, description="Where the ceilings come from (spec sheet, measured, fitted).")
    error_pct: Optional[float] = Field(None, ge=0, description="Measured mean |relative error| of predictions for this device (%).")
    error_source: Optional[str] = Field(None, description="What error_pct was measured against (models, published numbers, benchmark).")


class Access(_Strict):
    kind: Literal["local", "ssh", "macos-host"] = "local"
    python: str = "python3"
    workdir: str = "/tmp"
    connect_timeout_s: float = Field(15.0, gt=0)
    transfer_timeout_s: float = Field(300.0, gt=0)
    run_timeout_s: float = Field(900.0, gt=0, description="Longest a remote build or benchmark step may run.")


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
    latency_model: LatencyModel = Field(default_factory=LatencyModel)
    compute_units: Optional[Literal["ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE"]] = Field(None, description="Core ML compute units.")
    detect: bool = Field(False, description="Facts filled in at run time from the machine running edgeseg (host-cpu).")
    notes: list[str] = Field(default_factory=list, description="Set-up advice shown by `edgeseg devices show`.")
    source: Optional[str] = Field(None, description="Where the facts come from.")

    @field_validator("default_precision")
    @classmethod
    def _default_supported(cls, v, info):
        if "precisions" in info.data and v not in info.data["precisions"]:
            raise ValueError(f"default_precision {v} is not in precisions")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        unknown = [p for p in self.ceilings if p not in self.precisions]
        if unknown:
            raise ValueError(f"ceilings given for {', '.join(unknown)}, which is not in precisions")
        if not self.ceilings and not self.detect:
            raise ValueError("ceilings are required (at least for the default precision) unless detect is true")
        if self.runtime == "tensorrt" and not self.software.tensorrt:
            raise ValueError("a tensorrt profile must state software.tensorrt (engines are tied to the version)")
        if self.runtime == "coreml" and not self.export.coreml_min_target:
            raise ValueError("a coreml profile must state export.coreml_min_target")
        return self

    @property
    def is_remote(self) -> bool:
        return self.access.kind != "local"

    def ceiling(self, precision: Optional[str] = None) -> Ceiling:
        p = precision or self.default_precision
        if p not in self.precisions:
            raise EdgesegError(f"{self.name} does not run {p}", f"choose one of: {', '.join(self.precisions)}")
        if p in self.ceilings:
            return self.ceilings[p]
        raise EdgesegError(f"device profile {self.name} has no compute/memory ceilings for {p}",
                           "add ceilings." + p + " to the profile (or calibrate: `edgeseg devices calibrate`)")


def builtin_dir() -> Path:
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


def get_profile(name: str, *, threads: Optional[int] = None) -> DeviceProfile:
    """The named profile; `detect: true` profiles (host-cpu) are filled in for this machine
    (with `threads`, for that thread count: its calibration is measured per thread count)."""
    profiles = load_profiles()
    if name in profiles:
        p = profiles[name]
        if p.detect:
            return detect_host(p.model_copy(update={"threads": threads}) if threads else p)
        return p
    import difflib

    close = difflib.get_close_matches(name, list(profiles), n=3)
    hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(sorted(profiles))}"
    raise EdgesegError(f"unknown device profile {name!r}", hint)


def profile_paths() -> dict[str, Path]:
    """Which file each profile name resolves to (later directories override earlier ones)."""
    found: dict[str, Path] = {}
    for d in _search_dirs():
        if d.is_dir():
            for f in sorted(d.glob("*.yaml")) + sorted(d.glob("*.yml")):
                found[load_profile_file(f).name] = f
    return found


def cpu_model() -> str:
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def host_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def detect_host(profile: DeviceProfile) -> DeviceProfile:
    """Fill a `detect: true` profile with this machine's facts and cached calibration.

    Cheap on purpose (export code asks for profiles too): the calibration micro-benchmarks
    run only through `edgeseg.bench.calibrate` and are cached per machine.
    """
    import platform

    threads = profile.threads or host_threads()
    update: dict = {
        "description": f"{profile.description}: {cpu_model()}, {threads} threads ({platform.machine()})",
        "threads": threads,
        "software": profile.software.model_copy(update={
            "os": profile.software.os or f"{platform.system()} {platform.release()}",
            "python": profile.software.python or platform.python_version(),
        }),
    }
    cal = cached_calibration(threads)
    if cal is not None:
        update["ceilings"] = {**profile.ceilings, **cal.ceilings()}
        update["latency_model"] = profile.latency_model.model_copy(update={"calibration": cal.describe()})
    return profile.model_copy(update=update)


# ---------------------------------------------------------------- host calibration cache
# measured by edgeseg.bench.calibrate; read here when the host-cpu profile is detected

CACHE_VERSION = 1


@dataclass
class HostCalibration:
    cpu: str
    threads: int
    gemm_gflops: float
    copy_gbps: float
    overhead_us: dict[str, float] = field(default_factory=dict)  # runtime -> fixed cost per layer
    measured_at: str = ""
    torch_version: str = ""

    def ceilings(self) -> dict:
        default = self.overhead_us.get("onnxruntime", min(self.overhead_us.values(), default=0.0))
        return {"fp32": Ceiling(gflops=self.gemm_gflops, gbps=self.copy_gbps, layer_overhead_us=default,
                                runtime_overhead_us=dict(self.overhead_us))}

    def describe(self) -> str:
        ov = ", ".join(f"{k} {v:.1f} us/layer" for k, v in sorted(self.overhead_us.items()))
        return (f"measured {self.measured_at}: GEMM {self.gemm_gflops:.1f} GFLOP/s, copy {self.copy_gbps:.1f} GB/s, {ov} "
                f"({self.threads} threads)")


def _cache_path() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("edgeseg")) / "host_calibration.json"


def _key(threads: int) -> str:
    return f"{cpu_model()}|{threads}"


def cached_calibration(threads: int) -> HostCalibration | None:
    path = _cache_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("version") != CACHE_VERSION:
        return None
    entry = data.get("entries", {}).get(_key(threads))
    if not isinstance(entry, dict):
        return None
    try:
        return HostCalibration(**entry)
    except TypeError:
        return None


def save_calibration(cal: HostCalibration) -> Path:
    path = _cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(path.read_text())
        if data.get("version") != CACHE_VERSION:
            raise ValueError
    except (OSError, ValueError):
        data = {"version": CACHE_VERSION, "entries": {}}
    data["entries"][_key(cal.threads)] = asdict(cal)
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(data, indent=2))
        json.loads(tmp.read_text())
    return path
