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
    assert "conv-matmul, depthwise float" in labels and "conv-matmul, depthwise int8" in labels
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
@pytest.mark.parametrize("name", ["fastvit_t8", "mobileone_s0"])
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
