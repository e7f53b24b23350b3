"""The manifest edgeseg writes beside an artifact (`<artifact>.manifest.json`), read back by
parity and bench. Untrusted input: it is JSON data only and selects no code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgeseg.errors import EdgesegError


def manifest_path_for(artifact: str | Path) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".manifest.json")


def read_manifest(artifact: str | Path) -> dict[str, Any] | None:
    path = manifest_path_for(artifact)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EdgesegError(f"manifest {path} is not valid JSON ({exc})", "re-export the artifact or delete the manifest") from exc
    return data if isinstance(data, dict) else None
