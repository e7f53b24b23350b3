"""Core ML Runner: `MLModel.predict` on macOS, the one place edgeseg loads an MLModel to run it.
Elsewhere opening one raises BackendUnavailable, so parity reports 'skipped: Core ML runtime
needs macOS', never a pass."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from edgeseg.errors import BackendUnavailable, EdgesegError
from edgeseg.exporters.coreml.spec import load_spec, summarize
from edgeseg.exporters.runner import Runner

COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")


def classifier_labels(spec) -> list:
    """Class labels of an ML program classifier, in score order (the `classify` op's classes)."""
    consts = {}
    for fn in spec.mlProgram.functions.values():
        for op in fn.block_specializations[fn.opset].operations:
            if op.type == "const" and "val" in op.attributes:
                consts[op.outputs[0].name] = op.attributes["val"]
            if op.type == "classify" and "classes" in op.inputs:
                arg = op.inputs["classes"].arguments[0]
                value = consts.get(arg.name) if arg.WhichOneof("binding") == "name" else arg.value
                return _values(value.immediateValue)
    return []


def _values(immediate) -> list:
    """Python values of a MIL immediate value: a tensor, or a list of scalar tensors."""
    if immediate.WhichOneof("value") == "list":
        return [v for item in immediate.list.values for v in _values(item.immediateValue)]
    tensor = immediate.tensor
    kind = tensor.WhichOneof("value")
    return list(getattr(tensor, kind).values) if kind else []


def to_pixels(batch: np.ndarray, mean, std) -> np.ndarray:
    """Normalized NCHW float -> NHWC uint8, refusing inputs that are not images (clipping
    would change what the model sees, and the comparison would blame the runtime)."""
    m = np.asarray(mean, dtype=np.float64).reshape(1, 3, 1, 1)
    s = np.asarray(std, dtype=np.float64).reshape(1, 3, 1, 1)
    pixels = (batch.astype(np.float64) * s + m) * 255.0
    rounded = np.clip(np.rint(pixels), 0, 255)
    worst = float(np.abs(pixels - rounded).max()) if pixels.size else 0.0
    if worst > 1.0:
        raise EdgesegError(f"inputs lie up to {worst:.1f} levels outside the 0..255 pixel range of this image-input model",
                           "compare image-input models on natural images (--images DIR, no random samples)")
    return rounded.astype(np.uint8).transpose(0, 2, 3, 1)


class CoreMLRunner(Runner):
    name = "coreml"

    def __init__(self, path: str | Path, compute_units: str | None = None):
        import coremltools as ct

        self.path = Path(path)
        units = (compute_units or "ALL").upper()
        if units not in COMPUTE_UNITS:
            raise EdgesegError(f"unknown compute units {compute_units!r}", f"use one of: {', '.join(COMPUTE_UNITS)}")
        spec = load_spec(self.path)
        self.summary = summarize(spec)
        self.precision = self.summary.precision if self.summary.precision in ("fp16", "fp32") else "fp16"
        self.labels = classifier_labels(spec) if self.summary.classifier else []
        self.probs_name = spec.description.predictedProbabilitiesName
        self.input = self.summary.inputs[0]
        self.input_names = [self.input.name]
        # "image": inputs must be natural images (random tensors do not survive the uint8 round trip)
        self.input_kind = "image" if self.input.kind == "image" else "tensor"
        self.input_shape = (1, 3, *self.input.shape) if self.input.kind == "image" else tuple(self.input.shape)
        self.output_names = [o.name for o in self.summary.outputs] if not self.summary.classifier else [self.probs_name]
        meta = self.summary.metadata
        self.mean = [float(v) for v in meta.get("edgeseg.mean", "0,0,0").split(",")]
        self.std = [float(v) for v in meta.get("edgeseg.std", "1,1,1").split(",")]
        try:
            self.model = ct.models.MLModel(str(self.path), compute_units=getattr(ct.ComputeUnit, units))
        except Exception as exc:  # the Core ML framework reports compile errors as plain exceptions
            raise EdgesegError(f"Core ML cannot load {self.path}: {str(exc).strip().splitlines()[0][:300]}",
                               "check the macOS version against the model's deployment target") from exc

    def _outputs(self, result: dict) -> list[np.ndarray]:
        if self.summary.classifier:
            scores = result[self.probs_name]
            return [np.asarray([[scores[label] for label in self.labels]], dtype=np.float32)]
        return [np.asarray(result[o.name]) for o in self.summary.outputs]

    def infer(self, feeds) -> list[np.ndarray]:
        return self.run(feeds[self.input.name])

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        from PIL import Image

        batch = np.asarray(batch, dtype=np.float32)
        if self.input.kind == "image":
            pixels = to_pixels(batch, self.mean, self.std)  # in the model's channel order
            if self.input.color == "BGR":  # Core ML reorders a PIL (RGB) image into the BGR the model declares
                pixels = pixels[..., ::-1]
            feeds = [{self.input.name: Image.fromarray(np.ascontiguousarray(p), "RGB")} for p in pixels]
        elif self.input.shape and self.input.shape[0] == batch.shape[0]:
            feeds = [{self.input.name: batch}]
        else:
            feeds = [{self.input.name: batch[i:i + 1]} for i in range(batch.shape[0])]
        results = [self._outputs(self.model.predict(f)) for f in feeds]
        return [np.concatenate([r[k] for r in results], axis=0) for k in range(len(results[0]))]


def open_coreml(path: str | Path, compute_units: str | None = None, **_options) -> CoreMLRunner:
    if platform.system() != "Darwin":
        raise BackendUnavailable("Core ML runtime needs macOS", "run `edgeseg parity` on a Mac for this artifact")
    try:
        from coremltools.libcoremlpython import _MLModelProxy  # noqa: F401  (the runtime bridge)
    except ImportError as exc:
        raise BackendUnavailable("Core ML runtime bridge of coremltools is missing", "reinstall coremltools on macOS") from exc
    if not Path(path).exists():
        raise EdgesegError(f"{path} does not exist", "export it first with `edgeseg export --target coreml`")
    return CoreMLRunner(path, compute_units)
