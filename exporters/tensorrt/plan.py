"""The TensorRT build plan: everything a build decides, as plain data, before any TensorRT
call. The builder (`build`) and the trtexec path (`remote_build`) only execute
a plan, so the decisions (flags, workspace, optimization profile, fp32 layers, timing cache,
calibration) are unit-tested without TensorRT.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeseg.errors import EdgesegError

DEFAULT_WORKSPACE_MIB = 1024
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class ShapeRange:
    """One input of the optimization profile: TensorRT tunes for `opt` and accepts min..max."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    @property
    def static(self) -> bool:
        return self.min == self.opt == self.max

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


@dataclass
class CalibrationPlan:
    images: list[str]
    batch: int
    cache: str
    preprocess: dict
    reuse_only: bool = False  # a given cache file, no images: TensorRT must find everything in it

    def as_dict(self) -> dict[str, Any]:
        return {"images": len(self.images), "batch": self.batch, "cache": self.cache, "preprocess": self.preprocess,
                "reuse_only": self.reuse_only}


@dataclass
class BuildPlan:
    precision: str
    flags: list[str]  # BuilderFlag names to set
    clear_flags: list[str]  # BuilderFlag names to clear
    workspace_bytes: int
    shapes: list[ShapeRange]
    onnx_sha256: str
    fp32_nodes: list[str] = field(default_factory=list)
    fp32_tensors: list[str] = field(default_factory=list)
    fp32_reasons: list[str] = field(default_factory=list)
    timing_cache: str | None = None
    calibration: CalibrationPlan | None = None
    target: str = "local"  # local | ssh host
    notes: list[str] = field(default_factory=list)

    @property
    def dynamic(self) -> bool:
        return any(not s.static for s in self.shapes)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shapes"] = [s.as_dict() for s in self.shapes]
        d["calibration"] = self.calibration.as_dict() if self.calibration else None
        d["workspace_mib"] = self.workspace_bytes // (1 << 20)
        return d


def builder_flags(precision: str, has_fp32_layers: bool) -> tuple[list[str], list[str]]:
    """(flags to set, flags to clear) for a precision.

    fp32 clears TF32: TensorRT enables it by default on Ampere and later, where it rounds
    matmul/conv inputs to 10 mantissa bits -- not fp32 any more, and outside fp32 parity.
    int8 also enables fp16 so that layers without an int8 kernel fall back to fp16, not fp32.
    Per-layer fp32 constraints need OBEY_PRECISION_CONSTRAINTS or TensorRT may ignore them.
    """
    if precision not in PRECISIONS:
        raise EdgesegError(f"TensorRT export does not support precision {precision}", f"use one of: {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return [], ["TF32"]
    flags = ["FP16"] if precision == "fp16" else ["INT8", "FP16"]
    if has_fp32_layers:
        flags.append("OBEY_PRECISION_CONSTRAINTS")
    return flags, []


def parse_shape(text: str | tuple | list) -> tuple[int, ...]:
    if isinstance(text, (tuple, list)):
        return tuple(int(v) for v in text)
    parts = [p for p in re.split(r"[x,]", str(text).lower()) if p.strip()]
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise EdgesegError(f"invalid shape {text!r}", "write it as NxCxHxW, e.g. 1x3x224x224") from None


def _round_to(v: int, d: int, up: bool) -> int:
    return max(d, ((v + d - 1) // d if up else v // d) * d)


def shape_ranges(inputs, *, batch: int, input_size: tuple[int, int], size_divisor: int = 32,
                 options: dict | None = None) -> list[ShapeRange]:
    """Optimization-profile ranges for the ONNX inputs. Static inputs get min = opt = max;
    dynamic dimensions default to batch 1..max(batch, 4) and half to twice the input size
    (rounded to the model's size divisor); `shape_min`/`shape_max` options override."""
    options = options or {}
    ranges = []
    for inp in inputs:
        if not inp.dynamic:
            fixed = tuple(int(d) for d in inp.shape)
            ranges.append(ShapeRange(inp.name, fixed, fixed, fixed))
            continue
        if len(inp.shape) != 4:
            raise EdgesegError(f"input {inp.name} has a dynamic rank-{len(inp.shape)} shape", "export with static shapes")
        h, w = input_size
        opt = (batch, int(inp.shape[1]) if isinstance(inp.shape[1], int) else 3, h, w)
        dyn = [not isinstance(d, int) for d in inp.shape]
        lo = list(opt)
        hi = list(opt)
        if dyn[0]:
            lo[0], hi[0] = 1, max(batch, int(options.get("max_batch", 4)))
        for axis, size in ((2, h), (3, w)):
            if dyn[axis]:
                lo[axis] = _round_to(size // 2, size_divisor, up=True)
                hi[axis] = _round_to(size * 2, size_divisor, up=False)
        if options.get("shape_min"):
            lo = list(parse_shape(options["shape_min"]))
        if options.get("shape_max"):
            hi = list(parse_shape(options["shape_max"]))
        r = ShapeRange(inp.name, tuple(lo), opt, tuple(hi))
        for a, (mn, op, mx) in enumerate(zip(r.min, r.opt, r.max)):
            if not (mn <= op <= mx):
                raise EdgesegError(f"shape range for {inp.name} is not min <= opt <= max on axis {a}: {mn}, {op}, {mx}",
                                   "fix shape_min / shape_max")
            if not dyn[a] and not (mn == op == mx):
                raise EdgesegError(f"axis {a} of {inp.name} is static ({op}); its range cannot change", "match the exported shape")
        ranges.append(r)
    return ranges


def workspace_bytes(options: dict) -> int:
    """Builder workspace from `workspace` or `workspace_mib` (MiB; the CLI's --workspace)."""
    mib = options.get("workspace", options.get("workspace_mib"))
    mib = DEFAULT_WORKSPACE_MIB if mib in (None, "") else int(mib)
    if mib < 16:
        raise EdgesegError(f"--workspace {mib} MiB is too small for any real build", "use 256 or more (MiB)")
    return mib << 20


def make_plan(*, precision: str, onnx, info, batch: int, input_size: tuple[int, int], options: dict, fp32=None,
              timing_cache: str | None = None, calibration: CalibrationPlan | None = None, target: str = "local") -> BuildPlan:
    """Assemble a plan from the prepared ONNX (`prepare.PreparedOnnx`) and the fp32
    region decision (`precision.PrecisionPlan`, fp16/int8 only)."""
    fp32_nodes = fp32.fp32_nodes if (fp32 is not None and precision != "fp32") else []
    flags, clear = builder_flags(precision, bool(fp32_nodes))
    if precision == "int8" and calibration is None:
        raise EdgesegError("int8 needs calibration data", "pass --calib-images DIR (or an existing calibration cache)")
    plan = BuildPlan(
        precision=precision, flags=flags, clear_flags=clear, workspace_bytes=workspace_bytes(options),
        shapes=shape_ranges(onnx.inputs, batch=batch, input_size=input_size, size_divisor=info.size_divisor or 32, options=options),
        onnx_sha256=onnx.sha256, fp32_nodes=fp32_nodes,
        fp32_tensors=fp32.fp32_tensors if fp32_nodes else [],
        fp32_reasons=[f"{r.kind} {r.nodes[0]}: {r.reason}" for r in fp32.fp32_regions] if fp32_nodes else [],
        timing_cache=timing_cache, calibration=calibration, target=target,
    )
    if precision != "fp32" and fp32 is not None and fp32.regions and not fp32_nodes:
        plan.notes.append(f"{len(fp32.regions)} LayerNorm/Softmax regions measured within fp16 range: none kept in fp32")
    return plan


# ------------------------------------------------------------------ trtexec (remote builds)

def _check_layer_name(name: str) -> str:
    if any(c in name for c in ",:\n"):
        raise EdgesegError(f"layer name {name!r} cannot be passed to trtexec (contains ',' or ':')",
                           "rename the ONNX node, or build locally with the Python API")
    return name


def trtexec_flags(plan: BuildPlan, tensorrt_version: tuple[int, ...], *, calib_path: str | None = None) -> list[str]:
    """trtexec arguments for what `edgeseg.exporters.tensorrt.trtexec.build_command` does not spell:
    shape ranges, per-layer fp32, TF32 off, the calibration cache. Refuses what the device's
    trtexec cannot express (per-layer precision needs TensorRT >= 8.4)."""
    args: list[str] = []
    if plan.dynamic:
        for flag, attr in (("--minShapes", "min"), ("--optShapes", "opt"), ("--maxShapes", "max")):
            args.append(f"{flag}=" + ",".join(f"{s.name}:{'x'.join(str(d) for d in getattr(s, attr))}" for s in plan.shapes))
    if "TF32" in plan.clear_flags:
        args.append("--noTF32")
    if plan.fp32_nodes:
        if tuple(tensorrt_version) < (8, 4):
            raise EdgesegError(
                f"{len(plan.fp32_nodes)} LayerNorm/Softmax layers overflow fp16 ({plan.fp32_reasons[0]}), and trtexec of "
                f"TensorRT {'.'.join(map(str, tensorrt_version))} cannot keep single layers in fp32 (needs 8.4+)",
                "export with --precision fp32 for this device")
        names = [_check_layer_name(n) for n in plan.fp32_nodes]
        args.append("--precisionConstraints=obey")
        args.append("--layerPrecisions=" + ",".join(f"{n}:fp32" for n in names))
        args.append("--layerOutputTypes=" + ",".join(f"{n}:fp32" for n in names))
    if plan.precision == "int8":
        if not calib_path:
            raise EdgesegError("an int8 build with trtexec needs a calibration cache", "calibrate locally first (--calib-cache FILE)")
        args.append(f"--calib={calib_path}")
    return args


def default_cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("edgeseg")) / "tensorrt"


def default_timing_cache(platform) -> Path:
    """One persistent timing cache per TensorRT version and GPU (caches do not transfer)."""
    gpu = re.sub(r"[^a-z0-9]+", "-", platform.gpu.lower()).strip("-") or "gpu"
    return default_cache_dir() / f"timing-trt{platform.tensorrt}-sm{platform.compute_capability.replace('.', '')}-{gpu}.cache"
