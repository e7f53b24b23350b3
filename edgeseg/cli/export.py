"""`edgeseg export`."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from edgeseg.cli.app import app
from edgeseg.cli.common import ARCH_OPTION, INPUT_SIZE_OPTION, JSON_OPTION, OVERWRITE_OPTION, emit, parse_size, steps
from edgeseg.errors import EdgesegError
from edgeseg.exporters import PRECISIONS, targets


def with_target_options(command: Callable) -> Callable:
    """Add each target's CLI option group (from its registration record) to `command`, which
    receives them gathered in `target_options` (ExportRequest.options keys)."""
    sig = inspect.signature(command, eval_str=True)
    extra, split = [], set()
    for t in targets():
        for o in t.options:
            kind = bool if o.type is bool else Optional[o.type]
            opt = typer.Option(o.default, o.flag, help=o.help, min=o.min, rich_help_panel=f"{t.name} options")
            extra.append(inspect.Parameter(o.key, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=kind))
            if o.split:
                split.add(o.key)
    keys = [p.name for p in extra]
    params = [p for p in sig.parameters.values() if p.name != "target_options"]
    at = next(i for i, p in enumerate(params) if p.name == "parity")  # after the general export options, as before

    @functools.wraps(command)
    def wrapper(**kw):
        options: dict[str, Any] = {}
        for key in keys:
            value = kw.pop(key)
            if key in split and value is not None:
                value = [v.strip() for v in value.split(",") if v.strip()]
            if value is not None:
                options[key] = value
        return command(target_options=options, **kw)

    all_params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params[:at] + extra + params[at:]]
    wrapper.__signature__ = sig.replace(parameters=all_params)
    wrapper.__annotations__ = {p.name: p.annotation for p in all_params}
    del wrapper.__wrapped__
    return wrapper


def render_export(con, s: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from edgeseg.cli.parity import render_parity

    con.print(f"[bold]{s['arch']}[/] -> {s['output']} ({s['target']}, {s.get('precision')}, "
              f"{'x'.join(map(str, s.get('input_size', [])))}, batch {s.get('batch')}"
              + (f", opset {s['opset']}" if s.get("opset") else "") + (f", dynamic {','.join(s['dynamic_axes'])}" if s.get("dynamic_axes") else "") + ")")
    reparam = s.get("reparam")
    if reparam:
        blocks = ", ".join(f"{k} x{v}" for k, v in reparam["fused_blocks"].items()) or "nothing to fuse"
        eq = reparam.get("equivalence")
        con.print(f"fused: {blocks}" + (f"; fused == unfused to {eq['max_rel']:.2g} of output scale" if eq else ""))
    counts = s.get("node_counts")
    if counts:
        stages = [k for k in ("exported", "simplified", "fp16") if k in counts]
        ops = sorted({op for k in stages for op in counts[k]}, key=lambda op: -counts[stages[0]].get(op, 0))
        t = Table(title="ONNX nodes by op type")
        t.add_column("op")
        for k in stages:
            t.add_column(k, justify="right")
        for op in ops:
            t.add_row(op, *[str(counts[k].get(op, 0)) for k in stages])
        t.add_row("[bold]total[/]", *[f"[bold]{sum(counts[k].values())}[/]" for k in stages])
        con.print(t)
    checks = s.get("graph_checks")
    if checks:
        con.print(f"graph: minimal={checks['minimal']} (BatchNormalization {len(checks['batchnorm_nodes'])}, "
                  f"unfused branch merges {len(checks['fusable_branch_nodes'])}, dead nodes {len(checks['dead_nodes'])})")
    parity_summary = getattr(s, "parity", None)  # the export job hands over the full parity summary
    if parity_summary is not None:
        render_parity(con, parity_summary)
    else:
        con.print("parity: [yellow]not run (--no-parity)[/]")
    con.print(f"wrote {escape(s['output'])} (sha256 {s['sha256'][:16]}...) and {escape(s['manifest_path'])}")


@app.command("export")
@with_target_options
def export_cmd(
    ckpt: Path = typer.Argument(..., help="Checkpoint (original format or .deploy.safetensors)."),
    target: str = typer.Option("onnx", "--target", "-t", help="onnx, coreml or tensorrt (alias trt, engine)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Artifact path; default beside CKPT."),
    arch: Optional[str] = ARCH_OPTION,
    input_size: Optional[str] = INPUT_SIZE_OPTION,
    batch: int = typer.Option(1, "--batch", min=1, help="Batch size baked into the graph (the dynamic one's example)."),
    dynamic: bool = typer.Option(False, "--dynamic", help="Dynamic batch and spatial axes where the architecture allows."),
    dynamic_axes: Optional[str] = typer.Option(None, "--dynamic-axes", help="With --dynamic: a subset of batch,height,width."),
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset (default 17, capped by --device)."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32, fp16 or int8 (default fp32, or the device's)."),
    device: Optional[str] = typer.Option(None, "--device", help="Device profile: opset cap, precision, shapes (see `edgeseg devices`)."),
    postprocess: str = typer.Option("none", "--postprocess", help="Segmentation: none (native logits), upsample, argmax."),
    simplify: bool = typer.Option(True, "--simplify/--no-simplify", help="Run onnxsim (default on)."),
    parity: bool = typer.Option(True, "--parity/--no-parity", help="Check the artifact against PyTorch (default on)."),
    images: Optional[Path] = typer.Option(None, "--images", help="Parity: a directory of your own images."),
    samples: int = typer.Option(1, "--samples", min=0, help="Parity: random-input batches besides the images."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the gates' random inputs (default: fresh, recorded)."),
    overwrite: bool = OVERWRITE_OPTION,
    as_json: bool = JSON_OPTION,
    target_options: dict[str, Any] | None = None,
) -> None:
    """Reparameterize, export, check and parity-test a checkpoint; writes the artifact and a manifest."""
    from edgeseg.export_job import export_checkpoint
    from edgeseg.parity.job import ParityFailure

    names = [n for t in targets() for n in t.names()]
    if target not in names:
        raise EdgesegError(f"unknown --target {target!r}", f"choose one of: {', '.join(names)}")
    if precision is not None and precision not in PRECISIONS:
        raise EdgesegError(f"unknown --precision {precision!r}", f"choose {', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]}")
    options: dict[str, Any] = dict(target_options or {})
    if dynamic_axes:
        options["dynamic_axes"] = [a.strip() for a in dynamic_axes.split(",") if a.strip()]
    try:
        summary = export_checkpoint(ckpt, output, target=target, arch=arch, input_size=parse_size(input_size), batch=batch,
                                    dynamic=dynamic, opset=opset, precision=precision, device=device, postprocess=postprocess,
                                    simplify=simplify, overwrite=overwrite, options=options, parity=parity, images=images,
                                    samples=samples, seed=seed,
                                    progress=steps(as_json))
    except ParityFailure as exc:
        emit(exc.summary, as_json, lambda con: render_parity_failure(con, exc.summary))
        raise
    emit(summary, as_json, lambda con: render_export(con, summary))


def render_parity_failure(con, summary: dict[str, Any]) -> None:
    from edgeseg.cli.parity import render_parity

    render_parity(con, summary)
    from rich.markup import escape

    con.print(f"[red]nothing written[/] to {escape(str(summary.get('export', {}).get('output')))}")
