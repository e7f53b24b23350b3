"""Key layouts: how each original project names and wraps its weights.

A family's modules use the names of its original project (the canonical layout);
every other published layout is a pair of renaming functions to and from it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from edgeseg.errors import DetectionError


class LayoutMismatch(Exception):
    """Raised by a converter when a state dict is not in its layout."""


def _identity(sd: dict) -> dict:
    return dict(sd)


@dataclass(frozen=True)
class KeyLayout:
    name: str
    description: str
    to_canonical: Callable[[dict], dict] = _identity
    from_canonical: Callable[[dict], dict] = _identity
    # How the original saves: "plain" (bare state dict), "state_dict" ({'state_dict': sd}),
    # "mmseg" ({'meta': ..., 'state_dict': sd}), "model" ({'model': sd}), "hf" (directory).
    container: str = "state_dict"
    # Model config the layout implies (e.g. numerics that differ between ports).
    cfg_overrides: Mapping[str, Any] = field(default_factory=dict)
    # Hugging Face layouts: config.json <-> model cfg.
    hf_config: Callable[[Any, dict], dict] | None = None
    cfg_from_hf_config: Callable[[dict], dict] | None = None
    # The weights file a Hugging Face directory of this layout holds (save_pretrained of
    # transformers < 4.35 wrote pytorch_model.bin, later versions model.safetensors).
    hf_weights: str = "model.safetensors"

    def save(self, sd: Mapping[str, Any], path: str | Path, *, entry: Any = None, cfg: dict | None = None, meta: dict | None = None) -> None:
        """Write canonical weights `sd` the way the original project publishes them."""
        import torch

        out = self.from_canonical(dict(sd))
        out = {k: v.detach().contiguous().clone() for k, v in out.items()}
        path = Path(path)
        if self.container == "hf":
            from safetensors.torch import save_file

            path.mkdir(parents=True, exist_ok=True)
            config = self.hf_config(entry, cfg or {}) if self.hf_config else {}
            (path / "config.json").write_text(json.dumps(config, indent=2))
            if self.hf_weights.endswith(".safetensors"):
                save_file(out, str(path / self.hf_weights), metadata={"format": "pt"})
            else:
                torch.save(out, path / self.hf_weights)
        elif self.container == "plain":
            torch.save(out, path)
        elif self.container == "mmseg":
            torch.save({"meta": meta or {"CLASSES": None, "PALETTE": None}, "state_dict": out}, path)
        elif self.container in ("state_dict", "model"):
            torch.save({self.container: out}, path)
        else:
            raise ValueError(f"unknown container {self.container!r}")


def rename_keys(sd: Mapping[str, Any], rules: list[tuple[str, str]]) -> dict:
    """Apply ordered regex substitutions to every key."""
    out = {}
    for k, v in sd.items():
        for pat, rep in rules:
            k = re.sub(pat, rep, k)
        out[k] = v
    return out


def find_layout(entry: Any, name: str) -> KeyLayout:
    for layout in entry.layouts:
        if layout.name == name:
            return layout
    names = ", ".join(l.name for l in entry.layouts)
    raise DetectionError(f"{entry.name} has no layout {name!r}", f"choose one of: {names}")
