"""Calibration data for int8 engines: images from a directory, preprocessed exactly as the
model expects (`edgeseg.images.Preprocess`: resize, centre crop, channel order, /255,
(x - mean) / std, NCHW float32), in fixed-size batches; and the calibration cache, reused only
when it was made from the same network, inputs and preprocessing.

Pure NumPy/Pillow: nothing here needs TensorRT, so all of it is tested without it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from edgeseg import images
from edgeseg.errors import EdgesegError
from edgeseg.hashing import file_sha256, hasher
from edgeseg.images import Preprocess, bundled_images  # noqa: F401  (calibration's API)
from edgeseg.atomic import atomic_output

def list_images(directory: str | Path, limit: int | None = None) -> list[Path]:
    """Calibration images: every image below `directory` (recursively), sorted."""
    return images.list_images(directory, recursive=True, limit=limit, option="--calib-images")


class CalibrationData:
    """Batches of preprocessed images. Only full batches are served (TensorRT's calibrator
    needs exactly `batch` images per call); the remainder is dropped and reported."""

    def __init__(self, images: Sequence[Path], preprocess: Preprocess, batch: int = 1, max_images: int | None = None):
        if batch < 1:
            raise EdgesegError(f"calibration batch must be >= 1, got {batch}", "use --batch 1 or more")
        images = list(images)[:max_images] if max_images else list(images)
        if len(images) < batch:
            raise EdgesegError(f"{len(images)} calibration images for a batch of {batch}", "add images or lower the batch")
        self.images = images
        self.preprocess = preprocess
        self.batch = batch

    @property
    def num_batches(self) -> int:
        return len(self.images) // self.batch

    @property
    def used(self) -> list[Path]:
        return self.images[: self.num_batches * self.batch]

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.batch, 3, *self.preprocess.size)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[np.ndarray]:
        for b in range(self.num_batches):
            paths = self.images[b * self.batch:(b + 1) * self.batch]
            yield np.ascontiguousarray(np.stack([self.preprocess.load(p) for p in paths]), dtype=np.float32)

    def fingerprint(self) -> str:
        """Content hash of the images used and of the preprocessing: the cache key's data part."""
        h = hasher(json.dumps(self.preprocess.key(), sort_keys=True).encode())
        h.update(str(self.batch).encode())
        for p in self.used:
            h.update(file_sha256(p).encode())
        return h.hexdigest()


def parse_cache_header(data: bytes) -> dict:
    """TensorRT calibration caches start with `TRT-<version>-<algorithm>`, e.g.
    `TRT-8601-EntropyCalibration2` (version 8.6.1) or `TRT-100300-EntropyCalibration2` (10.3.0)."""
    first = data.split(b"\n", 1)[0].decode("ascii", "replace").strip()
    parts = first.split("-")
    if len(parts) < 3 or parts[0] != "TRT" or not parts[1].isdigit():
        raise EdgesegError("calibration cache has no TensorRT header", "delete the cache file to recalibrate")
    return {"trt_version_code": int(parts[1]), "algorithm": "-".join(parts[2:])}


def trt_version_code(version: str) -> int:
    """The number TensorRT writes in cache headers: 8.6.1 -> 8601, 10.3.0 -> 100300."""
    nums = [int(p) for p in version.split(".")[:3] if p.isdigit()] + [0, 0, 0]
    major, minor, patch = nums[:3]
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


@dataclass
class CacheKey:
    onnx_sha256: str
    input_shape: tuple[int, ...]
    data: str  # CalibrationData.fingerprint()
    algorithm: str = "EntropyCalibration2"

    def as_dict(self) -> dict:
        return {**asdict(self), "input_shape": list(self.input_shape)}


class CalibrationCache:
    """The cache file TensorRT writes (`<file>`) plus our key beside it (`<file>.json`).

    TensorRT trusts a cache blindly: one made for another network or other images would be
    applied silently. So a cache is served only if its key matches and its header names the
    same algorithm; otherwise `load` returns None and says why in `reason`.
    """

    def __init__(self, path: str | Path, key: CacheKey):
        self.path = Path(path)
        self.key = key
        self.reason = ""

    @property
    def key_path(self) -> Path:
        return self.path.with_name(self.path.name + ".json")

    def load(self) -> bytes | None:
        if not self.path.is_file():
            self.reason = "no cache yet"
            return None
        if not self.key_path.is_file():
            self.reason = f"{self.key_path.name} missing: cache origin unknown"
            return None
        try:
            stored = json.loads(self.key_path.read_text())
        except json.JSONDecodeError:
            self.reason = f"{self.key_path.name} is not valid JSON"
            return None
        diff = [k for k, v in self.key.as_dict().items() if stored.get(k) != v]
        if diff:
            self.reason = f"cache made for a different {', '.join(diff)}"
            return None
        data = self.path.read_bytes()
        header = parse_cache_header(data)
        if header["algorithm"] != self.key.algorithm:
            self.reason = f"cache algorithm {header['algorithm']}, expected {self.key.algorithm}"
            return None
        self.reason = "reused"
        return data

    def save(self, data: bytes) -> None:
        parse_cache_header(bytes(data))
        with atomic_output(self.path, overwrite=True) as tmp:
            tmp.write_bytes(bytes(data))
        with atomic_output(self.key_path, overwrite=True) as tmp:
            tmp.write_text(json.dumps(self.key.as_dict(), indent=2, sort_keys=True) + "\n")
