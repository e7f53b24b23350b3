"""`edgeseg results`: list, show and compare stored runs; a regression gate for CI."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgeseg.cli.app import app
from edgeseg.cli.common import (JSON_OPTION, RUN_ID_MAX, emit, number_argument, number_option)

results_app = typer.Typer(help="Stored benchmark runs: list, show, compare (with a regression gate).", no_args_is_help=True)
app.add_typer(results_app, name="results")

DB_OPTION = typer.Option(None, "--db", help="Results database (default: $EDGESEG_DB or the user data dir).")


def _store(db: Path | None):
    from edgeseg.bench.store import ResultStore  # lazy: keeps `edgeseg --help` fast

    store = ResultStore(db)
    store.check()  # a damaged file must not read as an empty or partial history
    return store


@results_app.command("import", epilog="Example: edgeseg results import results.unsaved-*.json --db results.sqlite")
def results_import(
    files: list[Path] = typer.Argument(..., help="Fallback files written by `edgeseg bench` when the database failed."),
    db: Optional[Path] = DB_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Add runs kept in fallback files to the database (then the files can be deleted)."""
    store = _store(db)
    added = {str(f): store.import_file(f) for f in files}
    emit({"db": str(store.path), "imported": added}, as_json,
         lambda con: [con.print(f"added {len(ids)} run(s) from {f} to {store.path} (ids {', '.join(map(str, ids))})")
                      for f, ids in added.items()])


@results_app.command("list", epilog="Example: edgeseg results list --model fastvit_t8 --device host-cpu")
def results_list(
    model: Optional[str] = typer.Option(None, "--model", help="Only runs of this model."),
    device: Optional[str] = typer.Option(None, "--device", "-d", help="Only runs on this device profile."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Only runs of this backend (pytorch, onnxruntime, tensorrt, coreml)."),
    limit: int = number_option(30, "--limit", lo=1, hi=1_000_000, help="How many runs, newest first."),
    db: Optional[Path] = DB_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Most recent runs first."""
    from edgeseg.cli.bench import render_results  # lazy: keeps `edgeseg --help` fast

    store = _store(db)
    runs = store.list(model=model, device=device, backend=backend, limit=limit)
    emit({"db": str(store.path), "runs": [r.as_dict(with_times=False) for r in runs]}, as_json,
         lambda con: render_results(con, runs, title=f"{len(runs)} runs in {store.path}"))


@results_app.command("show", epilog="Example: edgeseg results show 12 --times")
def results_show(run_id: int = number_argument(..., "RUN_ID", lo=1, hi=RUN_ID_MAX, help="Run id (see `edgeseg results list`)."), times: bool = typer.Option(False, "--times", help="Print every raw time."),
                 db: Optional[Path] = DB_OPTION, as_json: bool = JSON_OPTION) -> None:
    """One run in full: settings, environment, statistics, raw per-iteration times."""
    store = _store(db)
    r = store.get(run_id)
    data = r.as_dict(with_times=True)

    def render(con):
        from rich.table import Table

        from edgeseg.cli.bench import render_results  # lazy: keeps `edgeseg --help` fast  # lazy: keeps `edgeseg --help` fast

        render_results(con, [r])
        t = Table(show_header=False, title="settings and environment")
        for k in ("created_at", "artifact", "artifact_sha256", "host", "runtime_version", "warmup", "warmup_iterations",
                  "preprocessing_in_timer", "compile_ms"):
            t.add_row(k, str(data.get(k)))
        for section in ("settings", "environment"):
            for k, v in (data.get(section) or {}).items():
                t.add_row(f"{section}.{k}", str(v))
        con.print(t)
        ts = r.times_ms
        if ts:
            shown = ts if times else ts[:10]
            con.print(f"raw times (ms, {len(ts)}): " + ", ".join(f"{x:.3f}" for x in shown) + ("" if times or len(ts) <= 10 else ", ..."))

    emit(data, as_json, render)


@results_app.command("compare", epilog="Example: edgeseg results compare 3 4 --fail-if-slower 5   # exit 3 on a >5% regression")
def results_compare(
    baseline: int = number_argument(..., "BASELINE", lo=1, hi=RUN_ID_MAX, help="Baseline run id (A)."),
    candidate: int = number_argument(..., "CANDIDATE", lo=1, hi=RUN_ID_MAX, help="Candidate run id (B)."),
    fail_if_slower: Optional[float] = number_option(None, "--fail-if-slower", lo=0, hi=1e6, help="Exit 3 when B's median is slower than A's by more than PCT %."),
    db: Optional[Path] = DB_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Compare B with A (median change); with --fail-if-slower, a CI regression gate."""
    from edgeseg.bench.store import RegressionError, regression_gate  # lazy: keeps `edgeseg --help` fast

    store = _store(db)
    comp = store.compare(baseline, candidate)
    data = comp.as_dict()
    failed = None
    if fail_if_slower is not None:
        try:
            regression_gate(comp, fail_if_slower)
            data["gate"] = {"max_slower_pct": fail_if_slower, "passed": True}
        except RegressionError as exc:
            data["gate"] = {"max_slower_pct": fail_if_slower, "passed": False}
            failed = exc

    def render(con):
        from rich.table import Table

        t = Table(title=f"run {baseline} -> run {candidate}")
        for col in ("", "model", "device", "backend", "input", "label", "median ms", "p90", "p99", "n"):
            t.add_column(col)
        for tag, d in (("A", data["baseline"]), ("B", data["candidate"])):
            t.add_row(tag, d["model"], d["device"], d["backend"], "x".join(map(str, d["input_size"])), d["label"],
                      f"{d['median_ms']:.3f}", *(f"{d[k]:.3f}" if d[k] is not None else "-" for k in ("p90_ms", "p99_ms")),
                      str(d["iterations"]))
        con.print(t)
        color = "red" if comp.change_pct > 0 else "green"
        con.print(f"median change: [{color}]{comp.change_pct:+.2f}%[/]")
        for n in comp.notes:
            con.print(f"[yellow]note:[/] {n}")
        if "gate" in data:
            con.print("gate: " + ("[green]passed[/]" if data["gate"]["passed"] else "[red]FAILED[/]") + f" (limit {fail_if_slower:g}%)")

    emit(data, as_json, render)
    if failed is not None:
        raise failed
