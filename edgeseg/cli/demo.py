"""`edgeseg demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgeseg.cli.app import app
from edgeseg.cli.common import JSON_OPTION, console, emit


@app.command("demo", epilog="Example: edgeseg demo --model segformer_b0 --iterations 20")
def demo_cmd(
    model: Optional[str] = typer.Option(None, "--model", help="Registered model to run (default fastvit_t8)."),
    workdir: Path = typer.Option(Path("edgeseg-demo"), "--workdir", help="Where the demo writes its files."),
    seed: int = typer.Option(0, "--seed", help="Seed of the demo weights."),
    iterations: int = typer.Option(20, "--iterations", min=1, help="Host benchmark iterations per backend."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Run the pipeline end to end on a built-in model: reparam, ONNX export + parity, bench."""
    from edgeseg.cli.bench import render_results  # lazy: keeps `edgeseg --help` fast
    from edgeseg.cli.export import render_export  # lazy: keeps `edgeseg --help` fast
    from edgeseg.cli.reparam import render_reparam  # lazy: keeps `edgeseg --help` fast
    from edgeseg.demo import run_demo  # lazy: keeps `edgeseg --help` fast

    log = console(stderr=True)
    result = run_demo(model, workdir, seed=seed, iterations=iterations,
                      progress=lambda m: None if as_json else log.print(f"[dim]>> {m}[/]"))

    def render(con):
        from edgeseg.bench.result import BenchResult  # lazy: keeps `edgeseg --help` fast  # lazy: keeps `edgeseg --help` fast

        con.rule(f"[bold]edgeseg demo[/]: {result['model']} ({result['checkpoint_layout']} checkpoint {result['checkpoint']})")
        render_reparam(con, result["reparam"])
        con.rule("ONNX export + parity")
        render_export(con, result["export"])
        con.rule("benchmark")
        host = result["bench"]
        render_results(con, [BenchResult.from_dict(r) for r in host["results"]], host["notes"], title="host-cpu (measured)")
        predicted = [BenchResult.from_dict(r) for d in result["predicted"].values() for r in d["results"]]
        render_results(con, predicted, [], title="targets not attached (predicted by the latency model)")
        con.print(f"results stored in {host['db']}")

    emit(result, as_json, render)
