"""Core ML exporter: fused model -> ML program (.mlpackage), checked on any OS.

Deployment target and compute precision come from the device profile (fp16 by default: the
Neural Engine computes in fp16 and fp32 keeps a model off it). The saved spec is read back and
checked (inputs, outputs, shapes, precision, op types; ops known to fall off the Neural Engine
are reported) before the package reaches its path. Parity through `MLModel.predict` needs
macOS (`edgeseg.exporters.coreml.runner`, run by the export job like every target's parity);
elsewhere it is reported as skipped, and an fp16 PyTorch preflight predicts the drift.
"""

from __future__ import annotations

import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

from edgeseg import __version__
from edgeseg.atomic import atomic_output
from edgeseg.errors import EdgesegError, VerificationError
from edgeseg.exporters import ExportRequest, ExportResult
from edgeseg.exporters.coreml.convert import convert, import_coremltools, quiet
from edgeseg.exporters.coreml.preflight import fp16_preflight
from edgeseg.exporters.coreml.spec import Expected, check, load_spec, summarize
from edgeseg.exporters.wrap import check_postprocess, output_names
from edgeseg.hashing import artifact_sha256

DEFAULT_TARGET = "iOS16"
INPUT_NAME, IMAGE_INPUT_NAME = "input", "image"


def resolve_precision(request: ExportRequest) -> str:
    profile = request.profile
    precision = request.precision or "auto"
    if precision == "auto":
        precision = profile.default_precision if profile is not None else "fp16"
    if precision not in ("fp16", "fp32"):
        raise EdgesegError(f"Core ML export does not produce {precision} models",
                           "use --precision fp16 (Neural Engine) or fp32 (GPU/CPU only)")
    if profile is not None and precision not in profile.precisions:
        raise EdgesegError(f"device profile {profile.name} does not run {precision}", f"use one of: {', '.join(profile.precisions)}")
    return precision


def resolve_target(request: ExportRequest) -> str:
    profile = request.profile
    if profile is not None and profile.runtime != "coreml":
        raise EdgesegError(f"device profile {profile.name} runs {profile.runtime}, not Core ML",
                           "pick a Core ML profile (e.g. iphone-12-pro) or another --target")
    target = request.options.get("min_target")
    if not target and profile is not None:
        target = profile.export.coreml_min_target
    return target or DEFAULT_TARGET


def image_color_layout(ct, info):
    """Core ML color layout of an image input: what the model reads (EdgeFormer: BGR)."""
    return ct.colorlayout.BGR if getattr(info, "channel_order", "rgb") == "bgr" else ct.colorlayout.RGB


def read_labels(labels: Any, num_classes: int | None) -> list[str] | None:
    """Class labels from a list or a text file (one per line)."""
    if labels is None:
        return None
    if isinstance(labels, (str, os.PathLike)):
        path = Path(labels)
        if not path.is_file():
            raise EdgesegError(f"labels file {path} does not exist", "pass a text file with one class name per line")
        labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    labels = [str(x) for x in labels]
    if num_classes is not None and len(labels) != num_classes:
        raise EdgesegError(f"{len(labels)} labels for a model with {num_classes} classes", "pass one label per class, in class order")
    return labels


def _save_package(mlmodel, directory: Path) -> None:
    """Save into the existing temporary directory that `atomic_output` renames into place
    (coremltools only writes paths that end in .mlpackage)."""
    staging = directory / "staging.mlpackage"
    mlmodel.save(str(staging))
    for child in staging.iterdir():
        os.replace(child, directory / child.name)
    shutil.rmtree(staging)


def _tool_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for pkg in ("torch", "coremltools", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass

    out["edgeseg"] = __version__
    return out


def _set_metadata(mlmodel, info, *, precision: str, target: str, size, norm, labels, postprocess: str, capture: str, options) -> None:
    mlmodel.author = str(options.get("author") or f"edgeseg {__version__}")
    mlmodel.version = str(options.get("version") or __version__)
    mlmodel.license = str(options.get("license") or "")
    task = "class scores (logits)" if info.task == "classification" else (
        "per-pixel label map" if postprocess == "argmax" else "per-pixel class scores (logits)")
    mlmodel.short_description = str(options.get("description") or f"{info.arch} ({info.task}, {size[0]}x{size[1]}): {task}")
    meta = {
        "edgeseg.arch": info.arch, "edgeseg.family": info.family, "edgeseg.task": info.task,
        "edgeseg.input_size": f"{size[0]}x{size[1]}", "edgeseg.source_sha256": info.source_sha256 or "",
        "edgeseg.mean": ",".join(f"{m:g}" for m in info.mean), "edgeseg.std": ",".join(f"{s:g}" for s in info.std),
        "edgeseg.normalization": norm.describe(), "edgeseg.precision": precision, "edgeseg.min_target": target,
        "edgeseg.postprocess": postprocess, "edgeseg.capture": capture, "edgeseg.version": __version__,
    }
    from edgeseg.exporters.metadata import artifact_metadata

    # the shared keys (channel order, resize, label set) that ONNX files carry too
    meta = {**artifact_metadata(info, input_size=size, precision=precision, postprocess=postprocess, target="coreml"), **meta}
    if labels and info.task != "classification":
        meta["edgeseg.labels"] = "\n".join(labels)
    mlmodel.user_defined_metadata.update(meta)


class CoreMLExporter:
    name = "coreml"
    suffix = ".mlpackage"

    def export(self, request: ExportRequest) -> ExportResult:
        import numpy as np
        import torch

        from edgeseg.exporters.coreml.module import build_module  # lazy: pulls torch

        t0 = time.perf_counter()
        info = getattr(request.model, "edgeseg", None)
        if info is None:
            raise EdgesegError("the model carries no edgeseg info", "load or create it with edgeseg.load / edgeseg.create")
        opts = request.options
        precision, target = resolve_precision(request), resolve_target(request)
        check_postprocess(info.task, request.postprocess)
        size = tuple(int(s) for s in request.input_size)
        if info.fixed_input_size and size != tuple(info.fixed_input_size):
            fixed = info.fixed_input_size
            raise EdgesegError(f"{info.arch} is fixed to input {fixed[0]}x{fixed[1]}; {size[0]}x{size[1]} was asked",
                               f"use --input-size {fixed[0]}x{fixed[1]}")
        if info.size_divisor and (size[0] % info.size_divisor or size[1] % info.size_divisor):
            raise EdgesegError(f"input {size[0]}x{size[1]} is not a multiple of {info.size_divisor}, which {info.arch} needs",
                               f"use a size divisible by {info.size_divisor}")
        if request.dynamic:
            raise EdgesegError("Core ML export takes fixed shapes: flexible shapes keep a model off the Neural Engine",
                               "export once per input size, without --dynamic")
        image_input = bool(opts.get("image_input"))
        module, norm = build_module(request.model, info.task, request.postprocess, request.batch, size, image_input, info.mean, info.std)
        example = torch.randn(request.batch, 3, *size, generator=torch.Generator().manual_seed(int(opts.get("seed", 0))))
        with torch.no_grad():
            probe = module(example)
        names = output_names(len(probe), info.task, request.postprocess)
        first = probe[0]
        num_classes = int(first.shape[1]) if first.is_floating_point() and first.dim() in (2, 4) else None
        labels = read_labels(opts.get("labels"), num_classes)

        ct = import_coremltools()
        in_shape = (request.batch, 3, *size)
        if image_input:
            # the model's own channel order: Core ML reorders camera/PIL images into it (bias follows that order)
            ct_input = ct.ImageType(name=IMAGE_INPUT_NAME, shape=in_shape, scale=norm.scale, bias=list(norm.bias),
                                    color_layout=image_color_layout(ct, info))
        else:
            ct_input = ct.TensorType(name=INPUT_NAME, shape=in_shape, dtype=np.float32)
        # fp32/int32 outputs whatever the compute precision: callers read the same arrays as from ONNX.
        ct_outputs = [ct.TensorType(name=n, dtype=np.float32 if t.is_floating_point() else np.int32) for n, t in zip(names, probe)]
        classifier = None
        if labels and info.task == "classification":
            classifier = ct.ClassifierConfig(labels, predicted_feature_name="classLabel", predicted_probabilities_output=names[0])
        t1 = time.perf_counter()
        conv = convert(module, example, inputs=[ct_input], outputs=ct_outputs, precision=precision,
                       target=target, classifier=classifier, capture=opts.get("capture", "auto"))
        t_convert = time.perf_counter() - t1
        mlmodel = conv.model
        _set_metadata(mlmodel, info, precision=precision, target=target, size=size, norm=norm, labels=labels,
                      postprocess=request.postprocess, capture=conv.capture, options=opts)
        expected = Expected(
            input_name=IMAGE_INPUT_NAME if image_input else INPUT_NAME, input_kind="image" if image_input else "multiarray",
            input_shape=in_shape, outputs=[(n, tuple(t.shape)) for n, t in zip(names, probe)], precision=precision,
            target=target, classifier=classifier is not None,
            input_color=info.channel_order.upper() if image_input else None,
        )
        with atomic_output(request.output, overwrite=request.overwrite, directory=True) as tmp:
            with quiet():
                _save_package(mlmodel, tmp)
                summary = summarize(load_spec(tmp))
                ct.models.MLModel(str(tmp), skip_model_load=True)  # the package opens as a whole
            problems = check(summary, expected)
            if problems:
                raise VerificationError(f"the saved Core ML model is not what was asked: {'; '.join(problems)}",
                                        "report this with the architecture name and --debug output")
            digest = artifact_sha256(tmp)
        out = Path(request.output)
        manifest: dict[str, Any] = {
            "format": "mlpackage", "arch": info.arch, "task": info.task, "source_sha256": info.source_sha256,
            "precision": precision, "min_target": target, "input_size": list(size), "batch": request.batch,
            "postprocess": request.postprocess, "normalization": norm.as_dict(), "capture": conv.capture,
            "capture_failures": conv.attempts, "labels": len(labels) if labels else 0,
            "inputs": [t.as_dict() for t in summary.inputs],
            "outputs": [{"name": names[0]}] if classifier is not None else [t.as_dict() for t in summary.outputs],
            "spec": summary.as_dict(),
            "sha256": digest, "tools": _tool_versions(), "host": platform.system(),
        }
        if precision == "fp16" and opts.get("preflight", True):
            t2 = time.perf_counter()
            manifest["fp16_preflight"] = fp16_preflight(request.model, input_size=size, task=info.task, mean=info.mean, std=info.std,
                                                        seed=int(opts.get("seed", 0)), channel_order=info.channel_order)
            t_pre = time.perf_counter() - t2
        manifest["export_timings"] = {"convert_s": round(t_convert, 3), "total_s": round(time.perf_counter() - t0, 3)}
        if "fp16_preflight" in manifest:
            manifest["export_timings"]["preflight_s"] = round(t_pre, 3)
        return ExportResult(path=out, manifest=manifest)
