"""Deploy checkpoints: fused weights in .safetensors with the metadata needed to reload them."""

from __future__ import annotations

import json
from typing import Any


META_PREFIX = "edgeseg."


def deploy_metadata(info: Any, **extra: Any) -> dict[str, str]:
    from edgeseg import __version__

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
    }
