"""Expected state-dict signatures (key -> shape, parameter count) of registered models.

Detection compares a checkpoint with every candidate (variant x layout x fused), and each
signature costs a meta-device build (plus a meta reparameterization for the fused ones):
0.1-1.5 s of CPU per candidate. Signatures of the built-in models are therefore kept on disk
in the user cache directory, keyed by everything that decides them: the model's name and
config, fused or not, the deploy size, the versions of edgeseg and torch and the bytes of the
model and reparameterization sources. A changed source gives a new key, so a stale signature
is never read; a cache file that does not parse is recomputed. The cache holds only JSON
(names, integers); nothing in it chooses code. Models registered from outside edgeseg (their
code may import anything) are kept in memory only.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any, Callable

from edgeseg.hashing import hasher

CACHE_VERSION = 1
_DISABLE_ENV = "EDGESEG_NO_SIGNATURE_CACHE"


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """sha256 over the sources that decide a built-in model's keys and shapes."""
    import importlib.util
    from importlib.metadata import PackageNotFoundError, version

    from edgeseg import __version__

    # The installed torch's version from its metadata and the packages' folders from their
    # specs: importing torch or the packages here would cost `info` over a second.
    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = "none"
    h = hasher(f"v{CACHE_VERSION}|edgeseg {__version__}|torch {torch_version}".encode())
    for pkg in ("edgeseg.models", "edgeseg.reparam", "edgeseg.checkpoint"):
        for root in importlib.util.find_spec(pkg).submodule_search_locations:
            for path in sorted(Path(root).rglob("*.py")):
                h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:24]


def cacheable(factory: Callable[..., Any]) -> bool:
    return getattr(factory, "__module__", "").startswith("edgeseg.models.")


def cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("edgeseg")) / "signatures" / code_fingerprint()


def _valid(data: Any) -> bool:
    return (isinstance(data, dict) and isinstance(data.get("params"), int) and isinstance(data.get("shapes"), dict)
            and all(isinstance(k, str) and isinstance(v, list) and all(isinstance(d, int) for d in v) for k, v in data["shapes"].items()))


def cached(key: dict[str, Any], compute: Callable[[], dict[str, Any]], *, persist: bool) -> dict[str, Any]:
    """The signature for `key` from disk, or `compute()` (then stored when `persist`)."""
    if not persist or os.environ.get(_DISABLE_ENV):
        return compute()
    text = json.dumps(key, sort_keys=True)
    path = cache_dir() / f"{hasher(text.encode()).hexdigest()[:32]}.json"
    try:
        data = json.loads(path.read_text())
        if data.get("key") == json.loads(text) and _valid(data):
            return data
    except (OSError, ValueError, AttributeError):
        pass
    data = {"key": json.loads(text), **compute()}
    try:  # best effort: a read-only cache directory only costs speed
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except OSError:
        pass
    return data
