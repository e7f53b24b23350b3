"""int8 for ONNX Runtime targets: static quantization that pays, chosen by measurement.

Which ops pay in int8 depends on the graph, and no single rule is right for every family:
- A conv chain (MobileOne, TopFormer's convs) pays only when it stays int8 end to end. Quantizing
  Conv/MatMul/Gemm alone leaves a DequantizeLinear + float Relu + QuantizeLinear between every
  pair of convs (MobileOne-S0: 44 Q + 44 DQ kernels in ORT's optimized graph, x0.99 of fp32);
  quantizing every op ORT has an int8 kernel or a QDQ rule for lets the quantizer fold each Relu
  into its QLinearConv (43 QLinearConv, 1 Q, 1 DQ: x1.3-1.4 at 1 thread).
- Where GELU, Softmax or LayerNorm sit between the convs (FastViT, SegFormer), the same end-to-end
  selection wraps each of them in Q/DQ pairs and is slower than fp32 (FastViT-T8: x0.5-0.6);
  there Conv/MatMul/Gemm with depthwise convs in float is the candidate that can pay.
- ORT fuses exact GELU at load time in fp32 but not between QDQ nodes, so GELU is emitted as one
  op before quantizing (`passes.fuse_erf_gelu`), as `com.microsoft.FastGelu` (tanh approximation,
  max |diff| 4.7e-4, far below the int8 step): 1.7x faster than ORT's Gelu kernel, which is
  20% of FastViT-T8's fp32 time at 1 thread.
- x86 CPUs without VNNI run ORT's u8s8 kernels with vpmaddubsw, whose int16 sums saturate (ORT's
  quantization guide); there weights use 7 bits (`reduce_range`). Arm targets keep 8.

So the exporter builds these candidates, times each against the fp32 graph on this host (1
thread, interleaved), checks each against the fp32 outputs on the calibration images, and keeps
the fastest one that agrees. If none agrees, per-layer error (`onnxruntime.quantization.
qdq_loss_debug`, SQNR of each quantized tensor against fp32) picks the layers of the fastest
candidate that stay float: the first conv and the head first, then the worst layers.
Everything measured goes into the manifest; the final parity gate against PyTorch uses the int8
thresholds. An artifact slower than fp32 is refused unless forced.
"""

from __future__ import annotations

import contextlib
import io
import logging
import json
import os
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeseg.compare import default_tolerances
from edgeseg.errors import EdgesegError
from edgeseg.progress import as_steps

QUANT_OP_TYPES = ("Conv", "MatMul", "Gemm")  # the compute ops; END_TO_END (None) = every op ORT quantizes
END_TO_END = None
CALIB_METHODS = ("percentile", "minmax", "entropy")  # percentile (99.999%) first: clips rare outliers that minmax keeps
DEFAULT_SAMPLES = 8
# One accuracy rule, the int8 parity threshold: the selection keeps a graph whose cosine to fp32
# on the calibration images meets it, and the gate against PyTorch on fresh images runs after
# (exit 3, nothing written, when it fails). A stricter selection bar refused graphs parity passes.
MIN_COSINE = default_tolerances("int8").min_cosine
NOISE_CHECKS = 2  # random batches the selection checks besides the calibration images, as the parity gate does
# Arm profiles: QDQ (ORT's guidance: its Arm kernels are written against the QDQ-fused graph) and
# 8-bit weights (no u8s8 saturation there). The host's format is measured.
ARM_PROFILES = ("raspberry-pi-4", "raspberry-pi-5", "rk3588", "snapdragon-865")



class _QuantizerNotes(logging.Filter):
    """Drops onnxruntime.quantization's notes below ERROR (per op: "Axis 1 is out-of-range for
    weight ... with rank 1" on every LayerNorm scale it then quantizes per tensor)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or "onnxruntime" not in record.pathname.replace("\\", "/")


@contextlib.contextmanager
def _quiet_quantizer():
    """ORT's histogram calibrators print to stdout and its quantizer logs notes to the root
    logger; the export's progress lines say what runs, so both are kept off the terminal."""
    notes, root = _QuantizerNotes(), logging.getLogger()
    # on the root logger for its own `logging.warning` calls, on its handlers for module loggers
    targets = [t for t in (root, *root.handlers, logging.lastResort) if t is not None]
    for t in targets:
        t.addFilter(notes)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for t in targets:
            t.removeFilter(notes)

@dataclass
class Int8Options:
    calib_images: str | None = None
    calib_samples: int = DEFAULT_SAMPLES
    calib_method: str = "percentile"
    force: bool = False
    reduce_range: bool | None = None  # 7-bit weights; None: where the host's u8s8 kernels saturate
    formats: tuple[str, ...] = ("QDQ", "QOperator")
    iterations: int = 12
    progress: Callable[[str], None] = field(default=lambda msg: None)

    @classmethod
    def from_request(cls, options: dict, profile_name: str | None) -> "Int8Options":
        method = str(options.get("calib_method") or CALIB_METHODS[0]).lower()
        if method not in CALIB_METHODS:
            raise EdgesegError(f"unknown calibration method {method!r}", f"choose one of: {', '.join(CALIB_METHODS)}")
        samples = int(options.get("calib_samples") or DEFAULT_SAMPLES)
        if samples < 1:
            raise EdgesegError(f"--calib-samples {samples} is too small", "use 1 or more")
        images = options.get("calib_images")
        return cls(calib_images=str(images) if images else None, calib_samples=samples, calib_method=method,
                   force=bool(options.get("int8_force")), formats=("QDQ",) if profile_name in ARM_PROFILES else ("QDQ", "QOperator"),
                   reduce_range=False if profile_name in ARM_PROFILES else None,
                   progress=as_steps(options.get("progress")).note)  # the CLI passes Steps, Python callers a callable or nothing


def host_u8s8_saturates(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True on x86 CPUs without VNNI, where ORT's u8s8 GEMM uses vpmaddubsw (int16 sums that
    saturate); 7-bit weights avoid it. Unknown CPUs keep 8 bits."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        flags = next((line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return False
    return bool(flags) and not {"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags.split())


def calibration_batches(size, mean, std, channel_order: str, images_dir: str | None, samples: int) -> tuple[list[np.ndarray], list[str]]:
    """`samples` preprocessed (1, 3, H, W) batches: the given images or the bundled ones, cycled
    with a horizontal flip on the second pass so a small set still gives varied statistics."""
    from edgeseg.exporters.calibration import Preprocess, bundled_images, list_images

    paths = list_images(images_dir) if images_dir else bundled_images()
    if not paths:
        raise EdgesegError("no calibration images (the bundled set is missing)", "pass --calib-images DIR")
    pre = Preprocess(size=tuple(size), mean=tuple(mean), std=tuple(std), channel_order=channel_order)
    loaded = [pre.load(p) for p in paths[:samples]]
    out = []
    for i in range(samples):
        x = loaded[i % len(loaded)]
        if (i // len(loaded)) % 2:
            x = x[:, :, ::-1]
        out.append(np.ascontiguousarray(x[None], dtype=np.float32))
    return out, [p.name for p in paths[:samples]]


class _Reader:
    """An onnxruntime.quantization.CalibrationDataReader (get_next/rewind/iteration) over
    in-memory batches."""

    def __init__(self, name: str, batches: list[np.ndarray]):
        self.name, self.batches, self.i = name, batches, 0

    def __iter__(self):
        self.rewind()
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item

    def get_next(self):
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return {self.name: self.batches[self.i - 1]}

    def rewind(self):
        self.i = 0


def node_groups(model) -> dict[str, list[str]]:
    """Names of the nodes the selection can keep in float: depthwise convs, first conv, head."""
    inits = {t.name: t for t in model.graph.initializer}
    graph_in = {i.name for i in model.graph.input}
    outputs = {o.name for o in model.graph.output}
    producer = {o: n for n in model.graph.node for o in n.output}
    depthwise, first, head = [], [], []
    for n in model.graph.node:
        if n.op_type == "Conv":
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            w = inits.get(n.input[1])
            if group > 1 and w is not None and w.dims[1] == 1:
                depthwise.append(n.name)
            if n.input[0] in graph_in:
                first.append(n.name)
    # the head: the last Conv/MatMul/Gemm on the way back from each output
    for o in outputs:
        stack, seen = [o], set()
        while stack:
            v = stack.pop()
            n = producer.get(v)
            if n is None or n.name in seen:
                continue
            seen.add(n.name)
            if n.op_type in QUANT_OP_TYPES:
                head.append(n.name)
                continue
            stack.extend(i for i in n.input if i not in inits)
    return {"depthwise": depthwise, "first": first, "head": sorted(set(head))}


def _session(path, threads: int = 1):
    from edgeseg.exporters.onnx.runner import ort_session

    return ort_session(path, threads=threads)


def _profiled_session(path):
    """A 1-thread session with ORT's profiler on."""
    from edgeseg.exporters.onnx.runner import ort_session

    return ort_session(str(path), threads=1, profile_prefix=str(Path(path).with_suffix("")) + ".profile")


def interleaved_ms(paths: list[Path], x: np.ndarray, iterations: int, threads: int = 1) -> list[float]:
    """Median ms of each model, timed one call each per round so load drifts hit all alike."""
    sessions = [_session(p, threads) for p in paths]
    feeds = [{s.get_inputs()[0].name: x} for s in sessions]
    for s, f in zip(sessions, feeds):
        s.run(None, f)
    times: list[list[float]] = [[] for _ in paths]
    for r in range(iterations):
        for j in (range(len(paths)) if r % 2 == 0 else reversed(range(len(paths)))):
            t0 = time.perf_counter()
            sessions[j].run(None, feeds[j])
            times[j].append((time.perf_counter() - t0) * 1000.0)
    return [float(np.median(t)) for t in times]


def op_profile_ms(path: Path, x: np.ndarray, runs: int = 5) -> dict[str, float]:
    """Per-op-type ms per run from ORT's profiler (1 thread)."""
    sess = _profiled_session(path)
    feed = {sess.get_inputs()[0].name: x}
    sess.run(None, feed)
    for _ in range(runs):
        sess.run(None, feed)
    prof = sess.end_profiling()
    try:
        events = json.loads(Path(prof).read_text())
    finally:
        Path(prof).unlink(missing_ok=True)
    per: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            per[e.get("args", {}).get("op_name", "?")] += e.get("dur", 0) / 1000.0 / (runs + 1)
    return {k: round(v, 3) for k, v in sorted(per.items(), key=lambda kv: -kv[1])}


def _outputs(path: Path, batches: list[np.ndarray]) -> list[list[np.ndarray]]:
    sess = _session(path, threads=os.cpu_count() or 1)
    name = sess.get_inputs()[0].name
    return [sess.run(None, {name: b}) for b in batches]


def min_cosine(ref: list[list[np.ndarray]], got: list[list[np.ndarray]]) -> float:
    worst = 1.0
    for r_out, g_out in zip(ref, got):
        for r, g in zip(r_out, g_out):
            if not np.issubdtype(r.dtype, np.floating):
                continue
            a, b = r.ravel().astype(np.float64), g.ravel().astype(np.float64)
            worst = min(worst, float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)))
    return worst


def agreement_failures(ref: list[list[np.ndarray]], got: list[list[np.ndarray]], task: str) -> list[str]:
    """The int8 parity checks (edgeseg.compare, int8 thresholds) that `got` fails against `ref`,
    samples pooled per output; empty when it agrees."""
    from edgeseg.compare import compare_outputs

    def stack(runs):
        return [np.concatenate([r[i] for r in runs]) for i in range(len(runs[0]))]

    report = compare_outputs(stack(ref), stack(got), task=task, precision="int8")
    if report.status == "passed":
        return []
    return [report.reason] if report.reason else [c.describe() for o in report.outputs for c in o.checks if not c.passed]


def per_layer_sqnr(fp32_path: Path, qdq_path: Path, batches: list[np.ndarray], workdir: Path, name: str) -> dict[str, float]:
    """SQNR (dB) of every quantized activation of a QDQ model against fp32: low = sensitive."""
    from onnxruntime.quantization import qdq_loss_debug as dbg

    aug_q, aug_f = workdir / "aug_q.onnx", workdir / "aug_f.onnx"
    dbg.modify_model_output_intermediate_tensors(str(qdq_path), str(aug_q))
    dbg.modify_model_output_intermediate_tensors(str(fp32_path), str(aug_f))
    few = batches[:2]
    q_act = dbg.collect_activations(str(aug_q), _Reader(name, few))
    f_act = dbg.collect_activations(str(aug_f), _Reader(name, few))
    # a tensor the float graph lacks has no "float" entry, and ORT's compute_activation_error
    # then raises KeyError('float'): keep the matched ones only
    matched = {k: v for k, v in dbg.create_activation_matching(q_act, f_act).items() if v.get("float")}
    errs = dbg.compute_activation_error(matched)
    return {k: float(v.get("xmodel_err", v.get("qdq_err", 0.0))) for k, v in errs.items()}


def _tensor_to_node(model) -> dict[str, str]:
    return {o: n.name for n in model.graph.node for o in n.output}


@dataclass
class Candidate:
    label: str
    fmt: str
    exclude: tuple[str, ...]
    op_types: tuple[str, ...] | None = QUANT_OP_TYPES  # END_TO_END: every op ORT quantizes
    path: Path | None = None
    ms: float | None = None
    cosine: float | None = None
    failed: list[str] = field(default_factory=lambda: ["not built"])  # int8 parity checks against fp32 that fail

    @property
    def agrees(self) -> bool:
        return not self.failed

    def op_types_record(self) -> str | list[str]:
        return "all ORT quantizes" if self.op_types is END_TO_END else list(self.op_types)

    def as_dict(self, fp32_ms: float) -> dict[str, Any]:
        return {"label": self.label, "format": self.fmt, "kept_float": len(self.exclude), "op_types": self.op_types_record(),
                "ms": None if self.ms is None else round(self.ms, 2), "speedup": None if not self.ms else round(fp32_ms / self.ms, 3),
                "min_cosine": None if self.cosine is None else round(self.cosine, 5), "agrees": self.agrees,
                "failed": self.failed[:3]}


def quantize_onnx(fp32_model, *, input_size, mean, std, channel_order: str,
                  opts: Int8Options, task: str = "classification") -> tuple[Any, dict[str, Any]]:
    """fp32 ModelProto -> (int8 ModelProto, manifest record). Raises EdgesegError when no int8
    graph is faster than fp32 (unless opts.force). A candidate is eligible only if it passes
    the int8 parity thresholds against fp32 on the calibration images (`task` decides which:
    top-1/top-5 or pixel agreement and mIoU, besides error and cosine): the export's parity
    gate applies the same thresholds against PyTorch, so a selection by cosine alone could pick a
    graph the gate then refuses."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    reduce_range = host_u8s8_saturates() if opts.reduce_range is None else opts.reduce_range
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}[opts.calib_method]
    with tempfile.TemporaryDirectory(prefix="edgeseg-int8-") as d:
        work = Path(d)
        fp32_path, pre_path = work / "fp32.onnx", work / "pre.onnx"
        onnx.save(fp32_model, str(fp32_path))
        opts.progress("int8: pre-processing (shape inference, ORT basic optimizations)")
        quant_pre_process(str(fp32_path), str(pre_path), skip_symbolic_shape=True)
        pre = onnx.load(str(pre_path))
        from edgeseg.exporters.onnx.passes import fuse_erf_gelu

        gelus = fuse_erf_gelu(pre, op="FastGelu")
        if gelus:
            onnx.save(pre, str(pre_path))
        name = pre.graph.input[0].name
        batches, image_names = calibration_batches(input_size, mean, std, channel_order, opts.calib_images, opts.calib_samples)
        groups = node_groups(pre)
        # Candidates are judged on what the parity gate feeds too: the images plus N(0,1) batches
        # (a selection that agrees on images alone passed here and then failed the gate on noise).
        rng = np.random.default_rng(0)
        checks = batches + [rng.standard_normal(batches[0].shape, dtype=np.float32) for _ in range(NOISE_CHECKS)]
        ref = _outputs(fp32_path, checks)
        x = batches[0]

        def build(c: Candidate) -> Candidate:
            c.path = work / f"{c.label}.{c.fmt}.onnx"
            opts.progress(f"int8: calibrating and quantizing '{c.label}' ({c.fmt}, {len(batches)} samples, {opts.calib_method})")
            with _quiet_quantizer():
                quantize_static(str(pre_path), str(c.path), _Reader(name, batches),
                                quant_format=QuantFormat.QDQ if c.fmt == "QDQ" else QuantFormat.QOperator,
                                op_types_to_quantize=None if c.op_types is END_TO_END else list(c.op_types), per_channel=True,
                                reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                                weight_type=QuantType.QInt8, nodes_to_exclude=list(c.exclude), calibrate_method=method,
                                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
            got = _outputs(c.path, checks)
            c.cosine = min_cosine(ref, got)
            c.failed = agreement_failures(ref, got, task)
            return c

        def timed(cands: list[Candidate]) -> float:
            opts.progress(f"int8: timing {len(cands)} candidate(s) against fp32 (1 thread)")
            ms = interleaved_ms([fp32_path, *[c.path for c in cands]], x, opts.iterations)
            for c, m in zip(cands, ms[1:]):
                c.ms = m
            return ms[0]

        fmt0 = opts.formats[0]
        dw = tuple(groups["depthwise"])
        head = tuple(groups["head"])  # float logits: 8-bit outputs cost accuracy and save nothing
        cands = [build(Candidate("int8 end to end, head float", fmt0, head, END_TO_END)),
                 build(Candidate("conv-matmul, depthwise float", fmt0, dw))]
        if dw:
            cands.append(build(Candidate("conv-matmul, depthwise int8", fmt0, ())))
        fp32_ms = timed(cands)
        # accuracy first, then speed
        def best(pool):
            ok = [c for c in pool if c.agrees]
            return min(ok, key=lambda c: c.ms) if ok else None

        sensitivity: dict[str, float] = {}
        chosen = best(cands)
        if chosen is None:
            # sensitivity, from the fastest candidate: keep first conv + head float, then the
            # layers with the worst SQNR
            base = min(cands, key=lambda c: c.ms if c.ms is not None else float("inf"))
            keep = set(base.exclude) | set(groups["first"]) | set(groups["head"])
            trial = build(Candidate(f"{base.label}; + first conv float", base.fmt, tuple(sorted(keep)), base.op_types))
            cands.append(trial)
            if not trial.agrees and base.fmt == "QDQ":
                opts.progress("int8: per-layer error against fp32")
                sensitivity = per_layer_sqnr(pre_path, trial.path, batches, work, name)  # the float graph the quantizer saw
                owner = _tensor_to_node(pre)
                worst = [owner[t] for t, _ in sorted(sensitivity.items(), key=lambda kv: kv[1]) if t in owner]
                for step in (5, 10, 20):
                    keep |= set(worst[:step])
                    trial = build(Candidate(f"{base.label}; + {step} most sensitive layers float", base.fmt, tuple(sorted(keep)), base.op_types))
                    cands.append(trial)
                    if trial.agrees:
                        break
            timed([c for c in cands if c.ms is None])
            chosen = best(cands)
        if chosen is not None and len(opts.formats) > 1:
            other = build(Candidate(chosen.label, opts.formats[1], chosen.exclude, chosen.op_types))
            cands.append(other)
            fp32_ms = timed([chosen, other])  # the final pair is timed side by side with fp32
            chosen = best([chosen, other]) or chosen
        if chosen is None:
            closest = max(cands, key=lambda c: c.cosine or 0)
            raise EdgesegError(f"no int8 graph agrees with fp32 (closest, '{closest.label}': {'; '.join(closest.failed[:2])})",
                               "calibrate on your own images (--calib-images DIR, more --calib-samples) or export fp32")
        speedup = fp32_ms / chosen.ms
        record: dict[str, Any] = {
            "quantizer": "onnxruntime.quantization.quantize_static",
            "format": chosen.fmt,
            "per_channel": True,
            "reduce_range": reduce_range,
            "gelu": {"count": gelus, "as": "com.microsoft.FastGelu (tanh approximation, max |diff| 4.7e-4)"} if gelus else None,
            "activation_type": "uint8 (asymmetric)",
            "weight_type": "int8 (symmetric)",
            "quantized_op_types": chosen.op_types_record(),
            "calibration": {"method": opts.calib_method, "samples": len(batches), "images": image_names,
                            "source": opts.calib_images or "bundled", "channel_order": channel_order},
            "selection": chosen.label,
            "kept_float": {"depthwise_convs": sum(n in chosen.exclude for n in groups["depthwise"]),
                           "first_conv": any(n in chosen.exclude for n in groups["first"]),
                           "head": any(n in chosen.exclude for n in groups["head"]), "nodes": sorted(chosen.exclude)},
            "min_cosine_vs_fp32": round(chosen.cosine, 5),
            "host_speed": {"threads": 1, "fp32_ms": round(fp32_ms, 2), "int8_ms": round(chosen.ms, 2), "speedup": round(speedup, 3),
                           "iterations": opts.iterations},
            "candidates": [c.as_dict(fp32_ms) for c in cands],
        }
        if sensitivity:
            record["per_layer_sqnr_db_worst"] = dict(sorted(sensitivity.items(), key=lambda kv: kv[1])[:10])
        opts.progress("int8: per-op profile of fp32 and int8")
        record["per_op_ms"] = {"fp32": op_profile_ms(fp32_path, x), "int8": op_profile_ms(chosen.path, x)}
        if speedup < 1.0 and not opts.force:
            raise EdgesegError(f"the int8 graph is slower than fp32 on this host ({chosen.ms:.1f} ms vs {fp32_ms:.1f} ms at 1 thread, "
                               f"x{speedup:.2f}; best of {len(cands)} op selections)",
                               "export fp32, or pass --force to write the int8 artifact anyway")
        return onnx.load(str(chosen.path)), record
