"""Deploy checkpoints: fused weights in .safetensors with the metadata needed to reload them."""

from __future__ import annotations

import json
from typing import Any
from edgeseg import __version__

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


def read_deploy_metadata(metadata: dict[str, str]) -> dict[str, Any] | None:
    if f"{META_PREFIX}arch" not in metadata:
        return None
    get = lambda k, default=None: metadata.get(f"{META_PREFIX}{k}", default)  # noqa: E731
    fixed = json.loads(get("fixed_input_size", "null"))
    return {
        "arch": get("arch"),
        "cfg": json.loads(get("cfg", "{}")),
        "fused": get("reparameterized") == "true",
        "input_size": tuple(json.loads(get("input_size", "null")) or ()) or None,
        "fixed_input_size": tuple(fixed) if fixed else None,
        "layout": get("layout"),
        "source_sha256": get("source_sha256"),
        "version": get("version"),
        "preprocessing": _preprocessing(get("preprocessing")),
    }


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

