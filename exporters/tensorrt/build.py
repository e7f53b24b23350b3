"""Execute a BuildPlan with the TensorRT Python API (8.5 - 10.x): parse the ONNX into an
explicit-batch network, configure the builder (workspace pool, precision flags, per-layer
fp32, optimization profile, persistent timing cache, int8 entropy calibration with a cache),
build, deserialize the result once to check it, and save the updated timing cache.

Everything here needs `tensorrt` and a CUDA GPU; the decisions it executes live in
`plan` and are tested without them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeseg.atomic import atomic_output
from edgeseg.errors import BackendUnavailable, EdgesegError
from edgeseg.exporters.tensorrt.cuda import cuda_api
from edgeseg.exporters.tensorrt.manifest import Platform, check_platform_supported

INSTALL_HINT = ("on a machine with an NVIDIA GPU: pip install -c constraints.txt -e \".[trt]\" (TensorRT + pycuda, as the README says), "
                "or build on the device: --device PROFILE --host user@device")


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable("TensorRT is not installed", INSTALL_HINT) from exc
    check_platform_supported(trt.__version__)
    return trt


def local_platform(trt=None, cuda=None) -> Platform:
    trt = trt or import_tensorrt()
    cuda = cuda or cuda_api()
    gpu, cc = cuda.device()
    return Platform(tensorrt=trt.__version__, gpu=gpu, compute_capability=cc)


def make_logger(trt):
    """A TensorRT logger that keeps errors and warnings for our messages."""

    class Collecting(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.warnings: list[str] = []

        def log(self, severity, msg):
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(str(msg))
            elif severity == trt.ILogger.Severity.WARNING:
                self.warnings.append(str(msg))

    return Collecting()


def make_calibrator(trt, data, cache, cuda):
    """An IInt8EntropyCalibrator2 over `data` (calibration.CalibrationData, or None to only
    replay `cache`), reading and writing `cache` (calibration.CalibrationCache)."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = iter(data) if data is not None else iter(())
            self.batch_size = data.batch if data is not None else 1
            nbytes = int(4 * (data.batch * 3 * data.preprocess.size[0] * data.preprocess.size[1])) if data is not None else 4
            self.device = cuda.malloc(nbytes)
            self.stream = cuda.stream()
            self.served = 0
            self.cache_reused = False

        def get_batch_size(self):
            return self.batch_size

        def get_batch(self, names):
            try:
                batch = next(self.batches)
            except StopIteration:
                return None
            cuda.htod(self.device, batch, self.stream)
            cuda.sync(self.stream)
            self.served += 1
            return [int(self.device)] * len(names)

        def read_calibration_cache(self):
            blob = cache.load()
            self.cache_reused = blob is not None
            return blob

        def write_calibration_cache(self, blob):
            cache.save(bytes(blob))

        def release(self):
            cuda.free(self.device)
            cuda.destroy(self.stream)

    return EntropyCalibrator()


@dataclass
class BuildOutcome:
    engine: bytes
    platform: Platform
    seconds: float
    fp32_layers: list[str] = field(default_factory=list)
    fp32_missing: list[str] = field(default_factory=list)
    timing_cache: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    io: dict[str, list[dict]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def apply_fp32_layers(trt, network, nodes: list[str], tensors: list[str]) -> tuple[list[str], list[str]]:
    """Pin the layers parsed from `nodes` (or producing `tensors`) to fp32 compute and outputs.
    Returns (layers pinned, nodes no layer matched: TensorRT merged or renamed them)."""
    wanted_nodes, wanted_tensors = set(nodes), set(tensors)
    floats = {trt.float32, trt.float16}
    pinned, matched = [], set()
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        outs = [layer.get_output(j) for j in range(layer.num_outputs)]
        hit = layer.name in wanted_nodes or any(o.name in wanted_tensors for o in outs)
        if not hit or not outs or any(o.dtype not in floats for o in outs):
            continue
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.float32)
        pinned.append(layer.name)
        matched.add(layer.name)
        matched.update(o.name for o in outs)
    missing = [n for n in nodes if n not in matched]
    return pinned, missing


def _io(trt, engine) -> dict[str, list[dict]]:
    io: dict[str, list[dict]] = {"inputs": [], "outputs": []}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        kind = "inputs" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "outputs"
        io[kind].append({"name": name, "shape": [int(d) for d in engine.get_tensor_shape(name)],
                         "dtype": str(engine.get_tensor_dtype(name)).rsplit(".", 1)[-1].lower()})
    return io


def _load_timing_cache(config, path: Path | None) -> tuple[Any, dict]:
    data = b""
    status: dict[str, Any] = {"path": str(path) if path else None}
    if path is not None and path.is_file():
        data = path.read_bytes()
        status["loaded_bytes"] = len(data)
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        # A cache from another TensorRT/GPU is rejected by the header check: start afresh.
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
        status["rejected"] = "made by another TensorRT version or GPU; started a new one"
        status.pop("loaded_bytes", None)
    return cache, status


def _save_timing_cache(config, path: Path, status: dict) -> None:
    blob = bytes(config.get_timing_cache().serialize())
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_bytes(blob)
    status["saved_bytes"] = len(blob)


def build_engine(plan, onnx_bytes: bytes, *, calib_data=None, calib_cache=None) -> BuildOutcome:
    """Build a serialized engine from `onnx_bytes` following `plan` (plan.BuildPlan)."""

    trt = import_tensorrt()
    cuda = cuda_api()
    here = local_platform(trt, cuda)
    t0 = time.perf_counter()
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    flags = 0
    if major < 10:  # explicit batch is the only mode from 10.0 on
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errs = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors)) or "; ".join(logger.errors[:3])
        raise EdgesegError(f"TensorRT {trt.__version__} cannot parse the ONNX graph: {errs[:500]}",
                           "lower --opset or pick the device profile of this TensorRT")

    config = builder.create_builder_config()
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
    else:  # TensorRT < 8.4
        config.max_workspace_size = plan.workspace_bytes
    for name in plan.flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in plan.clear_flags:
        config.clear_flag(getattr(trt.BuilderFlag, name))
    warnings = []
    if "FP16" in plan.flags and hasattr(builder, "platform_has_fast_fp16") and not builder.platform_has_fast_fp16:
        warnings.append(f"{here.gpu} has no fast fp16: the engine may be slower than fp32")

    profile = None
    if plan.dynamic:
        profile = builder.create_optimization_profile()
        for s in plan.shapes:
            profile.set_shape(s.name, s.min, s.opt, s.max)
        config.add_optimization_profile(profile)

    pinned, missing = apply_fp32_layers(trt, network, plan.fp32_nodes, plan.fp32_tensors)

    timing_path = Path(plan.timing_cache) if plan.timing_cache else None
    timing_status: dict[str, Any] = {"path": None}
    if timing_path is not None:
        _, timing_status = _load_timing_cache(config, timing_path)

    calibrator = None
    calibration = None
    if plan.precision == "int8":
        calibrator = make_calibrator(trt, calib_data, calib_cache, cuda)
        config.int8_calibrator = calibrator
        if profile is not None:
            config.set_calibration_profile(profile)
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibration = {"batches": calibrator.served, "cache_reused": calibrator.cache_reused, "cache": str(calib_cache.path),
                           "cache_status": calib_cache.reason}
            calibrator.release()
    if serialized is None:
        raise EdgesegError(f"TensorRT could not build the engine: {'; '.join(logger.errors[-3:])[:500] or 'no reason given'}",
                           "raise --workspace, or try another --precision")
    if plan.precision == "int8" and calibration and not calibration["cache_reused"] and calibration["batches"] == 0:
        raise EdgesegError("int8 calibration saw no data", "pass --calib-images DIR with at least one batch of images")
    if timing_path is not None:
        _save_timing_cache(config, timing_path, timing_status)
    engine_bytes = bytes(serialized)

    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    if engine is None:
        raise EdgesegError(f"the engine TensorRT just built does not deserialize: {'; '.join(logger.errors[-2:])[:300]}",
                           "report this with the TensorRT version")
    io = _io(trt, engine)
    del engine, runtime
    return BuildOutcome(engine=engine_bytes, platform=here, seconds=time.perf_counter() - t0, fp32_layers=pinned,
                        fp32_missing=missing, timing_cache=timing_status, calibration=calibration, io=io,
                        warnings=warnings + logger.warnings[-5:])
