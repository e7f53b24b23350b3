"""The parity comparison, its inputs, JUnit output and backend handling."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from edgeseg.errors import EdgesegError
from edgeseg.parity import BackendUnavailable, register_runner
from edgeseg.compare import DEFAULT_TOLERANCES, compare_outputs, mask_agreement, topk_agreement
from edgeseg.images import bundled_images, make_inputs, preprocess
from edgeseg.parity.job import ParityFailure, raise_if_failed

RNG = np.random.default_rng(7)


def _logits(n=6, c=1000):
    return RNG.standard_normal((n, c)).astype(np.float32) * 3


def test_identical_and_rounding_level_outputs_pass_fp32():
    ref = _logits()
    rep = compare_outputs([ref], [ref.copy()], task="classification", precision="fp32")
    assert rep.passed and rep.outputs[0].metrics["max_abs"] == 0.0
    noisy = ref + (np.abs(ref).max() * 1e-6 * RNG.standard_normal(ref.shape)).astype(np.float32)
    rep = compare_outputs([ref], [noisy], task="classification", precision="fp32")
    assert rep.passed and 5e-7 < rep.outputs[0].metrics["max_rel"] < 1e-5


def test_failure_reports_threshold_and_smallest_passing_tolerance():
    ref = _logits()
    cand = ref.copy()
    lowest = int(ref[0].argmin())  # raising the lowest logit leaves the rankings alone
    cand[0, lowest] += 0.01 * np.abs(ref).max()  # one element off by 1% of the scale
    rep = compare_outputs([ref], [cand], task="classification", precision="fp32", names=["logits"])
    assert rep.status == "failed"
    (name, check), = [f for f in rep.failures() if f[1].metric == "max_rel"]
    assert name == "logits" and check.threshold == DEFAULT_TOLERANCES["fp32"].rtol
    assert check.needed == pytest.approx(0.01, rel=1e-3) and check.tolerance == "rtol"
    assert "passes with rtol=" in check.describe()
    # the tolerance it names does pass; fp16 tolerances pass too
    assert compare_outputs([ref], [cand], task="classification", precision="fp32", tolerances={"rtol": check.needed * 1.0001,
                                                                                               "min_cosine": 0.999}).passed
    assert compare_outputs([ref], [cand], task="classification", precision="fp16").passed


def test_atol_adds_to_the_relative_allowance():
    ref = np.ones((1, 4), np.float32) * 10
    cand = ref + 0.01
    assert not compare_outputs([ref], [cand], task="other", precision="fp32").passed
    rep = compare_outputs([ref], [cand], task="other", precision="fp32", tolerances={"atol": 0.02})
    assert rep.passed


def test_nan_or_inf_anywhere_fails():
    ref = _logits()
    for bad in (np.nan, np.inf):
        cand = ref.copy()
        cand[2, 5] = bad
        rep = compare_outputs([ref], [cand], task="classification", precision="int8")
        assert not rep.passed and rep.failures()[0][1].metric == "nan_inf"
    rep = compare_outputs([np.full((1, 3), np.nan, np.float32)], [np.zeros((1, 3), np.float32)], task="other", precision="fp32")
    assert not rep.passed


def test_classification_agreement_metrics():
    ref = np.array([[3, 2, 1, 0, -1, -2, -3], [0, 1, 2, 3, 4, 5, 6]], np.float32)
    cand = ref.copy()
    cand[0, 1] = 4  # sample 0: top-1 flips (2 instead of 0); top-5 set unchanged
    t1, t5 = topk_agreement(ref, cand)
    assert t1 == 0.5 and t5 == 1.0
    cand[1, 0] = 10  # sample 1: class 0 enters the top 5 (and top-1), class 2 leaves
    t1, t5 = topk_agreement(ref, cand)
    assert t1 == 0.0 and t5 == pytest.approx((1.0 + 0.8) / 2)
    # a flip the tolerance cannot explain: every logit within 0.85 of the reference (max_rel
    # 0.85/6 <= 0.15), but the classes are 1.0 apart in the reference, more than the 0.9 allowed
    cand = ref.copy()
    cand[0, 0], cand[0, 1] = 3 - 0.85, 2 + 0.85
    rep = compare_outputs([ref], [cand], task="classification", precision="int8", tolerances={"rtol": 0.15, "min_cosine": 0})
    failed = {c.metric for _, c in rep.failures()}
    assert failed == {"top1_agreement"}


def test_segmentation_pixel_agreement_and_miou_by_hand():
    ref = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2]])
    cand = np.array([[0, 0, 1, 1], [0, 1, 1, 1], [2, 2, 2, 3]])
    agree, miou = mask_agreement(ref, cand)
    assert agree == pytest.approx(10 / 12)
    # IoU: class0 3/4, class1 4/5, class2 3/4, class3 0/1
    assert miou == pytest.approx((3 / 4 + 4 / 5 + 3 / 4 + 0) / 4)
    logits = RNG.standard_normal((2, 5, 8, 8)).astype(np.float32)
    rep = compare_outputs([logits], [logits.copy()], task="segmentation", precision="fp32")
    m = rep.outputs[0].metrics
    assert rep.passed and m["pixel_agreement"] == 1.0 and m["miou"] == 1.0
    labels = logits.argmax(1).astype(np.int32)
    flipped = labels.copy()
    flipped[0, :4] = (flipped[0, :4] + 1) % 5
    rep = compare_outputs([labels], [flipped], task="segmentation", precision="fp32", names=["labels"])
    assert rep.outputs[0].kind == "labels" and not rep.passed
    assert {c.metric for _, c in rep.failures()} == {"pixel_agreement", "miou"}


def test_per_output_tolerance_overrides_and_errors():
    a, b = _logits(2, 10), RNG.standard_normal((2, 3)).astype(np.float32)
    cand_b = b * 1.001
    rep = compare_outputs([a, b], [a, cand_b], task="other", precision="fp32", names=["x", "y"])
    assert [o.passed for o in rep.outputs] == [True, False]
    rep = compare_outputs([a, b], [a, cand_b], task="other", precision="fp32", names=["x", "y"],
                          tolerances={"y": {"rtol": 2e-3, "min_cosine": 0.99}})
    assert rep.passed and rep.tolerances["x"].rtol == DEFAULT_TOLERANCES["fp32"].rtol
    with pytest.raises(EdgesegError, match="unknown tolerance"):
        compare_outputs([a], [a], task="other", precision="fp32", tolerances={"rtl": 1})
    with pytest.raises(EdgesegError, match="unknown output"):
        compare_outputs([a], [a], task="other", precision="fp32", names=["x"], tolerances={"z": {"rtol": 1}})
    rep = compare_outputs([a], [a[:1]], task="other", precision="fp32")
    assert not rep.passed and rep.failures()[0][1].metric == "shape"
    assert compare_outputs([a], [a, a], task="other", precision="fp32").status == "failed"


def test_default_tolerances_get_looser_with_precision():
    f32, f16, i8 = (DEFAULT_TOLERANCES[p] for p in ("fp32", "fp16", "int8"))
    assert f32.rtol < f16.rtol < i8.rtol
    assert f32.min_cosine > f16.min_cosine > i8.min_cosine
    assert f32.min_miou > f16.min_miou > i8.min_miou


def test_bundled_images_and_preprocessing(tmp_path):
    from PIL import Image

    imgs = bundled_images()
    assert len(imgs) >= 3 and (imgs[0].parent / "LICENSE.md").is_file()
    Image.new("RGB", (40, 30), (255, 0, 128)).save(tmp_path / "flat.png")
    arr = preprocess(tmp_path / "flat.png", (16, 24), mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
    assert arr.shape == (3, 16, 24)
    np.testing.assert_allclose(arr[:, 0, 0], [(1 - 0.5) / 0.25, (0 - 0.5) / 0.5, (128 / 255 - 0.5) / 1.0], atol=1e-6)
    s1 = make_inputs((32, 32), (0.4, 0.4, 0.4), (0.2, 0.2, 0.2), batch=3, images=tmp_path, random_batches=2, seed=11)
    s2 = make_inputs((32, 32), (0.4, 0.4, 0.4), (0.2, 0.2, 0.2), batch=3, images=tmp_path, random_batches=2, seed=11)
    kinds = [s.kind for s in s1.samples]
    assert kinds.count("random") == 2 and kinds.count("image") == -(-(len(imgs) + 1) // 3)
    assert all(s.array.shape == (3, 3, 32, 32) and s.array.dtype == np.float32 for s in s1.samples)
    for a, b in zip(s1.samples, s2.samples):
        np.testing.assert_array_equal(a.array, b.array)  # seeded: reproducible
    assert s1.describe()["seed"] == 11 and str(tmp_path / "flat.png") in s1.images
    with pytest.raises(EdgesegError, match="does not exist"):
        make_inputs((32, 32), (0, 0, 0), (1, 1, 1), images=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgesegError, match="no images"):
        make_inputs((32, 32), (0, 0, 0), (1, 1, 1), images=tmp_path / "empty")


def _summary(status_by_artifact):
    from edgeseg.compare import ParityReport

    arts = []
    for name, status in status_by_artifact.items():
        if status == "skipped":
            rep = ParityReport.skip("runtime missing")
            arts.append({"artifact": name, "status": "skipped", "reason": "runtime missing", "report": rep.as_dict()})
            continue
        ref = _logits(2, 10)
        cand = ref if status == "passed" else ref * 1.1
        rep = compare_outputs([ref], [cand], task="classification", precision="fp32", names=["logits"])
        arts.append({"artifact": name, "status": rep.status, "reason": rep.reason, "report": rep.as_dict(), "seconds": 0.1,
                     "backend": "fake", "precision": "fp32"})
    return {"arch": "m", "seed": 1, "artifacts": arts, "status": "?"}


def test_junit_xml_lists_each_threshold(tmp_path):
    from edgeseg.parity.junit import write_junit

    path = write_junit(_summary({"a.onnx": "passed", "b.onnx": "failed", "c.mlpackage": "skipped"}), tmp_path / "r.xml")
    root = ET.parse(path).getroot()
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {"parity.a.onnx", "parity.b.onnx", "parity.c.mlpackage"}
    assert suites["parity.a.onnx"].get("failures") == "0" and int(suites["parity.a.onnx"].get("tests")) == 5
    fails = suites["parity.b.onnx"].findall(".//failure")
    assert int(suites["parity.b.onnx"].get("failures")) == len(fails) > 0
    assert any("would pass with rtol=" in f.get("message") for f in fails)
    assert suites["parity.c.mlpackage"].find(".//skipped").get("message") == "skipped: runtime missing"
    assert root.get("skipped") == "1"


def test_skipped_is_never_a_pass_and_strict_fails():
    s = _summary({"c.mlpackage": "skipped"})
    raise_if_failed(s)  # not a failure by default ...
    with pytest.raises(ParityFailure, match="skipped"):
        raise_if_failed(s, strict=True)  # ... but never a pass
    with pytest.raises(ParityFailure) as exc:
        raise_if_failed(_summary({"a.onnx": "passed", "b.onnx": "failed"}))
    assert exc.value.exit_code == 3 and "b.onnx" in exc.value.problem


def test_unavailable_backend_is_reported_as_skipped(tmp_path):
    from edgeseg.api import create
    from edgeseg.parity.job import parity_for_model

    @register_runner(".fakert")
    def _open(path, **options):
        raise BackendUnavailable("fake runtime needs macOS", "run on a Mac")

    art = tmp_path / "m.fakert"
    art.write_bytes(b"")
    model = create("mobileone_s0", pretrained_like=1)
    s = parity_for_model(model, [art], samples=1, max_images=1, seed=0)
    e = s["artifacts"][0]
    assert e["status"] == "skipped" and e["reason"] == "fake runtime needs macOS" and s["status"] == "skipped"
    assert e["report"]["summary"] == "skipped: fake runtime needs macOS"


def test_deploy_checkpoint_backend_gates_a_fused_checkpoint(tmp_path):
    from edgeseg.api import create, reparameterize, save_deploy
    from edgeseg.parity.job import run_parity

    model = create("mobileone_s0", pretrained_like=2)
    fused, _ = reparameterize(model, verify=False)
    save_deploy(fused, tmp_path / "m.deploy.safetensors")
    s = run_parity(model, [tmp_path / "m.deploy.safetensors"], samples=1, max_images=1, seed=0)
    e = s["artifacts"][0]
    assert e["backend"] == "pytorch" and e["status"] == "passed"
    assert 0 < e["report"]["outputs"][0]["metrics"]["max_rel"] < 1e-4


def test_top1_flip_between_classes_the_reference_does_not_separate_is_no_disagreement():
    ref = np.array([[5.0, 4.99, 0.0, -1.0, 2.0, 1.0]])
    flipped = np.array([[4.99, 5.0, 0.0, -1.0, 2.0, 1.0]])
    assert topk_agreement(ref, flipped)[0] == 0.0  # no margin: a flip is a flip
    assert topk_agreement(ref, flipped, tie_margin=0.05)[0] == 1.0
    wrong = np.array([[0.0, 0.0, 0.0, -1.0, 6.0, 1.0]])  # class 4 is 3.0 below the best: a real disagreement
    assert topk_agreement(ref, wrong, tie_margin=0.05)[0] == 0.0
    # through the gate: int8 lets logits move by 15% of scale, so the flip passes; fp32 does not
    assert compare_outputs([ref.astype(np.float32)], [flipped.astype(np.float32)], task="classification", precision="int8").passed
    assert not compare_outputs([ref.astype(np.float32)], [flipped.astype(np.float32)], task="classification", precision="fp32").passed
