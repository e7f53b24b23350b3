"""Core ML conversion of every registered architecture: capture path, conversion time, spec
findings (precision, op counts, ops known to fall off the Neural Engine) and the fp16
preflight (predicted fp16 drift vs fp32 PyTorch).

    python benchmarks/coreml_convert.py                 # non-large variants at default size
    python benchmarks/coreml_convert.py --large         # all variants
    python benchmarks/coreml_convert.py fastvit_t8 segformer_b0 --size 256 --json out.json

Weights: `edgeseg.create(name, pretrained_like=0)` (non-trivial, deterministic). Times are
wall-clock on this machine: `convert s` is torch.export capture + ct.convert, `preflight s` the fp16
preflight; they are not asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path


def convert_one(name: str, size: tuple[int, int] | None, precision: str, image_input: bool, preflight: bool, workdir: Path,
                capture: str = "auto") -> dict:
    import edgeseg
    from edgeseg.exporters import ExportRequest, get_exporter

    row: dict = {"arch": name}
    t0 = time.perf_counter()
    try:
        model = edgeseg.create(name, pretrained_like=0)
        fused, _ = edgeseg.reparameterize(model, verify=False, input_size=size)
        size = tuple(size or fused.edgeseg.fixed_input_size or fused.edgeseg.input_size)
        row["input_size"] = f"{size[0]}x{size[1]}"
        req = ExportRequest(model=fused, output=workdir / f"{name}.mlpackage", input_size=size, precision=precision, overwrite=True,
                            options={"image_input": image_input, "preflight": preflight, "capture": capture})
        res = get_exporter("coreml").export(req)
        m = res.manifest
        spec = m["spec"]
        pre = m.get("fp16_preflight") or {}
        row.update(
            status="ok", capture=m["capture"], failed_paths=", ".join(m["capture_failures"]) or "-",
            seconds=round(m["export_timings"]["convert_s"], 1), preflight_s=round(m["export_timings"].get("preflight_s", 0.0), 1),
            precision=spec["precision"],
            ops=sum(n for op, n in spec["op_counts"].items() if op != "const"),
            top_ops=", ".join(f"{op}:{n}" for op, n in [kv for kv in spec["op_counts"].items() if kv[0] != "const"][:6]),
            ane="; ".join(f"{f['what']} x{f['count']}" for f in spec["ane"]) or "none",
            normalization=m["normalization"]["std_folded"] or m["normalization"]["mode"],
            fp16_max_rel=pre.get("max_rel"), fp16_cosine=pre.get("min_cosine"),
            fp16_agreement=pre.get("top1_agreement", pre.get("pixel_agreement")), fp16_nonfinite=pre.get("nonfinite"),
            fp16_overflow=", ".join(o["module"] for o in pre.get("overflow_modules", [])[:2]) or "-",
            fp16_gate=(pre.get("predicted_gate") or "-").split(":")[0],
            peak_activation=pre.get("peak_activation"),
        )
    except Exception as exc:  # noqa: BLE001 - a failing architecture is a table row, not the end of the run
        row.update(status="FAILED", error=f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:400] if str(exc).strip() else ''}",
                   seconds=round(time.perf_counter() - t0, 1))
        if "--debug" in sys.argv:
            traceback.print_exc()
    return row


def _fmt(v, spec: str = "") -> str:
    if v is None:
        return "-"
    return format(v, spec) if spec else str(v)


def print_table(rows: list[dict]) -> None:
    head = ("arch", "size", "status", "capture", "convert s", "preflight s", "prec", "ops", "off-ANE / risks", "fp16 max_rel", "fp16 cos", "fp16 agree", "gate", "overflow")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        if r["status"] != "ok":
            print(f"| {r['arch']} | {r.get('input_size', '-')} | FAILED | - | {r['seconds']} | - | - | - | {r['error']} | - | - | - | - | - |")
            continue
        print("| " + " | ".join([
            r["arch"], r["input_size"], "ok", r["capture"], _fmt(r["seconds"]), _fmt(r["preflight_s"]), r["precision"], _fmt(r["ops"]), r["ane"],
            _fmt(r["fp16_max_rel"], ".2e"), _fmt(r["fp16_cosine"], ".6f"), _fmt(r["fp16_agreement"], ".4f"), r["fp16_gate"],
            ("inf/NaN; " if r["fp16_nonfinite"] else "") + r["fp16_overflow"],
        ]) + " |")
    print()
    print("op mix (non-const, most frequent first):")
    for r in rows:
        if r["status"] == "ok":
            print(f"  {r['arch']}: {r['top_ops']}  | normalization: {r['normalization']} | capture fallbacks tried: {r['failed_paths']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("archs", nargs="*", help="architectures (default: every registered one)")
    ap.add_argument("--large", action="store_true", help="include large variants")
    ap.add_argument("--size", type=int, default=None, help="square input size instead of each model's default")
    ap.add_argument("--precision", default="fp16", choices=("fp16", "fp32"))
    ap.add_argument("--image-input", action="store_true")
    ap.add_argument("--no-preflight", action="store_true")
    ap.add_argument("--capture", default="auto", choices=("auto", "export", "export-decomposed", "trace"),
                    help="pin the capture path (auto: torch.export first, then fallbacks)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    ap.add_argument("--debug", action="store_true")
    args = ap.parse_args(argv)

    from edgeseg.registry import get_entry, list_models

    entries = [get_entry(a) for a in args.archs] if args.archs else [e for e in list_models() if args.large or not e.large]
    size = (args.size, args.size) if args.size else None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for e in entries:
            row = convert_one(e.name, size, args.precision, args.image_input, not args.no_preflight, Path(tmp), args.capture)
            rows.append(row)
            print(f"# {e.name}: {row['status']} ({row['seconds']} s)", file=sys.stderr, flush=True)
    import torch

    from edgeseg.exporters.coreml.convert import import_coremltools

    coremltools = import_coremltools()

    print(f"Core ML conversion, {args.precision}, capture {args.capture}, torch {torch.__version__}, "
          f"coremltools {coremltools.__version__}\n")
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=str))
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
