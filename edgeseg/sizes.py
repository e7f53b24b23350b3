"""Input sizes as users write them: `HxW`, `H,W` or one number for a square."""

from __future__ import annotations

from edgeseg.errors import EdgesegError


def parse_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.lower().replace(",", "x").split("x")
    try:
        dims = [int(p) for p in parts if p.strip()]
    except ValueError:
        dims = []
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2 or min(dims) <= 0:
        raise EdgesegError(f"invalid input size {text!r}", "use HxW, e.g. 256x256, or one number")
    return dims[0], dims[1]
