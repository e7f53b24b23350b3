"""`edgeseg predict`, self-describing artifacts (`info`, ONNX metadata, --labels) and the
Python workflow API, on models with non-trivial weights (`pretrained_like`)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

from edgeseg.testing import make_checkpoint, run_cli

run = run_cli
SEG_SIZE = (128, 160)


@pytest.fixture(scope="module")
def cls(tmp_path_factory):
    """mobileone_s0 checkpoint and its ONNX export (with the bundled ImageNet names)."""
    from edgeseg.export_job import export_checkpoint

    d = tmp_path_factory.mktemp("cls")
    ckpt = d / "mobileone_s0.pth"
    make_checkpoint("mobileone_s0", ckpt, seed=11)
    onnx_path = d / "m.onnx"
    export_checkpoint(ckpt, onnx_path, samples=1, seed=0)
    return ckpt, onnx_path


@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    """segformer_b0 checkpoint; a logits export and an argmax export at a small non-square size."""
    from edgeseg.export_job import export_checkpoint

    d = tmp_path_factory.mktemp("seg")
    ckpt = d / "segformer_b0.pth"
    make_checkpoint("segformer_b0", ckpt, seed=5)
    logits = d / "seg.onnx"
    export_checkpoint(ckpt, logits, input_size=SEG_SIZE, samples=0, seed=0)
    argmax = d / "seg_argmax.onnx"
    export_checkpoint(ckpt, argmax, input_size=SEG_SIZE, postprocess="argmax", samples=0, seed=0)
    return ckpt, logits, argmax


def _images():
    from edgeseg.images import bundled_images

    return bundled_images()


def test_bundled_label_sets_are_the_public_lists():
    from edgeseg.labels import bundled, resolve

    inet, ade, voc = bundled("imagenet"), bundled("ade20k"), bundled("pascal_voc")
    assert len(inet.names) == 1000 and inet.names[0] == "tench" and inet.names[999] == "toilet tissue"
    assert len(set(inet.names)) == 1000
    assert len(ade.names) == 150 and ade.names[:3] == ("wall", "building", "sky") and len(ade.palette) == 150
    assert voc.names[0] == "background" and voc.names[15] == "person" and voc.palette[1] == (128, 0, 0)
    assert resolve(21).source == "pascal_voc" and resolve(7).names[6] == "class 6" and len(set(resolve(7).palette)) == 7


def test_onnx_records_preprocessing_task_and_source(cls):
    ckpt, onnx_path = cls
    import hashlib

    props = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert props["edgeseg.arch"] == "mobileone_s0" and props["edgeseg.task"] == "classification"
    assert props["edgeseg.mean"] == "0.485,0.456,0.406" and props["edgeseg.std"] == "0.229,0.224,0.225"
    assert props["edgeseg.input_size"] == "224x224" and props["edgeseg.channel_order"] == "rgb"
    assert props["edgeseg.label_set"] == "imagenet" and props["edgeseg.precision"] == "fp32"
    assert props["edgeseg.source_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()


def test_predict_onnx_matches_the_checkpoint_and_names_imagenet_classes(cls, tmp_path):
    import edgeseg
    from edgeseg.labels import bundled
    from edgeseg.images import Preprocess

    ckpt, onnx_path = cls
    alone = tmp_path / "alone.onnx"  # no manifest beside it: the file must describe itself
    shutil.copy(onnx_path, alone)
    images = _images()[:2]
    on_onnx = edgeseg.predict(alone, images)
    on_ckpt = edgeseg.predict(ckpt, images)
    assert on_onnx.described_by == ["onnx metadata_props"] and on_onnx.runtime == "onnxruntime" and on_ckpt.runtime == "pytorch"
    assert on_onnx.labels == "imagenet" and on_onnx.preprocessing["input_size"] == [224, 224]
    model = edgeseg.load(ckpt)
    names = bundled("imagenet").names
    import torch

    for a, b, path in zip(on_onnx.predictions, on_ckpt.predictions, images):
        assert [c.index for c in a.top] == [c.index for c in b.top] and len(a.top) == 5
        assert all(c.label == names[c.index] for c in a.top)
        np.testing.assert_allclose([c.score for c in a.top], [c.score for c in b.top], atol=1e-4)
        x = torch.from_numpy(Preprocess.for_model(model.edgeseg, (224, 224)).load(path)[None])
        with torch.inference_mode():
            ref = torch.softmax(model(x).double(), 1)[0].numpy()
        assert a.top[0].index == int(ref.argmax()) and abs(a.top[0].score - ref.max()) < 1e-4
        assert a.probabilities.sum() == pytest.approx(1.0, abs=1e-5)


def test_predict_cli_json_and_table(cls, capsys):
    _, onnx_path = cls
    img = str(_images()[0])
    code, out, err = run(["predict", str(onnx_path), img, "--json", "--top-k", "3"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["task"] == "classification" and len(data["predictions"][0]["top"]) == 3
    top = data["predictions"][0]["top"][0]
    code, out, err = run(["predict", str(onnx_path), img], capsys)
    assert code == 0, err
    assert top["label"] in out and "mean [0.485, 0.456, 0.406]" in out and "labels: imagenet" in out


def test_labels_file_goes_into_onnx_and_predict(cls, tmp_path, capsys):
    ckpt, _ = cls
    labels = tmp_path / "names.txt"
    labels.write_text("\n".join(f"thing-{i}" for i in range(1000)) + "\n")
    out = tmp_path / "labelled.onnx"
    code, _, err = run(["export", str(ckpt), "-o", str(out), "--labels", str(labels), "--samples", "0", "--no-parity"], capsys)
    assert code == 0, err
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert props["edgeseg.labels"].split("\n")[7] == "thing-7"
    import edgeseg

    r = edgeseg.predict(out, _images()[:1])
    assert r.labels == "artifact" and r.predictions[0].top[0].label == f"thing-{r.predictions[0].top[0].index}"
    short = tmp_path / "short.txt"
    short.write_text("a\nb\n")
    code, _, err = run(["predict", str(out), str(_images()[0]), "--labels", str(short)], capsys)
    assert code == 1 and "2 labels for a model with 1000 classes" in err and "Traceback" not in err
    code, _, err = run(["export", str(ckpt), "-o", str(tmp_path / "x.onnx"), "--labels", str(tmp_path / "missing.txt")], capsys)
    assert code == 1 and "labels file" in err and not (tmp_path / "x.onnx").exists()


def test_label_mask_upsampling_matches_torch_bilinear():
    import torch
    import torch.nn.functional as F

    from edgeseg.predict import label_mask

    rng = np.random.default_rng(0)
    logits = rng.standard_normal((19, 17, 23)).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(logits)[None], size=(150, 70), mode="bilinear", align_corners=False)[0].argmax(0).numpy()
    mask = label_mask(logits, (150, 70))
    assert (mask == ref).mean() > 0.999  # ties aside, the same labels


def test_predict_segmentation_overlay_and_shares(seg, tmp_path, capsys):
    import edgeseg
    from edgeseg.labels import bundled

    _, logits, argmax = seg
    images = _images()[:2]
    r = edgeseg.predict(logits, images, out_dir=tmp_path)
    r_arg = edgeseg.predict(argmax, images)
    ade = bundled("ade20k")
    from PIL import Image

    for p, q, img in zip(r.predictions, r_arg.predictions, images):
        with Image.open(img) as im:
            assert p.mask.shape == (im.height, im.width)
            base = np.asarray(im.convert("RGB"), np.float32)
        assert sum(c.share for c in p.shares) == pytest.approx(1.0) and sum(c.pixels for c in p.shares) == p.mask.size
        assert all(c.label == ade.names[c.index] and c.colour == ade.palette[c.index] for c in p.shares)
        assert (p.mask == q.mask).mean() > 0.98 and q.overlay is None  # in-graph argmax agrees with host upsampling
        assert all(c.label == ade.names[c.index] for c in q.shares)  # a label map still gets ADE20K names
        with Image.open(p.overlay) as ov:
            over = np.asarray(ov, np.float32)
        colours = np.asarray(ade.palette, np.float32)[p.mask]
        np.testing.assert_allclose(over, 0.5 * base + 0.5 * colours, atol=1.0)
    code, _, err = run(["predict", str(logits), str(images[0]), "--out-dir", str(tmp_path)], capsys)
    assert code == 1 and "already exists" in err and "--overwrite" in err
    code, out, err = run(["predict", str(logits), str(images[0]), "--out-dir", str(tmp_path), "--overwrite"], capsys)
    assert code == 0, err
    assert "overlay:" in out and "%" in out and r.predictions[0].shares[0].label in out


def test_info_on_onnx_and_engine_without_manifest(cls, tmp_path, capsys):
    _, onnx_path = cls
    code, out, err = run(["info", str(onnx_path), "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["kind"] == "onnx" and data["arch"] == "mobileone_s0" and data["mean"] == [0.485, 0.456, 0.406]
    assert data["described_by"] == ["onnx metadata_props", "manifest"] and data["extra"]["opset"] == 17
    assert data["outputs"][0]["shape"] == [1, 1000] and len(data["source_sha256"]) == 64
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0" * 64)
    code, _, err = run(["info", str(engine)], capsys)
    assert code == 1 and "manifest" in err and "Traceback" not in err
    code, _, err = run(["predict", str(engine), str(_images()[0])], capsys)
    assert code == 1 and "manifest" in err


def test_parity_warns_when_the_reference_is_not_the_source(cls, tmp_path, capsys):
    _, onnx_path = cls
    other = tmp_path / "other.pth"
    make_checkpoint("mobileone_s0", other, seed=12)
    code, out, err = run(["parity", str(other), str(onnx_path), "--samples", "0", "--json"], capsys)
    data = json.loads(out)
    assert data["warnings"] and "exported from a checkpoint with sha256" in data["warnings"][0]
    assert code == 3  # other weights: the gate fails too, and the warning says why


def test_parity_verdict_counts_and_reasons():
    from edgeseg.parity.job import verdict

    entries = [{"status": "passed"}, {"status": "passed"}, {"status": "skipped", "reason": "Core ML runtime needs macOS"}]
    assert verdict(entries) == "2 passed, 1 skipped (needs macOS)"
    assert verdict([{"status": "failed"}, {"status": "skipped", "reason": "TensorRT is not installed"}]) == \
        "1 failed, 1 skipped (TensorRT is not installed)"


def test_python_api_returns_what_the_cli_prints(cls, tmp_path, capsys):
    import edgeseg

    ckpt, onnx_path = cls
    s = edgeseg.export(ckpt, tmp_path / "api.onnx", samples=0, seed=1)
    assert isinstance(s, edgeseg.ExportSummary) and s.output == str(tmp_path / "api.onnx") and s.parity["status"] == "passed"
    p = edgeseg.parity(ckpt, s.output, samples=0, seed=1)
    assert p.passed and p.verdict == "1 passed" and p.as_dict()["status"] == "passed"
    b = edgeseg.bench(s.output, iterations=3, warmup="1", store=False, parity=False)
    assert b.results and b.results[0].median_ms > 0
    img = str(_images()[0])
    r = edgeseg.predict(onnx_path, img)
    code, out, err = run(["predict", str(onnx_path), img, "--json"], capsys)
    cli = json.loads(out)
    api = json.loads(json.dumps(r.as_dict()))
    for d in (cli, api):
        for pred in d["predictions"]:
            pred.pop("ms")
    assert cli == api
    import edgeseg.bench.harness  # noqa: F401  (the package stays a package once imported)

    assert callable(edgeseg.bench) and callable(edgeseg.parity) and callable(edgeseg.predict)
