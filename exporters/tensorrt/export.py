"""TensorRT exporter: fused model -> ONNX (the profile's opset/op constraints) -> engine.

Locally through the TensorRT Python API (`build`), or on a remote Jetson with its
trtexec (`remote_build`, `options['host']`): engines only run on the TensorRT version and
GPU that built them, so a device profile with SSH access is always built on the device. Every
decision is made first, as data (`plan.BuildPlan`): precision flags, workspace,
optimization profile, LayerNorm/Softmax layers kept fp32 where fp16 would overflow
(`precision`), the persistent timing cache, int8 entropy calibration over images with
its cache (`calibration`). The engine gets a manifest beside it (`manifest`) that loading
checks, so an engine is never run on a TensorRT or GPU it was not built for.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.atomic import atomic_output
from edgeseg.errors import EdgesegError
from edgeseg.exporters import ExportRequest, ExportResult
from edgeseg.exporters.calibration import CacheKey, CalibrationCache, CalibrationData, list_images
from edgeseg.exporters.tensorrt.build import build_engine, local_platform
from edgeseg.exporters.tensorrt.manifest import Platform, engine_section, write_manifest
from edgeseg.exporters.tensorrt.plan import CalibrationPlan, default_cache_dir, default_timing_cache, make_plan, shape_ranges
from edgeseg.exporters.tensorrt.precision import plan_precision
from edgeseg.exporters.tensorrt.prepare import prepare_onnx
from edgeseg.exporters.tensorrt.remote_build import build_remote
from edgeseg.hashing import file_sha256
from edgeseg.images import Preprocess, bundled_images

ANALYSIS_IMAGES = 4
DEFAULT_CALIB_MAX = 512


def resolve_precision(request: ExportRequest) -> str:
    profile = request.profile
    precision = request.precision or "auto"
    if precision == "auto":
        precision = profile.default_precision if profile is not None else "fp16"
    if precision not in ("fp32", "fp16", "int8"):
        raise EdgesegError(f"TensorRT export does not produce {precision} engines", "use --precision fp32, fp16 or int8")
    if profile is not None and precision not in profile.precisions:
        raise EdgesegError(f"device profile {profile.name} does not run {precision}", f"use one of: {', '.join(profile.precisions)}")
    return precision


def resolve_host(request: ExportRequest) -> str | None:
    profile, host = request.profile, request.options.get("host")
    if profile is not None and profile.runtime != "tensorrt":
        raise EdgesegError(f"device profile {profile.name} runs {profile.runtime}, not TensorRT",
                           "pick a TensorRT profile (jetson-nano, jetson-orin-nano) or another --target")
    if host and profile is None:
        raise EdgesegError("--host needs --device PROFILE (the device's TensorRT version and trtexec path)",
                           "add --device jetson-nano or jetson-orin-nano")
    if profile is not None and profile.access.kind == "ssh" and not host:
        raise EdgesegError(f"engines for {profile.name} must be built on the device (TensorRT {profile.software.tensorrt}); "
                           "an engine built here would not load there", "pass --host user@device")
    return host


def analysis_inputs(shapes, info, size, calib_images: list[Path] | None) -> list[dict[str, np.ndarray]]:
    """Feeds for the fp16-overflow measurement: natural images at the optimization profile's
    `opt` shape (the user's calibration images when given, else the bundled ones)."""
    pre = Preprocess.for_model(info, size)
    files = (calib_images or bundled_images())[:ANALYSIS_IMAGES] or bundled_images()
    arrays = [pre.load(p) for p in files]
    opt = shapes[0].opt
    batch = opt[0]
    feeds = []
    for i in range(0, len(arrays), batch):
        group = arrays[i:i + batch]
        group += [group[-1]] * (batch - len(group))
        feeds.append({shapes[0].name: np.stack(group).astype(np.float32)})
    return feeds


def plan_fp32_layers(onnx_path: Path, feeds: list[dict], policy: str):
    import onnx

    return plan_precision(onnx.load(str(onnx_path)), feeds, policy=policy)


def calibration_setup(request: ExportRequest, onnx, shapes, size, remote: bool):
    """(CalibrationPlan, CalibrationData | None, CalibrationCache) for int8."""
    info, opts = request.model.edgeseg, request.options
    opt_shape = shapes[0].opt
    given_cache = opts.get("calib_cache")
    if remote:
        if not given_cache or not Path(given_cache).is_file():
            raise EdgesegError("an int8 engine built on the device needs a calibration cache made here",
                               "run an int8 export locally with --calib-images DIR first, then pass its cache with --calib-cache FILE")
        import json

        key_file = Path(str(given_cache) + ".json")
        stored = json.loads(key_file.read_text()) if key_file.is_file() else {}
        if stored.get("onnx_sha256") != onnx.sha256:
            raise EdgesegError(f"calibration cache {given_cache} was not made for this ONNX graph",
                               "recalibrate locally with the same model, size and --device")
        plan = CalibrationPlan(images=[], batch=opt_shape[0], cache=str(given_cache), preprocess={}, reuse_only=True)
        return plan, None, None
    if not opts.get("calib_images"):
        raise EdgesegError("int8 needs calibration images", "pass --calib-images DIR (a few hundred representative images)")
    images = list_images(opts["calib_images"], limit=int(opts.get("calib_max", DEFAULT_CALIB_MAX)))
    pre = Preprocess.for_model(info, size, resize=opts.get("calib_resize", "crop"))
    data = CalibrationData(images, pre, batch=opt_shape[0])
    key = CacheKey(onnx_sha256=onnx.sha256, input_shape=tuple(opt_shape), data=data.fingerprint())
    path = Path(given_cache) if given_cache else default_cache_dir() / "calibration" / f"{onnx.sha256[:16]}-{key.data[:16]}.cache"
    path.parent.mkdir(parents=True, exist_ok=True)
    cache = CalibrationCache(path, key)
    plan = CalibrationPlan(images=[str(p) for p in data.used], batch=data.batch, cache=str(path), preprocess=pre.key())
    return plan, data, cache


def timing_cache_path(request: ExportRequest, remote: bool, platform=None) -> str | None:
    value = request.options.get("timing_cache")
    if value in (False, "none", "off"):
        return None
    if value:
        return str(value)
    if remote:
        p = request.profile
        return str(default_cache_dir() / f"timing-{p.name}-trt{p.software.tensorrt}.cache")
    return str(default_timing_cache(platform))


class TensorRTExporter:
    name = "tensorrt"
    suffix = ".engine"

    def export(self, request: ExportRequest) -> ExportResult:
        t0 = time.perf_counter()
        info = getattr(request.model, "edgeseg", None)
        if info is None:
            raise EdgesegError("the model carries no edgeseg info", "load or create it with edgeseg.load / edgeseg.create")
        precision = resolve_precision(request)
        host = resolve_host(request)
        here = None
        if not host:
            here = local_platform()  # fails early, before the ONNX export, if TensorRT/CUDA is missing
        opts = request.options
        size = tuple(int(s) for s in request.input_size)
        with tempfile.TemporaryDirectory(prefix="edgeseg-trt-") as work:
            onnx = prepare_onnx(request, Path(work))
            shapes = shape_ranges(onnx.inputs, batch=request.batch, input_size=size, size_divisor=info.size_divisor or 32, options=opts)
            calib_plan = calib_data = calib_cache = None
            if precision == "int8":
                calib_plan, calib_data, calib_cache = calibration_setup(request, onnx, shapes, size, bool(host))
            fp32 = None
            if precision != "fp32":
                images = [Path(p) for p in calib_plan.images] if calib_plan and calib_plan.images else None
                fp32 = plan_fp32_layers(onnx.path, analysis_inputs(shapes, info, size, images), opts.get("fp32_layers", "auto"))
            plan = make_plan(precision=precision, onnx=onnx, info=info, batch=request.batch, input_size=size, options=opts, fp32=fp32,
                             timing_cache=timing_cache_path(request, bool(host), here), calibration=calib_plan,
                             target=f"ssh:{host}" if host else "local")
            record: dict[str, Any] = {}
            with atomic_output(request.output, overwrite=request.overwrite) as tmp:
                if host:
                    rec = build_remote(plan, onnx.path, request.profile, tmp, host, opts)
                    if not rec.get("gpu") or not rec.get("compute_capability"):
                        raise EdgesegError("trtexec's log did not name the GPU and compute capability; the engine could not be "
                                           "recorded for the load-time check", "rerun; check the device's trtexec")
                    platform = Platform(str(rec["tensorrt"]), str(rec["gpu"]), str(rec["compute_capability"]))
                    builder = f"trtexec on {host}"
                    record = {"command": rec.get("command"), "build_s": rec.get("build_s"), "environment": rec.get("environment")}
                else:
                    out = build_engine(plan, onnx.path.read_bytes(), calib_data=calib_data, calib_cache=calib_cache)
                    tmp.write_bytes(out.engine)
                    platform, builder = out.platform, "tensorrt python api"
                    record = {"build_s": round(out.seconds, 3), "fp32_layers_pinned": out.fp32_layers,
                              "fp32_nodes_unmatched": out.fp32_missing, "timing_cache": out.timing_cache,
                              "calibration": out.calibration, "engine_io": out.io, "warnings": out.warnings}
                if tmp.stat().st_size == 0:
                    raise EdgesegError("the engine is empty", "rerun the build")
                engine_sha = file_sha256(tmp)
        section = engine_section(
            platform=platform, precision=precision, flags=plan.flags + [f"-{f}" for f in plan.clear_flags],
            inputs=[s.as_dict() for s in plan.shapes], outputs=onnx.outputs, onnx_sha256=onnx.sha256, engine_sha256=engine_sha,
            builder=builder, workspace_mib=plan.workspace_bytes >> 20, fp32_regions=plan.fp32_reasons, **record,
        )
        manifest: dict[str, Any] = {
            "format": "tensorrt-engine", "precision": precision, "input_size": list(size), "batch": request.batch,
            "postprocess": request.postprocess, "opset": onnx.opset, "onnx": onnx.manifest, "outputs": onnx.outputs,
            "inputs": [{"name": i.name, "shape": list(i.shape)} for i in onnx.inputs], "tensorrt": section, "plan": plan.as_dict(),
            "fp32_analysis": fp32.as_dict() if fp32 is not None else None,
        }
        manifest["export_timings"] = {"total_s": round(time.perf_counter() - t0, 3)}
        manifest_path = write_manifest(request.output, manifest)
        return ExportResult(path=Path(request.output), manifest=manifest, manifest_path=manifest_path)
