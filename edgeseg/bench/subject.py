"""What `edgeseg bench` was given: an artifact (.onnx/.mlpackage/.engine), a checkpoint, or a
registered model name; and the models/artifacts derived from it on demand."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeseg.api import create, load, reparameterize
from edgeseg.errors import EdgesegError
from edgeseg.export_job import export_checkpoint
from edgeseg.exporters import get_target, target_for_suffix
from edgeseg.exporters.onnx.runner import input_spec
from edgeseg.exporters.pytorch import TorchRunner
from edgeseg.hashing import artifact_sha256
from edgeseg.manifest import read_manifest
from edgeseg.registry import list_models


@dataclass
class Subject:
    kind: str  # onnx | coreml | engine | model
    name: str  # model name recorded with results (arch, else file stem)
    path: Path | None = None
    sha256: str | None = None
    model: Any = None  # as loaded (unfused unless the checkpoint was fused)
    manifest: dict[str, Any] = field(default_factory=dict)
    arch: str | None = None
    notes: list[str] = field(default_factory=list)
    _fused: Any = None

    @property
    def info(self):
        return getattr(self.model, "edgeseg", None) if self.model is not None else None

    @property
    def task(self) -> str:
        info = self.info
        return info.task if info else self.manifest.get("task", "classification")

    def default_size(self) -> tuple[int, int] | None:
        info = self.info
        if info is not None:
            return tuple(info.fixed_input_size or info.input_size)
        size = self.manifest.get("input_size")
        return tuple(size) if size else None

    @property
    def already_fused(self) -> bool:
        info = self.info
        return bool(info and info.fused)

    def fused(self):
        """The reparameterized model (cached). Not re-verified here: `edgeseg reparam` gates it."""
        if self._fused is None:
            if self.model is None:
                self.ensure_model()
            if self.already_fused:
                self._fused = self.model
            else:
                self._fused, _ = reparameterize(self.model, verify=False)
        return self._fused

    def export(self, target: str, profile, size, batch: int, precision: str | None, out_dir: Path,
               say: Callable[[str], None]) -> tuple[Path, str]:
        """This model as `target`'s artifact in `out_dir`, within the device profile's export
        constraints (parity is the bench's own check, run on the device's outputs)."""

        t = get_target(target)
        out = out_dir / f"{self.name}{t.suffix}"
        say(f"exporting {self.name} to {t.name} for {profile.name} ({size[0]}x{size[1]})")
        export_checkpoint(None, out, target=t.name, model=self.model, device=profile.name, input_size=tuple(size), batch=batch,
                          precision=precision, parity=False, verify_reparam=False, overwrite=True)
        return out, f"edgeseg export ({t.name})"

    def ensure_model(self):
        """A PyTorch model for prediction/parity: loaded, or rebuilt from an artifact's architecture."""
        if self.model is not None:
            return self.model
        if not self.arch:
            raise EdgesegError(f"{self.path} carries no architecture name (no edgeseg manifest beside it)",
                               "pass the checkpoint or a registered model name instead of the artifact")

        cfg = self.manifest.get("cfg") or {}
        try:
            self.model = create(self.arch, **cfg)
        except TypeError:
            self.model = create(self.arch)
        self.notes.append(f"{self.arch} rebuilt from the artifact's manifest (weights do not matter for a prediction)")
        return self.model


def resolve_subject(target: str | Path, arch: str | None = None, seed: int = 0, weights: bool = True) -> Subject:
    """Turn a CLI/API target into a Subject: artifact file, checkpoint, or registered model name.

    A registered name is built with deterministic non-trivial weights (`weights`, for parity
    checks) or with its default initialisation (latency predictions, where weights do not matter).
    """
    p = Path(target)
    artifact_target = target_for_suffix(p.suffix)
    if artifact_target is not None:
        if not p.exists():
            raise EdgesegError(f"artifact {p} not found", "check the path")
        manifest: dict[str, Any] = read_manifest(p) or {}
        kind = artifact_target.kind
        if p.suffix.lower() == ".onnx":
            manifest = manifest or _onnx_metadata(p)
            if not manifest.get("input_size"):
                _, dims, _ = input_spec(p)
                if len(dims) == 4 and dims[2] and dims[3]:
                    manifest["input_size"] = [dims[2], dims[3]]
        name = arch or manifest.get("arch") or p.name.split(".")[0]
        return Subject(kind=kind, name=name, path=p, sha256=artifact_sha256(p), manifest=manifest,
                       arch=arch or manifest.get("arch"))
    if p.exists():
        model = load(p, arch)
        info = model.edgeseg
        return Subject(kind="model", name=info.arch, path=p, sha256=info.source_sha256 or artifact_sha256(p), model=model,
                       arch=info.arch)

    names = {e.name for e in list_models()}
    if str(target) in names:
        model = create(str(target), pretrained_like=seed if weights else None)
        note = f"deterministic synthetic weights (seed {seed})" if weights else "default-initialised weights (latency only)"
        return Subject(kind="model", name=str(target), model=model, arch=str(target), notes=[f"{target} built with {note}"])
    raise EdgesegError(f"{target} is neither a file nor a registered model", "pass an artifact, a checkpoint, or a name from `edgeseg models`")


def _onnx_metadata(path: Path) -> dict[str, Any]:
    """edgeseg.* metadata_props, when an ONNX file has no manifest beside it."""
    import json

    import onnx

    m = onnx.load(str(path), load_external_data=False)
    meta: dict[str, Any] = {}
    for prop in m.metadata_props:
        if prop.key.startswith("edgeseg."):
            key = prop.key[len("edgeseg."):]
            try:
                meta[key] = json.loads(prop.value)
            except ValueError:
                meta[key] = prop.value
    return meta


def model_outputs(model, x: np.ndarray) -> list[np.ndarray]:
    """Reference outputs in the exported artifact's order."""
    return TorchRunner(model).run(x)
