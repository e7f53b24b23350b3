"""The latency model against measurements and published numbers; fused vs unfused on the host.

    python benchmarks/host_latency_model.py                         # MobileOne-S0 + FastViT-T8, 256/512/1024
    python benchmarks/host_latency_model.py --models fastvit_t8 --sizes 256 512 --iterations 10 --threads 2
    python benchmarks/host_latency_model.py --published-only        # no host timing: the published checks

Part 1 (host): calibrate the host-cpu profile (GEMM GFLOP/s, copy GB/s, per-layer overhead of
each runtime), then measure PyTorch eager unfused and fused and ONNX Runtime (fused export)
at each size; print the fused/unfused ratios and the predicted vs measured error.

Part 2 (published): predict the latencies published for the reference devices
(shared/reference/targets.md; MobileOne from apple/ml-mobileone's README) and print the error:
- iPhone 12 Pro, Core ML: FastViT T8..MA36 @256 (targets.md); MobileOne S0..S4 @224 (README).
  Once with the profile's spec-sheet ceilings, once with ceilings fitted on MobileOne only,
  then checked on FastViT (held out).
- Jetson Nano, TensorRT: MobileNetV2 @224 (27.2 ms) and FCN-ResNet18 @512x256 (~21 ms),
  built here from their standard definitions (plain torch; they are not edgeseg models).

Nothing here is asserted; timings depend on the machine and its load (recorded in the output).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

FASTVIT_IPHONE = {"fastvit_t8": 0.8, "fastvit_t12": 1.2, "fastvit_s12": 1.4, "fastvit_sa12": 1.6, "fastvit_sa24": 2.6,
                  "fastvit_sa36": 3.5, "fastvit_ma36": 4.6}
MOBILEONE_IPHONE = {"mobileone_s0": 0.79, "mobileone_s1": 0.89, "mobileone_s2": 1.18, "mobileone_s3": 1.53, "mobileone_s4": 1.86}
NANO = {"mobilenet_v2 @224": 27.2, "fcn_resnet18 @512x256": 21.0}


# ---------------------------------------------------------------- reference CNNs for the Jetson Nano checks

def mobilenet_v2(num_classes: int = 1000):
    """MobileNetV2 1.0 (Sandler et al. 2018): inverted residuals t,c,n,s."""
    from torch import nn

    def cbr(i, o, k=3, s=1, g=1):
        return nn.Sequential(nn.Conv2d(i, o, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(o), nn.ReLU6())

    class IR(nn.Module):
        def __init__(self, i, o, s, t):
            super().__init__()
            h = i * t
            layers = ([cbr(i, h, 1)] if t != 1 else []) + [cbr(h, h, 3, s, h), nn.Conv2d(h, o, 1, bias=False), nn.BatchNorm2d(o)]
            self.body = nn.Sequential(*layers)
            self.res = s == 1 and i == o

        def forward(self, x):
            return x + self.body(x) if self.res else self.body(x)

    cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    layers, c = [cbr(3, 32, 3, 2)], 32
    for t, o, n, s in cfg:
        for i in range(n):
            layers.append(IR(c, o, s if i == 0 else 1, t))
            c = o
    layers += [cbr(c, 1280, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, num_classes)]
    return nn.Sequential(*layers).eval()


def fcn_resnet18(num_classes: int = 21):
    """ResNet-18 backbone + FCN head (1x1 classifier, bilinear upsampling), as jetson-inference deploys it."""
    import torch.nn.functional as F
    from torch import nn

    class Basic(nn.Module):
        def __init__(self, i, o, s):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o)
            self.c2, self.b2 = nn.Conv2d(o, o, 3, 1, 1, bias=False), nn.BatchNorm2d(o)
            self.down = nn.Sequential(nn.Conv2d(i, o, 1, s, bias=False), nn.BatchNorm2d(o)) if (s != 1 or i != o) else None

        def forward(self, x):
            y = F.relu(self.b1(self.c1(x)))
            y = self.b2(self.c2(y))
            return F.relu(y + (self.down(x) if self.down is not None else x))

    class FCN(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
            blocks, c = [], 64
            for o, s in ((64, 1), (128, 2), (256, 2), (512, 2)):
                blocks += [Basic(c, o, s), Basic(o, o, 1)]
                c = o
            self.body = nn.Sequential(*blocks)
            self.head = nn.Conv2d(512, num_classes, 1)

        def forward(self, x):
            y = self.head(self.body(self.stem(x)))
            return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)

    return FCN().eval()


# ---------------------------------------------------------------- helpers

def _err(pred: float, ref: float) -> float:
    return (pred - ref) / ref * 100.0


def _fused(name: str):
    import edgeseg

    model = edgeseg.create(name)
    fused, _ = edgeseg.reparameterize(model, verify=False)
    return model, fused


def _table(title: str, header: list[str], rows: list[list]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in r) + " |")


def _mean_abs(errs: list[float]) -> float:
    return sum(abs(e) for e in errs) / len(errs) if errs else float("nan")


# ---------------------------------------------------------------- part 1: host

def host_part(models: list[str], sizes: list[int], iterations: int, threads: int, out: dict) -> None:
    import torch

    from edgeseg.bench.calibrate import calibrate_host
    from edgeseg.bench.local import bench_onnxruntime, bench_pytorch
    from edgeseg.bench.predict import predict_model_latency as predict_latency
    from edgeseg.devices import get_profile

    cal = calibrate_host(threads)
    print(f"host calibration: {cal.describe()}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    out["calibration"] = cal.__dict__
    profile = get_profile("host-cpu", threads=threads)  # the calibration just measured, for this thread count
    assert profile.ceiling("fp32").gflops == cal.gemm_gflops
    rows, err_rows, errs = [], [], {"pytorch": [], "pytorch-unfused": [], "onnxruntime": []}
    for name in models:
        model, fused = _fused(name)
        for s in sizes:
            size = (s, s)
            n = max(3, iterations if s <= 512 else iterations // 3)
            unf = bench_pytorch(model, size, warmup=1, iterations=n, threads=threads).stats()
            fus = bench_pytorch(fused, size, warmup=1, iterations=n, threads=threads).stats()
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "m.onnx"
                torch.onnx.export(fused, (torch.zeros(1, 3, *size),), str(path), opset_version=17, input_names=["input"], dynamo=False)
                ort = bench_onnxruntime(path, warmup=1, iterations=n, threads=threads).stats()
            p_unf = predict_latency(model, profile, input_size=size, runtime="pytorch").total_ms
            p_fus = predict_latency(fused, profile, input_size=size, runtime="pytorch").total_ms
            p_ort = predict_latency(fused, profile, input_size=size, runtime="onnxruntime").total_ms
            rows.append([name, f"{s}x{s}", unf.median_ms, fus.median_ms, unf.median_ms / fus.median_ms, ort.median_ms, n])
            for backend, meas, pred in (("pytorch-unfused", unf.median_ms, p_unf), ("pytorch", fus.median_ms, p_fus),
                                        ("onnxruntime", ort.median_ms, p_ort)):
                errs[backend].append(_err(pred, meas))
                err_rows.append([name, f"{s}x{s}", backend, meas, pred, _err(pred, meas)])
            out.setdefault("host", []).append({"model": name, "size": s, "unfused_ms": unf.median_ms, "fused_ms": fus.median_ms,
                                               "ort_ms": ort.median_ms, "pred_unfused_ms": p_unf, "pred_fused_ms": p_fus,
                                               "pred_ort_ms": p_ort, "iterations": n})
            print(f"  {name} {s}: unfused {unf.median_ms:.1f} fused {fus.median_ms:.1f} ort {ort.median_ms:.1f} ms", flush=True)
    _table(f"host fused vs unfused (PyTorch eager, {threads} thread(s), median ms)",
           ["model", "input", "unfused", "fused", "unfused/fused", "ONNX Runtime (fused)", "n"], rows)
    _table("latency model vs host measurements (median ms; error = (pred - meas) / meas)",
           ["model", "input", "runtime", "measured", "predicted", "error %"], err_rows)
    print("\nmean |error|: " + ", ".join(f"{k} {_mean_abs(v):.1f}%" for k, v in errs.items()))
    out["host_mean_abs_error_pct"] = {k: _mean_abs(v) for k, v in errs.items()}


# ---------------------------------------------------------------- part 2: published numbers

def published_part(out: dict) -> None:
    from edgeseg.bench.predict import estimate, fit_ceiling, trace_layers
    from edgeseg.devices import get_profile
    from edgeseg.registry import list_models

    registered = {e.name for e in list_models()}
    iphone = get_profile("iphone-12-pro")
    spec = iphone.ceiling("fp16")
    traces = {}
    for name in list(MOBILEONE_IPHONE) + list(FASTVIT_IPHONE):
        if name in registered:
            _, fused = _fused(name)
            traces[name] = trace_layers(fused, (224, 224) if name.startswith("mobileone") else (256, 256))
    mo = [n for n in MOBILEONE_IPHONE if n in traces]
    fit = fit_ceiling([traces[n] for n in mo], [MOBILEONE_IPHONE[n] for n in mo], "fp16", start=spec) if len(mo) >= 3 else None
    rows, e_spec, e_fit = [], [], []
    for name, ref in list(MOBILEONE_IPHONE.items()) + list(FASTVIT_IPHONE.items()):
        if name not in traces:
            rows.append([name, ref, "-", "-", "-", "-", "not registered"])
            continue
        p_spec = sum(e.ms for e in estimate(traces[name], spec, "fp16"))
        p_fit = sum(e.ms for e in estimate(traces[name], fit.ceiling, "fp16")) if fit else float("nan")
        role = "fit" if name in MOBILEONE_IPHONE else "held out"
        rows.append([name, ref, p_spec, _err(p_spec, ref), p_fit, _err(p_fit, ref), role])
        if name in FASTVIT_IPHONE:
            e_spec.append(_err(p_spec, ref))
            e_fit.append(_err(p_fit, ref))
    _table("iPhone 12 Pro (Core ML, fp16): predicted vs published (ms)",
           ["model", "published", "pred (spec sheet)", "err %", "pred (fitted on MobileOne)", "err %", "role"], rows)
    if fit:
        c = fit.ceiling
        print(f"\nfitted iPhone 12 Pro ceilings (MobileOne only): {c.gflops:.0f} GFLOP/s, {c.gbps:.1f} GB/s, "
              f"{c.layer_overhead_us:.1f} us/layer (fit error {fit.mean_abs_rel_error * 100:.1f}%)")
    print(f"FastViT mean |error|: spec sheet {_mean_abs(e_spec):.1f}%, MobileOne-fitted {_mean_abs(e_fit):.1f}%")
    out["iphone"] = {"rows": rows, "fastvit_mean_abs_error_pct": {"spec": _mean_abs(e_spec), "fitted": _mean_abs(e_fit)},
                     "fitted_ceiling": fit.ceiling.model_dump() if fit else None}

    nano = get_profile("jetson-nano")
    nrows = []
    for label, build, size in (("mobilenet_v2 @224", mobilenet_v2, (224, 224)), ("fcn_resnet18 @512x256", fcn_resnet18, (256, 512))):
        layers = trace_layers(build(), size)
        ref = NANO[label]
        p16 = sum(e.ms for e in estimate(layers, nano.ceiling("fp16"), "fp16"))
        p32 = sum(e.ms for e in estimate(layers, nano.ceiling("fp32"), "fp32"))
        nrows.append([label, ref, p16, _err(p16, ref), p32, _err(p32, ref)])
    _table("Jetson Nano (TensorRT): predicted (spec-sheet ceilings) vs published (ms)",
           ["model", "published", "pred fp16", "err %", "pred fp32", "err %"], nrows)
    out["jetson_nano"] = nrows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["mobileone_s0", "fastvit_t8"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[256, 512, 1024])
    ap.add_argument("--iterations", type=int, default=9, help="per size <= 512; a third of it (>= 3) above")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for timing and calibration (default: all)")
    ap.add_argument("--published-only", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers as JSON")
    args = ap.parse_args(argv)
    from edgeseg.devices import host_threads

    out: dict = {}
    if not args.published_only:
        host_part(args.models, args.sizes, args.iterations, args.threads or host_threads(), out)
    published_part(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
