"""`edgeseg reparam`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgeseg.cli.app import app
from edgeseg.cli.common import (ARCH_OPTION, INPUT_SIZE_OPTION, JSON_OPTION, MAX_ITERATIONS, OVERWRITE_OPTION, emit, fmt_count, number_option, parse_size, steps)


def render_reparam(con, s: dict) -> None:
    from rich.table import Table

    con.print(f"[bold]{s['arch']}[/] ({s['layout']}) from {s['source']}")
    blocks = ", ".join(f"{k} x{v}" for k, v in s["fused_blocks"].items()) or "nothing (already fused)"
    con.print(f"fused: {blocks}")
    t = Table()
    t.add_column("")
    t.add_column("before", justify="right")
    t.add_column("after", justify="right")
    t.add_row("params", fmt_count(s["params"]["before"]), fmt_count(s["params"]["after"]))
    t.add_row(f"MACs @ {s['input_size'][0]}x{s['input_size'][1]}", fmt_count(s["macs"]["before"]), fmt_count(s["macs"]["after"]))
    lat = s.get("latency_ms")
    if lat:
        ratio = f"x{lat['speedup']:.2f}" + (" [yellow]unreliable[/]" if lat.get("unreliable") else "")
        t.add_row(f"host latency (median of {lat['iterations']}, ms)", f"{lat['before']['median_ms']:.2f}", f"{lat['after']['median_ms']:.2f}  ({ratio})")
    con.print(t)
    for flag in (lat or {}).get("unreliable", []):
        con.print(f"[yellow]timing not reliable:[/] {flag}; the speed ratio is noise, not a result")
    eq = s.get("equivalence")
    if eq:
        sizes = ", ".join("x".join(map(str, r["input_size"])) for r in eq["sizes"])
        con.print(f"equivalence ({sizes}, seed {eq['seed']}): max abs {eq['max_abs']:.3g}, max rel {eq['max_rel']:.3g} "
                  f"(tolerance {eq['tolerance_rel']:.0e}) [green]PASS[/]")
    else:
        con.print("equivalence: [yellow]not verified (--no-verify)[/]")
    con.print(f"wrote {s['output']}")


@app.command("reparam", epilog="Example: edgeseg reparam fastvit_sa12.pth --iterations 20")
def reparam_cmd(
    ckpt: Path = typer.Argument(..., help="Checkpoint file or Hugging Face directory."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Deploy checkpoint (.safetensors); default CKPT.deploy.safetensors."),
    arch: Optional[str] = ARCH_OPTION,
    input_size: Optional[str] = INPUT_SIZE_OPTION,
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check fused == unfused on random inputs (default on)."),
    iterations: int = number_option(10, "--iterations", "--latency-iterations", "-n", lo=0, hi=MAX_ITERATIONS, help="Host latency iterations before/after (0 skips)."),
    overwrite: bool = OVERWRITE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Fuse every train-time branch into single convs, verify, and write a deploy checkpoint."""
    from edgeseg.reparam_job import reparam_checkpoint  # lazy: keeps `edgeseg --help` fast

    summary = reparam_checkpoint(ckpt, output, arch=arch, input_size=parse_size(input_size), verify=verify, overwrite=overwrite,
                                 latency_iterations=iterations, progress=steps(as_json))
    emit(summary, as_json, lambda con: render_reparam(con, summary))
