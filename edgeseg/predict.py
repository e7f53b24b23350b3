"""`edgeseg predict`: run any artifact on pictures, with the preprocessing the artifact records.

Classifiers give the top-k classes with probabilities; segmenters give a label mask at the
picture's own size, the share of pixels per class, and (optionally) a colour overlay PNG.
Checkpoints run in PyTorch; ONNX, Core ML and TensorRT artifacts run in their runtime through
the same runners parity uses, so a deployment is checked exactly as it will execute.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgeseg.errors import EdgesegError

DEFAULT_TOP_K = 5
OVERLAY_ALPHA = 0.5
_ROWS_PER_CHUNK = 64  # bounds memory when upsampling C x H x W logits


@dataclass
class ClassScore:
    index: int
    label: str
    score: float  # probability (softmax of the logits, or the Core ML classifier's)

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "label": self.label, "score": round(self.score, 6)}


@dataclass
class ClassShare:
    index: int
    label: str
    share: float  # fraction of the picture's pixels
    pixels: int
    colour: tuple[int, int, int]

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "label": self.label, "share": round(self.share, 6), "pixels": self.pixels,
                "colour": "#%02x%02x%02x" % self.colour}


@dataclass
class ImagePrediction:
    image: str
    image_size: tuple[int, int]  # H, W of the picture
    seconds: float  # runtime call only
    top: list[ClassScore] | None = None
    shares: list[ClassShare] | None = None
    overlay: str | None = None
    mask: np.ndarray | None = field(default=None, repr=False)  # segmentation: (H, W) int32 at the picture's size
    probabilities: np.ndarray | None = field(default=None, repr=False)  # classification

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"image": self.image, "image_size": list(self.image_size), "ms": round(self.seconds * 1e3, 3)}
        if self.top is not None:
            d["top"] = [c.as_dict() for c in self.top]
        if self.shares is not None:
            d["classes"] = [c.as_dict() for c in self.shares]
            d["overlay"] = self.overlay
        return d


@dataclass
class PredictResult:
    artifact: str
    kind: str
    arch: str | None
    task: str
    runtime: str
    runtime_mode: str | None
    precision: str | None
    preprocessing: dict[str, Any]
    labels: str  # where the class names came from
    num_classes: int
    predictions: list[ImagePrediction]
    described_by: list[str]
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"artifact": self.artifact, "kind": self.kind, "arch": self.arch, "task": self.task, "runtime": self.runtime,
                "runtime_mode": self.runtime_mode, "precision": self.precision, "preprocessing": self.preprocessing,
                "labels": self.labels, "num_classes": self.num_classes, "described_by": self.described_by,
                "notes": self.notes, "predictions": [p.as_dict() for p in self.predictions]}


def open_runner(info, model, path: Path, *, compute_units: str | None = None):
    """The one place predict reaches a runtime: PyTorch for checkpoints, the artifact's own
    runtime otherwise (the parity backends: load, run on an NCHW batch)."""
    if model is not None:
        from edgeseg.exporters.pytorch import TorchRunner

        return TorchRunner(model, postprocess="none")
    from edgeseg.errors import BackendUnavailable
    from edgeseg.exporters import open_runner

    options: dict[str, Any] = {"postprocess": info.postprocess}
    if compute_units and info.kind == "coreml":
        options["compute_units"] = compute_units
    try:
        return open_runner(path, **options)
    except BackendUnavailable as exc:
        where = {"coreml": "on a Mac (Core ML runs only on macOS)", "tensorrt": "on the machine the engine was built for, with TensorRT"}
        raise EdgesegError(f"cannot run {path.name} here: {exc.problem}",
                           f"run `edgeseg predict` {where.get(info.kind, 'where its runtime is installed')}") from exc


def _check_images(images: Sequence[str | Path]) -> list[Path]:
    if not images:
        raise EdgesegError("no images given", "pass one or more picture files after the artifact")
    paths = [Path(p) for p in images]
    for p in paths:
        if not p.is_file():
            raise EdgesegError(f"image {p} does not exist", "check the path")
    return paths


def overlay_path(out_dir: Path, image: Path, artifact: Path) -> Path:
    return out_dir / f"{image.stem}.{artifact.name.split('.')[0]}.overlay.png"


def _open_rgb(path: Path):
    """The picture itself (RGB), for its size and the overlay; the model input comes from edgeseg.images."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise EdgesegError(f"cannot read image {path} ({exc.__class__.__name__})", "remove it or convert it to JPEG/PNG") from exc


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64) - x.max()
    e = np.exp(x)
    return e / e.sum()


def _bilinear_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) weights of half-pixel-centre bilinear resizing (align_corners=False), the
    resize SegFormer-style decoders and torch's F.interpolate use."""
    src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = (src - lo).astype(np.float32)
    m = np.zeros((n_out, n_in), np.float32)
    m[np.arange(n_out), lo] += 1 - frac
    m[np.arange(n_out), hi] += frac
    return m


def label_mask(output: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A segmenter's first output for one picture -> (H, W) labels at the model's input size.
    Logits (C, h, w) are resized bilinearly then arg-maxed, in row chunks to bound memory;
    a label map (argmax post-processing) is used as is."""
    out = np.asarray(output)
    if out.ndim == 3 and out.shape[0] == 1 and not np.issubdtype(out.dtype, np.floating):
        out = out[0]
    if out.ndim == 2:
        labels = out.astype(np.int32)
        return labels if labels.shape == tuple(size) else _resize_labels(labels, size)
    if out.ndim != 3:
        raise EdgesegError(f"unexpected segmentation output shape {tuple(out.shape)}", "export with --postprocess none, upsample or argmax")
    c, h, w = out.shape
    H, W = size
    ry, rx = _bilinear_matrix(H, h), _bilinear_matrix(W, w)
    cols = np.einsum("chw,Ww->chW", out.astype(np.float32), rx)  # (C, h, W)
    mask = np.empty((H, W), np.int32)
    for top in range(0, H, _ROWS_PER_CHUNK):
        chunk = np.einsum("Hh,chW->cHW", ry[top:top + _ROWS_PER_CHUNK], cols)
        mask[top:top + _ROWS_PER_CHUNK] = chunk.argmax(axis=0)
    return mask


def _resize_labels(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    im = Image.fromarray(mask.astype(np.int32), mode="I").resize((size[1], size[0]), Image.NEAREST)
    return np.asarray(im, dtype=np.int32)


def class_shares(mask: np.ndarray, labels) -> list[ClassShare]:
    counts = np.bincount(mask.ravel(), minlength=1)
    total = int(mask.size)
    order = [int(i) for i in np.argsort(-counts, kind="stable") if counts[i] > 0]
    return [ClassShare(i, labels.name(i), counts[i] / total, int(counts[i]), labels.colour(i)) for i in order]


def write_overlay(image, mask: np.ndarray, labels, path: Path, *, alpha: float = OVERLAY_ALPHA, overwrite: bool = False) -> Path:
    """The picture with each pixel tinted by its class colour, as PNG (written atomically)."""
    from PIL import Image

    from edgeseg.atomic import atomic_output

    n = int(mask.max()) + 1 if mask.size else 1
    palette = np.asarray([labels.colour(i) for i in range(n)], np.float32)
    base = np.asarray(image, np.float32)
    blended = (1 - alpha) * base + alpha * palette[mask]
    with atomic_output(path, overwrite=overwrite) as tmp:
        Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8), "RGB").save(tmp, format="PNG")
    return path


def _num_classes(info) -> int | None:
    for out in info.outputs or []:
        shape = out.get("shape") or []
        if len(shape) in (2, 4) and isinstance(shape[1], int) and "int" not in str(out.get("dtype", "")):
            return int(shape[1])
        break
    return None


def predict(artifact: str | Path, images: Sequence[str | Path], *, labels: str | Path | None = None, top_k: int = DEFAULT_TOP_K,
            out_dir: str | Path | None = None, overwrite: bool = False, arch: str | None = None, alpha: float = OVERLAY_ALPHA,
            compute_units: str | None = None, progress=lambda msg: None) -> PredictResult:
    """Run `artifact` (checkpoint, deploy file, .onnx, .mlpackage, .engine) on `images`.

    Uses the preprocessing the artifact records (mean, std, channel order, input size).
    Segmentation overlays are written to `out_dir` as `<image>.<artifact>.overlay.png`
    (none when `out_dir` is None). `labels` is a text file with one class name per line.
    """
    from edgeseg import labels as label_sets
    from edgeseg.artifacts import inspect_artifact
    from edgeseg.images import Preprocess

    if top_k < 1:
        raise EdgesegError(f"invalid top-k {top_k}", "use 1 or more")
    if not 0.0 <= alpha <= 1.0:
        raise EdgesegError(f"invalid overlay alpha {alpha}", "use a value from 0 to 1")
    paths = _check_images(images)
    if labels is not None and not Path(labels).is_file():
        raise EdgesegError(f"labels file {labels} does not exist", "pass a text file with one class name per line")
    artifact = Path(artifact)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and not out.is_dir():
        raise EdgesegError(f"output directory {out} does not exist", "create it first or pass another --out-dir")

    progress(f"reading {artifact}")
    info, model = inspect_artifact(artifact, arch)
    if info.task not in ("classification", "segmentation"):
        raise EdgesegError(f"{artifact} does not record its task", "pass --arch NAME so edgeseg knows the preprocessing")
    if info.mean is None or info.std is None or not info.input_size:
        raise EdgesegError(f"{artifact} records no preprocessing (mean/std/input size)", "re-export it with `edgeseg export`, or pass --arch")
    if out is not None and info.task == "segmentation" and not overwrite:
        for p in paths:
            target = overlay_path(out, p, artifact)
            if target.exists():
                raise EdgesegError(f"overlay {target} already exists", "pass --overwrite to replace it, or another --out-dir")

    progress(f"loading {info.kind} runtime")
    runner = open_runner(info, model, artifact, compute_units=compute_units)
    size = (int(info.input_size[0]), int(info.input_size[1]))
    shape = getattr(runner, "input_shape", None) or []
    batch = shape[0] if shape and isinstance(shape[0], int) and shape[0] > 0 else 1
    pre = Preprocess(size, tuple(info.mean), tuple(info.std), resize=info.preprocessing["resize"], channel_order=info.channel_order)
    runner_labels = list(getattr(runner, "labels", None) or [])  # a Core ML classifier returns probabilities per label
    notes: list[str] = []
    resolved = None
    predictions: list[ImagePrediction] = []
    for path in paths:
        progress(f"predicting {path.name}")
        image = _open_rgb(path)
        x = pre.load(path)
        x = np.repeat(x[None], batch, axis=0)  # a graph with a fixed batch gets the picture repeated
        t0 = time.perf_counter()
        first = runner.run(x)[0][0]
        seconds = time.perf_counter() - t0
        pred = ImagePrediction(image=str(path), image_size=(image.height, image.width), seconds=seconds)
        if info.task == "classification":
            scores = np.asarray(first, np.float64).ravel()
            if resolved is None:
                resolved = label_sets.resolve(scores.size, names=runner_labels or info.labels, label_set=info.label_set, file=labels)
            probs = scores if runner_labels else _softmax(scores)
            order = np.argsort(-probs, kind="stable")[: min(top_k, probs.size)]
            pred.top = [ClassScore(int(i), resolved.name(int(i)), float(probs[i])) for i in order]
            pred.probabilities = probs.astype(np.float32)
        else:
            mask = label_mask(first, size)
            if resolved is None:
                n = _num_classes(info) or (first.shape[0] if np.asarray(first).ndim == 3 and np.issubdtype(np.asarray(first).dtype, np.floating) else None)
                if n is None:  # a label map says nothing of the class count: the recorded label set does
                    known = label_sets.LABEL_SETS.get(label_sets.canonical(info.label_set)) if info.label_set else None
                    n = len(info.labels or []) or (known[1] if known else int(mask.max()) + 1)
                resolved = label_sets.resolve(n, names=info.labels, label_set=info.label_set, file=labels)
            mask = _resize_labels(mask, (image.height, image.width))
            pred.mask = mask
            pred.shares = class_shares(mask, resolved)
            if out is not None:
                pred.overlay = str(write_overlay(image, mask, resolved, overlay_path(out, path, artifact), alpha=alpha, overwrite=overwrite))
        predictions.append(pred)
    notes.append("times are single runs, the first with runtime warm-up: use `edgeseg bench` for latency")
    return PredictResult(artifact=str(artifact), kind=info.kind, arch=info.arch, task=info.task, runtime=getattr(runner, "name", "?"),
                         runtime_mode=getattr(runner, "mode", None), precision=info.precision, preprocessing=info.preprocessing,
                         labels=resolved.source if resolved else "-", num_classes=len(resolved.names) if resolved else 0,
                         predictions=predictions, described_by=info.described_by, notes=notes)

# `edgeseg.predict(...)` runs the workflow (edgeseg.workflows.predict); the package stays importable
from edgeseg.callable import callable_module  # noqa: E402

callable_module(__name__, "predict")
