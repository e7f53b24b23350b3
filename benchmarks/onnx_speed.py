"""ONNX Runtime latency of the fused export vs PyTorch eager (unfused and fused) and vs an
unfused ONNX export, per architecture at its default size; plus export wall time.

    python benchmarks/onnx_speed.py                       # every non-large registered model
    python benchmarks/onnx_speed.py mobileone_s0 fastvit_t8 --iterations 50 --threads 2

Fixed iterations after warm-up, one thread count for both runtimes (recorded), batch 1,
inputs prepared outside the timer. Reports the median and the p10-p90 spread in ms.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def _stats(times):
    import numpy as np

    t = np.asarray(times)
    return {"median_ms": float(np.median(t)), "p10_ms": float(np.percentile(t, 10)), "p90_ms": float(np.percentile(t, 90)),
            "std_ms": float(t.std(ddof=1)) if t.size > 1 else 0.0, "iterations": int(t.size)}


def bench_model(name: str, *, iterations: int, warmup: int, threads: int, workdir: Path) -> dict:
    import numpy as np
    import torch

    from edgeseg.api import create, reparameterize
    from edgeseg.timing import time_callable
    from edgeseg.exporters import ExportRequest, get_exporter
    from edgeseg.exporters.onnx.export import ort_session

    model = create(name, pretrained_like=0)
    fused, _ = reparameterize(model, verify=False)
    info = fused.edgeseg
    size = tuple(info.fixed_input_size or info.input_size)
    row: dict = {"model": name, "input_size": list(size), "threads": threads}

    exports = {}
    for label, m in (("fused", fused), ("unfused", model)):
        path = workdir / f"{name}.{label}.onnx"
        t0 = time.perf_counter()
        try:
            get_exporter("onnx").export(ExportRequest(model=m, output=path, input_size=size, overwrite=True))
        except Exception as exc:  # e.g. EdgeFormer's train-time graph computes its conv kernels: not exportable
            if label == "fused":
                raise
            row["unfused_export_error"] = str(exc).splitlines()[0][:160]
            continue
        row[f"export_{label}_s"] = time.perf_counter() - t0
        exports[label] = path

    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    xn = x.numpy().astype(np.float32)
    for label, m in (("torch_unfused", model), ("torch_fused", fused)):
        def call(m=m):
            with torch.inference_mode():
                m(x)
        _, times = time_callable(call, warmup=warmup, iterations=iterations)
        row[label] = _stats(times)
    for label in exports:
        sess = ort_session(exports[label], threads=threads)
        feed = {sess.get_inputs()[0].name: xn}
        _, times = time_callable(lambda: sess.run(None, feed), warmup=warmup, iterations=iterations)
        row[f"ort_{label}"] = _stats(times)
    row["speedup_ort_fused_vs_torch_unfused"] = row["torch_unfused"]["median_ms"] / row["ort_fused"]["median_ms"]
    if "ort_unfused" in row:
        row["speedup_ort_fused_vs_ort_unfused"] = row["ort_unfused"]["median_ms"] / row["ort_fused"]["median_ms"]
    return row


def render(rows: list[dict], iterations: int, threads: int) -> None:
    from rich.console import Console
    from rich.table import Table

    def cell(s):
        if s is None:
            return "[dim]n/a[/]"
        return f"{s['median_ms']:.2f} [dim]({s['p10_ms']:.2f}-{s['p90_ms']:.2f})[/]"

    def ratio(v):
        return "-" if v is None else f"x{v:.2f}"

    t = Table(title=f"latency, batch 1, ms: median (p10-p90) of {iterations} iterations, {threads} thread(s)")
    for col in ("model", "input", "torch unfused", "torch fused", "ORT unfused", "ORT fused", "ORT fused vs torch unfused",
                "ORT fused vs ORT unfused", "export s (fused / unfused)"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        if "error" in r:
            t.add_row(r["model"], "-", f"[red]{r['error'][:60]}[/]", *["-"] * 6)
            continue
        unfused_s = f"{r['export_unfused_s']:.1f}" if "export_unfused_s" in r else "n/a"
        t.add_row(r["model"], "x".join(map(str, r["input_size"])), cell(r["torch_unfused"]), cell(r["torch_fused"]), cell(r.get("ort_unfused")),
                  cell(r["ort_fused"]), ratio(r["speedup_ort_fused_vs_torch_unfused"]), ratio(r.get("speedup_ort_fused_vs_ort_unfused")),
                  f"{r['export_fused_s']:.1f} / {unfused_s}")
    console = Console()
    console.print(t)
    for r in rows:
        if "unfused_export_error" in r:
            console.print(f"[dim]{r['model']}: unfused graph not exportable ({r['unfused_export_error']})[/]")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help="registered names (default: every non-large model)")
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads for PyTorch and ONNX Runtime")
    ap.add_argument("--json", type=Path, help="also write the raw rows here")
    args = ap.parse_args(argv)

    import torch

    from edgeseg.registry import list_models

    torch.set_num_threads(args.threads)
    names = args.models or [e.name for e in list_models() if not e.large]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name in names:
            print(f">> {name}", file=sys.stderr, flush=True)
            try:
                rows.append(bench_model(name, iterations=args.iterations, warmup=args.warmup, threads=args.threads, workdir=Path(d)))
            except Exception as exc:  # one model's failure must not hide the others' numbers
                rows.append({"model": name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"})
    render(rows, args.iterations, args.threads)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
