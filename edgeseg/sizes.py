"""Input sizes as users write them: `HxW`, `H,W` or one number for a square."""

from __future__ import annotations

import os

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
    check_input_size(dims[0], dims[1])
    return dims[0], dims[1]


MAX_SIDE = 16384
# A lower bound on the peak activation memory per input pixel of any model edgeseg runs: the
# fp32 input (12 B) plus the first feature maps (16-64 channels at 1/2 resolution). Real models
# need more, so a size refused here could never have run.
MIN_BYTES_PER_PIXEL = 64


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_input_size(h: int, w: int) -> None:
    """Refuse sizes that cannot fit in memory, before anything is allocated."""
    if max(h, w) > MAX_SIDE:
        raise EdgesegError(f"input size {h}x{w} is over {MAX_SIDE} per side, more than fits in memory for any model here",
                           "pass a smaller --input-size")
    mem = physical_memory()
    need = h * w * MIN_BYTES_PER_PIXEL
    if mem and need > mem:
        raise EdgesegError(f"input size {h}x{w} needs at least {need / 2**30:.0f} GiB of activation memory, "
                           f"more than this machine's {mem / 2**30:.0f} GiB", "pass a smaller --input-size")
