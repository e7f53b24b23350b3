"""edgeseg's ONNX artifact against what a user would export by hand, in ONNX Runtime (CPU).

    python benchmarks/vs_by_hand.py                          # one default model per family
    python benchmarks/vs_by_hand.py fastvit_t8 --iterations 40 --threads 1 --int8
    python benchmarks/vs_by_hand.py --markdown perf.md       # also write the tables as Markdown

Rows per model, all built from the same weights (`pretrained_like=0`) in one process:
  (a) edgeseg  -- the `edgeseg export` artifact (fused, runtime-aware graph passes), fp32
  (b) plain unfused -- `torch.onnx.export` of the model as loaded (train-time branches)
  (c) plain fused   -- `torch.onnx.export` of edgeseg's fused model, no graph pass
  (d) public        -- the public implementation's own export where importable here
                       (transformers SegFormer; timm FastViT/MobileOne when timm is installed)
  (a8) edgeseg int8 -- with --int8: `edgeseg export --precision int8` (calibrated on the bundled images)
Sessions are timed interleaved (one call of each per round, order rotated each round) so a
change in machine load hits every row alike; median and p10-p90 in ms, ratio = row / (a)
median (> 1: slower than edgeseg). Node counts are of ORT's optimized graph (what it executes).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
from pathlib import Path


def _default_models() -> list[str]:
    from edgeseg.registry import list_models

    seen: dict[str, str] = {}
    for e in list_models():
        wanted = "segmentation" if e.family in ("segformer", "topformer", "boostformer") else "classification"
        if not e.large and e.task == wanted and e.family not in seen:
            seen[e.family] = e.name
    return list(seen.values())


def _public_segformer(name: str, size):
    """transformers' SegFormer of the same config (its own init: speed does not depend on values)."""
    import torch
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    variant = name.split("_")[1]
    hidden = {"b0": [32, 64, 160, 256]}.get(variant, [64, 128, 320, 512])
    depths = {"b0": [2, 2, 2, 2], "b1": [2, 2, 2, 2]}[variant]
    cfg = SegformerConfig(hidden_sizes=hidden, depths=depths, decoder_hidden_size=256 if variant == "b0" else 256, num_labels=150)
    hf = SegformerForSemanticSegmentation(cfg).eval()

    class Logits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(pixel_values=x, return_dict=False)[0]

    return Logits(hf)


def public_model(name: str, size) -> tuple[object | None, str]:
    """(model, note): the public implementation ready to export, or None and why not."""
    family = name.split("_")[0]
    if family == "segformer":
        try:
            return _public_segformer(name, size), "transformers SegformerForSemanticSegmentation"
        except ImportError as exc:
            return None, f"transformers not importable ({exc})"
    if family in ("fastvit", "mobileone"):
        try:
            import timm  # noqa: F401
        except ImportError:
            return None, ("timm is not installed: it does not install next to torch 2.13 here; run this script from a "
                          "venv that has timm to include its reparameterize_model + export")
        import timm
        from timm.utils.model import reparameterize_model

        model = timm.create_model(name.replace("_", "_") if family == "fastvit" else name, pretrained=False).eval()
        return reparameterize_model(model), f"timm {timm.__version__} create_model + reparameterize_model"
    return None, "no public implementation importable here"


def _stats(times: list[float]) -> dict:
    import numpy as np

    t = np.asarray(times) * 1000.0
    return {"median_ms": float(np.median(t)), "p10_ms": float(np.percentile(t, 10)), "p90_ms": float(np.percentile(t, 90)), "n": int(t.size)}


def _top_ops(counts: dict[str, int], k: int = 6) -> str:
    return ", ".join(f"{op} {n}" for op, n in sorted(counts.items(), key=lambda kv: -kv[1])[:k])


def build_rows(name: str, workdir: Path, *, int8: bool) -> tuple[list[dict], list[str]]:
    """Export every variant of one model; returns rows (label, path) and notes."""
    import onnx

    from edgeseg.api import create, reparameterize
    from edgeseg.exporters import ExportRequest, get_exporter
    from edgeseg.exporters.onnx.passes import plain_export

    notes: list[str] = []
    model = create(name, pretrained_like=0)
    fused, _ = reparameterize(model, verify=False)
    size = tuple(fused.edgeseg.fixed_input_size or fused.edgeseg.input_size)
    rows = []
    path = workdir / f"{name}.edgeseg.onnx"
    get_exporter("onnx").export(ExportRequest(model=fused, output=path, input_size=size, overwrite=True))
    rows.append({"row": "(a) edgeseg", "path": path})
    for label, m in (("(b) plain unfused", model), ("(c) plain fused", fused)):
        p = workdir / f"{name}.{label[1]}.onnx"
        try:
            onnx.save(plain_export(m, size), str(p))
            rows.append({"row": label, "path": p})
        except Exception as exc:  # EdgeFormer's train-time graph computes its kernels: not exportable
            notes.append(f"{name} {label}: not exportable ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
    pub, note = public_model(name, size)
    if pub is not None:
        p = workdir / f"{name}.public.onnx"
        onnx.save(plain_export(pub, size), str(p))
        rows.append({"row": "(d) public", "path": p, "note": note})
    else:
        notes.append(f"{name} (d) skipped: {note}")
    if int8:
        p = workdir / f"{name}.int8.onnx"
        try:
            result = get_exporter("onnx").export(ExportRequest(model=fused, output=p, input_size=size, precision="int8",
                                                               overwrite=True, options={"int8_force": True}))
            rows.append({"row": "(a8) edgeseg int8", "path": p, "int8": result.manifest.get("int8")})
        except Exception as exc:  # report, keep the fp32 numbers
            notes.append(f"{name} int8: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
    return rows, notes


def time_rows(rows: list[dict], threads: int, iterations: int, warmup: int, size) -> None:
    import time

    import numpy as np

    from edgeseg.exporters.onnx.runner import ort_session

    x = np.random.default_rng(0).standard_normal((1, 3, *size)).astype(np.float32)
    sessions = []
    for r in rows:
        s = ort_session(r["path"], threads=threads)
        sessions.append((s, {s.get_inputs()[0].name: x}))
    for _ in range(warmup):
        for s, feed in sessions:
            s.run(None, feed)
    times: list[list[float]] = [[] for _ in rows]
    for i in range(iterations):
        order = list(range(len(rows)))
        order = order[i % len(order):] + order[:i % len(order)]
        for j in order:
            s, feed = sessions[j]
            t0 = time.perf_counter()
            s.run(None, feed)
            times[j].append(time.perf_counter() - t0)
    base = None
    for r, t in zip(rows, times):
        r[f"t{threads}"] = _stats(t)
        base = base or r[f"t{threads}"]["median_ms"]
        r[f"ratio{threads}"] = r[f"t{threads}"]["median_ms"] / base


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime

    load = os.getloadavg() if hasattr(os, "getloadavg") else (0, 0, 0)
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, ONNX Runtime {onnxruntime.__version__}, "
            f"load average {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}")


def markdown(results: list[dict], threads: list[int], iterations: int, header: str) -> str:
    lines = [header, "", f"Median ms (p10-p90) of {iterations} interleaved runs, batch 1; ratio = row / edgeseg fp32 (> 1: slower "
             "than edgeseg); nodes = ORT's optimized graph.", ""]
    cols = ["model", "row"] + [f"{t} thr ms" for t in threads] + [f"ratio {t} thr" for t in threads] + ["ORT nodes", "top ops"]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for res in results:
        for r in res["rows"]:
            cells = [res["model"] + f" @{res['size'][0]}", r["row"]]
            cells += [f"{r[f't{t}']['median_ms']:.2f} ({r[f't{t}']['p10_ms']:.2f}-{r[f't{t}']['p90_ms']:.2f})" for t in threads]
            cells += [f"x{r[f'ratio{t}']:.3f}" for t in threads]
            cells += [str(r["nodes"]), r["top_ops"]]
            lines.append("| " + " | ".join(cells) + " |")
    notes = [n for res in results for n in res["notes"]]
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help="registered names (default: one default-size model per family)")
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="*", help="thread counts (default: 1 and all cores)")
    ap.add_argument("--int8", action="store_true", help="add edgeseg's int8 artifact as a row")
    ap.add_argument("--markdown", type=Path, help="also write the tables as Markdown here")
    ap.add_argument("--json", type=Path, help="also write the raw rows here")
    args = ap.parse_args(argv)

    import torch
    from rich.console import Console
    from rich.table import Table

    from edgeseg.exporters.onnx.passes import ort_optimized_counts

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    threads = args.threads or sorted({1, os.cpu_count() or 1})
    names = args.models or _default_models()
    started = datetime.datetime.now(datetime.timezone.utc)
    header = f"{started:%Y-%m-%d %H:%M} UTC, {machine()}"
    console = Console(stderr=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="edgeseg-vs-by-hand-") as d:
        for name in names:
            console.print(f"[dim]>> {name}: exporting[/]")
            try:
                rows, notes = build_rows(name, Path(d), int8=args.int8)
            except Exception as exc:  # one model's failure must not hide the others' numbers
                results.append({"model": name, "size": [0, 0], "rows": [], "notes": [f"{name}: {type(exc).__name__}: {exc}"]})
                continue
            import onnx

            size = [d.dim_value for d in onnx.load(str(rows[0]["path"])).graph.input[0].type.tensor_type.shape.dim][2:]
            for r in rows:
                counts = ort_optimized_counts(r["path"])
                r["nodes"], r["top_ops"], r["ort_ops"] = sum(counts.values()), _top_ops(counts), counts
            for t in threads:
                console.print(f"[dim]>> {name}: timing {len(rows)} rows at {t} thread(s)[/]")
                time_rows(rows, t, args.iterations, args.warmup, size)
            for r in rows:
                r["path"] = str(Path(r["path"]).name)
            results.append({"model": name, "size": size, "rows": rows, "notes": notes})

    table = Table(title=f"vs by hand: {header}")
    for c in ["model", "row", *[f"{t} thr ms (p10-p90)" for t in threads], *[f"ratio {t} thr" for t in threads], "ORT nodes", "top ops"]:
        table.add_column(c)
    for res in results:
        for r in res["rows"]:
            table.add_row(res["model"], r["row"], *[f"{r[f't{t}']['median_ms']:.2f} ({r[f't{t}']['p10_ms']:.2f}-{r[f't{t}']['p90_ms']:.2f})" for t in threads],
                          *[f"x{r[f'ratio{t}']:.3f}" for t in threads], str(r["nodes"]), r["top_ops"])
    out = Console(width=220)
    out.print(table)
    for res in results:
        for n in res["notes"]:
            out.print(f"[dim]{n}[/]")
    out.print(f"[dim]finished with {machine()}[/]")
    if args.markdown:
        args.markdown.write_text(markdown(results, threads, args.iterations, header))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
