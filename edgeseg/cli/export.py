"""`edgeseg export`."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from edgeseg.cli.app import app
from edgeseg.cli.common import (ARCH_OPTION, HOST_OPTION, IDENTITY_OPTION, INPUT_SIZE_OPTION, JSON_OPTION, KNOWN_HOSTS_OPTION, MAX_BATCH, MAX_SEED, OVERWRITE_OPTION, PORT_OPTION, SAMPLES_OPTION, console, emit, number_option, parse_size, steps)
from edgeseg.errors import EdgesegError, VerificationError
from edgeseg.exporters import PRECISIONS, targets


def with_target_options(command: Callable) -> Callable:
    """Add each target's CLI option group (from its registration record) to `command`, which
    receives them gathered in `target_options` (ExportRequest.options keys)."""
    sig = inspect.signature(command, eval_str=True)
    extra, split = [], set()
    for t in targets():
        for o in t.options:
            kind = bool if o.type is bool else Optional[o.type]
            if o.type in (int, float):  # numbers go through the one finite/range check
                opt = number_option(o.default, o.flag, lo=o.min, help=o.help, rich_help_panel=f"{t.name} options")
            else:
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

    from edgeseg.cli.parity import render_parity  # lazy: keeps `edgeseg --help` fast

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
        stages = [k for k in ("exported", "simplified", "fp16", "int8") if k in counts]
        ops = sorted({op for k in stages for op in counts[k]}, key=lambda op: -counts[stages[0]].get(op, 0))
        t = Table(title="ONNX nodes by op type")
        t.add_column("op")
        for k in stages:
            t.add_column(k, justify="right")
        for op in ops:
            t.add_row(op, *[str(counts[k].get(op, 0)) for k in stages])
        t.add_row("[bold]total[/]", *[f"[bold]{sum(counts[k].values())}[/]" for k in stages])
        con.print(t)
    int8 = s.get("int8")
    if int8:
        hs, kept = int8["host_speed"], int8["kept_float"]
        con.print(f"int8 ({int8['format']}, {int8['selection']}; float: {kept['depthwise_convs']} depthwise convs"
                  + (", first conv" if kept["first_conv"] else "") + (", head" if kept["head"] else "")
                  + f"): {hs['int8_ms']:.2f} ms vs fp32 {hs['fp32_ms']:.2f} ms on this host at 1 thread, x{hs['speedup']:.2f}; "
                  f"cosine to fp32 {int8['min_cosine_vs_fp32']:.4f}")
    checks = s.get("graph_checks")
    if checks:
        con.print(f"graph: minimal={checks['minimal']} (BatchNormalization {len(checks['batchnorm_nodes'])}, "
                  f"unfused branch merges {len(checks['fusable_branch_nodes'])}, dead nodes {len(checks['dead_nodes'])})")
    render_coreml_findings(con, s)
    parity_summary = getattr(s, "parity", None)  # the export job hands over the full parity summary
    if parity_summary is not None:
        render_parity(con, parity_summary)
    else:
        con.print("parity: [yellow]not run (--no-parity)[/]")
    con.print(f"wrote {escape(s['output'])} (sha256 {s['sha256'][:16]}...) and {escape(s['manifest_path'])}")


EXAMPLES = """
[bold]Examples[/]

  edgeseg export fastvit_sa12.pth                                   # fastvit_sa12.onnx.fp32.onnx (+ .manifest.json)
  edgeseg export fastvit_sa12.pth --device iphone-12-pro            # Core ML, fp16, iOS16: fastvit_sa12.iphone-12-pro.fp16.mlpackage
  edgeseg export fastvit_sa12.pth --device jetson-nano --host nano@10.0.0.9   # engine built on the Jetson
  edgeseg export fastvit_sa12.pth --device raspberry-pi-5 --device jetson-nano --target onnx   # one ONNX per device
  edgeseg export segformer_b0.pth --postprocess argmax --labels classes.txt

Default names: <stem>.<device-or-target>.<precision>[.<postprocess>].<ext>, beside the checkpoint.
"""


def render_coreml_findings(con, s: dict[str, Any]) -> None:
    """What the Core ML conversion found: ops that leave (or risk leaving) the Neural Engine, and
    the fp16 preflight's verdict, so they are read at export time, not dug out of the manifest."""
    from rich.markup import escape

    spec = s.get("spec") if s.get("target") == "coreml" else None
    if spec is None:
        return
    findings = spec.get("ane") or []
    if findings:
        con.print(f"Neural Engine: {len(findings)} finding(s)")
        for f in findings:
            tag = "[red]off the ANE[/]" if f.get("severity") == "off-ane" else "[yellow]risk[/]"
            con.print(f"  {tag} {escape(str(f.get('what')))}: {f.get('count')}  [dim]({escape(str(f.get('source')))})[/]")
    else:
        con.print("Neural Engine: [green]no known blockers[/] in the saved program")
    pre = s.get("fp16_preflight")
    if pre:
        verdict = pre.get("predicted_gate", "-")
        style = "green" if verdict == "pass" else "red"
        figures = "inf/NaN outputs" if pre.get("nonfinite") else f"max error {pre.get('max_rel', 0):.2e} of scale, cosine {pre.get('min_cosine', 1):.5f}"
        con.print(f"fp16 preflight (emulated on this machine): [{style}]{escape(verdict)}[/] ({figures})")
        for m in pre.get("overflow_modules", [])[:5]:
            con.print(f"  overflows fp16: {escape(m['module'])} (|x| up to {m['max_abs']:.3g})")


def render_many(con, rows: list[dict[str, Any]]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from edgeseg.cli.bench import wide

    con = wide(con)

    t = Table(title="exports")
    for col in ("device", "target", "precision", "input", "opset", "parity", "artifact / error"):
        t.add_column(col)
    for r in rows:
        if r.get("error"):
            t.add_row(r.get("device_profile") or "-", "-", "-", "-", "-", "[red]failed[/]", escape(r["error"]))
            continue
        status = (r.get("parity") or {}).get("status", "-")
        style = {"passed": "green", "failed": "red", "skipped": "yellow"}.get(status, "dim")
        t.add_row(r.get("device_profile") or "-", r["target"], r.get("precision") or "-", "x".join(map(str, r.get("input_size", []))),
                  str(r.get("opset") or "-"), f"[{style}]{status}[/]", escape(r["output"]))
    con.print(t)


@app.command("export", epilog=EXAMPLES)
@with_target_options
def export_cmd(
    ckpt: Path = typer.Argument(..., help="Checkpoint (original format or .deploy.safetensors)."),
    target: Optional[str] = typer.Option(None, "--target", "-t", help="onnx, coreml or tensorrt (alias trt, engine); default: -o's suffix, else the --device's runtime, else onnx."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Artifact path; default <stem>.<device-or-target>.<precision>[.<postprocess>].<ext> beside CKPT."),
    arch: Optional[str] = ARCH_OPTION,
    input_size: Optional[str] = INPUT_SIZE_OPTION,
    batch: int = number_option(1, "--batch", lo=1, hi=MAX_BATCH, help="Batch size baked into the graph (the dynamic one's example)."),
    dynamic: bool = typer.Option(False, "--dynamic", help="Dynamic batch and spatial axes where the architecture allows."),
    dynamic_axes: Optional[str] = typer.Option(None, "--dynamic-axes", help="With --dynamic: a subset of batch,height,width."),
    opset: Optional[int] = number_option(None, "--opset", lo=7, hi=30, help="ONNX opset (default 17, or the --device's)."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32, fp16 or int8 (default: the --device's, else fp32 for onnx, fp16 for coreml/tensorrt)."),
    device: Optional[List[str]] = typer.Option(None, "--device", "-d", help="Device profile(s): target, precision, opset, size (repeat, comma-separate, or `all`)."),
    postprocess: str = typer.Option("none", "--postprocess", help="Segmentation: none (native logits), upsample, argmax."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Class names, one per line in class order: stored in the ONNX metadata / Core ML classifier."),
    simplify: bool = typer.Option(True, "--simplify/--no-simplify", help="Run onnxsim (default on)."),
    host: Optional[str] = HOST_OPTION,
    identity: Optional[Path] = IDENTITY_OPTION,
    known_hosts: Optional[Path] = KNOWN_HOSTS_OPTION,
    port: Optional[int] = PORT_OPTION,
    parity: bool = typer.Option(True, "--parity/--no-parity", help="Check the artifact against PyTorch (default on)."),
    images: Optional[Path] = typer.Option(None, "--images", help="Parity: a directory of your own images."),
    samples: int = SAMPLES_OPTION,
    seed: Optional[int] = number_option(None, "--seed", lo=0, hi=MAX_SEED, help="Seed of the gates' random inputs (default: fresh, recorded)."),
    overwrite: bool = OVERWRITE_OPTION,
    as_json: bool = JSON_OPTION,
    target_options: dict[str, Any] | None = None,
) -> None:
    """Reparameterize, export, check and parity-test a checkpoint; writes the artifact and a manifest."""
    from edgeseg.parity.job import ParityFailure  # lazy: keeps `edgeseg --help` fast
    from edgeseg.workflows import export  # lazy: keeps `edgeseg --help` fast

    if precision is not None and precision not in PRECISIONS:
        raise EdgesegError(f"unknown --precision {precision!r}", f"choose {', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]}")
    options: dict[str, Any] = dict(target_options or {})
    if dynamic_axes:
        options["dynamic_axes"] = [a.strip() for a in dynamic_axes.split(",") if a.strip()]
    for key, value in (("host", host), ("identity", identity), ("known_hosts", known_hosts), ("port", port), ("labels", labels)):
        if value is not None:
            options[key] = value
    try:
        summary = export(ckpt, output, target=target, arch=arch, input_size=parse_size(input_size), batch=batch,
                         dynamic=dynamic, opset=opset, precision=precision, device=list(device) if device else None,
                         postprocess=postprocess, simplify=simplify, overwrite=overwrite, options=options, parity=parity,
                         images=images, samples=samples, seed=seed,
                         progress=steps(as_json))
    except ParityFailure as exc:
        emit(exc.summary, as_json, lambda con: render_parity_failure(con, exc.summary))
        raise
    if isinstance(summary, list):
        rows = [dict(s) for s in summary]
        emit({"exports": rows}, as_json, lambda con: render_many(con, rows))
        failed = [r for r in rows if r.get("error")]
        if failed:
            code = 3 if any(r.get("exit_code") == 3 for r in failed) else 1
            err = VerificationError if code == 3 else EdgesegError
            raise err(f"{len(failed)} of {len(rows)} exports failed: {failed[0]['error']}", "see the table above")
        return
    emit(summary, as_json, lambda con: render_export(con, summary))


def render_parity_failure(con, summary: dict[str, Any]) -> None:
    from edgeseg.cli.parity import render_parity  # lazy: keeps `edgeseg --help` fast

    render_parity(con, summary)
    from rich.markup import escape

    con.print(f"[red]nothing written[/] to {escape(str(summary.get('export', {}).get('output')))}")
