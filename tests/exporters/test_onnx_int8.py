"""ONNX int8: calibration data, op selection, the manifest record and the refusal of an int8
graph slower than fp32 (timings are mocked only where the logic, not the speed, is tested)."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgeseg.errors import EdgesegError
from edgeseg.exporters.onnx import int8 as onnx_int8
from edgeseg.exporters.onnx.int8 import Int8Options, calibration_batches, min_cosine, node_groups, quantize_onnx

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _tiny_onnx() -> onnx.ModelProto:
    """stem conv -> depthwise 3x3 -> pointwise -> GAP -> linear head, with non-trivial weights."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.ReLU(),
                        nn.Conv2d(16, 32, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()
    buf = io.BytesIO()
    torch.onnx.export(net, (torch.randn(1, 3, 32, 32),), buf, dynamo=False, opset_version=17, input_names=["input"])
    return onnx.load_from_string(buf.getvalue())


def _opts(**kw) -> Int8Options:
    return Int8Options(**{"calib_samples": 3, "iterations": 2, "force": True, **kw})


def test_node_groups_find_depthwise_first_conv_and_head():
    groups = node_groups(_tiny_onnx())
    assert len(groups["depthwise"]) == 1 and len(groups["first"]) == 1 and len(groups["head"]) == 1
    assert groups["depthwise"] != groups["first"]


def test_calibration_batches_follow_the_models_channel_order_and_cycle_with_flips():
    rgb, names = calibration_batches((32, 32), (0.5,) * 3, (0.25,) * 3, "rgb", None, 10)
    bgr, _ = calibration_batches((32, 32), (0.5,) * 3, (0.25,) * 3, "bgr", None, 10)
    n = len(set(names))
    assert len(rgb) == 10 and rgb[0].shape == (1, 3, 32, 32) and rgb[0].dtype == np.float32
    np.testing.assert_array_equal(bgr[0][0], rgb[0][0][::-1])
    np.testing.assert_array_equal(rgb[n][0], rgb[0][0][:, :, ::-1])  # second pass: mirrored


def test_calibration_reads_a_users_directory(tmp_path):
    from PIL import Image

    for i in range(2):
        Image.fromarray(np.full((40, 50, 3), 60 * i, np.uint8)).save(tmp_path / f"{i}.png")
    batches, names = calibration_batches((32, 32), MEAN, STD, "rgb", str(tmp_path), 2)
    assert names == ["0.png", "1.png"] and len(batches) == 2
    with pytest.raises(EdgesegError, match="does not exist"):
        calibration_batches((32, 32), MEAN, STD, "rgb", str(tmp_path / "missing"), 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgesegError, match="no images"):
        calibration_batches((32, 32), MEAN, STD, "rgb", str(tmp_path / "empty"), 2)


def test_quantize_records_the_measured_choice_and_agrees_with_fp32():
    model = _tiny_onnx()
    q, rec = quantize_onnx(model, input_size=(32, 32), mean=MEAN, std=STD, channel_order="rgb", opts=_opts())
    ops = {n.op_type for n in q.graph.node}
    assert ops & {"QuantizeLinear", "QLinearConv", "ConvInteger"}
    assert rec["per_channel"] and rec["calibration"]["source"] == "bundled" and rec["calibration"]["samples"] == 3
    labels = [c["label"] for c in rec["candidates"]]
    assert {"int8 end to end, head float", "conv-matmul, depthwise float", "conv-matmul, depthwise int8"} <= set(labels)
    assert rec["reduce_range"] == onnx_int8.host_u8s8_saturates()
    assert all(c["ms"] and c["min_cosine"] is not None for c in rec["candidates"])
    assert rec["host_speed"]["fp32_ms"] > 0 and rec["host_speed"]["int8_ms"] > 0 and rec["host_speed"]["threads"] == 1
    assert rec["min_cosine_vs_fp32"] >= onnx_int8.MIN_COSINE
    assert set(rec["per_op_ms"]) == {"fp32", "int8"} and rec["per_op_ms"]["fp32"]
    # the artifact computes what the record says: cosine to fp32 on a calibration image
    x = calibration_batches((32, 32), MEAN, STD, "rgb", None, 1)[0][0]
    import onnxruntime as ort

    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    got = ort.InferenceSession(q.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    assert min_cosine([ref], [got]) > 0.98


def test_an_int8_graph_slower_than_fp32_is_refused_with_the_numbers(monkeypatch):
    # the speed measurement is replaced so that int8 is 2x slower: the decision logic is what is tested
    monkeypatch.setattr(onnx_int8, "interleaved_ms", lambda paths, x, iterations, threads=1: [10.0] + [20.0] * (len(paths) - 1))
    with pytest.raises(EdgesegError, match=r"slower than fp32 .*20\.0 ms vs 10\.0 ms.*x0\.50") as exc:
        quantize_onnx(_tiny_onnx(), input_size=(32, 32), mean=MEAN, std=STD, channel_order="rgb", opts=_opts(force=False))
    assert "--force" in str(exc.value.fix if hasattr(exc.value, "fix") else exc.value)
    _, rec = quantize_onnx(_tiny_onnx(), input_size=(32, 32), mean=MEAN, std=STD, channel_order="rgb", opts=_opts(force=True))
    assert rec["host_speed"]["speedup"] == 0.5


def test_int8_options_are_validated():
    with pytest.raises(EdgesegError, match="calibration method"):
        Int8Options.from_request({"calib_method": "bogus"}, None)
    assert Int8Options.from_request({}, "raspberry-pi-4").formats == ("QDQ",)
    assert Int8Options.from_request({}, None).formats == ("QDQ", "QOperator")


@pytest.mark.slow
def test_mobileone_int8_that_cannot_agree_is_refused_and_nothing_is_written(tmp_path):
    """MobileOne's reparameterized 3x3 convs are hard to quantize post-training (the RepVGG
    family's known weakness, e.g. Chu et al. 2022, "Make RepVGG Greater Again"); with these
    synthetic weights no op selection reaches the int8 cosine on the bundled images, and the
    export says so in one line instead of writing a model that fails parity."""
    from edgeseg.api import create
    from edgeseg.export_job import export_checkpoint

    out = tmp_path / "mobileone_s0.int8.onnx"
    with pytest.raises(EdgesegError, match=r"no int8 graph agrees with fp32 \(closest, .*needs"):
        export_checkpoint(None, out, model=create("mobileone_s0", pretrained_like=3), precision="int8",
                          options={"int8_force": True, "calib_samples": 4}, seed=3)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fastvit_t8"])
def test_export_int8_end_to_end_passes_int8_parity(name, tmp_path):
    """`edgeseg export --precision int8` on non-trivial weights: the int8 parity gate against
    PyTorch decides; the manifest records the selection and the measured host speed."""
    from edgeseg.api import create
    from edgeseg.export_job import export_checkpoint

    model = create(name, pretrained_like=3)
    out = tmp_path / f"{name}.int8.onnx"
    summary = export_checkpoint(None, out, model=model, precision="int8", options={"int8_force": True, "calib_samples": 4}, seed=3)
    assert out.is_file() and summary["precision"] == "int8"
    assert summary["parity"]["status"] == "passed", summary["parity"]["report"]
    rec = summary["int8"]
    assert rec["host_speed"]["int8_ms"] > 0 and rec["candidates"] and rec["kept_float"]["depthwise_convs"] >= 0


def test_end_to_end_candidate_folds_every_relu_into_its_int8_conv(monkeypatch):
    """What ORT executes, not what the file says: quantizing Conv alone leaves a DQ -> Relu -> Q
    between every pair of convs; the end-to-end candidate leaves one Q at the input and one DQ
    before the float head."""
    from edgeseg.exporters.onnx.passes import ort_optimized_counts

    seen = []  # every graph whose outputs are computed: fp32 first, then the candidates in build order
    orig = onnx_int8._outputs
    monkeypatch.setattr(onnx_int8, "_outputs", lambda path, batches: seen.append(onnx.load(str(path))) or orig(path, batches))
    quantize_onnx(_tiny_onnx(), input_size=(32, 32), mean=MEAN, std=STD, channel_order="rgb", opts=_opts())
    e2e, conv_only = ort_optimized_counts(seen[1]), ort_optimized_counts(seen[2])
    assert e2e.get("Relu", 0) == 0 and e2e.get("QLinearConv", 0) == 3 and e2e.get("QuantizeLinear", 0) <= 2, e2e
    assert conv_only.get("Relu", 0) >= 2 and conv_only["QuantizeLinear"] > e2e.get("QuantizeLinear", 0), conv_only


def _gelu_onnx(approximate: str = "none") -> onnx.ModelProto:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.GELU(), nn.Conv2d(8, 8, 1), nn.GELU(approximate=approximate)).eval()
    buf = io.BytesIO()
    torch.onnx.export(net, (torch.randn(1, 3, 16, 16),), buf, dynamo=False, opset_version=17, input_names=["input"])
    return onnx.load_from_string(buf.getvalue())


@pytest.mark.parametrize("op, tol", [("Gelu", 1e-6), ("FastGelu", 6e-4)])
def test_erf_gelu_becomes_one_ort_op_with_the_same_values(op, tol):
    import onnxruntime as ort

    from edgeseg.exporters.onnx.passes import fuse_erf_gelu

    model = _gelu_onnx()
    x = np.random.default_rng(5).standard_normal((1, 3, 16, 16)).astype(np.float32) * 3
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert fuse_erf_gelu(model, op=op) == 2
    assert [n.op_type for n in model.graph.node if n.domain == "com.microsoft"] == [op, op]
    assert not {"Erf", "Div"} & {n.op_type for n in model.graph.node}
    onnx.checker.check_model(model)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert np.abs(got - ref).max() <= tol * max(1.0, float(np.abs(ref).max()))


def test_tanh_gelu_and_lookalikes_are_left_alone():
    from edgeseg.exporters.onnx.passes import fuse_erf_gelu

    model = _gelu_onnx()
    # a pattern whose trailing factor is not 0.5 is not GELU
    consts = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant"}
    half_muls = [n for n in model.graph.node if n.op_type == "Mul" and any(
        i in consts and abs(float(onnx.numpy_helper.to_array(consts[i].attribute[0].t).ravel()[0]) - 0.5) < 1e-9 for i in n.input)]
    assert half_muls, "the exported GELU pattern changed"
    c = consts[next(i for i in half_muls[0].input if i in consts)]
    c.attribute[0].t.CopyFrom(onnx.numpy_helper.from_array(np.array(0.25, np.float32)))
    assert fuse_erf_gelu(model) == 1  # the other GELU is still fused
    assert fuse_erf_gelu(_gelu_onnx()) == 2 and fuse_erf_gelu(_gelu_onnx("tanh")) == 1


def test_reduce_range_follows_the_cpu(monkeypatch, tmp_path):
    import platform

    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    cpuinfo.write_text("processor: 0\nflags\t\t: fpu sse avx2 fma\n")
    assert onnx_int8.host_u8s8_saturates(cpuinfo) is True
    cpuinfo.write_text("flags\t\t: fpu avx2 avx512f avx512_vnni\n")
    assert onnx_int8.host_u8s8_saturates(cpuinfo) is False
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert onnx_int8.host_u8s8_saturates(cpuinfo) is False
    assert Int8Options.from_request({}, "raspberry-pi-4").reduce_range is False  # Arm kernels do not saturate
