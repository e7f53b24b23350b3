"""Which registered architecture (and variant, layout, fused or not) a state dict is.

Every candidate's expected keys and shapes come from building it on the meta device, so
detection needs no per-model rules beyond each family's key layouts. Those signatures are
cached on disk for the built-in models (see `edgeseg.checkpoint.signatures`).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from edgeseg.checkpoint.layouts import KeyLayout, LayoutMismatch
from edgeseg.errors import DetectionError
from edgeseg.registry import ModelEntry, get_entry, list_models, resolve_arch

OPTIONAL_SUFFIXES = ("num_batches_tracked",)


def _near_miss_fix(diff: "KeyDiff", label: str) -> str:
    """A hint that leads somewhere: loading is strict, so --arch cannot fill missing tensors."""
    if diff.missing and not diff.unexpected and not diff.mismatched:
        return (f"the file lacks tensors {label} needs, so no --arch loads it: re-save the complete state_dict "
                "(model.state_dict(), not a filtered or partial one)")
    if diff.mismatched:
        return "shapes differ from every registered variant: check the variant (`edgeseg models`) or the number of classes"
    if diff.unexpected and not diff.missing:
        return "the file has extra tensors (e.g. an optimizer or EMA copy): save only the model's state_dict"
    return "check that this is a supported model's checkpoint (`edgeseg models`), or pass --arch package.module:factory for your own"


@dataclass
class KeyDiff:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # key, expected, found

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    @property
    def size(self) -> int:
        return len(self.missing) + len(self.unexpected) + len(self.mismatched)

    def describe(self, limit: int = 3) -> str:
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing ({', '.join(self.missing[:limit])}{', ...' if len(self.missing) > limit else ''})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected ({', '.join(self.unexpected[:limit])}{', ...' if len(self.unexpected) > limit else ''})")
        if self.mismatched:
            shown = ", ".join(f"{k} expected {list(e)} got {list(f)}" for k, e, f in self.mismatched[:limit])
            parts.append(f"{len(self.mismatched)} shape mismatches ({shown})")
        return "; ".join(parts) or "exact match"


@dataclass
class Detection:
    entry: ModelEntry
    layout: KeyLayout
    fused: bool
    cfg: dict[str, Any]
    state_dict: dict[str, Any]  # canonical keys
    input_size: tuple[int, int] | None = None  # fixed size of a resolution-baked deploy model


def _optional(key: str) -> bool:
    return key.endswith(OPTIONAL_SUFFIXES)


def diff_keys(expected: Mapping[str, tuple], found: Mapping[str, Any]) -> KeyDiff:
    d = KeyDiff()
    for k, shape in expected.items():
        if k not in found:
            if not _optional(k):
                d.missing.append(k)
        elif tuple(found[k].shape) != tuple(shape):
            d.mismatched.append((k, tuple(shape), tuple(found[k].shape)))
    d.unexpected = [k for k in found if k not in expected]
    return d


def build_structure(entry: ModelEntry, cfg: Mapping[str, Any], fused: bool, input_size: tuple[int, int] | None = None, device: str = "cpu"):
    """The model of `entry` with `cfg`, fused if asked, with untrained weights."""
    import torch

    from edgeseg.reparam.walker import reparameterize_model  # lazy: pulls torch

    with torch.device(device):
        model = entry.build(**cfg)
        if fused:
            reparameterize_model(model, input_size=tuple(input_size or entry.input_size))
    return model


@functools.lru_cache(maxsize=256)
def _signature(name: str, cfg_json: str, fused: bool, input_size: tuple[int, int] | None) -> dict[str, Any]:
    from edgeseg.checkpoint.signatures import cacheable, cached

    entry = get_entry(name)

    def compute() -> dict[str, Any]:
        cfg = json.loads(cfg_json)
        try:
            model = build_structure(entry, cfg, fused, input_size, device="meta")
        except Exception:  # some constructors need real tensors; fall back to the CPU
            model = build_structure(entry, cfg, fused, input_size, device="cpu")
        return {"shapes": {k: list(v.shape) for k, v in model.state_dict().items()},
                "params": sum(p.numel() for p in model.parameters())}

    key = {"name": name, "cfg": json.loads(cfg_json), "fused": fused, "input_size": list(input_size) if input_size else None}
    data = cached(key, compute, persist=cacheable(entry.factory))
    return {"shapes": {k: tuple(v) for k, v in data["shapes"].items()}, "params": data["params"]}


def _signature_of(entry: ModelEntry, cfg: Mapping[str, Any], fused: bool, input_size: tuple[int, int] | None) -> dict[str, Any]:
    return _signature(entry.name, json.dumps(dict(cfg), sort_keys=True), fused, tuple(input_size) if input_size else None)


def expected_shapes(entry: ModelEntry, cfg: Mapping[str, Any], fused: bool, input_size: tuple[int, int] | None = None) -> dict[str, tuple]:
    return dict(_signature_of(entry, cfg, fused, input_size)["shapes"])


def expected_params(entry: ModelEntry, cfg: Mapping[str, Any], fused: bool, input_size: tuple[int, int] | None = None) -> int:
    """Parameter count of the model a detection builds (without building it)."""
    return _signature_of(entry, cfg, fused, input_size)["params"]


def candidate_cfg(entry: ModelEntry, layout: KeyLayout, canonical: Mapping[str, Any], hf_config: dict | None) -> dict:
    cfg = dict(layout.cfg_overrides)
    if hf_config is not None and layout.cfg_from_hf_config is not None:
        cfg.update(layout.cfg_from_hf_config(hf_config))
    if entry.infer_cfg is not None:
        cfg.update(entry.infer_cfg(canonical))
    return cfg


def _fused_input_size(entry: ModelEntry, canonical: Mapping[str, Any]) -> tuple[int, int] | None:
    infer = getattr(entry.factory, "infer_deploy_input_size", None)
    return infer(canonical) if infer else None


def detect(
    state_dict: Mapping[str, Any],
    *,
    arch: str | None = None,
    layouts: Iterable[str] | None = None,
    hf_config: dict | None = None,
    fused: bool | None = None,
    cfg: Mapping[str, Any] | None = None,
    input_size: tuple[int, int] | None = None,
    canonical_only: bool = False,
) -> Detection:
    """Find the unique (variant, layout, fused) whose keys and shapes match exactly.

    `canonical_only`: the keys are already our modules' names (edgeseg deploy files), whatever
    container the weights originally came in.
    """
    candidates = resolve_arch(arch) if arch else list_models()
    matches: list[Detection] = []
    near: list[tuple[int, str, KeyDiff]] = []
    for entry in candidates:
        for layout in entry.layouts[:1] if canonical_only else entry.layouts:
            if layouts is not None and layout.name not in layouts:
                continue
            if not canonical_only and (layout.container == "hf") != (hf_config is not None):
                continue
            try:
                canonical = layout.to_canonical(dict(state_dict))
                cand_cfg = candidate_cfg(entry, layout, canonical, hf_config)
            except (LayoutMismatch, KeyError, ValueError, IndexError):
                continue
            if cfg:
                cand_cfg.update(cfg)
            for is_fused in ((fused,) if fused is not None else (False, True)):
                size = input_size or (_fused_input_size(entry, canonical) if is_fused else None)
                d = diff_keys(expected_shapes(entry, cand_cfg, is_fused, size), canonical)
                if d.ok:
                    matches.append(Detection(entry, layout, is_fused, cand_cfg, canonical, size))
                else:
                    near.append((d.size, f"{entry.name} [{layout.name}{', fused' if is_fused else ''}]", d))
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        names = ", ".join(f"{m.entry.name} [{m.layout.name}]" for m in matches)
        raise DetectionError(f"checkpoint matches several architectures: {names}", "name one with --arch")
    near.sort(key=lambda t: t[0])
    if arch and near:
        size, label, diff = near[0]
        raise DetectionError(f"checkpoint does not match {label}: {diff.describe()}", _near_miss_fix(diff, label))
    n_keys = len(state_dict)
    sample = ", ".join(list(state_dict)[:3])
    if near and near[0][0] < max(8, n_keys // 10):
        size, label, diff = near[0]
        raise DetectionError(f"unknown layout ({n_keys} keys); closest is {label}: {diff.describe()}", _near_miss_fix(diff, label))
    known = ", ".join(sorted({e.family for e in candidates}))
    raise DetectionError(f"unrecognised checkpoint layout ({n_keys} keys, e.g. {sample}); known families: {known}", "pass --arch NAME or a module:factory spec")
