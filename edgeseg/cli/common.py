"""Shared CLI helpers: options, size parsing, JSON or Rich output."""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Callable

import typer

from edgeseg.errors import EdgesegError

JSON_OPTION = typer.Option(False, "--json", help="Print machine-readable JSON instead of tables.")
ARCH_OPTION = typer.Option(None, "--arch", help="Architecture (e.g. fastvit_t8), family, or module:factory; detected when omitted.")
INPUT_SIZE_OPTION = typer.Option(None, "--input-size", help="Input size HxW (or one number for square); default from the model.")
OVERWRITE_OPTION = typer.Option(False, "--overwrite", help="Replace an existing output.")


RUN_ID_MAX = 2**63 - 1  # SQLite's INTEGER PRIMARY KEY range
MAX_ITERATIONS = 10**9
MAX_THREADS = 4096
MAX_BATCH = 4096
MAX_SEED = 2**32 - 1  # numpy's seed range


def check_number(value: float | int, name: str, lo: float | None = None, hi: float | None = None) -> float | int:
    """The one range check for numbers from the command line: finite and within [lo, hi].

    NaN compares false with everything, so without this a NaN threshold would silently pass
    every gate; inf would make a limit meaningless.
    """
    import typer

    ok = math.isfinite(value) and (lo is None or value >= lo) and (hi is None or value <= hi)
    if not ok:
        fmt = lambda x: str(int(x)) if float(x).is_integer() else f"{x:g}"  # noqa: E731
        if lo is not None and hi is not None:
            allowed = f"from {fmt(lo)} to {fmt(hi)}"
        elif lo is not None:
            allowed = f">= {fmt(lo)}"
        elif hi is not None:
            allowed = f"<= {fmt(hi)}"
        else:
            allowed = "finite"
        raise typer.BadParameter(f"must be a finite number {allowed}, got {value}" if allowed != "finite"
                                 else f"must be a finite number, got {value}", param_hint=f"'{name}'")
    return value


def number_option(default: Any, *decls: str, lo: float | None = None, hi: float | None = None, **kw: Any):
    """A typer.Option for a number, validated by check_number at parse time."""
    import typer

    def callback(value):
        if value is None:
            return value
        for v in value if isinstance(value, (list, tuple)) else [value]:
            check_number(v, decls[0], lo, hi)
        return value

    return typer.Option(default, *decls, callback=callback, **kw)


def number_argument(default: Any, name: str, lo: float | None = None, hi: float | None = None, **kw: Any):
    import typer

    return typer.Argument(default, callback=lambda v: v if v is None else check_number(v, name, lo, hi), **kw)


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


def check_input_size(h: int, w: int, name: str = "--input-size") -> None:
    """Refuse sizes that cannot fit in memory before anything is allocated."""
    import typer

    if max(h, w) > MAX_SIDE:
        raise typer.BadParameter(f"{h}x{w} is larger than {MAX_SIDE} per side, more than any model here can use in memory",
                                 param_hint=f"'{name}'")
    mem = physical_memory()
    need = h * w * MIN_BYTES_PER_PIXEL
    if mem and need > mem:
        raise typer.BadParameter(f"{h}x{w} needs at least {need / 2**30:.0f} GiB of activation memory, more than this machine's "
                                 f"{mem / 2**30:.0f} GiB; pick a smaller size", param_hint=f"'{name}'")


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def emit(data: dict[str, Any], as_json: bool, render: Callable[[Any], None]) -> None:
    """Print `data` as JSON, or let `render` print it for people."""
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        render(console())


def fmt_count(n: float | int | None, unit: str = "") -> str:
    if n is None:
        return "-"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3f}{suffix}{unit}"
    return f"{n}{unit}"
