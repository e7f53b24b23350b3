"""Shared CLI helpers: options, size parsing, JSON or Rich output."""

from __future__ import annotations

import json
import math
import sys
from typing import Any, Callable

import typer

from edgeseg.sizes import parse_size  # noqa: F401  (the CLI modules take it from here)

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


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def steps(as_json: bool = False):
    """Progress of long steps on stderr (stdout stays the result; none with --json)."""
    from edgeseg.progress import Steps

    return Steps(console(stderr=True), enabled=not as_json)


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


# One SSH option group, identical on every command that reaches a device (bench, export, devices calibrate).
SSH_PANEL = "Device over SSH"
HOST_OPTION = typer.Option(None, "--host", help="user@address[:port] of the device (or of the Mac for iPhones).", rich_help_panel=SSH_PANEL)
IDENTITY_OPTION = typer.Option(None, "--identity", "-i", help="SSH private key (default: your SSH agent / ~/.ssh keys).", rich_help_panel=SSH_PANEL)
KNOWN_HOSTS_OPTION = typer.Option(None, "--known-hosts", help="known_hosts file that verifies the device (default ~/.ssh/known_hosts).",
                                  rich_help_panel=SSH_PANEL)
PORT_OPTION = number_option(None, "--port", lo=1, hi=65535, help="SSH port (or give it in --host).", rich_help_panel=SSH_PANEL)
SAMPLES_OPTION = number_option(2, "--samples", lo=0, hi=10000, help="Parity: seeded random-input batches besides the images.")
DEVICE_HELP = "Device profile (`edgeseg devices`)"
