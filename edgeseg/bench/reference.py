"""Parity inside a benchmark: the candidate's outputs for one random input against the
reference (the fused PyTorch model when bench has real weights, else the same ONNX on the host)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.bench.subject import Subject, model_outputs
from edgeseg.compare import compare_outputs
from edgeseg.exporters.onnx.runner import OnnxRuntimeRunner


def reference_outputs(subject: Subject, x: np.ndarray, onnx_path: Path | None,
                      threads: int | None) -> tuple[list[np.ndarray] | None, str]:
    """PyTorch (fused) on the host when we have real weights; else the same ONNX on the host."""
    if subject.kind == "model":
        return model_outputs(subject.fused(), x), "pytorch (fused, host)"
    if onnx_path is not None:
        runner = OnnxRuntimeRunner(onnx_path, threads=threads, fp16="native", log_level=3)
        return list(runner.run(x)), "onnxruntime (same ONNX, host)"
    return None, "none"


def parity_entry(subject: Subject, reference: list[np.ndarray] | None, candidate: list[np.ndarray], precision: str,
                 reference_name: str) -> dict[str, Any]:
    if reference is None:
        return {"status": "skipped", "reason": "no reference available"}
    report = compare_outputs(reference, candidate, task=subject.task, precision=precision)
    d = report.as_dict()
    d["reference"] = reference_name
    return d
