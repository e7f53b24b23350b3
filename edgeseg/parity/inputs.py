"""Parity inputs: natural images (bundled, or the user's) preprocessed with the model's
mean/std, plus seeded random tensors. Random inputs alone miss what natural statistics
exercise (large smooth regions, saturated channels); images alone miss out-of-range values."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from edgeseg.errors import EdgesegError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass
class InputSample:
    name: str
    kind: str  # "image" | "random"
    array: np.ndarray  # (N, 3, H, W) float32, preprocessed
    sources: list[str] = field(default_factory=list)
    seed: int | None = None


@dataclass
class InputSet:
    samples: list[InputSample]
    seed: int
    images: list[str]
    input_size: tuple[int, int]
    batch: int

    def describe(self) -> dict:
        return {"seed": self.seed, "images": self.images, "random_batches": sum(s.kind == "random" for s in self.samples),
                "input_size": list(self.input_size), "batch": self.batch, "samples": [s.name for s in self.samples]}


def bundled_images() -> list[Path]:
    d = Path(__file__).resolve().parent.parent / "data" / "images"
    return sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if d.is_dir() else []


def list_images(directory: str | Path) -> list[Path]:
    d = Path(directory)
    if not d.is_dir():
        raise EdgesegError(f"image directory {d} does not exist", "pass a directory of .jpg/.png files to --images")
    found = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise EdgesegError(f"no images in {d}", f"put {', '.join(IMAGE_SUFFIXES[:3])} files there")
    return found


def preprocess(path: Path, size: tuple[int, int], mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Resize so the image covers HxW, centre-crop, scale to [0,1], normalize: (3, H, W)."""
    return preprocess_image(open_image(path), size, mean, std)


def open_image(path: str | Path):
    """An RGB PIL image, or one clear error."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except OSError as exc:
        raise EdgesegError(f"cannot read image {path} ({exc})", "pass readable .jpg/.png files") from exc


def preprocess_image(im, size: tuple[int, int], mean: Sequence[float], std: Sequence[float], *, fit: str = "cover",
                     channel_order: str = "rgb") -> np.ndarray:
    """RGB PIL image -> normalized (3, H, W) float32.

    fit="cover": resize so the image covers HxW and centre-crop (classification evaluation);
    fit="stretch": resize the whole image to HxW (segmentation: every pixel gets a label).
    channel_order="bgr" reverses the channels before normalizing (models trained on OpenCV decodes).
    """
    from PIL import Image

    h, w = size
    if fit == "stretch":
        im = im.resize((w, h), Image.BILINEAR)
    else:
        s = max(h / im.height, w / im.width)
        nh, nw = max(h, round(im.height * s)), max(w, round(im.width * s))
        im = im.resize((nw, nh), Image.BILINEAR)
        top, left = (nh - h) // 2, (nw - w) // 2
        im = im.crop((left, top, left + w, top + h))
    arr = np.asarray(im, dtype=np.float32) / 255.0
    if channel_order == "bgr":
        arr = arr[..., ::-1]
    arr = (arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def make_inputs(input_size: tuple[int, int], mean: Sequence[float], std: Sequence[float], *, batch: int = 1,
                images: str | Path | None = None, bundled: bool = True, max_images: int | None = None,
                random_batches: int = 1, seed: int | None = None) -> InputSet:
    """Image batches (cycled to fill the last one) then `random_batches` N(0,1) batches."""
    seed = int.from_bytes(os.urandom(4), "little") if seed is None else int(seed)
    paths = list(bundled_images()) if bundled else []
    if images is not None:
        paths += list_images(images)
    if max_images is not None:
        paths = paths[:max_images]
    size = (int(input_size[0]), int(input_size[1]))
    samples: list[InputSample] = []
    pre = [preprocess(p, size, mean, std) for p in paths]
    for start in range(0, len(pre), batch):
        idx = [(start + j) % len(pre) for j in range(batch)]
        samples.append(InputSample(name="+".join(paths[i].name for i in idx), kind="image",
                                   array=np.stack([pre[i] for i in idx]).astype(np.float32), sources=[str(paths[i]) for i in idx]))
    rng = np.random.default_rng(seed)
    for k in range(random_batches):
        arr = rng.standard_normal((batch, 3, *size), dtype=np.float32)
        samples.append(InputSample(name=f"random#{k}(seed={seed})", kind="random", array=arr, seed=seed))
    if not samples:
        raise EdgesegError("no parity inputs", "keep the bundled images, pass --images DIR, or use --samples 1 or more")
    return InputSet(samples=samples, seed=seed, images=[str(p) for p in paths], input_size=size, batch=batch)
