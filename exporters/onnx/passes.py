"""Graph passes chosen for the runtime that runs the artifact.

A simplifier that shrinks the file can slow the runtime: onnxsim's `fuse_preceding_mul_into_conv`
folds GELU's trailing `* 0.5` into the next conv, so ONNX Runtime no longer recognises the
Div/Erf/Add/Mul/Mul pattern and runs five kernels instead of one Gelu (FastViT, BoostFormer);
its `fuse_consecutive_slices` rewrites slices that ORT would otherwise merge into one Split
(EdgeFormer). TensorRT matches the same GELU pattern (and LayerNormalization from opset 17).

So each runtime declares the onnxsim optimizers that break its fusions, and for ONNX Runtime --
which runs here -- the simplified graph is kept only if ORT's own optimized graph of it (what
ORT executes, saved through `SessionOptions.optimized_model_filepath`) has no more nodes and no
fewer fused ops than that of the plain export. Otherwise the plain export ships and the
manifest says why.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from typing import Any

# onnxsim optimizers that undo fusions the runtime performs (see the module docstring).
SKIPPED_OPTIMIZERS: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("fuse_preceding_mul_into_conv", "fuse_consecutive_slices"),
    "tensorrt": ("fuse_preceding_mul_into_conv",),
}
DEFAULT_RUNTIME = "onnxruntime"

# Ops ORT's CPU graph optimizer creates from multi-node patterns; losing one is a slowdown.
ORT_FUSED_OPS = ("Gelu", "BiasGelu", "FastGelu", "LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization",
                 "Attention", "MultiHeadAttention", "FusedConv", "FusedMatMul", "FusedGemm", "QuickGelu")


def _op_name(node) -> str:
    return node.op_type  # contrib ops keep their plain type names (Gelu, FusedConv): one namespace reads better


def ort_optimized_graph(model, threads: int = 1):
    """The graph ONNX Runtime (CPU, all optimizations) actually executes for `model`."""
    import onnx

    from edgeseg.exporters.onnx.runner import ort_session  # lazy: loads onnxruntime

    with tempfile.TemporaryDirectory(prefix="edgeseg-ortopt-") as d:
        path = os.path.join(d, "optimized.onnx")
        # log level 4: ORT warns that an ENABLE_ALL graph is machine-specific; we only read it
        ort_session(model, threads=threads, optimization="all", log_level=4, optimized_model_filepath=path)
        return onnx.load(path)


def ort_optimized_counts(model, threads: int = 1) -> dict[str, int]:
    """Op type -> count in ORT's optimized graph."""
    counts = Counter(_op_name(n) for n in ort_optimized_graph(model, threads).graph.node)
    return dict(sorted(counts.items()))


def fused_ops(counts: dict[str, int]) -> dict[str, int]:
    return {op: counts[op] for op in ORT_FUSED_OPS if counts.get(op)}


def not_worse(candidate: dict[str, int], baseline: dict[str, int]) -> tuple[bool, str]:
    """Is ORT's graph of the candidate at least as good as the baseline's: no more nodes, no
    fused op lost. Returns (verdict, reason)."""
    n_c, n_b = sum(candidate.values()), sum(baseline.values())
    lost = {op: (baseline[op], candidate.get(op, 0)) for op in fused_ops(baseline) if candidate.get(op, 0) < baseline[op]}
    if lost:
        return False, "loses ORT fusions: " + ", ".join(f"{op} {b}->{c}" for op, (b, c) in lost.items())
    if n_c > n_b:
        return False, f"ORT executes more nodes ({n_c} vs {n_b})"
    return True, f"ORT executes {n_c} nodes (plain export: {n_b})"


def simplify(model, runtime: str):
    """onnxsim without the optimizers that break `runtime`'s fusions."""
    import onnxsim

    from edgeseg.errors import EdgesegError

    skipped = list(SKIPPED_OPTIMIZERS.get(runtime, SKIPPED_OPTIMIZERS[DEFAULT_RUNTIME]))
    try:
        simplified, ok = onnxsim.simplify(model, skipped_optimizers=skipped)
    except Exception as exc:  # onnxsim raises plain RuntimeErrors
        raise EdgesegError(f"onnxsim failed: {str(exc).strip().splitlines()[0][:300]}", "retry with --no-simplify") from exc
    if not ok:
        raise EdgesegError("onnxsim could not validate its simplified graph", "retry with --no-simplify")
    return simplified, skipped


def simplify_for_runtime(model, runtime: str | None) -> tuple[Any, dict[str, Any]]:
    """Simplify for `runtime`; for ONNX Runtime keep the result only where ORT's executed graph
    is not worse than the plain export's. Returns (model, record for the manifest)."""
    runtime = runtime or DEFAULT_RUNTIME
    simplified, skipped = simplify(model, runtime)
    record: dict[str, Any] = {"runtime": runtime, "onnxsim_skipped_optimizers": skipped}
    if runtime != "onnxruntime":
        # TensorRT / Core ML do not run here: keep the simplified graph with their fusion-breaking passes skipped
        record.update(onnxsim="kept", reason=f"{runtime} is not run on this host; fusion-breaking passes skipped")
        return simplified, record
    plain = ort_optimized_counts(model)
    simple = ort_optimized_counts(simplified)
    keep, reason = not_worse(simple, plain)
    record.update(onnxsim="kept" if keep else "reverted", reason=reason,
                  ort_optimized={"plain_export": {"nodes": sum(plain.values()), "fused": fused_ops(plain)},
                                 "simplified": {"nodes": sum(simple.values()), "fused": fused_ops(simple)}})
    return (simplified if keep else model), record


def plain_export(model, input_size: tuple[int, int], opset: int = 17):
    """What a user gets by hand: `torch.onnx.export` of `model` as is (eval mode, constant
    folding on, no other pass). The baseline the graph passes must not fall below."""
    import io

    import onnx
    import torch

    x = torch.randn(1, 3, *input_size, generator=torch.Generator().manual_seed(0))
    buf = io.BytesIO()
    with torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=opset, input_names=["input"])
    return onnx.load_from_string(buf.getvalue())


def _constant(model_index: dict[str, Any], producer: dict[str, Any], name: str):
    """The scalar value of an initializer or Constant node output, else None."""
    from onnx import numpy_helper

    if name in model_index:
        arr = numpy_helper.to_array(model_index[name])
    elif name in producer and producer[name].op_type == "Constant" and producer[name].attribute:
        arr = numpy_helper.to_array(producer[name].attribute[0].t)
    else:
        return None
    return float(arr.ravel()[0]) if arr.size == 1 else None


def fuse_erf_gelu(model, op: str = "Gelu") -> int:
    """Replace every exact-GELU pattern `0.5 * x * (1 + erf(x / sqrt(2)))` (as torch.onnx emits
    it: Div, Erf, Add, Mul, Mul) with one `com.microsoft.<op>`, in place; returns the count.

    ORT fuses this pattern itself at load time in an fp32 graph, but not once the quantizer has
    put QuantizeLinear/DequantizeLinear pairs on the convs around it: FastViT-T8's int8 graph
    then runs 16 Div + 16 Erf + 32 Mul + 16 Add kernels in place of 16 Gelu. Done before
    quantizing, ORT keeps one kernel per GELU (contrib ops, in every ORT CPU build).
    `op="FastGelu"` is the tanh approximation (max |diff| 4.7e-4 from exact GELU; ORT's kernel
    ran 0.45 ms vs 0.76 ms for Gelu on 1x144x64x64 at 1 thread): for int8 graphs only, where the
    quantization step is orders of magnitude larger."""
    import onnx

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def only(name: str, op: str):
        c = consumers.get(name, [])
        return c[0] if len(c) == 1 and c[0].op_type == op else None

    drop: set[int] = set()
    replace: dict[int, Any] = {}
    for erf in g.node:
        div = producer.get(erf.input[0]) if erf.op_type == "Erf" else None
        if div is None or div.op_type != "Div" or abs((_constant(inits, producer, div.input[1]) or 0) - 2 ** 0.5) > 1e-3:
            continue
        x = div.input[0]
        add = only(erf.output[0], "Add")
        mul = add and only(add.output[0], "Mul")
        half = mul and only(mul.output[0], "Mul")
        if not (add and mul and half) or x not in mul.input:
            continue
        one = [i for i in add.input if i != erf.output[0]]
        factor = [i for i in half.input if i != mul.output[0]]
        if len(one) != 1 or _constant(inits, producer, one[0]) != 1.0 or len(factor) != 1 \
                or _constant(inits, producer, factor[0]) != 0.5:
            continue
        drop.update(id(n) for n in (erf, add, mul, half))
        replace[id(div)] = onnx.helper.make_node(op, [x], [half.output[0]], name=f"{div.name}/{op}", domain="com.microsoft")
    if replace:
        nodes = [replace.get(id(n), n) for n in g.node if id(n) not in drop]
        del g.node[:]
        g.node.extend(nodes)
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        dead = [t for t in g.initializer if t.name not in used]  # the pattern's constants (ORT warns on each)
        for t in dead:
            g.initializer.remove(t)
        if not any(o.domain == "com.microsoft" for o in model.opset_import):
            model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return len(replace)
