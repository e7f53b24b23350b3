"""Reports from stored runs: Markdown, JSON, CSV, and PNG plots (matplotlib).

Plots: latency vs input size, fused vs unfused (the FastViT paper's figure), and latency
across devices (predicted bars hatched and labelled, never passed off as measurements).
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from edgeseg.atomic import atomic_output
from edgeseg.bench.result import BenchResult
from edgeseg.errors import EdgesegError, OutputError

FORMATS = ("md", "json", "csv", "png")
# which run stands for a device in the cross-device plot, best first
_DEVICE_BACKEND_PREF = ("tensorrt", "coreml", "onnxruntime", "pytorch", "predicted", "pytorch-unfused")


def _size(r: BenchResult) -> str:
    return f"{r.input_size[0]}x{r.input_size[1]}"


def row(r: BenchResult) -> dict[str, Any]:
    s = r.stats
    return {
        "id": r.id, "created_at": r.created_at, "model": r.model, "device": r.device, "host": r.host, "backend": r.backend,
        "label": r.label, "input_size": _size(r), "batch": r.batch, "precision": r.precision, "threads": r.threads,
        "fused": r.fused, "median_ms": r.median_ms, "mean_ms": s.mean_ms if s else None, "p90_ms": s.p90_ms if s else None,
        "p99_ms": s.p99_ms if s else None, "min_ms": s.min_ms if s else None, "max_ms": s.max_ms if s else None,
        "std_ms": s.std_ms if s else None, "iterations": r.iterations, "warmup": r.warmup, "load_ms": r.load_ms,
        "compile_ms": r.compile_ms, "first_ms": r.first_ms, "runtime_version": r.runtime_version,
        "preprocessing_in_timer": r.preprocessing_in_timer,
        "parity": (r.parity or {}).get("status"), "artifact_sha256": r.artifact_sha256,
    }


def fused_vs_unfused(results: Iterable[BenchResult]) -> list[dict[str, Any]]:
    """Unfused / fused median ratio per (model, device, size), from the latest runs of each."""
    latest: dict[tuple, BenchResult] = {}
    for r in sorted(results, key=lambda r: r.id or 0):
        if r.backend in ("pytorch", "pytorch-unfused") and r.stats is not None:
            latest[(r.model, r.device, tuple(r.input_size), r.backend)] = r
    out = []
    for (model, device, size, backend), fused in sorted(latest.items()):
        if backend != "pytorch":
            continue
        unfused = latest.get((model, device, size, "pytorch-unfused"))
        if unfused is None:
            continue
        out.append({"model": model, "device": device, "input_size": f"{size[0]}x{size[1]}", "unfused_ms": unfused.median_ms,
                    "fused_ms": fused.median_ms, "speedup": unfused.median_ms / fused.median_ms,
                    "ids": [unfused.id, fused.id]})
    return out


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def render_markdown(results: list[BenchResult], title: str = "edgeseg latency report") -> str:
    lines = [f"# {title}", "", f"{len(results)} runs. Medians in ms; predicted rows come from the roofline latency model, "
             "not from a device.", ""]
    cols = ["id", "model", "device", "backend", "label", "input_size", "precision", "threads", "median_ms", "p90_ms", "p99_ms",
            "std_ms", "iterations", "load_ms", "first_ms", "runtime_version", "parity"]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for r in results:
        d = row(r)
        lines.append("| " + " | ".join(_fmt(d[c]) for c in cols) + " |")
    ratios = fused_vs_unfused(results)
    if ratios:
        lines += ["", "## Fused vs unfused (PyTorch eager)", "", "| model | device | input | unfused ms | fused ms | speedup |",
                  "|---|---|---|---|---|---|"]
        for x in ratios:
            lines.append(f"| {x['model']} | {x['device']} | {x['input_size']} | {x['unfused_ms']:.3f} | {x['fused_ms']:.3f} | "
                         f"x{x['speedup']:.2f} |")
    notes = sorted({n for r in results for n in ([r.extra.get("warmup_note")] if r.extra.get("warmup_note") else [])})
    if any(r.emulated for r in results):
        notes.append("emulated rows ran on an emulated device (qemu-user): their latencies say nothing about a board "
                     "and are left out of the plots and comparisons")
    if notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def render_csv(results: list[BenchResult]) -> str:
    buf = io.StringIO()
    rows = [row(r) for r in results]
    fieldnames = list(rows[0]) if rows else []
    w = csv.DictWriter(buf, fieldnames=fieldnames)
    w.writeheader()
    for d in rows:
        w.writerow(d)
    return buf.getvalue()


def render_json(results: list[BenchResult]) -> str:
    return json.dumps({"runs": [r.as_dict(with_times=True) for r in results], "fused_vs_unfused": fused_vs_unfused(results)},
                      indent=2, default=str) + "\n"


# ---------------------------------------------------------------- plots

def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_size_scaling(results: list[BenchResult], path: Path) -> bool:
    """Latency vs input size, fused (solid) vs unfused (dashed), one colour per model and device."""
    series: dict[tuple, dict[int, BenchResult]] = defaultdict(dict)
    for r in sorted(results, key=lambda r: r.id or 0):
        # one line = one comparable series: measured (not predicted, not emulated), same device, runtime,
        # precision, threads and batch
        if (r.backend in ("pytorch", "pytorch-unfused", "onnxruntime") and r.median_ms and not r.predicted
                and not r.emulated):
            series[(r.model, r.device, r.backend, r.precision, r.threads, r.batch)][r.input_size[0] * r.input_size[1]] = r
    series = {k[:3]: v for k, v in series.items() if len(v) >= 2}
    if not series:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    groups = sorted({(m, d) for m, d, _ in series})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    style = {"pytorch": ("-", "o", "fused (PyTorch)"), "pytorch-unfused": ("--", "s", "unfused (PyTorch)"),
             "onnxruntime": (":", "^", "fused (ONNX Runtime)")}
    ticks: dict[int, str] = {}
    for (model, device, backend), pts in sorted(series.items()):
        c = colors[groups.index((model, device)) % len(colors)]
        ls, mk, what = style[backend]
        xs = sorted(pts)
        ys = [pts[x].median_ms for x in xs]
        ax.plot(xs, ys, ls, marker=mk, color=c, label=f"{model} on {device}: {what}")
        for x in xs:
            ticks[x] = _size(pts[x])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sorted(ticks))
    ax.set_xticklabels([ticks[x] for x in sorted(ticks)], rotation=0)
    ax.minorticks_off()
    ax.set_xlabel("input size (pixels, log scale)")
    ax.set_ylabel("median latency, ms (log scale)")
    ax.set_title("Latency vs input size: fused vs unfused")
    ax.grid(True, which="major", alpha=0.3)
    # beside the axes, not over the points; savefig's tight bbox keeps it and the tick labels whole
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return True


def plot_devices(results: list[BenchResult], path: Path) -> bool:
    """One bar per (model, device) at each model's most common size; predicted bars hatched."""
    by_model: dict[str, list[BenchResult]] = defaultdict(list)
    for r in results:
        if r.median_ms and not r.emulated:  # emulated timings would sit next to real ones as if comparable
            by_model[r.model].append(r)
    bars = []  # (model, device, result): the best measured run per device, plus the prediction if there is one
    for model, rs in sorted(by_model.items()):
        devs: dict[tuple, set] = defaultdict(set)
        for r in rs:
            devs[tuple(r.input_size)].add(r.device)
        size = max(devs, key=lambda s: (len(devs[s]), -s[0] * s[1]))
        measured: dict[str, BenchResult] = {}
        predicted: dict[str, BenchResult] = {}
        for r in sorted(rs, key=lambda r: r.id or 0):
            if tuple(r.input_size) != size or r.backend not in _DEVICE_BACKEND_PREF:
                continue
            pool = predicted if r.predicted else measured
            cur = pool.get(r.device)
            if cur is None or _DEVICE_BACKEND_PREF.index(r.backend) <= _DEVICE_BACKEND_PREF.index(cur.backend):
                pool[r.device] = r
        for device in sorted(set(measured) | set(predicted)):
            for pool in (measured, predicted):
                if device in pool:
                    bars.append((model, device, pool[device]))
    devices = sorted({d for _, d, _ in bars})
    if len(bars) < 2 or (len(devices) < 2 and len(by_model) < 2):
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(bars) + 1.6), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    labels, ys = [], []
    for i, (model, device, r) in enumerate(bars):
        c = colors[devices.index(device) % len(colors)]
        ax.barh(i, r.median_ms, color=c, alpha=0.45 if r.predicted else 0.9, hatch="//" if r.predicted else None,
                edgecolor="black", linewidth=0.5)
        tag = "predicted" if r.predicted else r.backend
        ax.text(r.median_ms * 1.05, i, f"{r.median_ms:.2f} ms ({tag}, {r.precision})", va="center", fontsize=8)
        labels.append(f"{model} {_size(r)} | {device}")
        ys.append(i)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    lo = min(r.median_ms for _, _, r in bars)
    hi = max(r.median_ms for _, _, r in bars)
    ax.set_xlim(lo / 2, hi * 8)
    ax.set_xlabel("median latency, ms (log scale); hatched = predicted by the latency model")
    ax.set_title("Latency across devices")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return True


def _save(fig, path: Path) -> None:
    with atomic_output(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
        if tmp.stat().st_size == 0 or tmp.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
            raise EdgesegError(f"matplotlib wrote no PNG for {path}", "check the matplotlib installation")


SKIP_REASONS = {
    "latency_vs_size": "needs one model measured at 2 or more sizes on one device with the same runtime, precision, threads "
                       "and batch (predicted runs are not plotted against measurements)",
    "latency_by_device": "needs 2 or more devices or models with runs at a shared input size",
}


def write_report(results: list[BenchResult], out_dir: str | Path, *, formats: Iterable[str] = FORMATS,
                 overwrite: bool = False, title: str = "edgeseg latency report", skipped: dict[str, str] | None = None) -> dict[str, str]:
    """Write the requested formats into `out_dir`; returns {kind: path}. Plots need enough data."""

    formats = list(formats)
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise EdgesegError(f"unknown report format(s) {', '.join(bad)}", f"choose from {', '.join(FORMATS)}")
    if not results:
        raise EdgesegError("no runs to report", "run `edgeseg bench` first, or widen the selection")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    texts = {"md": ("report.md", render_markdown(results, title)), "json": ("report.json", render_json(results)),
             "csv": ("report.csv", render_csv(results))}
    for fmt in ("md", "json", "csv"):
        if fmt in formats:
            name, text = texts[fmt]
            with atomic_output(out / name, overwrite=overwrite) as tmp:
                tmp.write_text(text)
                if fmt == "json":
                    json.loads(tmp.read_text())
            written[fmt] = str(out / name)
    if "png" in formats:
        for key, name, fn in (("latency_vs_size", "latency_vs_size.png", plot_size_scaling),
                              ("latency_by_device", "latency_by_device.png", plot_devices)):
            target = out / name
            if target.exists() and not overwrite:
                raise OutputError(f"output {target} already exists", "pass --overwrite to replace it, or another -o")
            if fn(results, target):
                written[key] = str(target)
            elif skipped is not None:
                skipped[key] = SKIP_REASONS[key]
    return written
