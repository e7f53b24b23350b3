"""Read checkpoint files without ever executing pickled code."""

from __future__ import annotations

import json
import pickle
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeseg.checkpoint.tensor_meta import TensorMeta, is_meta
from edgeseg.checkpoint.timm_hub import is_timm_hub_config
from edgeseg.errors import CheckpointError
from edgeseg.hashing import artifact_sha256, files_sha256

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
    # False: state_dict holds TensorMeta (shapes and dtypes) and no tensor bytes were read
    values: bool = True


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


def _legacy_globals(path: Path) -> list[str]:
    """The globals a legacy (non-zip) pickle would import, read with pickletools (never executed)."""
    import pickletools
    import zipfile as _zip

    if _zip.is_zipfile(path):
        return []
    names: list[str] = []
    strings: list[str] = []
    try:
        with open(path, "rb") as f:
            size = path.stat().st_size
            while f.tell() < size:  # torch's legacy format is several pickles in a row
                for op, arg, _ in pickletools.genops(f):
                    if op.name in ("GLOBAL", "INST") and isinstance(arg, str):
                        names.append(arg.replace(" ", "."))
                    elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                        names.append(f"{strings[-2]}.{strings[-1]}")
                    elif isinstance(arg, str):
                        strings.append(arg)
    except Exception:  # raw tensor bytes follow the pickles, or the stream is damaged: keep what was found
        pass
    allowed = ("torch.", "collections.OrderedDict", "numpy.")
    return sorted({n for n in names if not n.startswith(allowed)})


def _torch_load(path: Path) -> Any:
    import torch

    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        names = _unsafe_globals(path, str(exc)) or _legacy_globals(path)
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
        names = _legacy_globals(path)
        if names:
            raise CheckpointError(
                f"{path} needs arbitrary Python objects to load ({', '.join(names)}); edgeseg never unpickles them",
                "re-save only its state_dict (or convert it to .safetensors) from code you trust",
            ) from exc
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


_ST_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
              "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def _safetensors_shapes(path: Path) -> tuple[dict, dict]:
    """Shapes and dtypes from a safetensors header only: the numpy framework keeps torch out,
    and get_slice reads no tensor data."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = dict(f.metadata() or {})
            sd = {k: _slice_meta(f.get_slice(k)) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})", "re-download or re-export it") from exc
    return sd, meta


def _slice_meta(sl: Any) -> TensorMeta:
    code = sl.get_dtype()
    # dtypes outside the table (float8, ...) keep safetensors' own name rather than guess one
    return TensorMeta(tuple(sl.get_shape()), _ST_DTYPES.get(code, code.lower()))


def _as_meta(v: Any) -> Any:
    """A tensor read by torch (the fallback for files the shape reader does not handle) as TensorMeta."""
    if is_meta(v) or not _is_tensor(v):
        return v
    return TensorMeta.like(v)


def _torch_shapes(path: Path) -> Any:
    from edgeseg.checkpoint.pickle_shapes import CorruptCheckpoint, UnsupportedPickle, read_torch_shapes

    try:
        return read_torch_shapes(path)
    except (UnsupportedPickle, OSError):
        # torch's weights_only loader decides: it reads what it supports, and its refusals carry
        # the established messages (arbitrary globals, not a checkpoint, ...)
        return _torch_load(path)
    except CorruptCheckpoint as exc:
        raise CheckpointError(f"{path} is truncated or corrupt ({exc})", "re-download or re-save the checkpoint") from exc


def _is_tensor(v: Any) -> bool:
    if is_meta(v):
        return True
    # Nothing can be a torch.Tensor while torch was never imported: the shape path stays torch-free.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(v, torch.Tensor)


def _unwrap(obj: Any, path: Path) -> tuple[dict, str | None, dict]:
    wrapper = None
    extra: dict = {}
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state", "module"):
            if key in obj and isinstance(obj[key], dict) and not _is_tensor(obj[key]):
                extra = {k: v for k, v in obj.items() if k != key}
                obj, wrapper = obj[key], key
                break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path} holds no state dict (found {type(obj).__name__})", "pass a checkpoint that stores model weights")
    bad = [k for k, v in obj.items() if not _is_tensor(v)]
    if bad:
        raise CheckpointError(f"{path} holds a dict, but not of tensors (e.g. {bad[0]!r})", "pass a checkpoint that stores model weights")
    keys = list(obj)
    if all(k.startswith("module.") for k in keys):
        obj = {k[len("module."):]: v for k, v in obj.items()}
        wrapper = f"{wrapper}+module." if wrapper else "module."
    return dict(obj), wrapper, extra


def _inside(root: Path, name: Any, source: Path) -> Path:
    """`name` from an index file, resolved (after symlinks) and required to stay inside `root`."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise CheckpointError(f"{source} names an invalid weights file {name!r}", "fix or re-download the index file")
    target = (root / name).resolve()
    if not target.is_relative_to(root.resolve()):
        raise CheckpointError(f"{source} points outside {root} ({name!r}); edgeseg reads only files inside the checkpoint directory",
                              "fix or re-download the index file")
    return target


def _read_json_object(path: Path) -> dict:
    """A JSON object from an untrusted file, or one clear CheckpointError."""
    fix = f"fix or re-download {path.name}"
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(f"{path} is not UTF-8 text", fix) from None
    except RecursionError:
        raise CheckpointError(f"{path} is nested too deeply to be a config", fix) from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})", fix) from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path} ({exc.strerror or exc})", "check the file's permissions") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object, not a {type(data).__name__}", fix)
    return data


def _read_hf_dir(path: Path, values: bool = True) -> RawCheckpoint:
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{path} is a directory without config.json", "pass a Hugging Face model directory or a checkpoint file")
    config = _read_json_object(_inside(path, "config.json", path))
    loaded: list[Path] = [_inside(path, "config.json", path)]  # every file read, for the source hash
    files: list[Path] = []
    for idx in _HF_INDEXES:
        if (path / idx).is_file():
            index_path = _inside(path, idx, path)
            weight_map = _read_json_object(index_path).get("weight_map", {})
            if not isinstance(weight_map, dict) or not weight_map:
                raise CheckpointError(f"{index_path} has no weight_map object", f"fix or re-download {idx}")
            loaded.append(index_path)
            files = [_inside(path, f, index_path) for f in sorted(set(map(str, weight_map.values())))]
            break
    else:
        files = [_inside(path, f, path) for f in _HF_WEIGHTS if (path / f).is_file()][:1]
    if not files:
        raise CheckpointError(f"{path} has no weights ({' or '.join(_HF_WEIGHTS)})", "add the weights file next to config.json")
    sd: dict = {}
    for f in files:
        if not f.is_file():
            raise CheckpointError(f"{path} lists a weights file that is missing ({f.name})", "re-download the checkpoint")
        if f.suffix == ".safetensors":
            part, _ = _safetensors_load(f) if values else _safetensors_shapes(f)
        else:
            part, _, _ = _unwrap(_torch_load(f) if values else _torch_shapes(f), f)
        sd.update(part)
        loaded.append(f)
    # A timm hub folder has the same files, but its config.json is timm's, not transformers'.
    fmt = "timm-hub" if is_timm_hub_config(config) else "hf-dir"
    raw = RawCheckpoint(path=path, format=fmt, state_dict=sd, config=config)
    raw.sha256 = files_sha256(loaded, path)
    return raw


def read_checkpoint(path: str | Path, *, values: bool = True) -> RawCheckpoint:
    """Read a .pth/.pt/.bin, .safetensors or Hugging Face directory into tensors, safely.

    values=False reads only keys, shapes and dtypes (TensorMeta), without importing torch for
    zip-format torch files and safetensors; legacy torch files still go through torch.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist", "check the path")
    if path.is_dir():
        raw = _read_hf_dir(path, values)
    elif path.suffix == ".safetensors":
        sd, meta = _safetensors_load(path) if values else _safetensors_shapes(path)
        raw = RawCheckpoint(path=path, format="safetensors", state_dict=sd, metadata=meta)
    else:
        if path.stat().st_size == 0:
            raise CheckpointError(f"{path} is empty", "re-download or re-save the checkpoint")
        sd, wrapper, extra = _unwrap(_torch_load(path) if values else _torch_shapes(path), path)
        raw = RawCheckpoint(path=path, format="torch", state_dict=sd, wrapper=wrapper, extra=extra)
    if not values:  # a file torch had to read still reports shapes only
        raw.state_dict = {k: _as_meta(v) for k, v in raw.state_dict.items()}
        raw.values = False
    if not raw.sha256:  # a HF directory is hashed over the files that were read
        raw.sha256 = artifact_sha256(path)
    return raw
