"""sha256 of artifacts, checkpoints and calibration data: one scheme everywhere, so a hash in a
manifest, a bench result or a calibration key means the same thing.

A file hashes as its bytes; a directory (.mlpackage, a Hugging Face folder) as its files in
sorted order, each as its relative POSIX path, a NUL, then its bytes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20


def hasher(data: bytes = b""):
    """A fresh sha256 (the one place edgeseg creates one)."""
    return hashlib.sha256(data)


def sha256_bytes(data: bytes) -> str:
    return hasher(data).hexdigest()


def _feed(h, path: Path) -> None:
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            h.update(block)


def file_sha256(path: str | Path) -> str:
    h = hasher()
    _feed(h, Path(path))
    return h.hexdigest()


def artifact_sha256(path: str | Path) -> str:
    """sha256 of a file, or of a directory artifact as its sorted relative paths and bytes."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    h = hasher()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode() + b"\0")
        _feed(h, f)
    return h.hexdigest()
