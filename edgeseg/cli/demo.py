"""`edgeseg demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgeseg.cli.app import app
from edgeseg.cli.common import JSON_OPTION, console, emit


@app.command("demo")
def demo_cmd(
    model: Optional[str] = typer.Option(None, "--model", help="Registered model to run (default fastvit_t8)."),
    workdir: Path = typer.Option(Path("edgeseg-demo"), "--workdir", help="Where the demo writes its files."),
    seed: int = typer.Option(0, "--seed", help="Seed of the demo weights."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Run the pipeline end to end on a built-in model (no downloads needed)."""
    from edgeseg.cli.reparam import render_reparam
    from edgeseg.demo import run_demo

    log = console(stderr=True)
    result = run_demo(model, workdir, seed=seed, progress=lambda m: None if as_json else log.print(f"[dim]>> {m}[/]"))

    def render(con):
        con.print(f"[bold]edgeseg demo[/]: {result['model']} saved as {result['checkpoint']} ({result['checkpoint_layout']})")
        render_reparam(con, result["reparam"])

    emit(result, as_json, render)
