"""Deploy checkpoints: fused weights in .safetensors with the metadata needed to reload them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from edgeseg import __version__
from edgeseg.errors import CheckpointError

META_PREFIX = "edgeseg."


def deploy_metadata(info: Any, **extra: Any) -> dict[str, str]:
    meta = {
        "format": "pt",
        f"{META_PREFIX}arch": info.arch,
        f"{META_PREFIX}family": info.family,
        f"{META_PREFIX}task": info.task,
        f"{META_PREFIX}cfg": json.dumps(info.cfg, sort_keys=True),
        f"{META_PREFIX}reparameterized": "true" if info.fused else "false",
        f"{META_PREFIX}input_size": json.dumps(list(info.input_size)),
        f"{META_PREFIX}fixed_input_size": json.dumps(list(info.fixed_input_size) if info.fixed_input_size else None),
        f"{META_PREFIX}layout": info.layout,
        f"{META_PREFIX}version": __version__,
        f"{META_PREFIX}source_sha256": info.source_sha256 or "",
    }
    if info.extra.get("preprocessing"):  # e.g. a timm hub folder's pretrained_cfg
        meta[f"{META_PREFIX}preprocessing"] = json.dumps(info.extra["preprocessing"], sort_keys=True)
    meta.update({f"{META_PREFIX}{k}": v if isinstance(v, str) else json.dumps(v) for k, v in extra.items()})
    return meta


def _meta_json(metadata: dict[str, str], key: str, default: str, source: str) -> Any:
    try:
        return json.loads(metadata.get(f"{META_PREFIX}{key}", default))
    except (json.JSONDecodeError, TypeError, RecursionError):
        raise CheckpointError(f"{source}: metadata field {META_PREFIX}{key} is not valid JSON",
                              "re-create the deploy file with `edgeseg reparam`") from None


def _meta_size(value: Any, key: str, source: str) -> tuple[int, int] | None:
    if value is None or value == []:
        return None
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 65536 for v in value)):
        raise CheckpointError(f"{source}: metadata field {META_PREFIX}{key} must be [height, width] in 1..65536, got {value!r}",
                              "re-create the deploy file with `edgeseg reparam`")
    return tuple(value)


def read_deploy_metadata(metadata: dict[str, str], source: str = "checkpoint", user_arch: str | None = None) -> dict[str, Any] | None:
    """edgeseg's fields of a safetensors header, validated: the file is untrusted.

    `edgeseg.arch` may only name a registered architecture; a `module:factory` spec is code
    to import, which only the user may name (`--arch`), never a file. The file may record the
    spec the user passes in this call (`user_arch`): then the user, not the file, chose it.
    """
    if f"{META_PREFIX}arch" not in metadata:
        return None
    arch = metadata[f"{META_PREFIX}arch"]
    if not isinstance(arch, str) or (":" in arch and arch != user_arch):
        raise CheckpointError(
            f"{source} names code to import as its architecture ({arch!r}); edgeseg never imports code a file names",
            "if you trust that module, pass --arch module:factory yourself (arch= in Python)")
    fixed = _meta_size(_meta_json(metadata, "fixed_input_size", "null", source), "fixed_input_size", source)
    size = _meta_size(_meta_json(metadata, "input_size", "null", source), "input_size", source)
    return {
        "arch": arch,
        "cfg": _meta_json(metadata, "cfg", "{}", source),  # checked against the architecture by the loader
        "fused": metadata.get(f"{META_PREFIX}reparameterized") == "true",
        "input_size": size,
        "fixed_input_size": fixed,
        "layout": metadata.get(f"{META_PREFIX}layout"),
        "source_sha256": metadata.get(f"{META_PREFIX}source_sha256"),
        "version": metadata.get(f"{META_PREFIX}version"),
        "preprocessing": _preprocessing(metadata.get(f"{META_PREFIX}preprocessing")),
    }


def check_deploy_path(path: str | Path) -> Path:
    """Deploy files are safetensors (no pickle, metadata for reloading): refuse other suffixes up front."""
    path = Path(path)
    if path.suffix != ".safetensors":
        from edgeseg.errors import OutputError

        raise OutputError(f"deploy files are .safetensors; {path.name} ends in {path.suffix or 'no suffix'}",
                          f"use -o {path.with_suffix('.safetensors').name}")
    return path


def _preprocessing(text: str | None) -> dict | None:
    """Recorded preprocessing: only plain numbers and short strings are taken from the file."""
    if not text:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    out: dict[str, Any] = {}
    for key in ("mean", "std", "input_size"):
        v = data.get(key)
        if isinstance(v, list) and len(v) in (2, 3) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            out[key] = v
    for key in ("crop_pct",):
        if isinstance(data.get(key), (int, float)):
            out[key] = data[key]
    for key in ("crop_mode", "interpolation", "tag", "source"):
        if isinstance(data.get(key), str) and len(data[key]) < 100:
            out[key] = data[key]
    return out or None

