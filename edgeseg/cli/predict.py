"""`edgeseg predict`: parse, delegate to `edgeseg.predict`, render."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from edgeseg.cli.app import app
from edgeseg.cli.common import ARCH_OPTION, JSON_OPTION, OVERWRITE_OPTION, console, emit

EXAMPLES = """
[bold]Examples[/]

  edgeseg predict fastvit_sa12.onnx cat.jpg dog.jpg          # top-5 ImageNet classes per picture
  edgeseg predict segformer_b0.onnx street.jpg --out-dir out/  # out/street.segformer_b0.overlay.png + class shares
  edgeseg predict model.mlpackage cat.jpg --json             # Core ML (macOS), machine-readable
"""


def render_predict(con, r: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    pre = r["preprocessing"]
    mode = f" ({r['runtime_mode']})" if r.get("runtime_mode") and r["runtime_mode"] != "native" else ""
    con.print(f"[bold]{escape(r['artifact'])}[/]: {r['kind']}, {r.get('arch') or '?'}, {r['task']}, runtime {r['runtime']}{escape(mode)}")
    con.print(f"preprocessing: {'x'.join(map(str, pre['input_size']))} {pre['resize']}, {pre['channel_order'].upper()}, "
              f"mean {pre['mean']}, std {pre['std']}")
    con.print(f"described by: {', '.join(r['described_by'])}")
    con.print(f"labels: {escape(r['labels'])} ({r['num_classes']} classes)")
    for p in r["predictions"]:
        if "top" in p:
            t = Table(title=f"{escape(p['image'])} ({p['ms']:.1f} ms)", title_justify="left")
            t.add_column("#", justify="right")
            t.add_column("class")
            t.add_column("index", justify="right")
            t.add_column("probability", justify="right")
            for k, c in enumerate(p["top"], 1):
                t.add_row(str(k), escape(c["label"]), str(c["index"]), f"{c['score']:.4f}")
            con.print(t)
        else:
            t = Table(title=f"{escape(p['image'])} ({p['ms']:.1f} ms)", title_justify="left")
            t.add_column("class")
            t.add_column("index", justify="right")
            t.add_column("pixels", justify="right")
            t.add_column("share", justify="right")
            shown = p["classes"][:10]
            for c in shown:
                t.add_row(f"[{c['colour']}]■[/] {escape(c['label'])}", str(c["index"]), str(c["pixels"]), f"{100 * c['share']:.1f}%")
            rest = p["classes"][10:]
            if rest:
                t.add_row(f"{len(rest)} more classes", "", str(sum(c["pixels"] for c in rest)),
                          f"{100 * sum(c['share'] for c in rest):.1f}%")
            con.print(t)
            con.print(f"overlay: {escape(p['overlay'])}" if p.get("overlay") else "overlay: not written (--no-overlay)")
    for note in r.get("notes", []):
        con.print(f"[dim]note: {escape(note)}[/]")


@app.command("predict", epilog=EXAMPLES)
def predict_cmd(
    artifact: Path = typer.Argument(..., help="Checkpoint, .deploy.safetensors, .onnx, .mlpackage or .engine."),
    images: List[Path] = typer.Argument(..., help="One or more pictures (.jpg, .png, ...)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Class names, one per line in class order (default: what the artifact records, else ImageNet/ADE20K/VOC by class count)."),
    top_k: int = typer.Option(5, "--top-k", min=1, help="Classification: how many classes to show per picture."),
    out_dir: Path = typer.Option(Path("."), "--out-dir", help="Segmentation: folder for <image>.<artifact>.overlay.png."),
    overlay: bool = typer.Option(True, "--overlay/--no-overlay", help="Segmentation: write the colour overlay PNG."),
    alpha: float = typer.Option(0.5, "--alpha", min=0.0, max=1.0, help="Overlay opacity of the class colours (0..1)."),
    compute_units: Optional[str] = typer.Option(None, "--compute-units", help="Core ML: ALL, CPU_ONLY, CPU_AND_GPU or CPU_AND_NE."),
    arch: Optional[str] = ARCH_OPTION,
    overwrite: bool = OVERWRITE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Run an artifact on pictures with the preprocessing it records: top-5 classes, or a class mask overlay and pixel shares."""
    from edgeseg.predict import predict

    log = console(stderr=True)
    result = predict(artifact, images, labels=labels, top_k=top_k, out_dir=out_dir if overlay else None, overwrite=overwrite,
                     arch=arch, alpha=alpha, compute_units=compute_units,
                     progress=lambda m: None if as_json else log.print(f"[dim]>> {m}[/]"))
    data = result.as_dict()
    emit(data, as_json, lambda con: render_predict(con, data))
