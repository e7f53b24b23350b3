"""The Python API: the same operations the CLI runs.

    model = edgeseg.load("fastvit_t8.pth")           # detected architecture, eval mode
    fused, result = edgeseg.reparameterize(model)   # verified single-conv model
    edgeseg.save_deploy(fused, "fastvit_t8.deploy.safetensors")
"""

from __future__ import annotations

import copy
import importlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgeseg.atomic import atomic_output
from edgeseg.checkpoint.deploy import deploy_metadata, read_deploy_metadata
from edgeseg.checkpoint.detect import Detection, build_structure, detect, diff_keys
from edgeseg.checkpoint.layouts import KeyLayout
from edgeseg.checkpoint.materialize import build_loaded
from edgeseg.checkpoint.reader import RawCheckpoint, read_checkpoint
from edgeseg.checkpoint.timm_hub import TIMM_LAYOUT, hub_architecture, parse_timm_config
from edgeseg.errors import CheckpointError, DetectionError, EdgesegError, VerificationError
from edgeseg.registry import ModelEntry, get_entry, resolve_arch

__all__ = ["ModelInfo", "ReparamResult", "create", "load", "load_raw", "reparameterize", "save_deploy", "resolve_custom"]


@dataclass
class ModelInfo:
    """What edgeseg knows about a model it built or loaded (attached as `model.edgeseg`)."""

    arch: str
    family: str
    task: str
    cfg: dict[str, Any]
    input_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    layout: str = ""
    fused: bool = False
    fixed_input_size: tuple[int, int] | None = None  # resolution-baked deploy models
    size_divisor: int = 32
    channel_order: str = "rgb"
    source_path: str | None = None
    source_format: str | None = None
    source_sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _info(entry: ModelEntry, cfg: dict, **kw: Any) -> ModelInfo:
    kw.setdefault("layout", entry.canonical_layout.name if entry.canonical_layout else "")
    return ModelInfo(arch=entry.name, family=entry.family, task=entry.task, cfg=dict(cfg), input_size=tuple(entry.input_size),
                     mean=tuple(entry.mean), std=tuple(entry.std), size_divisor=entry.size_divisor,
                     channel_order=entry.channel_order, **kw)


def resolve_custom(spec: str, input_size: tuple[int, int] | None = None, task: str = "classification") -> ModelEntry:
    """A user model given as `package.module:factory` goes through the same pipeline."""
    mod_name, _, fn_name = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as exc:
        raise EdgesegError(f"cannot import model factory {spec!r} ({exc})", "pass module:function importable from the current environment") from exc
    return ModelEntry(name=spec, factory=factory, family="custom", task=task, input_size=tuple(input_size or (224, 224)),
                      layouts=(KeyLayout("plain", "the model's own state_dict keys", container="plain"),))


def _is_custom(arch: str | None) -> bool:
    return bool(arch) and ":" in arch


def create(name: str, *, pretrained_like: int | None = None, **cfg: Any):
    """Build a registered (or `module:factory`) model in eval mode.

    `pretrained_like=SEED` fills it with deterministic non-trivial weights (demo, tests).
    """
    entry = resolve_custom(name) if _is_custom(name) else get_entry(name)
    model = entry.build(**cfg)
    if pretrained_like is not None:
        from edgeseg.synthetic import randomize_weights_  # lazy: pulls torch

        d = entry.size_divisor
        calib = tuple(max(d * 2, (s // 2) // d * d) for s in entry.input_size)
        randomize_weights_(model, pretrained_like, calib_size=calib)
    model.edgeseg = _info(entry, {**entry.default_cfg, **cfg})
    return model.eval()


def detect_checkpoint(raw: RawCheckpoint, arch: str | None = None, input_size: tuple[int, int] | None = None) -> Detection:
    """Which architecture `raw` is. Only `arch` (the caller's own argument) may be a `module:factory`
    spec, which imports and runs that module; the file's metadata may only name a registered model."""
    from edgeseg.checkpoint.cfg_schema import validate_cfg

    meta = read_deploy_metadata(raw.metadata, str(raw.path), user_arch=arch if _is_custom(arch) else None)
    if meta and not _is_custom(arch):
        meta_entry = get_entry(meta["arch"])  # unknown names are refused with suggestions
        if arch and meta_entry not in resolve_arch(arch):
            raise DetectionError(f"{raw.path} is a deploy file of {meta_entry.name}, not {arch}", "drop --arch or pass the right file")
        arch = meta_entry.name
        meta["cfg"] = validate_cfg(meta_entry.name, meta_entry.factory, meta["cfg"], str(raw.path))
    if _is_custom(arch):
        entry = resolve_custom(arch, input_size or (meta or {}).get("input_size"))
        cfg = validate_cfg(arch, entry.factory, meta["cfg"], str(raw.path)) if meta else {}
        fused = meta["fused"] if meta else None
        candidates = (fused,) if fused is not None else (False, True)
        found = None
        for f in candidates:
            model = build_structure(entry, cfg, f)
            if set(model.state_dict()) == set(raw.state_dict):
                found = f
                break
        if found is None:
            model = build_structure(entry, {}, False)
            d = diff_keys({k: tuple(v.shape) for k, v in model.state_dict().items()}, raw.state_dict)
            raise DetectionError(f"checkpoint does not match {arch}: {d.describe()}", "check the factory or the checkpoint")
        return Detection(entry, entry.layouts[0], found, cfg, raw.state_dict)
    if meta:
        return detect(raw.state_dict, arch=arch, fused=meta["fused"], cfg=meta["cfg"], canonical_only=True, input_size=meta["fixed_input_size"])
    if raw.format == "timm-hub":
        hub = parse_timm_config(raw.config, raw.path)
        return detect(raw.state_dict, arch=arch or hub_architecture(hub, raw.path), layouts=(TIMM_LAYOUT,))
    return detect(raw.state_dict, arch=arch, hf_config=raw.config)


def _loaded_info(raw: RawCheckpoint, det: Detection, input_size: tuple[int, int] | None) -> ModelInfo:
    meta = read_deploy_metadata(raw.metadata, str(raw.path), user_arch=det.entry.name if _is_custom(det.entry.name) else None) or {}
    info = _info(det.entry, det.cfg, layout=meta.get("layout") or det.layout.name, fused=det.fused, source_path=str(raw.path), source_format=raw.format,
                 source_sha256=meta.get("source_sha256") or raw.sha256, fixed_input_size=det.input_size)
    if det.input_size:
        info.input_size = tuple(det.input_size)
    elif meta.get("input_size"):
        info.input_size = tuple(meta["input_size"])
    if input_size and _is_custom(det.entry.name):
        info.input_size = tuple(input_size)
    if meta.get("preprocessing"):  # a deploy file keeps its own input size (set above)
        _apply_preprocessing(info, meta["preprocessing"], size=False)
    elif raw.format == "timm-hub":
        _apply_preprocessing(info, _timm_hub_preprocessing(raw, det))
    return info


def load_raw(raw: RawCheckpoint, arch: str | None = None, input_size: tuple[int, int] | None = None):
    det = detect_checkpoint(raw, arch, input_size)
    model = build_loaded(lambda device: build_structure(det.entry, det.cfg, det.fused, det.input_size, device=device), det.state_dict)
    model.edgeseg = _loaded_info(raw, det, input_size)
    return model


def inspect_raw(raw: RawCheckpoint, arch: str | None = None) -> tuple[ModelInfo, int]:
    """What `load_raw` would attach as `model.edgeseg`, and the model's parameter count,
    without building the model (detection already matched every key and shape)."""
    from edgeseg.checkpoint.detect import expected_params

    det = detect_checkpoint(raw, arch)
    if _is_custom(det.entry.name):
        params = sum(p.numel() for p in build_structure(det.entry, det.cfg, det.fused, det.input_size, device="meta").parameters())
    else:
        params = expected_params(det.entry, det.cfg, det.fused, det.input_size)
    return _loaded_info(raw, det, None), params


def _timm_hub_preprocessing(raw: RawCheckpoint, det: Detection) -> dict:
    hub = parse_timm_config(raw.config, raw.path)
    found = det.cfg.get("num_classes")
    if hub.num_classes and found is not None and hub.num_classes != found:
        raise CheckpointError(f"{raw.path}/config.json says num_classes={hub.num_classes} but the classifier has {found} outputs",
                              "re-download the folder; config.json and the weights disagree")
    return hub.preprocessing()


def _apply_preprocessing(info: ModelInfo, prep: dict, size: bool = True) -> None:
    """Preprocessing the checkpoint's own config defines (timm pretrained_cfg) replaces the
    registry defaults, and is kept in `info.extra` so deploy files carry it on."""
    if prep.get("mean"):
        info.mean = tuple(float(v) for v in prep["mean"])
    if prep.get("std"):
        info.std = tuple(float(v) for v in prep["std"])
    if size and prep.get("input_size") and not info.fixed_input_size:
        info.input_size = tuple(int(v) for v in prep["input_size"])
    info.extra["preprocessing"] = dict(prep)


def load(path: str | Path, arch: str | None = None, *, input_size: tuple[int, int] | None = None):
    """Load a checkpoint in its original project's format (or an edgeseg deploy file), safely.

    The architecture is detected from key names and shapes unless `arch` names a registered
    model, a family, or a `module:factory` spec. Returns the model in eval mode; its forward
    returns what the original implementation returns.
    """
    return load_raw(read_checkpoint(path), arch, input_size)


@dataclass
class ReparamResult:
    report: Any  # FuseReport
    equivalence: Any | None  # EquivalenceReport


def verification_sizes(info: ModelInfo, input_size: tuple[int, int] | None = None) -> list[tuple[int, int]]:
    """The deploy size plus one other valid (non-square) size, unless the size is baked in."""
    main = tuple(input_size or info.fixed_input_size or info.input_size)
    if info.fixed_input_size:
        return [main]
    d = info.size_divisor
    other = (max(d, main[0] - d), main[1] + d)
    if not _is_custom(info.arch):
        alt = get_entry(info.arch).alt_input_size
        if alt and tuple(alt) != main:
            other = tuple(alt)
    return [main, other]


def check_finite_weights(model) -> None:
    """Refuse NaN/Inf parameters and buffers by name: fused outputs would be NaN too, and the
    equivalence gate would then blame the fusion for what the checkpoint holds."""
    import torch

    # meta tensors (structure-only models) hold no values to check
    bad = [k for k, v in model.state_dict().items()
           if torch.is_tensor(v) and v.is_floating_point() and not v.is_meta and not bool(torch.isfinite(v).all())]
    if bad:
        source = getattr(getattr(model, "edgeseg", None), "source_path", None) or "the model"
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise EdgesegError(f"{source} holds NaN/Inf values in {len(bad)} tensor(s): {shown}",
                           "the checkpoint is damaged or diverged in training; use a healthy checkpoint")


def reparameterize(model, *, verify: bool = True, input_size: tuple[int, int] | None = None, inplace: bool = False,
                   tolerance: float | None = None, seed: int | None = None, sizes: list[tuple[int, int]] | None = None):
    """Fuse every reparameterizable block; with `verify`, prove fused == unfused or raise.

    Returns (fused_model, ReparamResult). The input model is left untouched unless `inplace`.
    """
    from edgeseg.reparam.verify import FP32_REL_TOL, check_equivalence  # lazy: pulls torch
    from edgeseg.reparam.walker import reparameterize_model  # lazy: pulls torch

    info: ModelInfo | None = getattr(model, "edgeseg", None)
    check_finite_weights(model)
    fused = model if inplace else copy.deepcopy(model)
    reference = copy.deepcopy(model) if (verify and inplace) else model
    size = tuple(input_size or (info.fixed_input_size or info.input_size if info else (224, 224)))
    report = reparameterize_model(fused, input_size=size)
    equivalence = None
    if verify:
        check_sizes = sizes or (verification_sizes(info, size) if info else [size])
        baked = getattr(fused, "baked_input_size", None)
        equivalence = None
        for i, s in enumerate(check_sizes):
            candidate = fused
            if baked and tuple(s) != tuple(baked):
                # a resolution-baked model runs at one size: bake a separate copy for each other size
                candidate = copy.deepcopy(reference)
                reparameterize_model(candidate, input_size=tuple(s))
            # batch 2 at the deploy size also catches mixing across the batch; the other size is
            # there to catch size-specific fusion (baked shapes), which one image shows as well
            part = check_equivalence(reference, candidate, [s], batch=2 if i == 0 else 1, seed=seed, tolerance=tolerance or FP32_REL_TOL)
            seed = part.seed if seed is None else seed
            if equivalence is None:
                equivalence = part
            else:
                equivalence.results.extend(part.results)
        if not equivalence.passed:
            raise VerificationError(
                f"fused model differs from the original: max error {equivalence.max_rel:.3g} of output scale "
                f"(tolerance {equivalence.tolerance:.0e}, seed {equivalence.seed})",
                "report this with the checkpoint; --no-verify skips the gate at your own risk",
            )
    if info is not None:
        fixed = getattr(fused, "baked_input_size", None)
        fused.edgeseg = replace(info, fused=True, fixed_input_size=tuple(fixed) if fixed else info.fixed_input_size, extra=dict(info.extra))
    return fused, ReparamResult(report, equivalence)


def save_deploy(model: Any, path: str | Path, *, overwrite: bool = False, **extra: Any) -> Path:
    """Write `model` (loaded or built by edgeseg) and check it loads back before renaming."""
    from safetensors.torch import save_file  # lazy: pulls torch

    from edgeseg.checkpoint.deploy import check_deploy_path

    check_deploy_path(path)
    info = model.edgeseg
    sd = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_output(path, overwrite=overwrite) as tmp:
        save_file(sd, str(tmp), metadata=deploy_metadata(info, **extra))
        # strict reload: the file must describe itself completely; a user's `module:factory` model
        # is named again by the caller (a file never chooses code to import)
        load(tmp, arch=info.arch if _is_custom(info.arch) else None)
    return Path(path)
