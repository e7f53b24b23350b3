"""`edgeseg parity`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from edgeseg.cli.app import app
from edgeseg.cli.common import (ARCH_OPTION, INPUT_SIZE_OPTION, JSON_OPTION, MAX_BATCH, MAX_SEED, MAX_THREADS, SAMPLES_OPTION, check_number, console, emit, number_option, parse_size, steps)
from edgeseg.errors import EdgesegError

_STYLE = {"passed": "green", "failed": "red", "skipped": "yellow"}


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            return str(v)
        return f"{v:.6g}" if v == 0 or 1e-3 <= abs(v) < 1e4 else f"{v:.3e}"
    return str(v)


def parse_tolerances(atol: list[str], rtol: list[str], tol: list[str]) -> dict[str, Any]:
    """--rtol 1e-3 | --rtol logits=1e-3 ; --tol min_miou=0.95 | --tol logits:min_miou=0.95."""
    out: dict[str, Any] = {}

    def put(output: str | None, key: str, text: str, flag: str) -> None:
        try:
            value = float(text)
        except ValueError:
            raise EdgesegError(f"invalid {flag} value {text!r}", "use a number, e.g. 1e-3") from None
        check_number(value, flag, lo=0)
        if output:
            out.setdefault(output, {})[key] = value
        else:
            out[key] = value

    for flag, key, items in (("--atol", "atol", atol), ("--rtol", "rtol", rtol)):
        for item in items:
            output, _, value = item.rpartition("=")
            put(output or None, key, value, flag)
    for item in tol:
        lhs, sep, value = item.partition("=")
        if not sep:
            raise EdgesegError(f"invalid --tol {item!r}", "use KEY=VALUE or OUTPUT:KEY=VALUE, e.g. min_miou=0.95")
        output, _, key = lhs.rpartition(":")
        put(output or None, key, value, "--tol")
    return out


def render_parity(con, summary: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    inputs = summary.get("inputs", {})
    described = (f"inputs: {inputs['none']}" if inputs.get("none") else
                 f"inputs: {len(inputs.get('images', []))} images + {inputs.get('random_batches', 0)} random batches")
    con.print(f"[bold]parity[/] {summary.get('arch')} ({summary.get('task')}): reference {summary.get('reference')}, "
              f"seed {summary.get('seed')}, {described}")
    for entry in summary["artifacts"]:
        status = entry["status"]
        head = f"[bold]{escape(str(entry['artifact']))}[/] [{_STYLE[status]}]{status.upper()}[/]"
        for warning in entry.get("warnings", []):
            con.print(f"[yellow]warning:[/] {escape(warning)}")
        if status == "skipped":
            con.print(f"{head}: {escape(str(entry.get('reason')))}")
            continue
        mode = entry.get("backend_mode")
        backend = escape(f"{entry.get('backend')}" + (f" ({mode})" if mode and mode != "native" else ""))
        con.print(f"{head} ({backend}, {entry.get('precision')}, "
                  f"{'x'.join(map(str, entry.get('input_size') or []))}, batch {entry.get('batch')}, {entry.get('seconds', 0):.1f} s)")
        report = entry["report"]
        if not report["outputs"]:
            con.print(f"  [red]{escape(str(report.get('reason')))}[/]")
            continue
        t = Table(show_lines=False)
        for col in ("output", "metric", "value", "threshold", "verdict", "would pass at"):
            t.add_column(col, justify="right" if col in ("value", "threshold", "would pass at") else "left")
        for out in report["outputs"]:
            for c in out["checks"]:
                ok = c["passed"]
                need = f"{c['tolerance']}={_fmt(c['needed'])}" if (not ok and c.get("needed") is not None) else ""
                t.add_row(out["name"], c["metric"], _fmt(c["value"]), f"{c['op']} {_fmt(c['threshold'])}",
                          "[green]pass[/]" if ok else "[red]FAIL[/]", need)
        con.print(t)
    if summary.get("junit"):
        con.print(f"JUnit XML: {summary['junit']}")


@app.command("parity", epilog="Example: edgeseg parity ckpt.pth ckpt.onnx.fp32.onnx ckpt.coreml.fp16.mlpackage --junit parity.xml")
def parity_cmd(
    ckpt: Path = typer.Argument(..., help="The source checkpoint (the PyTorch reference)."),
    artifacts: list[Path] = typer.Argument(..., help="Exported artifacts (.onnx, .mlpackage, .engine, .deploy.safetensors)."),
    arch: Optional[str] = ARCH_OPTION,
    images: Optional[Path] = typer.Option(None, "--images", help="Directory of your own images (added to the bundled ones)."),
    no_bundled: bool = typer.Option(False, "--no-bundled-images", help="Do not use the bundled natural images."),
    samples: int = SAMPLES_OPTION,
    seed: Optional[int] = number_option(None, "--seed", lo=0, hi=MAX_SEED, help="Seed of the random inputs (default: fresh, printed)."),
    precision: Optional[str] = typer.Option(None, "--precision", help="Tolerance set: fp32, fp16, int8 (default: the artifact's)."),
    input_size: Optional[str] = INPUT_SIZE_OPTION,
    batch: Optional[int] = number_option(None, "--batch", lo=1, hi=MAX_BATCH, help="Batch size (default: the artifact's)."),
    postprocess: Optional[str] = typer.Option(None, "--postprocess", help="What the artifact's graph ends with, if it has no manifest."),
    atol: list[str] = typer.Option([], "--atol", help="Absolute error allowance, VALUE or OUTPUT=VALUE (repeatable)."),
    rtol: list[str] = typer.Option([], "--rtol", help="Max error relative to output scale, VALUE or OUTPUT=VALUE (repeatable)."),
    tol: list[str] = typer.Option([], "--tol", help="Any threshold: KEY=VALUE or OUTPUT:KEY=VALUE, e.g. min_miou=0.95 (repeatable)."),
    junit: Optional[Path] = typer.Option(None, "--junit", help="Write a JUnit XML report here (for CI)."),
    strict: bool = typer.Option(False, "--strict", help="Fail when an artifact is skipped (runtime missing here)."),
    threads: Optional[int] = number_option(None, "--threads", lo=1, hi=MAX_THREADS, help="Runtime threads."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Gate exported artifacts against PyTorch: exit 3 if any threshold fails."""
    from edgeseg.parity.job import raise_if_failed, run_parity  # lazy: keeps `edgeseg --help` fast

    summary = run_parity(ckpt, artifacts, arch=arch, junit=junit, images=images, bundled_images=not no_bundled, samples=samples,
                         seed=seed, tolerances=parse_tolerances(atol, rtol, tol) or None, precision=precision, threads=threads,
                         input_size=parse_size(input_size), batch=batch, postprocess=postprocess, progress=steps(as_json))
    emit(summary, as_json, lambda con: render_parity(con, summary))
    if not as_json and summary["status"] != "failed":
        console().print(f"[{_STYLE[summary['status']]}]{summary['verdict']}[/]")
    raise_if_failed(summary, strict=strict)
