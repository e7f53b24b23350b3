"""Runtime-aware graph passes: ONNX Runtime executes no more nodes for edgeseg's artifact than
for a plain `torch.onnx.export` of the same fused model, and keeps the fusions (one Gelu per
GELU module, one LayerNormalization per LayerNorm)."""

from __future__ import annotations

from collections import Counter

import pytest
from onnx import TensorProto, helper

from edgeseg.api import create, reparameterize
from edgeseg.exporters import ExportRequest
from edgeseg.exporters.onnx.export import build_onnx, plan_export
from edgeseg.exporters.onnx.passes import fused_ops, not_worse, ort_optimized_counts, plain_export, simplify_for_runtime
from edgeseg.registry import list_models

SEED = 5


def _family_defaults() -> list[str]:
    seen: dict[str, str] = {}
    for e in list_models():
        if not e.large and e.family not in seen and e.task == ("segmentation" if e.family in ("segformer", "topformer", "boostformer") else "classification"):
            seen[e.family] = e.name
    return list(seen.values())


def _artifact_and_plain(name: str, opset: int):
    fused, _ = reparameterize(create(name, pretrained_like=SEED), verify=False)
    size = tuple(fused.edgeseg.fixed_input_size or fused.edgeseg.input_size)
    plan = plan_export(ExportRequest(model=fused, output="unused.onnx", input_size=size, opset=opset))
    artifact, manifest = build_onnx(fused, plan, seed=SEED)
    return fused, artifact, manifest, plain_export(fused, size, opset)


def _modules(model) -> Counter:
    return Counter(type(m).__name__ for m in model.modules())


# 512x512 segmentation exports take a minute each on 2 cores: those run with -m slow
_HEAVY = ("segformer", "topformer", "boostformer")


def _param(name: str):
    return pytest.param(name, id=name, marks=[pytest.mark.slow] if name.split("_")[0] in _HEAVY else [])


@pytest.mark.parametrize("name", [_param(n) for n in _family_defaults()])
def test_ort_executes_no_more_nodes_than_plain_export_and_keeps_fusions(name):
    fused, artifact, manifest, plain = _artifact_and_plain(name, 17)
    ours, theirs = ort_optimized_counts(artifact), ort_optimized_counts(plain)
    ok, reason = not_worse(ours, theirs)
    assert ok, f"{name}: {reason}; ours {fused_ops(ours)} vs plain {fused_ops(theirs)}"
    assert manifest["graph_passes"]["runtime"] == "onnxruntime"
    mods = _modules(fused)
    # opset 17 has LayerNormalization: every LayerNorm runs as one (Skip)LayerNormalization kernel
    assert ours.get("LayerNormalization", 0) + ours.get("SkipLayerNormalization", 0) == mods["LayerNorm"]
    assert ours.get("BatchNormalization", 0) == 0


@pytest.mark.parametrize("name", [_param(n) for n in _family_defaults() if n.split("_")[0] in ("fastvit", "segformer", "boostformer")])
def test_opset20_runs_one_gelu_per_gelu_module(name):
    fused, artifact, _, plain = _artifact_and_plain(name, 20)
    ours = ort_optimized_counts(artifact)
    assert ours.get("Gelu", 0) == _modules(fused)["GELU"] > 0
    assert not_worse(ours, ort_optimized_counts(plain))[0]
    assert "Erf" not in ours


def _gelu_then_conv():
    """x -> Conv -> GELU (erf form, 0.5 last, as torch exports it) -> Conv: the pattern onnxsim's
    fuse_preceding_mul_into_conv breaks by folding the 0.5 into the second conv."""
    import numpy as np
    from onnx import numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(size=(8, 3, 1, 1)).astype("float32"), "w1")
    w2 = numpy_helper.from_array(rng.normal(size=(8, 8, 1, 1)).astype("float32"), "w2")
    consts = [numpy_helper.from_array(np.array(v, dtype="float32"), n) for n, v in (("sqrt2", 1.4142135), ("one", 1.0), ("half", 0.5))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"]), helper.make_node("Div", ["a", "sqrt2"], ["b"]),
             helper.make_node("Erf", ["b"], ["c"]), helper.make_node("Add", ["c", "one"], ["d"]),
             helper.make_node("Mul", ["a", "d"], ["e"]), helper.make_node("Mul", ["e", "half"], ["f"]),
             helper.make_node("Conv", ["f", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], [w1, w2, *consts])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_simplification_keeps_the_gelu_pattern_for_onnxruntime():
    model = _gelu_then_conv()
    out, record = simplify_for_runtime(model, "onnxruntime")
    assert record["onnxsim"] == "kept" and "fuse_preceding_mul_into_conv" in record["onnxsim_skipped_optimizers"]
    assert ort_optimized_counts(out).get("Gelu") == 1


def test_a_pass_that_loses_a_fusion_is_refused():
    assert not_worse({"Conv": 2, "Mul": 2, "Erf": 1, "Add": 1, "Div": 1}, {"Conv": 2, "Gelu": 1}) == (False, "loses ORT fusions: Gelu 1->0")
    ok, reason = not_worse({"Conv": 3, "Gelu": 1}, {"Conv": 2, "Gelu": 1})
    assert not ok and "more nodes" in reason
    assert not_worse({"Conv": 2, "Gelu": 1}, {"Conv": 2, "Gelu": 1})[0]
