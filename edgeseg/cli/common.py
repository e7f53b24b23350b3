"""Shared CLI helpers: options, size parsing, JSON or Rich output."""

from __future__ import annotations

import json
import sys
from typing import Any, Callable

import typer

from edgeseg.sizes import parse_size  # noqa: F401  (the CLI modules take it from here)

JSON_OPTION = typer.Option(False, "--json", help="Print machine-readable JSON instead of tables.")
ARCH_OPTION = typer.Option(None, "--arch", help="Architecture (e.g. fastvit_t8), family, or module:factory; detected when omitted.")
INPUT_SIZE_OPTION = typer.Option(None, "--input-size", help="Input size HxW (or one number for square); default from the model.")
OVERWRITE_OPTION = typer.Option(False, "--overwrite", help="Replace an existing output.")


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
PORT_OPTION = typer.Option(None, "--port", min=1, max=65535, help="SSH port (or give it in --host).", rich_help_panel=SSH_PANEL)
SAMPLES_OPTION = typer.Option(2, "--samples", min=0, help="Parity: seeded random-input batches besides the images.")
DEVICE_HELP = "Device profile (`edgeseg devices`)"
