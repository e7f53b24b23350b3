"""TensorRT parity backend: runs an engine through cuda-python or pycuda. Without TensorRT,
CUDA bindings or a GPU here, or for an engine built for another TensorRT/GPU (checked from its
manifest), opening one raises BackendUnavailable and parity reports 'skipped: <reason>'."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeseg.parity.backends import register_backend


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, path: str | Path):
        from edgeseg.exporters.tensorrt.runner import EngineRunner

        self.runner = EngineRunner(path)
        self.precision = self.runner.section.get("precision", "fp32")
        self.output_names = list(self.runner.output_names)
        self.input_shape = self.runner.input_shape

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.runner.run(np.asarray(batch, dtype=np.float32))


@register_backend(".engine")
@register_backend(".plan")
def open_tensorrt(path: str | Path, **_options) -> TensorRTBackend:
    return TensorRTBackend(path)
