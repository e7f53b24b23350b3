"""ONNX target: export (`export.py`), the ONNX Runtime runner (`runner.py`), the remote ORT
driver (`remote.py`) and the script it runs on the device (`device_runner.py`)."""

from edgeseg.exporters import CliOption, Target, register_target

TARGET = register_target(Target(
    name="onnx", aliases=(), runtime="onnxruntime", suffix=".onnx", kind="onnx",
    default_precision="fp32",  # ONNX stays exact unless asked
    precisions=("fp32", "fp16", "int8"),  # int8: onnxruntime.quantization, kept only where it measures faster
    exporter="edgeseg.exporters.onnx.export:OnnxExporter",
    runner="edgeseg.exporters.onnx.runner:open_onnx",
    remote="edgeseg.exporters.onnx.remote:time_on_device",
    options=(CliOption("fp16_keep_fp32_ops", "--keep-fp32", str, "fp16: ONNX op types to compute in fp32, e.g. Softmax,ReduceMean.",
                       split=True),
             CliOption("calib_samples", "--calib-samples", int, "ONNX int8: calibration samples (default 8; --calib-images or the bundled images).", min=1),
             CliOption("calib_method", "--calib-method", str, "ONNX int8: calibration method: percentile (99.999%, default), minmax or entropy."),
             CliOption("int8_force", "--force", bool, "ONNX int8: write the artifact even if it measures slower than fp32 here.", default=False)),
    description="ONNX graph for ONNX Runtime and other ONNX consumers",
))
