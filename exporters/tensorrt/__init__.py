"""TensorRT target: engine build (`export.py`, planned in `plan.py`/`precision.py`, built by
`build.py` here or by `remote_build.py` with trtexec on the device), the engine runner
(`runner.py`), the engine manifest checks (`manifest.py`) and the remote trtexec driver
(`remote.py`, `trtexec.py`)."""

from pathlib import Path

from edgeseg.exporters import CliOption, Target, register_target

TARGET = register_target(Target(
    name="tensorrt", aliases=("trt", "engine"), runtime="tensorrt", suffix=".engine", kind="engine",
    default_precision="fp16",  # TensorRT targets are built for fp16 tensor cores
    precisions=("fp32", "fp16", "int8"),
    exporter="edgeseg.exporters.tensorrt.export:TensorRTExporter",
    runner="edgeseg.exporters.tensorrt.runner:open_engine",
    remote="edgeseg.exporters.tensorrt.remote:time_on_device", remote_takes="onnx",  # trtexec builds on the device
    opens=(".plan",),
    options=(
        CliOption("workspace_mib", "--workspace", int, "TensorRT: builder workspace in MiB.", min=1),
        CliOption("timing_cache", "--timing-cache", Path, "TensorRT: timing cache file (read and updated)."),
        CliOption("calib_images", "--calib-images", Path, "TensorRT int8: directory of calibration images."),
        # --host comes from the SSH option group every device-reaching command shares (edgeseg.cli.common)
    ),
    description="TensorRT engine for NVIDIA GPUs and Jetson, built for one TensorRT version and GPU",
))
