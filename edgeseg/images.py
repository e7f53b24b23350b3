"""Images in, model inputs out: the one place edgeseg lists, decodes, resizes and normalizes
images (parity inputs, int8 calibration, the fp16 preflight, Core ML image inputs).

Preprocessing is what the model was trained with: resize (cover then centre-crop, or stretch),
scale to [0, 1], the model's channel order (`ModelInfo.channel_order`: EdgeFormer's ml-cvnets
models read OpenCV's BGR), then (x - mean) / std with mean/std given in that channel order.

Parity inputs are natural images (bundled, or the user's) plus seeded random tensors: random
inputs alone miss what natural statistics exercise (large smooth regions, saturated channels);
images alone miss out-of-range values."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from edgeseg.errors import EdgesegError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
RESIZE_MODES = ("crop", "stretch")
CHANNEL_ORDERS = ("rgb", "bgr")


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
    """The small set of natural images shipped with edgeseg (see edgeseg/data/images/LICENSE.md)."""
    d = Path(__file__).resolve().parent / "data" / "images"
    return sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if d.is_dir() else []


def list_images(directory: str | Path, *, recursive: bool = False, limit: int | None = None, option: str = "--images") -> list[Path]:
    """Image files in `directory` (with `recursive`, below it too), sorted so runs are reproducible."""
    d = Path(directory)
    if not d.is_dir():
        raise EdgesegError(f"image directory {d} does not exist", f"pass {option} DIR with JPEG/PNG images")
    found = sorted(p for p in (d.rglob("*") if recursive else d.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise EdgesegError(f"no images in {d}", f"put {', '.join(IMAGE_SUFFIXES[:3])} files there")
    return found[:limit] if limit else found


@dataclass(frozen=True)
class Preprocess:
    size: tuple[int, int]  # H, W
    mean: tuple[float, ...]  # in the model's channel order
    std: tuple[float, ...]
    resize: str = "crop"  # crop: cover HxW then centre crop; stretch: straight to HxW
    channel_order: str = "rgb"  # what the model reads: "bgr" for models trained on OpenCV-decoded images

    def __post_init__(self):
        if self.resize not in RESIZE_MODES:
            raise EdgesegError(f"unknown resize mode {self.resize!r}", f"use one of: {', '.join(RESIZE_MODES)}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise EdgesegError(f"invalid normalization mean={self.mean} std={self.std}", "three channels, std > 0")
        if self.channel_order not in CHANNEL_ORDERS:
            raise EdgesegError(f"unknown channel order {self.channel_order!r}", f"use one of: {', '.join(CHANNEL_ORDERS)}")

    @classmethod
    def for_model(cls, info, size: Sequence[int], resize: str = "crop") -> "Preprocess":
        """What `info` (a ModelInfo) was trained with, at `size`."""
        return cls((int(size[0]), int(size[1])), tuple(info.mean), tuple(info.std), resize=resize,
                   channel_order=getattr(info, "channel_order", "rgb"))

    def to_pixels(self, path: Path) -> np.ndarray:
        """uint8 HxWx3 at the target size, in the model's channel order."""
        from PIL import Image, UnidentifiedImageError  # lazy: Pillow loads only when images are read

        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                h, w = self.size
                if self.resize == "stretch":
                    im = im.resize((w, h), Image.BILINEAR)
                else:
                    scale = max(h / im.height, w / im.width)
                    rw, rh = max(w, round(im.width * scale)), max(h, round(im.height * scale))
                    im = im.resize((rw, rh), Image.BILINEAR)
                    left, top = (rw - w) // 2, (rh - h) // 2
                    im = im.crop((left, top, left + w, top + h))
                pixels = np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as exc:
            raise EdgesegError(f"cannot read image {path} ({exc.__class__.__name__})", "remove it or convert it to JPEG/PNG") from exc
        return np.ascontiguousarray(pixels[..., ::-1]) if self.channel_order == "bgr" else pixels

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 -> 3xHxW float32 normalized."""
        x = pixels.astype(np.float32).transpose(2, 0, 1) / 255.0
        mean = np.asarray(self.mean, dtype=np.float32).reshape(3, 1, 1)
        std = np.asarray(self.std, dtype=np.float32).reshape(3, 1, 1)
        return (x - mean) / std

    def load(self, path: Path) -> np.ndarray:
        return self.normalize(self.to_pixels(path))

    def key(self) -> dict:
        """What a calibration cache is keyed on (RGB models keep the key they always had)."""
        d = {**asdict(self), "size": list(self.size), "mean": list(self.mean), "std": list(self.std)}
        if self.channel_order == "rgb":
            d.pop("channel_order")
        return d


def preprocess(path: Path, size: tuple[int, int], mean: Sequence[float], std: Sequence[float], channel_order: str = "rgb") -> np.ndarray:
    """Resize so the image covers HxW, centre-crop, scale to [0,1], channel order, normalize: (3, H, W)."""
    return Preprocess((int(size[0]), int(size[1])), tuple(mean), tuple(std), channel_order=channel_order).load(path)


def make_inputs(input_size: tuple[int, int], mean: Sequence[float], std: Sequence[float], *, batch: int = 1,
                images: str | Path | None = None, bundled: bool = True, max_images: int | None = None,
                random_batches: int = 1, seed: int | None = None, channel_order: str = "rgb") -> InputSet:
    """Image batches (cycled to fill the last one) then `random_batches` N(0,1) batches."""
    seed = int.from_bytes(os.urandom(4), "little") if seed is None else int(seed)
    paths = list(bundled_images()) if bundled else []
    if images is not None:
        paths += list_images(images)
    if max_images is not None:
        paths = paths[:max_images]
    size = (int(input_size[0]), int(input_size[1]))
    samples: list[InputSample] = []
    prep = Preprocess(size, tuple(mean), tuple(std), channel_order=channel_order)
    pre = [prep.load(p) for p in paths]
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
