"""`edgeseg export`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from edgeseg.cli.app import app
from edgeseg.cli.common import ARCH_OPTION, INPUT_SIZE_OPTION, JSON_OPTION, OVERWRITE_OPTION, emit, parse_size, steps
from edgeseg.errors import EdgesegError

TARGETS = ("onnx", "coreml", "trt")


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
    parity = s.get("parity", {})
    if parity.get("status") in ("passed", "failed", "skipped"):
        render_parity(con, {"arch": s["arch"], "task": s["task"], "reference": parity.get("reference"), "seed": parity.get("seed"),
                            "inputs": parity.get("inputs", {}),
                            "artifacts": [{"artifact": s["output"], "status": parity["status"], "reason": parity.get("reason"),
                                           "backend": parity.get("backend"), "backend_mode": parity.get("backend_mode"),
                                           "seconds": parity.get("seconds") or 0.0, "precision": s.get("precision"),
                                           "input_size": s.get("input_size"), "batch": s.get("batch"), "report": parity["report"]}]})
    else:
        con.print("parity: [yellow]not run (--no-parity)[/]")
    con.print(f"wrote {escape(s['output'])} (sha256 {s['sha256'][:16]}...) and {escape(s['manifest_path'])}")


@app.command("export")
def export_cmd(
    ckpt: Path = typer.Argument(..., help="Checkpoint (original format or .deploy.safetensors)."),
    target: str = typer.Option("onnx", "--target", "-t", help="onnx, coreml or trt."),
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
    keep_fp32: Optional[str] = typer.Option(None, "--keep-fp32", help="fp16: ONNX op types to compute in fp32, e.g. Softmax,ReduceMean."),
    image_input: bool = typer.Option(False, "--image-input", help="Core ML: take an image input (scale/bias inside the model)."),
    workspace: Optional[int] = typer.Option(None, "--workspace", min=1, help="TensorRT: builder workspace in MiB."),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="TensorRT: timing cache file (read and updated)."),
    calib_images: Optional[Path] = typer.Option(None, "--calib-images", help="TensorRT int8: directory of calibration images."),
    host: Optional[str] = typer.Option(None, "--host", help="TensorRT: build the engine on user@addr over SSH."),
    parity: bool = typer.Option(True, "--parity/--no-parity", help="Check the artifact against PyTorch (default on)."),
    images: Optional[Path] = typer.Option(None, "--images", help="Parity: a directory of your own images."),
    samples: int = typer.Option(1, "--samples", min=0, help="Parity: random-input batches besides the images."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the gates' random inputs (default: fresh, recorded)."),
    overwrite: bool = OVERWRITE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Reparameterize, export, check and parity-test a checkpoint; writes the artifact and a manifest."""
    from edgeseg.export_job import export_checkpoint
    from edgeseg.parity.job import ParityFailure

    if target not in TARGETS:
        raise EdgesegError(f"unknown --target {target!r}", f"choose one of: {', '.join(TARGETS)}")
    if precision is not None and precision not in ("fp32", "fp16", "int8"):
        raise EdgesegError(f"unknown --precision {precision!r}", "choose fp32, fp16 or int8")
    options: dict[str, Any] = {"image_input": image_input}
    if keep_fp32:
        options["fp16_keep_fp32_ops"] = [op.strip() for op in keep_fp32.split(",") if op.strip()]
    if dynamic_axes:
        options["dynamic_axes"] = [a.strip() for a in dynamic_axes.split(",") if a.strip()]
    for key, value in (("workspace_mib", workspace), ("timing_cache", timing_cache), ("calib_images", calib_images), ("host", host)):
        if value is not None:
            options[key] = value
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
