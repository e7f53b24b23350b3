"""`edgeseg bench`: latency on the host, on a device over SSH, or predicted; sweeps with --matrix."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from edgeseg.cli.app import app
from edgeseg.cli.common import (ARCH_OPTION, HOST_OPTION, IDENTITY_OPTION, INPUT_SIZE_OPTION, JSON_OPTION, KNOWN_HOSTS_OPTION,
                                PORT_OPTION, console, emit, parse_size)

DB_OPTION = typer.Option(None, "--db", help="Results database (default: $EDGESEG_DB or the user data dir).")


def _fmt(v, digits: int = 3) -> str:
    return "-" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def wide(con, width: int = 150):
    """Tables of runs are wide: when output is not a terminal (logs, CI), do not squeeze them to 80 columns."""
    if con.is_terminal:
        return con
    from rich.console import Console

    return Console(width=max(con.width, width), highlight=False, soft_wrap=False, file=con.file)


def render_results(con, results: list, notes: list[str] | None = None, title: str | None = None) -> None:
    con = wide(con)
    from rich import box
    from rich.table import Table

    t = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("id", "model", "device", "backend", "input", "prec", "median", "p90", "p99", "std", "n", "load", "first", "parity"):
        t.add_column(col, justify="left" if col in ("model", "device", "backend", "parity") else "right")
    for r in results:
        s = r.stats
        if r.predicted:
            backend, parity = "[yellow]PREDICTED[/]", "-"
        else:
            backend = f"{r.backend} [magenta]EMULATED[/]" if r.emulated else r.backend
            status = (r.parity or {}).get("status")
            parity = {"passed": "[green]pass[/]", "failed": "[red]FAIL[/]", "skipped": "[dim]skip[/]"}.get(status, "-")
        t.add_row(_fmt(r.id), r.model, r.device, backend, f"{r.input_size[0]}x{r.input_size[1]}", r.precision,
                  _fmt(r.median_ms), _fmt(s.p90_ms if s else None), _fmt(s.p99_ms if s else None), _fmt(s.std_ms if s else None),
                  _fmt(r.iterations or None), _fmt(r.load_ms, 1), _fmt(r.first_ms, 1), parity)
    con.print(t)
    if results:
        con.print("[dim]times in ms; load = model load/compile, first = first inference (both outside the statistics)[/]")
    from edgeseg.noise import noise_flags

    for r in results:
        for flag in ([] if r.predicted else noise_flags(r.stats)):
            con.print(f"[yellow]noisy:[/] run {r.id if r.id is not None else ''} {r.backend} on {r.device}: {flag}")
    for r in results:
        if r.predicted:
            pred = r.extra.get("prediction", {})
            share = ", ".join(f"{k} {v:.0%}" for k, v in sorted(pred.get("bound_share", {}).items()))
            con.print(f"[yellow]predicted[/] by the roofline latency model ({pred.get('n_layers')} layers; {share}); "
                      f"ceilings: {pred.get('calibration') or 'profile'}")
            err = pred.get("error_pct")
            band = (f"{r.median_ms:.3g} ms ± {err:.0f}% (roughly {r.median_ms / (1 + err / 100):.3g}-{r.median_ms * (1 + err / 100):.3g} ms; "
                    f"model error measured {pred.get('error_source')})") if err is not None and r.median_ms else \
                f"error band: {pred.get('error_source', 'unknown')}"
            con.print(f"  prediction: {band}")
        if r.emulated:
            con.print(f"[magenta]emulated[/]: {r.device} was emulated ({r.emulated}); the timing says nothing about the board "
                      "and is left out of comparisons and plots")
        if r.parity and r.parity.get("status") in ("passed", "failed"):
            con.print(f"parity {r.backend} on {r.device} vs {r.parity.get('reference')}: {r.parity.get('summary')}")
    for n in notes or []:
        con.print(f"[dim]note: {n}[/]")


def _gate(results: list, store, baseline: int, pct: float) -> dict:
    from edgeseg.bench.store import compare_results, regression_gate  # lazy: keeps `edgeseg --help` fast
    from edgeseg.errors import EdgesegError  # lazy: keeps `edgeseg --help` fast

    base = store.get(baseline)
    same = [r for r in results if r.backend == base.backend] or results
    if not same:
        raise EdgesegError("nothing was measured to compare with the baseline", "check the run")
    comp = compare_results(base, same[0])
    regression_gate(comp, pct)
    return comp.as_dict()


@app.command("bench", epilog="""Examples: edgeseg bench mobileone_s0 --input-size 256 ;
edgeseg bench model.onnx -d raspberry-pi-5 --host pi@10.0.0.7 -i ~/.ssh/id_ed25519 ; edgeseg bench --matrix sweep.yaml""")
def bench_cmd(
    target: Optional[str] = typer.Argument(None, help="Artifact (.onnx, .mlpackage), checkpoint, or registered model name."),
    device: str = typer.Option("host-cpu", "--device", "-d", help="Device profile (`edgeseg devices`)."),
    host: Optional[str] = HOST_OPTION,
    identity: Optional[Path] = IDENTITY_OPTION,
    known_hosts: Optional[Path] = KNOWN_HOSTS_OPTION,
    port: Optional[int] = PORT_OPTION,
    predict: bool = typer.Option(False, "--predict", help="Estimate with the latency model instead of measuring."),
    warmup: str = typer.Option("10", "--warmup", help="Warm-up: a count (10) or a duration (2s, 500ms)."),
    iterations: int = typer.Option(50, "--iterations", "-n", min=1, help="Timed iterations."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads (default: the profile's / all)."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32, fp16 or int8 (default: the profile's)."),
    input_size: Optional[str] = INPUT_SIZE_OPTION,
    batch: int = typer.Option(1, "--batch", min=1, help="Batch size of the timed input."),
    backend: Optional[List[str]] = typer.Option(None, "--backend", help="Local backends: pytorch-unfused, pytorch, onnxruntime (repeatable)."),
    with_preprocessing: bool = typer.Option(False, "--with-preprocessing", help="Time uint8 image -> normalised tensor too (PyTorch runs)."),
    parity: bool = typer.Option(True, "--parity/--no-parity", help="Compare the device's output with PyTorch on the same input."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Longest remote build/run step, seconds (default: the profile's)."),
    remote_workdir: Optional[str] = typer.Option(None, "--remote-workdir", help="Where the remote temp dir goes (default: the profile's)."),
    coreml_target: str = typer.Option("mac", "--coreml-target", help="Core ML on the Mac itself (mac) or an iPhone attached to it (iphone)."),
    arch: Optional[str] = ARCH_OPTION,
    matrix: Optional[Path] = typer.Option(None, "--matrix", help="Sweep file: models x sizes x devices (YAML/JSON)."),
    db: Optional[Path] = DB_OPTION,
    no_store: bool = typer.Option(False, "--no-store", help="Do not record the runs."),
    baseline: Optional[int] = typer.Option(None, "--baseline", help="Run id to compare with (see `edgeseg results list`)."),
    fail_if_slower: Optional[float] = typer.Option(None, "--fail-if-slower", help="Exit 3 if slower than --baseline by more than PCT %."),
    seed: int = typer.Option(0, "--seed", help="Seed of the non-trivial weights and inputs (models and checkpoints)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Measure latency (min/median/mean/p90/p99/max/std, load and first inference) and store it."""
    from edgeseg.errors import EdgesegError, VerificationError  # lazy: keeps `edgeseg --help` fast

    if fail_if_slower is not None and baseline is None:
        raise EdgesegError("--fail-if-slower needs --baseline RUN_ID", "pick one from `edgeseg results list`")
    if (target is None) == (matrix is None):
        raise EdgesegError("give either a TARGET or --matrix FILE", "e.g. edgeseg bench mobileone_s0, or --matrix sweep.yaml")
    options = dict(warmup=warmup, iterations=iterations, threads=threads, precision=precision, input_size=parse_size(input_size),
                   batch=batch, backends=list(backend) if backend else None, include_preprocessing=with_preprocessing,
                   parity=parity, seed=seed, timeout_s=timeout, remote_workdir=remote_workdir, coreml_target=coreml_target)
    from edgeseg.bench.store import ResultStore  # lazy: keeps `edgeseg --help` fast

    store = None if no_store else ResultStore(db)
    if matrix is not None:
        _matrix(matrix, options, store, as_json)
        return
    from edgeseg.bench.harness import bench_artifact  # lazy: keeps `edgeseg --help` fast

    log = console(stderr=True)
    if as_json:
        outcome = bench_artifact(target, device, host=host, identity=identity, known_hosts=known_hosts, port=port, predict=predict,
                                 arch=arch, store=store if store is not None else False, **options)
    else:
        with log.status(f"benchmarking {target} on {device}") as status:
            outcome = bench_artifact(target, device, host=host, identity=identity, known_hosts=known_hosts, port=port,
                                     predict=predict, arch=arch, store=store if store is not None else False,
                                     progress=lambda m: status.update(m), **options)
    data = outcome.as_dict()
    gate = None
    if baseline is not None and store is not None:
        from edgeseg.bench.store import RegressionError  # lazy: keeps `edgeseg --help` fast

        try:
            gate = _gate(outcome.results, store, baseline, fail_if_slower if fail_if_slower is not None else float("inf"))
        except RegressionError as exc:
            data["regression"] = {"failed": True, "message": str(exc)}
            emit(data, as_json, lambda con: render_results(con, outcome.results, outcome.notes))
            raise
        data["regression"] = {"failed": False, **gate}

    def render(con):
        render_results(con, outcome.results, outcome.notes)
        if gate:
            con.print(f"vs baseline run {baseline}: {gate['change_pct']:+.1f}% (median)")
        if outcome.db:
            con.print(f"[dim]stored in {outcome.db} (ids {', '.join(str(r.id) for r in outcome.results)})[/]")

    emit(data, as_json, render)
    if outcome.parity_failed:
        r = outcome.parity_failed[0]
        raise VerificationError(f"{r.backend} output on {r.device} differs from {r.parity.get('reference')}: {r.parity.get('summary')}",
                                "check the export constraints for this device, or rerun with --no-parity to time only")


def _matrix(path: Path, options: dict, store, as_json: bool) -> None:
    from edgeseg.bench.matrix import load_matrix, run_matrix  # lazy: keeps `edgeseg --help` fast

    m = load_matrix(path)
    jobs = m.jobs()
    explicit = {k: v for k, v in options.items() if k in ("threads", "precision", "input_size", "backends", "timeout_s",
                                                          "remote_workdir") and v}
    base = {k: v for k, v in options.items() if k not in ("input_size",)}
    if explicit.get("input_size"):
        base["input_size"] = explicit["input_size"]
    if as_json:
        outcomes = run_matrix(m, store=store if store is not None else False, base_options=base)
    else:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console(stderr=True)) as progress:
            task = progress.add_task(f"sweep {path.name}", total=len(jobs))

            def start(job):
                progress.update(task, description=f"{job.model} {job.size[0]}x{job.size[1] if job.size else ''} on {job.device.key}"
                                if job.size else f"{job.model} on {job.device.key}")

            outcomes = run_matrix(m, store=store if store is not None else False, base_options=base, on_job_start=start,
                                  on_job_done=lambda o: progress.advance(task))
    data = {"matrix": str(path), "jobs": [o.as_dict() for o in outcomes], "failed": sum(1 for o in outcomes if o.error),
            "db": str(store.path) if store is not None else None}

    def render(con):
        results = [r for o in outcomes for r in o.results]
        render_results(con, results, title=f"sweep {path.name}: {len(outcomes)} jobs")
        for o in outcomes:
            if o.error:
                con.print(f"[red]failed[/] {o.job.model} on {o.job.device.key}: {o.error}")

    emit(data, as_json, render)
    if data["failed"]:
        from edgeseg.errors import EdgesegError  # lazy: keeps `edgeseg --help` fast

        raise EdgesegError(f"{data['failed']} of {len(outcomes)} sweep jobs failed", "see the messages above")
