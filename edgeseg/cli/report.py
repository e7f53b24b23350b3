"""`edgeseg report`: Markdown/JSON/CSV tables and PNG plots from stored runs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgeseg.cli.app import app
from edgeseg.cli.common import JSON_OPTION, OVERWRITE_OPTION, emit


def _ids(text: str | None) -> list[int] | None:
    from edgeseg.errors import EdgesegError  # lazy: keeps `edgeseg --help` fast

    if not text:
        return None
    out = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            a, _, b = part.partition("-")
            if not (a.isdigit() and b.isdigit()) or int(a) > int(b):
                raise EdgesegError(f"invalid id range {part!r}", "use e.g. 3,5,7-12")
            out.extend(range(int(a), int(b) + 1))
        elif part.isdigit():
            out.append(int(part))
        else:
            raise EdgesegError(f"invalid run id {part!r}", "use e.g. 3,5,7-12")
    return out


@app.command("report", epilog="Example: edgeseg report -o report/ --device host-cpu --format md,png")
def report_cmd(
    output: Path = typer.Option(Path("edgeseg-report"), "-o", "--output", help="Directory for the report files."),
    formats: str = typer.Option("md,json,csv,png", "--format", help="Comma-separated: md, json, csv, png."),
    model: Optional[str] = typer.Option(None, "--model", help="Only runs of this model."),
    device: Optional[str] = typer.Option(None, "--device", "-d", help="Only runs on this device profile."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Only runs of this backend."),
    ids: Optional[str] = typer.Option(None, "--ids", help="Run ids, e.g. 3,5,7-12 (default: the latest --last runs)."),
    last: int = typer.Option(200, "--last", min=1, help="How many recent runs when no --ids."),
    title: str = typer.Option("edgeseg latency report", "--title", help="Title of report.md and the plots."),
    db: Optional[Path] = typer.Option(None, "--db", help="Results database (default: $EDGESEG_DB or the user data dir)."),
    overwrite: bool = OVERWRITE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Render stored runs: tables, fused-vs-unfused ratios, latency-vs-size and across-device plots."""
    from edgeseg.bench.report import write_report  # lazy: keeps `edgeseg --help` fast
    from edgeseg.bench.store import ResultStore  # lazy: keeps `edgeseg --help` fast

    store = ResultStore(db)
    wanted = _ids(ids)
    runs = store.list(model=model, device=device, backend=backend, ids=wanted, limit=None if wanted else last)
    runs.sort(key=lambda r: r.id or 0)
    skipped: dict[str, str] = {}
    written = write_report(runs, output, formats=[f.strip() for f in formats.split(",") if f.strip()], overwrite=overwrite,
                           title=title, skipped=skipped)
    data = {"runs": len(runs), "written": written, "skipped": skipped, "db": str(store.path)}

    def render(con):
        con.print(f"report of {len(runs)} runs from {store.path}:")
        for kind, path in written.items():
            con.print(f"  {kind}: {path}")
        for kind, why in skipped.items():
            con.print(f"[yellow]skipped[/] {kind}.png: {why}")

    emit(data, as_json, render)
