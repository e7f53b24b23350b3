"""edgeseg ONNX Runtime runner: copied to a device and run there with its own Python.

Self-contained on purpose: it needs only Python 3.6+, numpy and onnxruntime on the device
(no edgeseg install). It times session creation, the first inference, a warm-up (count or
seconds) and N timed iterations, and writes the raw per-iteration times as JSON; the
statistics are computed by edgeseg on the host so every device is summarised the same way.

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


def parse_shape(text):
    try:
        return [int(d) for d in text.lower().split("x")]
    except ValueError:
        fail("invalid --shape {!r}: use e.g. 1x3x224x224".format(text))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True, help="result JSON path")
    ap.add_argument("--warmup", default="10")
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0: ORT default)")
    ap.add_argument("--shape", default=None, help="input shape for symbolic dims, e.g. 1x3x224x224")
    ap.add_argument("--input", default=None, help=".npy input (parity); random otherwise")
    ap.add_argument("--save-outputs", default=None, help=".npz with the outputs of the last run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--optimization", default="all", choices=["disable", "basic", "extended", "all"])
    args = ap.parse_args(argv)
    if args.iterations < 1:
        fail("--iterations must be >= 1")

    try:
        import numpy as np
    except ImportError:
        fail("numpy is not installed on this device (pip install numpy)")
    try:
        import onnxruntime as ort
    except ImportError:
        fail("onnxruntime is not installed on this device (pip install onnxruntime)")
    if not os.path.isfile(args.model):
        fail("model file {} not found".format(args.model))

    opts = ort.SessionOptions()
    if args.threads > 0:
        opts.intra_op_num_threads = args.threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[args.optimization]
    t0 = time.perf_counter()
    try:
        sess = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - report any load failure in one line
        fail("onnxruntime cannot load the model: {}".format(str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
    load_ms = (time.perf_counter() - t0) * 1000.0

    inp = sess.get_inputs()[0]
    if args.input:
        x = np.load(args.input, allow_pickle=False)
    else:
        shape = parse_shape(args.shape) if args.shape else None
        if shape is None:
            shape = [d if isinstance(d, int) else None for d in inp.shape]
            if any(d is None for d in shape):
                fail("the model input {} has symbolic dims {}: pass --shape".format(inp.name, inp.shape))
        dtype = np.float16 if "float16" in inp.type else np.float32
        x = np.random.RandomState(args.seed).standard_normal(shape).astype(dtype)
    feed = {inp.name: x}

    try:
        t0 = time.perf_counter()
        outputs = sess.run(None, feed)
        first_ms = (time.perf_counter() - t0) * 1000.0
        count, seconds = parse_warmup(args.warmup)
        done = 0
        if seconds > 0:
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                sess.run(None, feed)
                done += 1
        else:
            for _ in range(count):
                sess.run(None, feed)
                done += 1
        times = []
        for _ in range(args.iterations):
            t0 = time.perf_counter()
            outputs = sess.run(None, feed)
            times.append((time.perf_counter() - t0) * 1000.0)
    except Exception as exc:  # noqa: BLE001
        fail("inference failed: {}".format(str(exc).splitlines()[0] if str(exc) else type(exc).__name__))

    if args.save_outputs:
        np.savez(args.save_outputs, **{"out{}".format(i): np.asarray(o) for i, o in enumerate(outputs)})
    result = {
        "runner": "onnxruntime",
        "runner_version": RUNNER_VERSION,
        "runtime_version": ort.__version__,
        "providers": sess.get_providers(),
        "threads": args.threads or None,
        "input_name": inp.name,
        "input_shape": list(x.shape),
        "load_ms": load_ms,
        "first_ms": first_ms,
        "warmup": args.warmup,
        "warmup_iterations": done,
        "times_ms": times,
        "output_names": [o.name for o in sess.get_outputs()],
        "environment": {
            "machine": platform.machine(),
            "os": "{} {}".format(platform.system(), platform.release()),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "cpu_count": os.cpu_count(),
            # set by an emulated device (e.g. the qemu-user stand-in's sshd): its timings say nothing about a board
            "emulated": os.environ.get("EDGESEG_EMULATED") or None,
        },
    }
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
