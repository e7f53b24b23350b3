"""Core ML target: conversion (`export.py` with `convert`, `module`, `spec`, `preflight`), the
MLModel runner (`runner.py`, macOS), the remote Mac driver (`remote.py`) and the script it runs
there (`device_runner.py`)."""

from edgeseg.exporters import CliOption, Target, register_target

TARGET = register_target(Target(
    name="coreml", aliases=(), runtime="coreml", suffix=".mlpackage", kind="coreml",
    default_precision="fp16",  # the Neural Engine computes in fp16; fp32 keeps a model off it
    precisions=("fp16", "fp32"),
    exporter="edgeseg.exporters.coreml.export:CoreMLExporter",
    runner="edgeseg.exporters.coreml.runner:open_coreml",
    remote="edgeseg.exporters.coreml.remote:time_on_device",
    opens=(".mlmodel",),
    options=(CliOption("image_input", "--image-input", bool, "Core ML: take an image input (scale/bias inside the model).", default=False),),
    description="Core ML ML program for iPhone/iPad/Mac (Neural Engine, GPU, CPU)",
))
