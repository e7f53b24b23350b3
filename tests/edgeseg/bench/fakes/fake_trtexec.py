"""A stand-in for TensorRT 8.2's trtexec on the loopback "Jetson" (tests only).

It accepts the flags edgeseg passes, "builds" an engine (a copy of the ONNX), and for a
timing run executes the model with ONNX Runtime on the --loadInputs tensor, then writes
--exportOutput and --exportTimes in trtexec 8.2's layouts (warm-ups included in the
trace, as 8.2 does) and prints an 8.2-style performance summary whose numbers differ
from the trace on purpose: edgeseg must compute its statistics from the raw times.
"""
import json
import shutil
import sys

import numpy as np

args = {}
flags = set()
for a in sys.argv[1:]:
    if a.startswith("--") and "=" in a:
        k, v = a[2:].split("=", 1)
        args[k] = v
    elif a.startswith("--"):
        flags.add(a[2:])

print("&&&& RUNNING TensorRT.trtexec [TensorRT v8201] # " + " ".join(sys.argv))
print("[11/21/2026-10:00:00] [I] === Device Information ===")
print("[11/21/2026-10:00:00] [I] Selected Device: NVIDIA Tegra X1")
print("[11/21/2026-10:00:00] [I] Compute Capability: 5.3")
if "onnx" in args and b"FAIL_ME" in open(args["onnx"], "rb").read():
    print("[11/21/2026-10:00:01] [E] [TRT] ModelImporter.cpp:773: While parsing node number 12 [LayerNormalization]:")
    print("[11/21/2026-10:00:01] [E] Failed to parse onnx file")
    print("&&&& FAILED TensorRT.trtexec [TensorRT v8201] # trtexec")
    sys.exit(1)
if "onnx" in args:
    assert "buildOnly" in flags, "edgeseg builds with --buildOnly on TensorRT 8.2"
    assert not any(k.startswith("memPoolSize") for k in args), "8.2 has no --memPoolSize"
    shutil.copyfile(args["onnx"], args["saveEngine"])
    print("[11/21/2026-10:00:09] [I] Engine built in 8.25 sec.")
    print("&&&& PASSED TensorRT.trtexec [TensorRT v8201] # trtexec")
    sys.exit(0)

import onnxruntime as ort

engine = args["loadEngine"]
print("[11/21/2026-10:00:10] [I] Engine loaded in 0.0123 sec.")
print("[11/21/2026-10:00:10] [I] Engine deserialized in 0.0456 sec.")
sess = ort.InferenceSession(engine, providers=["CPUExecutionProvider"])
inp = sess.get_inputs()[0]
if "loadInputs" in args:
    name, path = args["loadInputs"].split(":", 1)
    assert name == inp.name, (name, inp.name)
    x = np.fromfile(path, dtype=np.float32).reshape([d if isinstance(d, int) else 1 for d in inp.shape])
else:
    x = np.random.standard_normal([d if isinstance(d, int) else 1 for d in inp.shape]).astype(np.float32)
outs = sess.run(None, {inp.name: x})
iters = int(args.get("iterations", 10))
warm = 3
trace = []
t = 0.0
for i in range(warm + iters):
    compute = 2.0 + 0.01 * i
    row = {"startEnqMs": t, "endEnqMs": t + 0.1, "startH2dMs": t, "endH2dMs": t + 0.25, "startComputeMs": t + 0.25,
           "endComputeMs": t + 0.25 + compute, "startD2hMs": t + 0.25 + compute, "endD2hMs": t + 0.30 + compute,
           "h2dMs": 0.25, "computeMs": compute, "d2hMs": 0.05, "latencyMs": 0.30 + compute, "endToEndMs": 0.30 + compute}
    trace.append(row)
    t += 0.30 + compute + 0.01
with open(args["exportTimes"], "w") as f:
    f.write("[\n" + "\n, ".join(json.dumps(r) for r in trace) + "\n]\n")
if "exportOutput" in args:
    with open(args["exportOutput"], "w") as f:
        entries = []
        for o, v in zip(sess.get_outputs(), outs):
            vals = ", ".join("nan" if np.isnan(z) else repr(float(z)) for z in v.ravel())
            entries.append('{ "name" : "%s"\n  , "dimensions" : "%s"\n  , "values" : [ %s ]\n  }'
                           % (o.name, "x".join(str(d) for d in v.shape), vals))
        f.write("[\n  " + "\n, ".join(entries) + "\n]\n")
print("[11/21/2026-10:00:12] [I] Warmup completed %d queries over 200 ms" % warm)
print("[11/21/2026-10:00:12] [I] Timing trace has %d queries over 0.0251 s" % iters)
print("[11/21/2026-10:00:12] [I] === Performance summary ===")
print("[11/21/2026-10:00:12] [I] Throughput: 999 qps")
print("[11/21/2026-10:00:12] [I] Latency: min = 99 ms, max = 99 ms, mean = 99 ms, median = 99 ms, percentile(99%) = 99 ms")
print("[11/21/2026-10:00:12] [I] End-to-End Host Latency: min = 99 ms, max = 99 ms, mean = 99 ms, median = 99 ms, percentile(99%) = 99 ms")
print("[11/21/2026-10:00:12] [I] GPU Compute Time: min = 98 ms, max = 98 ms, mean = 98 ms, median = 98 ms, percentile(99%) = 98 ms")
print("&&&& PASSED TensorRT.trtexec [TensorRT v8201] # trtexec")
