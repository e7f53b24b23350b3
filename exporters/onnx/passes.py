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
