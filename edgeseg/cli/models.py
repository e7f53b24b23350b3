"""`edgeseg models` and `edgeseg info`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgeseg.cli.app import app
from edgeseg.cli.common import ARCH_OPTION, JSON_OPTION, emit, fmt_count, steps


@app.command("models", epilog="Example: edgeseg models --family fastvit --no-macs")
def models_cmd(
    family: Optional[str] = typer.Option(None, "--family", help="Only this family."),
    macs: bool = typer.Option(True, "--macs/--no-macs", help="Count MACs at the default size (slower)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """List the registered architectures: task, params, MACs, reparameterizable blocks."""
    from edgeseg.model_table import describe_models  # lazy: keeps `edgeseg --help` fast

    rows = describe_models(family, with_macs=macs, progress=steps(as_json))

    def render(con):
        from rich.table import Table

        t = Table(title="edgeseg architectures")
        t.add_column("model", no_wrap=True)
        t.add_column("task", no_wrap=True)
        t.add_column("input", no_wrap=True)
        for col in ("params", "fused", "MACs fused"):
            t.add_column(col, justify="right", no_wrap=True)
        t.add_column("reparameterizable blocks")
        for r in rows:
            blocks = ", ".join(f"{k} x{v}" for k, v in r["reparam_blocks"].items()) or "-"
            t.add_row(r["name"], "cls" if r["task"] == "classification" else "seg", "x".join(map(str, r["input_size"])), fmt_count(r["params"]), fmt_count(r["params_fused"]),
                      fmt_count(r.get("macs_fused")), blocks)
        con.print(t)

    emit({"models": rows}, as_json, render)


@app.command("info")
def info_cmd(
    ckpt: Path = typer.Argument(..., help="Checkpoint file, Hugging Face directory, or an exported .onnx/.mlpackage/.engine."),
    arch: Optional[str] = ARCH_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Show what a checkpoint or artifact is: format, architecture, task, preprocessing, source.

    Example: edgeseg info fastvit_sa12.pth; edgeseg info fastvit_sa12.onnx --json
    """
    from edgeseg.artifacts import artifact_kind

    if artifact_kind(ckpt) != "checkpoint":
        _artifact_info(ckpt, arch, as_json)
        return
    from edgeseg.api import inspect_raw  # lazy: keeps `edgeseg --help` fast
    from edgeseg.checkpoint.reader import read_checkpoint  # lazy: keeps `edgeseg --help` fast

    with steps(as_json).step(f"reading {ckpt}"):
        raw = read_checkpoint(ckpt, values=False)  # keys, shapes and dtypes only: no torch, no tensor bytes
        info, params = inspect_raw(raw, arch)
    data = {
        "path": str(ckpt),
        "format": raw.format,
        "wrapper": raw.wrapper,
        "layout": info.layout,
        "arch": info.arch,
        "family": info.family,
        "task": info.task,
        "cfg": info.cfg,
        "reparameterized": info.fused,
        "input_size": list(info.input_size),
        "fixed_input_size": list(info.fixed_input_size) if info.fixed_input_size else None,
        "params": params,
        "tensors": len(raw.state_dict),
        "preprocessing": info.extra.get("preprocessing"),
        "sha256": raw.sha256,
    }

    def render(con):
        from rich.table import Table

        t = Table(show_header=False, title=str(ckpt))
        for k, v in data.items():
            t.add_row(k, fmt_count(v) if k == "params" else str(v))
        con.print(t)

    emit(data, as_json, render)


def _artifact_info(path: Path, arch: Optional[str], as_json: bool) -> None:
    from edgeseg.artifacts import describe_artifact

    data = describe_artifact(path, arch).as_dict()

    def render(con):
        from rich.markup import escape
        from rich.table import Table

        t = Table(show_header=False, title=escape(str(path)))
        for k, v in data.items():
            if k in ("inputs", "outputs"):
                v = "; ".join(f"{d.get('name')} {d.get('shape')} {d.get('dtype', d.get('kind', ''))}" for d in v) or "-"
            elif k == "labels" and v:
                v = f"{v['count']} ({', '.join(v['first'])}, ...)"
            elif k == "extra":
                for ek, ev in v.items():
                    t.add_row(ek, escape(str(ev)))
                continue
            t.add_row(k, escape(str(v if v not in (None, [], "") else "-")))
        con.print(t)

    emit(data, as_json, render)
