"""ONNX export: every registered architecture exports, is minimal, and matches PyTorch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeseg.api import create, reparameterize
from edgeseg.errors import EdgesegError
from edgeseg.exporters import ExportRequest, get_exporter
from edgeseg.exporters.onnx.graph import analyze, prune_dead_nodes
from edgeseg.parity.job import parity_for_model
from edgeseg.registry import list_models

SEED = 3


def _params(task: str | None = None):
    return [pytest.param(e.name, marks=[pytest.mark.slow] if e.large else [], id=e.name)
            for e in list_models() if task is None or e.task == task]


# cheapest first, so the single-model tests stay fast as families land
_PREFERRED = ("mobileone_s0", "topformer_tiny", "segformer_b0", "fastvit_t8")


def _first(task: str | None = None, family: str | None = None, prefer: tuple[str, ...] = _PREFERRED) -> str | None:
    entries = [e for e in list_models() if not e.large and (task is None or e.task == task) and (family is None or e.family == family)]
    entries.sort(key=lambda e: prefer.index(e.name) if e.name in prefer else len(prefer))
    return entries[0].name if entries else None


def _fused(name: str):
    model = create(name, pretrained_like=SEED)
    fused, _ = reparameterize(model, verify=False)
    return model, fused


def _export(model, path, **kw):
    info = model.edgeseg
    size = kw.pop("input_size", None) or tuple(info.fixed_input_size or info.input_size)
    return get_exporter("onnx").export(ExportRequest(model=model, output=path, input_size=size, **kw))


def _parity(reference, path, **kw):
    kw = {"max_images": 2, "samples": 1, **kw}
    summary = parity_for_model(reference, [path], seed=SEED, **kw)
    return summary["artifacts"][0]


@pytest.mark.parametrize("name", _params())
def test_every_architecture_exports_minimal_and_passes_parity(name, tmp_path):
    model, fused = _fused(name)
    out = tmp_path / f"{name}.onnx"
    result = _export(fused, out)
    m = result.manifest
    assert out.is_file() and m["opset"] == 17 and m["precision"] == "fp32"
    graph = onnx.load(str(out))
    onnx.checker.check_model(graph, full_check=True)
    report = analyze(graph)
    assert report.batchnorm_nodes == [] and report.fusable_branch_nodes == [] and report.dead_nodes == []
    assert m["graph_checks"]["minimal"] and "BatchNormalization" not in m["node_counts"]["final"]
    assert sum(m["node_counts"]["simplified"].values()) <= sum(m["node_counts"]["exported"].values())
    size = list(fused.edgeseg.fixed_input_size or fused.edgeseg.input_size)
    assert m["inputs"] == [{"name": "input", "shape": [1, 3, *size], "dtype": "float32"}]
    # Reference: the unfused model, so fusion and export are both covered. Random inputs only:
    # synthetic weights are calibrated on them, and on natural images some (MobileOne-S4,
    # TopFormer-S/B, FastViT-SA36) are so ill-conditioned that even fused vs unfused PyTorch
    # differ by 1e-3..0.25 of the output scale -- a property of the weights, not of the export.
    entry = _parity(model, out, bundled_images=False, samples=2)
    assert entry["status"] == "passed", entry["report"]["summary"]
    for o in entry["report"]["outputs"]:
        assert o["metrics"]["max_rel"] < 1e-4 and o["metrics"]["cosine"] > 0.99999


@pytest.mark.parametrize("family", ["mobileone", "fastvit"])
def test_fusion_removes_identity_branches_from_the_graph(family, tmp_path):
    name = _first(family=family)
    if name is None:
        pytest.skip(f"no {family} model registered")
    model, fused = _fused(name)
    unfused = _export(model, tmp_path / "unfused.onnx", options={"simplify": True}).manifest
    done = _export(fused, tmp_path / "fused.onnx").manifest
    before, after = unfused["node_counts"]["final"], done["node_counts"]["final"]
    # the unfused graph shows the branch merges that fusion must remove
    assert unfused["graph_checks"]["fusable_branch_nodes"] and not unfused["graph_checks"]["minimal"]
    assert done["graph_checks"]["fusable_branch_nodes"] == [] and done["graph_checks"]["batchnorm_nodes"] == []
    assert after.get("Add", 0) < before.get("Add", 0)
    assert after.get("Conv", 0) < before.get("Conv", 0)
    assert sum(after.values()) < sum(before.values())
    if family == "mobileone":  # no residual connections besides the reparameterizable branches
        assert "Add" not in after and "BatchNormalization" in before


def _tiny_block_model():
    """One unfused MobileOne block with non-trivial BN statistics: a cheap unfused graph."""
    import torch
    from torch import nn

    from edgeseg.api import ModelInfo
    from edgeseg.models.layers import MobileOneBlock
    from edgeseg.synthetic import randomize_weights_

    model = nn.Sequential(MobileOneBlock(3, 3, 3, num_conv_branches=2, activation=nn.ReLU()), nn.Conv2d(3, 4, 1))
    randomize_weights_(model, 0, calib_size=(32, 32))
    model.edgeseg = ModelInfo(arch="tiny", family="custom", task="other", cfg={}, input_size=(32, 32), mean=(0, 0, 0), std=(1, 1, 1))
    with torch.no_grad():
        model[0](torch.zeros(1, 3, 4, 4))
    return model.eval()


def test_unfused_model_is_refused_when_minimality_is_required(tmp_path):
    import torch

    model = _tiny_block_model()
    with pytest.raises(EdgesegError, match="not minimal.*BatchNormalization.*unfused linear branch merges"):
        _export(model, tmp_path / "x.onnx", options={"require_minimal": True})
    assert not (tmp_path / "x.onnx").exists()
    fused, _ = reparameterize(model, verify=False)
    fused.edgeseg.fused = True
    m = _export(fused, tmp_path / "y.onnx").manifest
    assert m["node_counts"]["final"] == {"Conv": 2, "Relu": 1}
    sess_out = get_ort(tmp_path / "y.onnx").run(None, {"input": np.ones((1, 3, 32, 32), np.float32)})[0]
    with torch.no_grad():
        ref = model(torch.ones(1, 3, 32, 32)).numpy()
    assert np.abs(sess_out - ref).max() / np.abs(ref).max() < 1e-5


def get_ort(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_weight_perturbed_artifact_fails_the_gate(tmp_path):
    model, fused = _fused("mobileone_s0")
    out = tmp_path / "m.onnx"
    _export(fused, out)
    graph = onnx.load(str(out))
    rng = np.random.default_rng(0)
    for init in graph.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.ndim == 4:  # conv weights: 1% noise, what a bad fusion or a corrupted copy looks like
            init.CopyFrom(numpy_helper.from_array((arr * (1 + 0.01 * rng.standard_normal(arr.shape))).astype(arr.dtype), init.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(graph, str(broken))
    entry = _parity(model, broken)
    assert entry["status"] == "failed"
    checks = {c["metric"]: c for c in entry["report"]["outputs"][0]["checks"]}
    assert not checks["max_rel"]["passed"]
    assert checks["max_rel"]["needed"] == pytest.approx(checks["max_rel"]["value"]) and checks["max_rel"]["needed"] > 1e-4


def test_fp16_preflight_runs_and_passes_fp16_tolerances(tmp_path):
    model, fused = _fused("mobileone_s0")
    out = tmp_path / "m16.onnx"
    m = _export(fused, out, precision="fp16").manifest
    graph = onnx.load(str(out))
    kinds = {t.data_type for t in graph.graph.initializer}
    assert TensorProto.FLOAT16 in kinds
    assert graph.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # IO stays fp32
    assert graph.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert "fp16" in m and m["precision"] == "fp16"
    entry = _parity(model, out)
    assert entry["precision"] == "fp16" and entry["status"] == "passed", entry["report"]["summary"]
    err = entry["report"]["outputs"][0]["metrics"]["max_rel"]
    assert 1e-5 < err < 2e-2  # really computed in half precision, and within fp16 tolerance
    # the same artifact is not fp32-accurate: the fp32 gate rejects it
    assert _parity(model, out, precision="fp32")["status"] == "failed"


def test_fp16_segmentation_preflight(tmp_path):
    # SegFormer exercises LayerNormalization, Softmax and Resize in half precision
    name = _first(task="segmentation", prefer=("segformer_b0", "fastvit_sa12_seg"))
    if name is None:
        pytest.skip("no segmentation model registered")
    model, fused = _fused(name)
    out = tmp_path / "s16.onnx"
    _export(fused, out, precision="fp16")
    entry = _parity(model, out)
    assert entry["status"] == "passed", entry["report"]["summary"]


def _dynamic_candidates():
    # resolution-baked models (TopFormer's pooling, EdgeFormer's GCC) refuse spatial axes: use SegFormer
    names = [n for n in (_first(task="classification", family="mobileone"),
                         _first(task="segmentation", prefer=("segformer_b0", "fastvit_sa12_seg"))) if n]
    return names


@pytest.mark.parametrize("name", _dynamic_candidates())
def test_dynamic_export_runs_at_other_shapes(name, tmp_path):
    import onnxruntime as ort
    import torch

    model, fused = _fused(name)
    if fused.edgeseg.fixed_input_size:
        pytest.skip("resolution-baked model")
    out = tmp_path / "dyn.onnx"
    try:
        m = _export(fused, out, dynamic=True).manifest
    except EdgesegError as exc:  # model code that bakes a size while tracing is refused, never exported wrong
        assert "does not support dynamic shapes" in exc.problem and not out.exists()
        pytest.skip(f"{name}: {exc.problem}")
    assert m["dynamic_axes"] == ["batch", "height", "width"] and m["dynamic_check"]["max_rel"] < 1e-4
    shape = m["inputs"][0]["shape"]
    assert isinstance(shape[0], str) and isinstance(shape[2], str) and isinstance(shape[3], str)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    d = fused.edgeseg.size_divisor
    h, w = fused.edgeseg.input_size
    x = torch.randn(2, 3, h - d, w + d, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)
    ref = ref if isinstance(ref, torch.Tensor) else ref[0]
    got = sess.run(None, {"input": x.numpy()})[0]
    assert got.shape == tuple(ref.shape)
    assert np.abs(got - ref.numpy()).max() / np.abs(ref.numpy()).max() < 1e-4


def test_dynamic_spatial_refused_for_resolution_baked_models(tmp_path):
    _, fused = _fused("mobileone_s0")
    fused.edgeseg.fixed_input_size = (224, 224)  # what a resolution-baked reparameterization records
    with pytest.raises(EdgesegError, match="resolution-baked at 224x224"):
        _export(fused, tmp_path / "x.onnx", dynamic=True)
    r = _export(fused, tmp_path / "b.onnx", dynamic=True, options={"dynamic_axes": ["batch"]})
    assert r.manifest["inputs"][0]["shape"][2:] == [224, 224] and isinstance(r.manifest["inputs"][0]["shape"][0], str)
    with pytest.raises(EdgesegError, match="fixed to input 224x224"):
        _export(fused, tmp_path / "c.onnx", input_size=(256, 256))


def test_baked_models_in_the_registry_refuse_dynamic_shapes(tmp_path):
    baked = []
    for e in list_models():
        if e.large or e.family != "edgeformer":
            continue
        _, fused = _fused(e.name)
        if fused.edgeseg.fixed_input_size:
            baked.append(fused)
            break
    if not baked:
        pytest.skip("no resolution-baked model registered")
    with pytest.raises(EdgesegError, match="cannot be dynamic"):
        _export(baked[0], tmp_path / "x.onnx", dynamic=True)


def _profile(**export):
    from edgeseg.devices import DeviceProfile

    return DeviceProfile.model_validate({"name": "test-board", "description": "test", "runtime": "onnxruntime", "precisions": ["fp32", "fp16"],
                                         "default_precision": "fp32", "export": export, "ceilings": {"fp32": {"gflops": 100.0, "gbps": 10.0}}})


def test_device_profile_caps_opset_and_forbids_ops(tmp_path):
    _, fused = _fused("mobileone_s0")
    prof = _profile(opset_max=13, opset_default=13)
    m = _export(fused, tmp_path / "a.onnx", profile=prof).manifest
    assert m["opset"] == 13 and onnx.load(str(tmp_path / "a.onnx")).opset_import[0].version == 13
    with pytest.raises(EdgesegError, match="opset 17 is above what test-board accepts"):
        _export(fused, tmp_path / "b.onnx", profile=prof, opset=17)
    with pytest.raises(EdgesegError, match="forbids: Gemm x1"):
        _export(fused, tmp_path / "c.onnx", profile=_profile(avoid_ops=["Gemm"]))
    with pytest.raises(EdgesegError, match="needs static shapes"):
        _export(fused, tmp_path / "d.onnx", profile=_profile(static_shapes=True), dynamic=True)
    assert not any((tmp_path / n).exists() for n in ("b.onnx", "c.onnx", "d.onnx"))


def test_jetson_nano_profile_decomposes_layernorm():
    from edgeseg.devices import get_profile

    ln_model = next((e.name for e in list_models() if not e.large and e.family == "segformer"), None)
    if ln_model is None:
        pytest.skip("no LayerNorm model registered")
    import tempfile
    from pathlib import Path

    _, fused = _fused(ln_model)
    nano = get_profile("jetson-nano")
    with tempfile.TemporaryDirectory() as d:
        m = _export(fused, Path(d) / "n.onnx", profile=nano).manifest
        assert m["opset"] == 13 and "LayerNormalization" not in m["node_counts"]["final"]
        with pytest.raises(EdgesegError, match="LayerNormalization"):
            _export(fused, Path(d) / "m.onnx", profile=_profile(avoid_ops=["LayerNormalization"]), opset=17)


def test_segmentation_postprocessing_in_graph(tmp_path):
    name = _first(task="segmentation")
    if name is None:
        pytest.skip("no segmentation model registered")
    model, fused = _fused(name)
    h, w = fused.edgeseg.fixed_input_size or fused.edgeseg.input_size
    up = _export(fused, tmp_path / "up.onnx", postprocess="upsample").manifest
    assert up["outputs"][0]["shape"][2:] == [h, w]
    am = _export(fused, tmp_path / "am.onnx", postprocess="argmax").manifest
    assert am["outputs"][0] == {"name": "labels", "shape": [1, h, w], "dtype": "int32"}
    entry = _parity(model, tmp_path / "am.onnx")
    assert entry["status"] == "passed" and entry["postprocess"] == "argmax", entry["report"]["summary"]
    assert {c["metric"] for c in entry["report"]["outputs"][0]["checks"]} == {"pixel_agreement", "miou"}


def test_postprocess_refused_for_classification(tmp_path):
    _, fused = _fused("mobileone_s0")
    with pytest.raises(EdgesegError, match="applies to segmentation"):
        _export(fused, tmp_path / "x.onnx", postprocess="argmax")
    with pytest.raises(EdgesegError, match="int8 needs calibration"):
        _export(fused, tmp_path / "x.onnx", precision="int8")


# --- graph analysis on hand-built graphs -------------------------------------------------

def _graph(nodes, inits, outputs=("y",)):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
                          [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


W = {"w": np.ones((2, 2, 3, 3)), "s": np.ones((1, 2, 1, 1))}


def test_analysis_flags_parallel_linear_branches_only():
    conv = helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])
    # x + conv(x): a RepCPE-style identity branch
    assert analyze(_graph([conv, helper.make_node("Add", ["c", "x"], ["y"])], W)).fusable_branch_nodes
    # conv(x)*s + x*s through scale ops: still one linear function of x
    nodes = [conv, helper.make_node("Mul", ["c", "s"], ["cs"]), helper.make_node("Mul", ["x", "s"], ["xs"]),
             helper.make_node("Add", ["cs", "xs"], ["y"])]
    assert analyze(_graph(nodes, W)).fusable_branch_nodes
    # x + relu(conv(x)): a real residual block, not fusable
    nodes = [conv, helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Add", ["r", "x"], ["y"])]
    assert analyze(_graph(nodes, W)).fusable_branch_nodes == []
    # x + x*gate(x) (data-dependent product) is not a linear branch either
    nodes = [helper.make_node("Sigmoid", ["x"], ["g"]), helper.make_node("Mul", ["x", "g"], ["m"]), helper.make_node("Add", ["m", "x"], ["y"])]
    assert analyze(_graph(nodes, W)).fusable_branch_nodes == []


def test_dead_nodes_found_and_pruned():
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Conv", ["x", "w"], ["unused"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["unused"], ["unused2"])]
    model = _graph(nodes, W)
    assert len(analyze(model).dead_nodes) == 2
    assert prune_dead_nodes(model) == 2
    assert [n.op_type for n in model.graph.node] == ["Relu"] and len(model.graph.initializer) == 0
    assert analyze(model).dead_nodes == []


def test_fp16_conversion_keeps_resize_scales_fp32_and_emulation_rounds_every_tensor():
    import onnxruntime as ort

    from edgeseg.exporters.onnx.fp16 import convert_to_fp16, emulate_fp16

    rng = np.random.default_rng(0)
    w = {"w": rng.standard_normal((2, 2, 3, 3)) / 3, "k": np.float32(1 / 3), "scales": [1, 1, 2, 2]}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Mul", ["c", "k"], ["d"]),
             helper.make_node("Conv", ["d", "w"], ["e"], pads=[1, 1, 1, 1]), helper.make_node("Resize", ["e", "", "scales"], ["y"], mode="linear")]
    model = _graph(nodes, w)
    half, _ = convert_to_fp16(model)
    onnx.checker.check_model(half, full_check=True)
    types = {t.name: t.data_type for t in half.graph.initializer}
    assert types["scales"] == TensorProto.FLOAT and TensorProto.FLOAT16 in types.values()
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    native, emulated = run(half), run(emulate_fp16(half))
    assert native.dtype == emulated.dtype == np.float32 and emulated.shape == (1, 2, 8, 8)
    # the same computation by hand: fp32 ops, every tensor and weight rounded to fp16
    import torch
    import torch.nn.functional as F

    r = lambda t: t.half().float()  # noqa: E731
    wt = r(torch.from_numpy(np.asarray(w["w"], np.float32)))
    c = r(F.conv2d(r(torch.from_numpy(x)), wt, padding=1))
    e = r(F.conv2d(r(c * r(torch.tensor(1 / 3))), wt, padding=1))
    expected = r(F.interpolate(e, scale_factor=2, mode="bilinear", align_corners=False)).numpy()
    scale = np.abs(expected).max()
    # equal up to an fp16 rounding flip from fp32 accumulation order; ORT's native fp16 path is not
    assert np.abs(emulated - expected).max() <= 2 ** -10 * scale
    assert np.abs(native - expected).max() > np.abs(emulated - expected).max()
