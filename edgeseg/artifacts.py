"""What an artifact is and how to feed it: one reader for every kind edgeseg handles.

Checkpoints (original format, deploy .safetensors, Hugging Face folders) describe themselves
through detection; ONNX files through their `edgeseg.*` metadata_props; Core ML packages through
their user-defined metadata; TensorRT engines (opaque without TensorRT) through the manifest
beside them. The sidecar manifest fills what an older artifact's own metadata lacks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeseg.errors import EdgesegError

ARTIFACT_KINDS = {".onnx": "onnx", ".mlpackage": "coreml", ".mlmodel": "coreml", ".engine": "tensorrt", ".plan": "tensorrt"}


@dataclass
class ArtifactInfo:
    """Everything `predict` and `info` need to know about an artifact."""

    path: str
    kind: str  # checkpoint | deploy | onnx | coreml | tensorrt
    arch: str | None = None
    family: str | None = None
    task: str | None = None
    input_size: list[int] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    channel_order: str = "rgb"
    resize: str | None = None  # edgeseg.images.RESIZE_MODES: "crop" (cover, centre crop) | "stretch"
    precision: str | None = None
    postprocess: str = "none"
    labels: list[str] | None = None
    label_set: str | None = None
    source_sha256: str | None = None
    sha256: str | None = None
    target: str | None = None
    inputs: list[dict] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)
    described_by: list[str] = field(default_factory=list)  # where the facts came from
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["labels"] is not None:  # a thousand names would drown `info`; count them, keep the first few
            d["labels"] = {"count": len(self.labels), "first": self.labels[:5]}
        return d

    @property
    def preprocessing(self) -> dict[str, Any]:
        return {"input_size": self.input_size, "mean": self.mean, "std": self.std, "channel_order": self.channel_order,
                "pixel_scale": "1/255", "resize": self.resize or ("crop" if self.task == "classification" else "stretch")}


def artifact_kind(path: str | Path) -> str:
    p = Path(path)
    return ARTIFACT_KINDS.get(p.suffix.lower(), "checkpoint")


def _merge_manifest(info: ArtifactInfo, manifest: dict[str, Any] | None) -> None:
    if not manifest:
        return
    info.described_by.append("manifest")
    source = manifest.get("source") if isinstance(manifest.get("source"), dict) else {}
    fill = {
        "arch": manifest.get("arch"), "family": manifest.get("family"), "task": manifest.get("task"),
        "input_size": manifest.get("input_size"), "mean": manifest.get("mean"), "std": manifest.get("std"),
        "precision": manifest.get("precision"), "source_sha256": source.get("sha256") or manifest.get("source_sha256"),
        "sha256": manifest.get("sha256"), "target": manifest.get("target"),
    }
    for key, value in fill.items():
        if getattr(info, key) in (None, [], "") and value not in (None, ""):
            setattr(info, key, value)
    if info.postprocess == "none" and manifest.get("postprocess"):
        info.postprocess = str(manifest["postprocess"])
    if manifest.get("device_profile"):
        info.extra["device_profile"] = manifest["device_profile"]
    for key in ("opset", "min_target", "tensorrt", "fp16_preflight", "parity"):
        if key in manifest:
            info.extra[key] = manifest[key] if key != "parity" else {k: manifest[key].get(k) for k in ("status", "reason")}


def _apply_meta(info: ArtifactInfo, meta: dict[str, Any]) -> None:
    for key in ("arch", "family", "task", "input_size", "mean", "std", "channel_order", "resize", "precision", "postprocess",
                "labels", "label_set", "source_sha256", "target"):
        if meta.get(key) not in (None, ""):
            setattr(info, key, meta[key])


def _describe_onnx(path: Path, info: ArtifactInfo) -> None:
    import onnx

    from edgeseg.exporters.metadata import parse
    from edgeseg.exporters.onnx.graph import describe_values

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf decode errors for files that are not ONNX
        raise EdgesegError(f"{path} is not an ONNX model ({type(exc).__name__})", "pass a file written by `edgeseg export`") from exc
    meta = parse({p.key: p.value for p in model.metadata_props})
    if meta:
        info.described_by.append("onnx metadata_props")
    _apply_meta(info, meta)
    info.inputs, info.outputs = describe_values(model.graph.input), describe_values(model.graph.output)
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    info.extra["opset"] = opsets.get("ai.onnx")
    info.extra["producer"] = f"{model.producer_name} {model.producer_version}".strip()


def _describe_coreml(path: Path, info: ArtifactInfo) -> None:
    from edgeseg.exporters.coreml.spec import load_spec, summarize
    from edgeseg.exporters.metadata import parse
    from edgeseg.exporters.coreml.runner import classifier_labels

    try:
        spec = load_spec(path)
        summary = summarize(spec)
    except EdgesegError:
        raise
    except Exception as exc:  # coremltools raises plain exceptions for unreadable packages
        raise EdgesegError(f"{path} is not a readable Core ML model ({str(exc).strip()[:200]})", "pass a package written by `edgeseg export --target coreml`") from exc
    meta = parse(summary.metadata)
    info.described_by.append("core ml metadata")
    _apply_meta(info, meta)
    if summary.classifier:
        info.labels = [str(x) for x in classifier_labels(spec)] or info.labels
    info.inputs = [t.as_dict() for t in summary.inputs]
    info.outputs = [t.as_dict() for t in summary.outputs]
    info.precision = info.precision or summary.precision
    info.extra.update(spec_target=summary.target, classifier=summary.classifier,
                      neural_engine_findings=[f.as_dict() for f in summary.ane])


def _describe_checkpoint(path: Path, info: ArtifactInfo, arch: str | None) -> Any:
    from edgeseg.api import load_raw
    from edgeseg.checkpoint.reader import read_checkpoint

    raw = read_checkpoint(path)
    model = load_raw(raw, arch)
    m = model.edgeseg
    info.kind = "deploy" if m.fused and raw.format == "safetensors" and raw.metadata else "checkpoint"
    info.described_by.append("checkpoint keys" if info.kind == "checkpoint" else "deploy metadata")
    info.arch, info.family, info.task = m.arch, m.family, m.task
    info.input_size = list(m.fixed_input_size or m.input_size)
    info.mean, info.std, info.channel_order = list(m.mean), list(m.std), m.channel_order
    info.precision, info.source_sha256, info.sha256 = "fp32", m.source_sha256, raw.sha256
    info.extra.update(format=raw.format, reparameterized=m.fused)
    try:
        from edgeseg.registry import get_entry

        info.label_set = get_entry(m.arch).labels
    except EdgesegError:
        pass
    return model


def describe_artifact(path: str | Path, arch: str | None = None) -> ArtifactInfo:
    """Read what `path` records about itself (and its manifest). Checkpoints are loaded to detect them."""
    return inspect_artifact(path, arch)[0]


def inspect_artifact(path: str | Path, arch: str | None = None) -> tuple[ArtifactInfo, Any]:
    """(description, loaded PyTorch model or None): a checkpoint is loaded once, for both."""
    from edgeseg.manifest import read_manifest

    p = Path(path)
    if not p.exists():
        raise EdgesegError(f"{p} does not exist", "check the path")
    info = ArtifactInfo(path=str(p), kind=artifact_kind(p))
    if info.kind == "checkpoint":
        return info, _describe_checkpoint(p, info, arch)
    if info.kind == "onnx":
        _describe_onnx(p, info)
    elif info.kind == "coreml":
        _describe_coreml(p, info)
    _merge_manifest(info, read_manifest(p))
    if info.kind == "tensorrt" and "manifest" not in info.described_by:
        raise EdgesegError(f"{p} has no manifest beside it, and a TensorRT engine does not describe itself",
                           f"keep {p.name}.manifest.json next to the engine (edgeseg export writes it)")
    if arch and not info.arch:
        info.arch = arch
    if info.arch and (info.mean is None or info.input_size is None or info.task is None):
        _fill_from_registry(info)
    return info, None


def _fill_from_registry(info: ArtifactInfo) -> None:
    """Artifacts from other tools may lack preprocessing; a registered arch supplies its defaults."""
    try:
        from edgeseg.registry import get_entry

        entry = get_entry(info.arch)
    except EdgesegError:
        return
    info.described_by.append(f"registry defaults for {entry.name}")
    info.mean = info.mean or list(entry.mean)
    info.std = info.std or list(entry.std)
    info.input_size = info.input_size or list(entry.input_size)
    info.task = info.task or entry.task
    info.label_set = info.label_set or entry.labels
    if info.channel_order == "rgb":
        info.channel_order = entry.channel_order
