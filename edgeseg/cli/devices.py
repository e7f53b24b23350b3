"""`edgeseg devices`: list, show, validate and calibrate device profiles."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgeseg.cli.app import app
from edgeseg.cli.common import (JSON_OPTION, MAX_THREADS, emit, number_option, steps)

devices_app = typer.Typer(help="Device profiles: list, show, validate a new one, calibrate the host.", no_args_is_help=False)
app.add_typer(devices_app, name="devices")


def _summary(p, path: Path | None) -> dict:
    return {"name": p.name, "description": p.description, "runtime": p.runtime, "precisions": list(p.precisions),
            "default_precision": p.default_precision, "access": p.access.kind, "threads": p.threads,
            "software": {k: v for k, v in p.software.model_dump().items() if v}, "file": str(path) if path else None}


def _list(as_json: bool) -> None:
    from edgeseg.devices import get_profile, profile_paths, user_dir  # lazy: keeps `edgeseg --help` fast

    paths = profile_paths()
    rows = [_summary(get_profile(name), path) for name, path in sorted(paths.items())]

    def render(con):
        from rich import box
        from rich.table import Table

        t = Table(title="device profiles", box=box.SIMPLE_HEAD, pad_edge=False)
        for col in ("name", "runtime", "precisions", "reached", "software"):
            t.add_column(col)
        for r in rows:
            sw = ", ".join(f"{k} {v}" for k, v in r["software"].items() if k in ("jetpack", "tensorrt", "os")) or "-"
            t.add_row(r["name"], r["runtime"], "/".join(r["precisions"]), r["access"], sw)
        con.print(t)
        con.print(f"[dim]add a profile: drop NAME.yaml into {user_dir()} (or a directory in $EDGESEG_PROFILES); "
                  "check it with `edgeseg devices validate FILE`[/]")

    emit({"profiles": rows, "user_dir": str(user_dir())}, as_json, render)


@devices_app.callback(invoke_without_command=True)
def devices_root(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """List the device profiles (default), or show/validate/calibrate one."""
    ctx.obj = {"json": as_json}  # `devices --json list` means the same as `devices list --json`
    if ctx.invoked_subcommand is None:
        _list(as_json)


def _json(ctx: typer.Context, as_json: bool) -> bool:
    return as_json or bool((ctx.obj or {}).get("json"))


@devices_app.command("list", epilog="Example: edgeseg devices list --json")
def devices_list(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """List the device profiles."""
    _list(_json(ctx, as_json))


@devices_app.command("show", epilog="Example: edgeseg devices show jetson-nano")
def devices_show(name: str = typer.Argument(..., help="Profile name."), as_json: bool = JSON_OPTION) -> None:
    """Everything a profile states: runtime, precisions, export constraints, versions, ceilings, access."""
    from edgeseg.devices import get_profile, profile_paths  # lazy: keeps `edgeseg --help` fast

    p = get_profile(name)
    data = p.model_dump(mode="json")
    data["file"] = str(profile_paths().get(name, ""))

    def render(con):
        import yaml

        con.print(f"[bold]{p.name}[/]: {p.description}")
        con.print(f"[dim]{data['file']}[/]")
        body = {k: v for k, v in data.items() if k not in ("name", "description", "file")}
        con.print(yaml.safe_dump(body, sort_keys=False, default_flow_style=None).rstrip(), markup=False)

    emit(data, as_json, render)


@devices_app.command("validate", epilog="Example: edgeseg devices validate my-board.yaml")
def devices_validate(path: Path = typer.Argument(..., exists=True, dir_okay=False, help="A profile YAML file."),
                     as_json: bool = JSON_OPTION) -> None:
    """Check a profile file against the schema (errors name the field)."""
    from edgeseg.devices import load_profile_file  # lazy: keeps `edgeseg --help` fast

    p = load_profile_file(path)
    emit({"valid": True, "name": p.name, "file": str(path)}, as_json, lambda con: con.print(f"{path}: valid profile [bold]{p.name}[/]"))


@devices_app.command("calibrate", epilog="Example: edgeseg devices calibrate host-cpu --threads 4")
def devices_calibrate(name: str = typer.Argument("host-cpu", help="Only host-cpu is measured here."),
                      threads: Optional[int] = number_option(None, "--threads", lo=1, hi=MAX_THREADS, help="CPU threads to measure with (default: all)."),
                      as_json: bool = JSON_OPTION) -> None:
    """Measure this machine's ceilings (GEMM GFLOP/s, copy GB/s, per-layer overhead) for the latency model."""
    from edgeseg.bench.calibrate import calibrate_host  # lazy: keeps `edgeseg --help` fast
    from edgeseg.devices import get_profile  # lazy: keeps `edgeseg --help` fast
    from edgeseg.errors import EdgesegError  # lazy: keeps `edgeseg --help` fast

    p = get_profile(name)
    if not p.detect:
        raise EdgesegError(f"{name} is not this machine; only detect profiles (host-cpu) are calibrated here",
                           "edit the ceilings in its YAML with numbers measured on the device")
    with steps(as_json).step("measuring GEMM, copy bandwidth and per-layer overhead"):
        cal = calibrate_host(threads or p.threads)
    from dataclasses import asdict

    emit(asdict(cal), as_json, lambda con: con.print(f"{name}: {cal.describe()}"))
