"""edgeseg Core ML runner: copied to a macOS host and run there with its Python + coremltools.

Two targets:
- `--target mac`: MLModel.predict timing on the Mac itself (compute units as given);
- `--target iphone`: an attached iPhone through coremltools' remote-device support
  (coremltools >= 8.3, Xcode with devicectl, a developer-mode phone); times are the
  on-device prediction durations that Core ML reports.

It writes raw per-iteration times as JSON; statistics are computed by edgeseg on the host.
Exit status: 0 on success; 2 with a last stderr line "edgeseg-runner-error: ..." otherwise.
"""

import argparse
import json
import os
import platform
import sys
import time

RUNNER_VERSION = 1


def fail(message, code=2):
    sys.stderr.write("edgeseg-runner-error: " + " ".join(str(message).split()) + "\n")
    sys.stderr.flush()
    sys.exit(code)


def parse_warmup(text):
    t = str(text).strip().lower()
    try:
        if t.endswith("ms"):
            return 0, float(t[:-2]) / 1000.0
        if t.endswith("s"):
            return 0, float(t[:-1])
        return int(t), 0.0
    except ValueError:
        fail("invalid --warmup {!r}: use a count (10) or a duration (2s, 500ms)".format(text))


def random_inputs(spec, np, seed):
    """One random value per model input, shaped and typed from the model's own description."""
    rng = np.random.RandomState(seed)
    feeds = {}
    for inp in spec.description.input:
        kind = inp.type.WhichOneof("Type")
        if kind == "multiArrayType":
            shape = [int(d) for d in inp.type.multiArrayType.shape]
            if not shape:
                fail("input {} has no fixed shape; export with a static input size".format(inp.name))
            dtype = np.float16 if inp.type.multiArrayType.dataType == 65552 else np.float32  # FLOAT16 enum
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
        elif kind == "imageType":
            try:
                from PIL import Image
            except ImportError:
                fail("the model takes an image input and Pillow is not installed (pip install pillow)")
            w, h = int(inp.type.imageType.width), int(inp.type.imageType.height)
            gray = inp.type.imageType.colorSpace == 10  # GRAYSCALE
            arr = rng.randint(0, 256, size=(h, w) if gray else (h, w, 3)).astype("uint8")
            feeds[inp.name] = Image.fromarray(arr, mode="L" if gray else "RGB")
        else:
            fail("unsupported input type {} for {}".format(kind, inp.name))
    return feeds


def bench_mac(ct, model_path, units, feeds_fn, warmup, iterations):
    t0 = time.perf_counter()
    try:
        model = ct.models.MLModel(model_path, compute_units=units)
    except Exception as exc:  # noqa: BLE001
        fail("Core ML cannot load the model: {}".format(str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
    load_ms = (time.perf_counter() - t0) * 1000.0
    feeds = feeds_fn(model.get_spec())
    try:
        t0 = time.perf_counter()
        model.predict(feeds)
        first_ms = (time.perf_counter() - t0) * 1000.0
        count, seconds = warmup
        done = 0
        if seconds > 0:
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                model.predict(feeds)
                done += 1
        else:
            for _ in range(count):
                model.predict(feeds)
                done += 1
        times = []
        for _ in range(iterations):
            t0 = time.perf_counter()
            model.predict(feeds)
            times.append((time.perf_counter() - t0) * 1000.0)
    except Exception as exc:  # noqa: BLE001
        fail("prediction failed: {}".format(str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
    return {"load_ms": load_ms, "first_ms": first_ms, "warmup_iterations": done, "times_ms": times,
            "timer": "wall clock around MLModel.predict on the Mac"}


def bench_iphone(ct, model_path, units, feeds_fn, warmup, iterations, device_name):
    import asyncio

    try:
        from coremltools.models.ml_program.experimental.perf_utils import MLModelBenchmarker
        from coremltools.models.ml_program.experimental.remote_device import Device, DeviceType
    except ImportError:
        fail("this coremltools has no remote-device support (needs coremltools >= 8.3 on the Mac)")
    phones = Device.get_connected_devices(DeviceType.IPHONE)
    if device_name:
        phones = [d for d in phones if d.name == device_name or d.udid == device_name]
    if not phones:
        fail("no connected iPhone{} (plug it in, enable developer mode, trust the Mac)".format(
            " named " + device_name if device_name else ""))
    phone = phones[0]
    model = ct.models.MLModel(model_path, compute_units=units)
    prepared = asyncio.run(phone.prepare_for_model_debugging())
    bench = MLModelBenchmarker(model=model, device=prepared)
    load = asyncio.run(bench.benchmark_load(iterations=1))
    feeds = feeds_fn(model.get_spec())
    count, seconds = warmup
    first = asyncio.run(bench.benchmark_predict(inputs=feeds, iterations=1, warmup=False))
    n_warm = count if seconds <= 0 else max(1, int(seconds * 100))
    if n_warm > 0:
        asyncio.run(bench.benchmark_predict(inputs=feeds, iterations=n_warm, warmup=False))
    timed = asyncio.run(bench.benchmark_predict(inputs=feeds, iterations=iterations, warmup=False))
    return {"load_ms": load.samples[0], "first_ms": first.samples[0], "warmup_iterations": n_warm,
            "times_ms": list(timed.samples), "timer": "Core ML prediction duration reported by the iPhone",
            "iphone": {"name": phone.name, "os_version": phone.os_version}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help=".mlpackage or .mlmodel")
    ap.add_argument("--out", required=True)
    ap.add_argument("--warmup", default="10")
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--compute-units", default="ALL", choices=["ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE"])
    ap.add_argument("--target", default="mac", choices=["mac", "iphone"])
    ap.add_argument("--device-name", default=None, help="iPhone name or UDID (default: the first connected)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.iterations < 1:
        fail("--iterations must be >= 1")
    try:
        import numpy as np
    except ImportError:
        fail("numpy is not installed on the Mac (pip install numpy)")
    try:
        import coremltools as ct
    except ImportError:
        fail("coremltools is not installed on the Mac (pip install coremltools)")
    if not os.path.exists(args.model):
        fail("model {} not found".format(args.model))
    units = getattr(ct.ComputeUnit, args.compute_units)
    warmup = parse_warmup(args.warmup)

    def feeds_fn(spec):
        return random_inputs(spec, np, args.seed)

    if args.target == "iphone":
        result = bench_iphone(ct, args.model, units, feeds_fn, warmup, args.iterations, args.device_name)
    else:
        result = bench_mac(ct, args.model, units, feeds_fn, warmup, args.iterations)
    result.update({
        "runner": "coreml",
        "runner_version": RUNNER_VERSION,
        "runtime_version": getattr(ct, "__version__", "unknown"),
        "compute_units": args.compute_units,
        "target": args.target,
        "warmup": args.warmup,
        "environment": {
            "machine": platform.machine(),
            "os": "{} {}".format(platform.system(), platform.mac_ver()[0] or platform.release()),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
    })
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
