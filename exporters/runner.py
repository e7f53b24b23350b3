"""The Runner: one artifact loaded in its runtime, run on named numpy inputs, and timed.

Parity compares any Runner's outputs with any other's (PyTorch is a Runner too); bench times
Runners here, or on a device through a target's remote driver. Each runtime's package has the
one Runner class that opens that runtime (an ORT session, an MLModel, a TensorRT context).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from edgeseg.timing import Measurement, Warmup, measure


class Runner:
    """Base of every runtime's runner. Subclasses set the attributes and implement `infer`."""

    name = "runtime"  # onnxruntime | coreml | tensorrt | pytorch
    precision = "fp32"
    mode: str | None = None  # how the runtime executes (e.g. fp16 emulation), shown with parity
    input_names: list[str] = ["input"]
    input_shape: Any = None  # first input; None for symbolic or unknown dims
    output_names: list[str] | None = None
    output_meta: Any = None  # [(shape, dtype)] when the runtime tells before running

    def infer(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs in the artifact's order for the named inputs."""
        raise NotImplementedError

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Outputs for one NCHW float32 batch fed to the first input (preprocessed)."""
        return self.infer({self.input_names[0]: batch})

    def describe(self) -> dict[str, Any]:
        """What is recorded with a measurement: runtime name and version, settings."""
        return {"runtime": self.name}

    def time(self, feeds: Mapping[str, np.ndarray], *, warmup: "str | int | Warmup" = 10, iterations: int = 50) -> Measurement:
        """First call, warm-up, then `iterations` timed calls of `infer(feeds)`; the last outputs
        come back in `extra["outputs"]`."""
        last: dict[str, list] = {}

        def once():
            last["outputs"] = self.infer(feeds)

        m = measure(once, warmup=warmup, iterations=iterations)
        m.extra.update(self.describe())
        m.extra["outputs"] = last.get("outputs")
        return m


@dataclass
class RemoteRun:
    """What bench asks of a target's remote driver (`Target.remote`): time `artifact` on the
    device at the other end of an SSH session. The driver returns a Measurement whose
    `extra["outputs"]` holds the outputs for `input_array` in artifact order (None when the
    runtime cannot return them; `extra["parity_skipped"]` then says why), and whose
    `extra["settings"]` lists what the result must record."""

    profile: Any  # edgeseg.devices.DeviceProfile
    precision: str
    warmup: "str | int | Warmup" = 10
    iterations: int = 50
    threads: int | None = None
    input_array: np.ndarray | None = None  # random input for parity (None: parity off)
    shape: list[int] | None = None  # input shape the artifact is run at
    workdir: str = "/tmp"
    timeout: float | None = None
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)  # target-specific: coreml_target, coreml_device_name
