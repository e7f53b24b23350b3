"""Read checkpoint files without ever executing pickled code."""

from __future__ import annotations

import json
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeseg.checkpoint.timm_hub import is_timm_hub_config
from edgeseg.errors import CheckpointError
from edgeseg.hashing import artifact_sha256

_HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_HF_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


@dataclass
class RawCheckpoint:
    path: Path
    format: str  # "torch" | "safetensors" | "hf-dir" | "timm-hub"
    state_dict: dict[str, Any]
    metadata: dict[str, str] = field(default_factory=dict)  # safetensors header metadata
    config: dict[str, Any] | None = None  # a Hugging Face config.json
    wrapper: str | None = None  # where the state dict sat: "state_dict", "model", ...
    extra: dict[str, Any] = field(default_factory=dict)  # other top-level entries (mmseg "meta", ...)
    sha256: str = ""


def _numpy_safe_globals() -> list:
    """numpy scalars/arrays appear in mmseg `meta` (e.g. best scores); they are data, not code."""
    try:
        import numpy as np
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        import numpy as np
        from numpy.core import multiarray  # type: ignore[no-redef]
    out: list = [np.ndarray, np.dtype]
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out.append((multiarray.scalar, f"{mod}.scalar"))
        out.append((multiarray._reconstruct, f"{mod}._reconstruct"))
    out.extend(type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool"))
    return out


def _unsafe_globals(path: Path, message: str) -> list[str]:
    import re

    import torch

    try:
        names = list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # legacy (non-zip) pickles: torch names the global in its message
        names = []
    allowed = {f"{g[1]}" if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}" for g in _numpy_safe_globals()}
    names = [n for n in names if n not in allowed]
    return names or re.findall(r"Unsupported global: GLOBAL ([\w.]+)", message)


def _torch_load(path: Path) -> Any:
    import torch

    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        names = _unsafe_globals(path, str(exc))
        if names:
            raise CheckpointError(
                f"{path} needs arbitrary Python objects to load ({', '.join(names)}); edgeseg never unpickles them",
                "re-save only its state_dict (or convert it to .safetensors) from code you trust",
            ) from exc
        raise CheckpointError(f"{path} is not a PyTorch checkpoint", "pass a .pth/.pt/.safetensors file or a Hugging Face model directory") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        first = str(exc).splitlines()[0].split(". ")[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path} is truncated or corrupt ({first})", "re-download or re-save the checkpoint") from exc
    except Exception as exc:  # the unpickler fails in many ways on files that are not checkpoints
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({type(exc).__name__})",
                              "pass a .pth/.pt/.safetensors file or a Hugging Face model directory") from exc


def _safetensors_load(path: Path) -> tuple[dict, dict]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})", "re-download or re-export it") from exc
    return sd, meta


def _unwrap(obj: Any, path: Path) -> tuple[dict, str | None, dict]:
    import torch

    wrapper = None
    extra: dict = {}
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state", "module"):
            if key in obj and isinstance(obj[key], dict) and not isinstance(obj[key], torch.Tensor):
                extra = {k: v for k, v in obj.items() if k != key}
                obj, wrapper = obj[key], key
                break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path} holds no state dict (found {type(obj).__name__})", "pass a checkpoint that stores model weights")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path} holds a dict, but not of tensors (e.g. {bad[0]!r})", "pass a checkpoint that stores model weights")
    keys = list(obj)
    if all(k.startswith("module.") for k in keys):
        obj = {k[len("module."):]: v for k, v in obj.items()}
        wrapper = f"{wrapper}+module." if wrapper else "module."
    return dict(obj), wrapper, extra


def _read_hf_dir(path: Path) -> RawCheckpoint:
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{path} is a directory without config.json", "pass a Hugging Face model directory or a checkpoint file")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{cfg_path} is not valid JSON ({exc})", "fix or re-download config.json") from exc
    files: list[Path] = []
    for idx in _HF_INDEXES:
        if (path / idx).is_file():
            weight_map = json.loads((path / idx).read_text()).get("weight_map", {})
            files = [path / f for f in sorted(set(weight_map.values()))]
            break
    else:
        files = [path / f for f in _HF_WEIGHTS if (path / f).is_file()][:1]
    if not files:
        raise CheckpointError(f"{path} has no weights ({' or '.join(_HF_WEIGHTS)})", "add the weights file next to config.json")
    sd: dict = {}
    for f in files:
        if f.suffix == ".safetensors":
            part, _ = _safetensors_load(f)
        else:
            part, _, _ = _unwrap(_torch_load(f), f)
        sd.update(part)
    # A timm hub folder has the same files, but its config.json is timm's, not transformers'.
    fmt = "timm-hub" if is_timm_hub_config(config) else "hf-dir"
    return RawCheckpoint(path=path, format=fmt, state_dict=sd, config=config)


def read_checkpoint(path: str | Path) -> RawCheckpoint:
    """Read a .pth/.pt/.bin, .safetensors or Hugging Face directory into tensors, safely."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist", "check the path")
    if path.is_dir():
        raw = _read_hf_dir(path)
    elif path.suffix == ".safetensors":
        sd, meta = _safetensors_load(path)
        raw = RawCheckpoint(path=path, format="safetensors", state_dict=sd, metadata=meta)
    else:
        if path.stat().st_size == 0:
            raise CheckpointError(f"{path} is empty", "re-download or re-save the checkpoint")
        sd, wrapper, extra = _unwrap(_torch_load(path), path)
        raw = RawCheckpoint(path=path, format="torch", state_dict=sd, wrapper=wrapper, extra=extra)
    raw.sha256 = artifact_sha256(path)
    return raw
