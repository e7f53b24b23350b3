"""Class names and colour palettes: the bundled public label sets (ImageNet-1k, ADE20K-150,
Pascal VOC-21; sources in LICENSE.md beside this file) and user label files.

Label files are data: one class name per line, in class-index order. Nothing in them is run.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from edgeseg.errors import EdgesegError

_DIR = Path(__file__).resolve().parent
MAX_LABEL_FILE_BYTES = 4 << 20

# label-set name (as models register it, `ModelEntry.labels`) -> (file stem, classes)
LABEL_SETS = {
    "imagenet": ("imagenet-1k", 1000),
    "ade20k": ("ade20k-150", 150),
    "pascal_voc": ("voc-21", 21),
}
_ALIASES = {"imagenet-1k": "imagenet", "imagenet1k": "imagenet", "ade20k-150": "ade20k", "ade": "ade20k",
            "voc": "pascal_voc", "voc-21": "pascal_voc", "pascal-voc": "pascal_voc"}


@dataclass(frozen=True)
class Labels:
    """Names (and, for segmentation, colours) of a model's classes."""

    names: tuple[str, ...]
    source: str  # "imagenet", "ade20k", "pascal_voc", a file path, "artifact", or "generic"
    palette: tuple[tuple[int, int, int], ...] = ()

    def name(self, index: int) -> str:
        return self.names[index] if 0 <= index < len(self.names) else f"class {index}"

    def colour(self, index: int) -> tuple[int, int, int]:
        pal = self.palette or generic_palette(max(len(self.names), index + 1))
        return pal[index % len(pal)]


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def canonical(name: str) -> str:
    """A label-set name as LABEL_SETS spells it (aliases: imagenet-1k, ade20k-150, voc, ...)."""
    return _ALIASES.get(name, name)


@lru_cache(maxsize=None)
def bundled(name: str) -> Labels:
    """A bundled label set by name (`imagenet`, `ade20k`, `pascal_voc`, or an alias)."""
    key = _ALIASES.get(name, name)
    if key not in LABEL_SETS:
        raise EdgesegError(f"unknown label set {name!r}", f"choose one of: {', '.join(LABEL_SETS)}, or pass --labels FILE")
    stem, count = LABEL_SETS[key]
    names = _read_lines(_DIR / f"{stem}.txt")
    if len(names) != count:  # a damaged install must not mislabel predictions
        raise EdgesegError(f"bundled label file {stem}.txt has {len(names)} names, not {count}", "reinstall edgeseg")
    pal_file = _DIR / f"{stem}.palette.txt"
    palette = tuple(tuple(int(v) for v in line.split()) for line in _read_lines(pal_file)) if pal_file.is_file() else ()
    return Labels(tuple(names), key, palette)  # type: ignore[arg-type]


def read_label_file(path: str | Path, num_classes: int | None = None) -> Labels:
    """A user label file: one class name per line (blank lines ignored), class-index order."""
    path = Path(path)
    if not path.is_file():
        raise EdgesegError(f"labels file {path} does not exist", "pass a text file with one class name per line")
    if path.stat().st_size > MAX_LABEL_FILE_BYTES:
        raise EdgesegError(f"labels file {path} is larger than 4 MiB", "pass a text file with one class name per line")
    try:
        names = _read_lines(path)
    except UnicodeDecodeError as exc:
        raise EdgesegError(f"labels file {path} is not UTF-8 text", "save it as UTF-8, one class name per line") from exc
    check_count(names, num_classes, str(path))
    return Labels(tuple(names), str(path))


def check_count(names, num_classes: int | None, where: str) -> None:
    if num_classes is not None and len(names) != num_classes:
        raise EdgesegError(f"{where} has {len(names)} labels for a model with {num_classes} classes",
                           "pass one label per class, in class order")


def generic(num_classes: int) -> Labels:
    return Labels(tuple(f"class {i}" for i in range(num_classes)), "generic")


def resolve(num_classes: int, *, names: list[str] | None = None, label_set: str | None = None, file: str | Path | None = None) -> Labels:
    """The labels to show for a model with `num_classes` outputs, most specific first: a user file,
    names the artifact carries, the label set it records, then the public set of that size."""
    if file is not None:
        labels = read_label_file(file, num_classes)
    elif names:
        check_count(names, num_classes, "the artifact")
        labels = Labels(tuple(names), "artifact")
    elif label_set and _ALIASES.get(label_set, label_set) in LABEL_SETS and LABEL_SETS[_ALIASES.get(label_set, label_set)][1] == num_classes:
        labels = bundled(label_set)
    else:
        by_size = [k for k, (_, n) in LABEL_SETS.items() if n == num_classes]
        labels = bundled(by_size[0]) if by_size else generic(num_classes)
    if not labels.palette:
        by_size = [k for k, (_, n) in LABEL_SETS.items() if n == num_classes and (_DIR / f"{LABEL_SETS[k][0]}.palette.txt").is_file()]
        palette = bundled(by_size[0]).palette if by_size else generic_palette(num_classes)
        labels = Labels(labels.names, labels.source, palette)
    return labels


def generic_palette(n: int) -> tuple[tuple[int, int, int], ...]:
    """Distinct colours for label sets without a published palette (golden-ratio hue steps)."""
    out = []
    for i in range(max(n, 1)):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.65 + 0.35 * (i % 2), 0.95 - 0.3 * ((i // 2) % 2))
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return tuple(out)
