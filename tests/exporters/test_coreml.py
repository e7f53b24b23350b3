"""Core ML export: conversion of every registered architecture, spec checks, image-input
normalization, labels, refusals, the fp16 preflight, and the parity backend's behaviour off
macOS. Conversion time depends on graph size more than input size, so the fast set converts
one variant per (family, task) at a small size; every architecture at its default size is
in the slow set."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import edgeseg
from edgeseg.errors import EdgesegError, VerificationError
from edgeseg.exporters import ExportRequest, get_exporter
from edgeseg.registry import list_models

pytest.importorskip("coremltools", reason="coremltools is not installed")

SEED = 7


def _fused(name: str, size=None, **cfg):
    model = edgeseg.create(name, pretrained_like=SEED, **cfg)
    fused, _ = edgeseg.reparameterize(model, verify=False, input_size=size)
    return fused


def _export(model, out: Path, size, **kw):
    options = {"preflight": False, **kw.pop("options", {})}
    req = ExportRequest(model=model, output=out, input_size=tuple(size), options=options, **{"precision": "fp16", **kw})
    return get_exporter("coreml").export(req)


def _small_size(entry) -> tuple[int, int]:
    d = entry.size_divisor
    return (max(2 * d, 128), max(2 * d, 128))


def _representatives() -> set[str]:
    seen, reps = set(), set()
    for e in list_models():
        if not e.large and (e.family, e.task) not in seen:
            seen.add((e.family, e.task))
            reps.add(e.name)
    return reps


_REPS = _representatives()


@pytest.mark.parametrize("name", sorted(e.name for e in list_models() if e.name in _REPS))
def test_converts_small(name, tmp_path):
    """One variant per family and task, small input: converts, and the spec says what was asked."""
    from edgeseg.registry import get_entry

    size = _small_size(get_entry(name))
    fused = _fused(name, size)
    res = _export(fused, tmp_path / f"{name}.mlpackage", size)
    m = res.manifest
    assert res.path.is_dir() and (res.path / "Manifest.json").is_file()
    assert m["capture"] in ("export", "export-decomposed", "trace")
    assert m["spec"]["precision"] == "fp16"
    assert m["spec"]["inputs"][0]["shape"] == [1, 3, *size]
    with torch.no_grad():
        ref = fused(torch.zeros(1, 3, *size))
    ref = ref if isinstance(ref, torch.Tensor) else ref[0]
    assert m["spec"]["outputs"][0]["shape"] == list(ref.shape)
    assert m["spec"]["outputs"][0]["dtype"] == "FLOAT32"


def _all_default():
    for e in list_models():
        yield pytest.param(e.name, marks=pytest.mark.slow)


@pytest.mark.parametrize("name", list(_all_default()))
def test_converts_at_default_size(name, tmp_path):
    """Every registered architecture at its default size (slow: conversions take 10-60 s each)."""
    fused = _fused(name)
    size = tuple(fused.edgeseg.fixed_input_size or fused.edgeseg.input_size)
    res = _export(fused, tmp_path / f"{name}.mlpackage", size, options={"preflight": True})
    spec = res.manifest["spec"]
    assert spec["precision"] == "fp16" and spec["inputs"][0]["shape"] == [1, 3, *size]
    with torch.no_grad():
        ref = fused(torch.zeros(1, 3, *size))
    assert spec["outputs"][0]["shape"] == list((ref if isinstance(ref, torch.Tensor) else ref[0]).shape)
    # fp16 figures are reported, not gated: synthetic weights can push activations past the
    # fp16 range (a finding for the report). An overflow must be located.
    pre = res.manifest["fp16_preflight"]
    if pre["nonfinite"]:
        assert pre["first_overflow"]["module"] != "<model>" and pre["first_overflow"]["op"]
    else:
        assert pre["max_rel"] > 0 and -1 <= pre["min_cosine"] <= 1
        # the verdict is the parity gate's fp16 defaults applied to the figures
        task = fused.edgeseg.task
        agree = pre["top1_agreement"] if task == "classification" else pre["pixel_agreement"]
        within = pre["max_rel"] <= 2e-2 and pre["min_cosine"] >= 0.999 and agree >= (0.8 if task == "classification" else 0.98)
        assert pre["predicted_gate"].startswith("pass") == within, pre


# ------------------------------------------------------------------ spec checks on one model

TINY = dict(num_classes=10, num_blocks=(1, 1, 1, 1))  # MobileOne-S0 widths, one block per stage: 9 convs


@pytest.fixture(scope="module")
def tiny():
    return _fused("mobileone_s0", (64, 64), **TINY)


@pytest.fixture(scope="module")
def mobileone(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("coreml") / "m.mlpackage"
    return tiny, _export(tiny, out, (64, 64), options={"preflight": True})


def test_spec_fields(mobileone):
    from edgeseg.exporters.coreml.spec import load_spec, summarize

    fused, res = mobileone
    s = summarize(load_spec(res.path))
    assert s.model_type == "mlProgram" and s.spec_version == 7 and s.target == "iOS16"
    assert [(t.name, t.kind, t.shape, t.dtype) for t in s.inputs] == [("input", "multiarray", (1, 3, 64, 64), "FLOAT32")]
    assert [(t.name, t.shape, t.dtype) for t in s.outputs] == [("logits", (1, 10), "FLOAT32")]
    assert s.precision == "fp16" and s.weight_dtypes.get("FLOAT16", 0) > 0 and "FLOAT32" not in s.compute_dtypes
    # a fused MobileOne is conv+relu only: one conv per block, no batch norm, no branch adds
    assert s.op_counts["conv"] == 9 and "batch_norm" not in s.op_counts and "add" not in s.op_counts
    assert s.metadata["edgeseg.arch"] == "mobileone_s0" and s.metadata["edgeseg.input_size"] == "64x64"
    assert s.metadata["edgeseg.mean"] == "0.485,0.456,0.406"
    assert s.author.startswith("edgeseg") and "mobileone_s0" in s.description
    assert s.ane == []


def test_spec_check_reports_mismatches(mobileone):
    from edgeseg.exporters.coreml.spec import Expected, check, load_spec, summarize

    _, res = mobileone
    s = summarize(load_spec(res.path))
    good = Expected("input", "multiarray", (1, 3, 64, 64), [("logits", (1, 10))], "fp16", "iOS16")
    assert check(s, good) == []
    bad = Expected("image", "image", (1, 3, 32, 32), [("labels", (1, 10))], "fp32", "iOS17")
    problems = " | ".join(check(s, bad))
    for word in ("input input", "input shape", "outputs ['logits']", "compute precision fp16", "spec version 7"):
        assert word in problems


def test_fp16_preflight_figures(mobileone):
    pre = mobileone[1].manifest["fp16_preflight"]
    assert pre["method"] == "emulate" and len(pre["samples"]) >= 2
    assert not pre["nonfinite"] and pre["overflow_modules"] == []
    assert 0 < pre["max_rel"] < 0.1 and pre["min_cosine"] > 0.99
    assert 0.5 <= pre["top1_agreement"] <= 1.0
    # the verdict is the parity gate's fp16 defaults applied to these figures
    passes = pre["max_rel"] <= 2e-2 and pre["min_cosine"] >= 0.999 and pre["top1_agreement"] >= 0.8
    assert pre["predicted_gate"].startswith("pass" if passes else "fail:")


def test_fp32_export_is_reported_off_the_neural_engine(tiny, tmp_path):
    res = _export(tiny, tmp_path / "f32.mlpackage", (64, 64), precision="fp32")
    spec = res.manifest["spec"]
    assert spec["precision"] == "fp32" and "fp16_preflight" not in res.manifest
    assert any("fp32 compute" in f["what"] and f["severity"] == "off-ane" for f in spec["ane"])


def test_ane_findings_for_dilated_conv_and_gather(tmp_path):
    """The Neural Engine report looks at op types and attributes: a dilated conv and a gather."""
    from edgeseg.exporters.coreml.convert import convert
    from edgeseg.exporters.coreml.spec import summarize
    import coremltools as ct

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=2, dilation=2)

        def forward(self, x):
            y = self.conv(x)
            return y[:, torch.tensor([0, 2, 3])]

    x = torch.randn(1, 3, 16, 16)
    conv = convert(M().eval(), x, inputs=[ct.TensorType(name="input", shape=x.shape, dtype=np.float32)],
                   outputs=[ct.TensorType(name="out", dtype=np.float32)], precision="fp16", target="iOS16")
    found = {f.what: f for f in summarize(conv.model.get_spec()).ane}
    assert "dilated conv" in found and found["dilated conv"].count == 1
    assert any(k.startswith("gather") for k in found)


# ------------------------------------------------------------------ image input

def test_image_input_folds_std_into_the_first_conv_exactly(tiny):
    import copy

    from edgeseg.exporters.coreml.module import build_module
    from edgeseg.exporters.wrap import wrap_for_export

    # float64 throughout: the fold is then exact up to rounding (~1e-16); in float32 the
    # rounded folded weights add noise that depth amplifies to ~1e-5
    fused = copy.deepcopy(tiny).double()
    info = fused.edgeseg
    module, norm = build_module(fused, info.task, "none", 1, (64, 64), True, info.mean, info.std)
    assert norm.folded == "conv:stage0.reparam_conv.weight"
    assert norm.scale == pytest.approx(1 / 255) and norm.bias == pytest.approx(tuple(-m for m in info.mean))
    pix = torch.randint(0, 256, (2, 3, 64, 64)).double()
    f64 = dict(dtype=torch.float64)
    mean, std = torch.tensor(info.mean, **f64).view(1, 3, 1, 1), torch.tensor(info.std, **f64).view(1, 3, 1, 1)
    core_ml_pre = pix * norm.scale + torch.tensor(norm.bias, **f64).view(1, 3, 1, 1)  # what ImageType computes
    with torch.no_grad():
        got = module(core_ml_pre)[0]
        ref = wrap_for_export(fused, info.task)(((pix / 255 - mean) / std))[0]
    assert (got - ref).abs().max() <= 1e-12 * ref.abs().max()
    # the model itself is untouched
    assert fused.stage0.reparam_conv.weight is not module.inner.stage0.reparam_conv.weight


class _ResidualStem(nn.Module):
    """The input feeds two ops: no single conv can absorb 1/std."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Linear(3, 4)

    def forward(self, x):
        y = self.conv(x) + x
        return self.head(y.mean((2, 3)))


def test_image_input_falls_back_to_an_explicit_multiply():
    from edgeseg.exporters.coreml.module import build_module

    m = _ResidualStem().eval()
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    module, norm = build_module(m, "classification", "none", 1, (16, 16), True, mean, std)
    assert norm.folded == "multiply"
    pix = torch.randint(0, 256, (1, 3, 16, 16)).float()
    pre = pix * norm.scale + torch.tensor(norm.bias).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = m((pix / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
        assert torch.allclose(module(pre)[0], ref, atol=1e-5)
    # uniform std: everything fits the image scale and bias
    _, uniform = build_module(m, "classification", "none", 1, (16, 16), True, mean, (0.5, 0.5, 0.5))
    assert uniform.folded == "" and uniform.scale == pytest.approx(1 / (255 * 0.5))
    assert uniform.bias == pytest.approx(tuple(-v / 0.5 for v in mean))


def test_image_input_export(tiny, tmp_path):
    """The saved spec has an RGB image input whose preprocessing is exactly pixel/255 - mean."""
    from edgeseg.exporters.coreml.spec import load_spec

    fused = tiny
    res = _export(fused, tmp_path / "img.mlpackage", (64, 64), options={"image_input": True})
    inp = res.manifest["spec"]["inputs"][0]
    assert (inp["name"], inp["kind"], inp["shape"], inp["color"]) == ("image", "image", [64, 64], "RGB")
    assert res.manifest["spec"]["precision"] == "fp16"
    spec = load_spec(res.path)
    fn = spec.mlProgram.functions["main"]
    ops = {op.outputs[0].name: op for op in fn.block_specializations[fn.opset].operations}

    def const_of(op, arg):
        name = op.inputs[arg].arguments[0].name
        t = ops[name].attributes["val"].immediateValue.tensor
        return np.asarray(t.floats.values) if t.WhichOneof("value") == "floats" else None

    scaled, biased = ops["image__scaled__"], ops["image__biased__"]
    assert const_of(scaled, "y") == pytest.approx(1 / 255)
    assert np.allclose(const_of(biased, "y").ravel(), [-m for m in fused.edgeseg.mean], atol=1e-7)


def test_image_input_needs_batch_one(tiny, tmp_path):
    with pytest.raises(EdgesegError, match="one image"):
        _export(tiny, tmp_path / "b2.mlpackage", (64, 64), batch=2, options={"image_input": True})


# ------------------------------------------------------------------ labels, postprocess

def test_classifier_labels(tmp_path):
    from edgeseg.exporters.coreml.spec import load_spec
    from edgeseg.exporters.coreml.runner import classifier_labels

    fused = _fused("mobileone_s0", (64, 64), num_classes=5, num_blocks=(1, 1, 1, 1))
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n\nbird\nfish\nfrog\n")
    res = _export(fused, tmp_path / "cls.mlpackage", (64, 64), options={"labels": str(labels)})
    spec = load_spec(res.path)
    assert res.manifest["spec"]["classifier"] and res.manifest["labels"] == 5
    assert spec.description.predictedFeatureName == "classLabel"
    assert classifier_labels(spec) == ["cat", "dog", "bird", "fish", "frog"]
    with pytest.raises(EdgesegError, match="3 labels for a model with 5 classes"):
        _export(fused, tmp_path / "bad.mlpackage", (64, 64), options={"labels": ["a", "b", "c"]})
    assert not (tmp_path / "bad.mlpackage").exists()


def test_segmentation_argmax_output(tmp_path):
    from edgeseg.registry import get_entry

    segs = [e for e in list_models() if e.task == "segmentation" and e.name in _REPS]
    if not segs:
        pytest.skip("no segmentation architecture registered")
    seg = next((e for e in segs if e.name == "topformer_tiny"), segs[0])
    size = _small_size(get_entry(seg.name))
    fused = _fused(seg.name, size)
    res = _export(fused, tmp_path / "seg.mlpackage", size, postprocess="argmax")
    out = res.manifest["spec"]["outputs"][0]
    assert (out["name"], out["shape"], out["dtype"]) == ("labels", [1, *size], "INT32")


# ------------------------------------------------------------------ refusals and atomicity

@pytest.mark.parametrize("kw, match", [
    ({"precision": "int8"}, "does not produce int8"),
    ({"dynamic": True}, "fixed shapes"),
    ({"input_size": (60, 60)}, "not a multiple of 32"),
    ({"postprocess": "argmax"}, "applies to segmentation"),
])
def test_refusals(tiny, tmp_path, kw, match):
    size = kw.pop("input_size", (64, 64))
    with pytest.raises(EdgesegError, match=match):
        _export(tiny, tmp_path / "x.mlpackage", size, **kw)
    assert not (tmp_path / "x.mlpackage").exists()


def test_profiles(tiny, tmp_path):
    from edgeseg.devices import get_profile

    fused = tiny
    with pytest.raises(EdgesegError, match="runs tensorrt, not Core ML"):
        _export(fused, tmp_path / "x.mlpackage", (64, 64), profile=get_profile("jetson-nano"))
    res = _export(fused, tmp_path / "p.mlpackage", (64, 64), precision="auto", profile=get_profile("iphone-15-pro"))
    assert res.manifest["precision"] == "fp16"
    assert res.manifest["min_target"] == get_profile("iphone-15-pro").export.coreml_min_target


def test_failed_validation_leaves_nothing_and_keeps_old_output(tmp_path, monkeypatch, mobileone):
    import edgeseg.exporters.coreml.spec as spec_mod

    fused, _ = mobileone
    out = tmp_path / "keep.mlpackage"
    out.mkdir()
    (out / "old").write_text("previous good artifact")
    with pytest.raises(EdgesegError, match="already exists"):
        _export(fused, out, (64, 64))
    monkeypatch.setattr(spec_mod, "check", lambda summary, expected: ["forced mismatch"])
    with pytest.raises(VerificationError, match="forced mismatch"):
        _export(fused, out, (64, 64), overwrite=True)
    assert (out / "old").read_text() == "previous good artifact"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.mlpackage"]


# ------------------------------------------------------------------ capture paths

class _DataDependent(nn.Module):
    """Python control flow on a tensor value: torch.export refuses it, tracing records one branch."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        if x.mean() > -1e9:
            return self.conv(x)
        return -self.conv(x)


def test_capture_falls_back_and_reports_why():
    import coremltools as ct

    from edgeseg.exporters.coreml.convert import convert

    x = torch.randn(1, 3, 8, 8)
    io = dict(inputs=[ct.TensorType(name="input", shape=x.shape, dtype=np.float32)], outputs=[ct.TensorType(name="y", dtype=np.float32)],
              precision="fp16", target="iOS16")
    conv = convert(_DataDependent().eval(), x, **io)
    assert conv.capture == "trace" and set(conv.attempts) == {"export", "export-decomposed"}
    with pytest.raises(EdgesegError, match="Core ML conversion failed .*export:"):
        convert(_DataDependent().eval(), x, capture="export", **io)


# ------------------------------------------------------------------ fp16 preflight

class _Overflow(nn.Module):
    def __init__(self):
        super().__init__()
        self.big = nn.Conv2d(3, 8, 1)
        self.head = nn.Conv2d(8, 2, 1)
        with torch.no_grad():
            self.big.weight.fill_(3e4)

    def forward(self, x):
        return self.head(torch.relu(self.big(x)) * 1e-3)


def test_preflight_predicts_overflow():
    from edgeseg.exporters.coreml.preflight import fp16_preflight

    out = fp16_preflight(_Overflow().eval(), input_size=(16, 16), task="segmentation", mean=(0.5,) * 3, std=(0.25,) * 3)
    assert out["nonfinite"] is True and 0 < out["nonfinite_fraction"] <= 1
    assert out["max_rel"] is None and out["pixel_agreement"] is None  # no made-up figures for inf outputs
    assert out["overflow_modules"][0]["module"] == "big" and out["peak_activation"] > 65504
    assert out["first_overflow"] == {"module": "big", "op": "conv2d"}
    assert out["predicted_gate"].startswith("fail:") and "inf/NaN" in out["predicted_gate"]


def test_preflight_emulation_tracks_real_fp16(tiny):
    """The fast emulation and PyTorch's fp16 kernels give drift of the same size."""
    from edgeseg.exporters.coreml.preflight import fp16_preflight

    fused = tiny
    info = fused.edgeseg
    kw = dict(input_size=(64, 64), task=info.task, mean=info.mean, std=info.std, images=False, random_samples=2)
    emu, half = fp16_preflight(fused, method="emulate", **kw), fp16_preflight(fused, method="half", **kw)
    assert 0 < emu["max_rel"] < 0.05 and 0 < half["max_rel"] < 0.05
    assert 0.2 < emu["max_rel"] / half["max_rel"] < 5


# ------------------------------------------------------------------ parity backend

def test_parity_skips_off_macos(mobileone):
    from edgeseg.parity import BackendUnavailable, open_runner
    from edgeseg.parity.job import parity_for_model

    if platform.system() == "Darwin":
        pytest.skip("on macOS the backend runs; see test_parity_on_macos")
    fused, res = mobileone
    with pytest.raises(BackendUnavailable, match="Core ML runtime needs macOS"):
        open_runner(res.path)
    summary = parity_for_model(fused, [res.path], samples=1, seed=0, bundled_images=False)
    entry = summary["artifacts"][0]
    assert entry["status"] == "skipped" and "macOS" in entry["reason"]
    assert summary["status"] == "skipped" and summary["passed"]  # skipped is never reported as passed
    assert entry["report"]["status"] == "skipped"


@pytest.mark.coreml_runtime
@pytest.mark.skipif(platform.system() != "Darwin", reason="Core ML runtime needs macOS")
def test_parity_on_macos(tmp_path):
    from edgeseg.parity.job import parity_for_model

    fused = _fused("mobileone_s0", (64, 64), **TINY)
    res = _export(fused, tmp_path / "mac.mlpackage", (64, 64))
    summary = parity_for_model(fused, [res.path], samples=2, seed=0)
    assert summary["artifacts"][0]["status"] == "passed", summary["artifacts"][0]["report"]


def test_pixels_round_trip_and_refuse_non_images():
    from edgeseg.exporters.coreml.runner import to_pixels

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    pix = np.random.default_rng(0).integers(0, 256, (2, 3, 8, 8)).astype(np.float32)
    x = (pix / 255 - np.array(mean).reshape(1, 3, 1, 1)) / np.array(std).reshape(1, 3, 1, 1)
    assert np.array_equal(to_pixels(x.astype(np.float32), mean, std), pix.astype(np.uint8).transpose(0, 2, 3, 1))
    with pytest.raises(EdgesegError, match="outside the 0..255"):
        to_pixels(np.full((1, 3, 4, 4), 5.0, np.float32), mean, std)


def test_registry_entries():
    assert get_exporter("coreml").suffix == ".mlpackage"
    from edgeseg.exporters import target_for_suffix

    assert target_for_suffix(".mlpackage").runner.startswith("edgeseg.exporters.coreml.runner:")


def test_bgr_model_gets_a_bgr_image_input(tiny, tmp_path):
    """A model that reads BGR (EdgeFormer, ml-cvnets) gets a Core ML ImageType with color_layout BGR:
    an RGB layout would feed it swapped channels from every camera frame."""
    import copy
    import dataclasses

    from edgeseg.registry import get_entry

    assert {get_entry(n).channel_order for n in ("edgeformer_s", "edgeformer_s_deeplabv3")} == {"bgr"}
    bgr = copy.deepcopy(tiny)
    bgr.edgeseg = dataclasses.replace(tiny.edgeseg, channel_order="bgr")
    res = _export(bgr, tmp_path / "bgr.mlpackage", (64, 64), options={"image_input": True})
    assert res.manifest["spec"]["inputs"][0]["color"] == "BGR"
    rgb = _export(tiny, tmp_path / "rgb.mlpackage", (64, 64), options={"image_input": True})
    assert rgb.manifest["spec"]["inputs"][0]["color"] == "RGB"
