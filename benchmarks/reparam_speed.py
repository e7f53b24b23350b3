"""What reparameterization buys in PyTorch eager on this host: unfused vs fused latency.

    python benchmarks/reparam_speed.py                                  # FastViT T8/T12/S12/SA12 + MobileOne S0/S1
    python benchmarks/reparam_speed.py --variants fastvit_t8 mobileone_s0 --sizes 256 512 --iterations 30
    python benchmarks/reparam_speed.py --json reparam_speed.json

Each (model, size): the registered model with deterministic non-trivial weights, fused by
`edgeseg.reparameterize` (its output is compared with the unfused one on the timing input),
then both timed with `edgeseg.timing.time_torch_model`: batch 1, fixed iterations after
warm-up, in 2-4 interleaved rounds (unfused, fused, unfused, fused, ...) so that load drift on
a shared machine hits both alike. Reported: median and p10-p90 in ms, and unfused/fused median.
Sizes: 256 and 512 for every model, 1024 for the small ones (--large-size-models), with
fewer iterations at the larger sizes. Nothing is asserted; the numbers depend on the machine,
its thread count and its load (both printed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

DEFAULT_VARIANTS = ["fastvit_t8", "fastvit_t12", "fastvit_s12", "fastvit_sa12", "mobileone_s0", "mobileone_s1"]
SMALL = ["fastvit_t8", "mobileone_s0", "mobileone_s1"]
ITERATIONS = {256: 20, 512: 10, 1024: 4}  # per model and size, split over the interleaved rounds
WARMUP = {256: 3, 512: 2, 1024: 1}


def _iters(size: int, table: dict[int, int], scale: float) -> int:
    base = table.get(size) or min(table.values())
    return max(1, round(base * scale))


def prepare(name: str, seed: int = 0):
    """The model with non-trivial weights and its fused copy (both size-agnostic)."""
    import edgeseg

    model = edgeseg.create(name, pretrained_like=seed)
    fused, result = edgeseg.reparameterize(model, verify=False)
    return model, fused, result


def measure(name: str, model, fused, result, size: int, iterations: int, warmup: int, seed: int = 0) -> dict:
    import numpy as np
    import torch

    from edgeseg.analysis import count_params
    from edgeseg.timing import time_torch_model

    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        ref, got = model(x), fused(x)
    max_rel = float((ref.double() - got.double()).abs().max() / ref.double().abs().max())

    times: dict[str, list[float]] = {"unfused": [], "fused": []}
    rounds = max(min(2, iterations), min(4, iterations // 3))
    for r in range(rounds):  # interleaved: load drift on a shared host hits both alike
        n = iterations // rounds + (1 if r < iterations % rounds else 0)
        for label, m in (("unfused", model), ("fused", fused)):
            _, raw = time_torch_model(m, (size, size), warmup=warmup, iterations=n)
            times[label].extend(raw)
    row = {"model": name, "input": size, "iterations": len(times["fused"]), "warmup": warmup,
           "params_unfused": count_params(model), "params_fused": count_params(fused),
           "fused_blocks": result.report.total, "max_rel_err": max_rel, "load_1min": _load().split("/")[0]}
    for label, t in times.items():
        arr = np.asarray(t)
        row[label] = {"median_ms": float(np.median(arr)), "p10_ms": float(np.percentile(arr, 10)),
                      "p90_ms": float(np.percentile(arr, 90)), "times_ms": [round(v, 3) for v in t]}
    row["speedup"] = row["unfused"]["median_ms"] / row["fused"]["median_ms"]
    return row


def render(rows: list[dict], meta: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"Reparameterization speed-up, PyTorch eager {meta['torch']} ({meta['threads']} threads, batch 1)",
              caption=f"median \\[p10-p90] ms over the iterations shown; load = 1-min load average after the row; load avg {meta['load_before']} -> {meta['load_after']}; "
                      f"{meta['seconds']:.0f} s")
    for col in ("model", "input", "iters", "params unfused/fused", "unfused ms", "fused ms", "unfused/fused", "max rel err", "load"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        u, f = r["unfused"], r["fused"]
        t.add_row(r["model"], str(r["input"]), str(r["iterations"]),
                  f"{r['params_unfused'] / 1e6:.3f}M / {r['params_fused'] / 1e6:.3f}M",
                  f"{u['median_ms']:.1f} \\[{u['p10_ms']:.1f}-{u['p90_ms']:.1f}]",
                  f"{f['median_ms']:.1f} \\[{f['p10_ms']:.1f}-{f['p90_ms']:.1f}]",
                  f"x{r['speedup']:.2f}", f"{r['max_rel_err']:.1e}", r["load_1min"])
    console = Console()
    if not console.is_terminal:  # piped into a file or a report: do not squeeze into 80 columns
        console = Console(width=160)
    console.print(t)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, help="registered model names")
    p.add_argument("--sizes", nargs="+", type=int, default=[256, 512], help="square input sizes for every model")
    p.add_argument("--large-sizes", nargs="*", type=int, default=[1024], help="extra sizes for the small models")
    p.add_argument("--large-size-models", nargs="*", default=SMALL, help="models that also run at --large-sizes")
    p.add_argument("--iterations", type=float, default=1.0, help="scale the per-size iteration counts (20/10/4 at 256/512/1024)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--json", default=None, help="also write every row (with raw times) to this file")
    args = p.parse_args(argv)

    import torch

    import edgeseg
    from edgeseg.registry import get_entry

    for name in args.variants:
        get_entry(name)  # unknown names fail before any timing
    if args.threads:
        torch.set_num_threads(args.threads)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "load_before": _load(), "edgeseg": edgeseg.__version__}
    t0 = time.perf_counter()
    rows = []
    for name in args.variants:
        sizes = list(args.sizes) + (list(args.large_sizes) if name in args.large_size_models else [])
        model, fused, result = prepare(name)
        for size in sizes:
            rows.append(measure(name, model, fused, result, size, _iters(size, ITERATIONS, args.iterations), WARMUP.get(size, 1)))
            print(f"  {name} @ {size}: x{rows[-1]['speedup']:.2f}", file=sys.stderr, flush=True)
    meta.update(seconds=time.perf_counter() - t0, load_after=_load())
    render(rows, meta)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "rows": rows}, fh, indent=2)
    return 0


def _load() -> str:
    try:
        return "/".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


if __name__ == "__main__":
    sys.exit(main())
