"""`edgeseg export` and `edgeseg parity` end to end: files, manifest, exit codes, no partial output."""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgeseg.testing import make_checkpoint, run_cli


run = run_cli  # (exit code, stdout, stderr)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    p = tmp_path_factory.mktemp("ck") / "mobileone_s0.pth"
    make_checkpoint("mobileone_s0", p, seed=4)
    return p


@pytest.fixture(scope="module")
def exported(ckpt, tmp_path_factory):
    """One export shared by the parity tests (the pipeline is the expensive part)."""
    from edgeseg.export_job import export_checkpoint

    out = tmp_path_factory.mktemp("exp") / "m.onnx"
    export_checkpoint(ckpt, out, samples=1, seed=0)
    return out


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_export_writes_artifact_and_manifest(ckpt, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    code, stdout, err = run(["export", str(ckpt), "-o", str(out), "--json", "--seed", "3", "--samples", "1"], capsys)
    assert code == 0, err
    s = json.loads(stdout)
    manifest = json.loads((tmp_path / "m.onnx.manifest.json").read_text())
    assert s["manifest_path"] == str(tmp_path / "m.onnx.manifest.json")
    assert manifest["sha256"] == _sha(out) and manifest["source"]["sha256"] == _sha(ckpt)
    assert manifest["arch"] == "mobileone_s0" and manifest["opset"] == 17 and manifest["precision"] == "fp32"
    assert manifest["reparam"]["fused_blocks"] == {"MobileOneBlock": 43} and manifest["reparam"]["equivalence"]["passed"]
    assert manifest["inputs"] == [{"name": "input", "shape": [1, 3, 224, 224], "dtype": "float32"}]
    assert manifest["outputs"] == [{"name": "logits", "shape": [1, 1000], "dtype": "float32"}]
    assert manifest["node_counts"]["exported"]["Conv"] == 43 and "BatchNormalization" not in manifest["node_counts"]["simplified"]
    assert {"torch", "onnx", "onnxruntime", "onnxsim", "edgeseg"} <= set(manifest["tools"])
    p = manifest["parity"]
    assert p["status"] == "passed" and p["seed"] == 3 and p["backend"] == "onnxruntime"
    assert len(p["inputs"]["images"]) >= 3 and p["inputs"]["random_batches"] == 1
    assert p["report"]["outputs"][0]["metrics"]["max_rel"] < 1e-4
    assert sorted(x.name for x in tmp_path.iterdir()) == ["m.onnx", "m.onnx.manifest.json"]  # no staging left

    code, _, err = run(["export", str(ckpt), "-o", str(out)], capsys)
    assert code == 1 and "already exists" in err and "--overwrite" in err


def test_export_renders_tables(ckpt, tmp_path, capsys):
    out = tmp_path / "t.onnx"
    code, stdout, err = run(["export", str(ckpt), "-o", str(out), "--samples", "0", "--seed", "1"], capsys)
    assert code == 0, err
    assert "ONNX nodes by op type" in stdout and "top1_agreement" in stdout and "PASSED" in stdout


def test_failed_parity_leaves_no_file(ckpt, tmp_path):
    from edgeseg.export_job import export_checkpoint
    from edgeseg.parity.job import ParityFailure

    out = tmp_path / "m.onnx"
    with pytest.raises(ParityFailure) as exc:
        export_checkpoint(ckpt, out, samples=1, seed=0, tolerances={"rtol": 0.0})  # nothing passes a zero tolerance
    assert exc.value.exit_code == 3 and exc.value.summary["export"]["written"] is False
    assert list(tmp_path.iterdir()) == []


def test_export_refusals_are_one_line(ckpt, tmp_path, capsys):
    code, _, err = run(["export", str(ckpt), "-o", str(tmp_path / "x.onnx"), "--postprocess", "argmax"], capsys)
    assert code == 1 and err.splitlines()[-1].startswith("error: --postprocess argmax applies to segmentation")
    assert "Traceback" not in err and "reparameterizing" not in err  # refused before the expensive part
    code, _, err = run(["export", str(ckpt), "-o", str(tmp_path / "x.onnx"), "--device", "jetson-nano", "--opset", "17"], capsys)
    assert code == 1 and "above what jetson-nano accepts" in err
    code, _, err = run(["export", str(ckpt), "--target", "onnx", "-o", str(tmp_path / "x.engine")], capsys)
    assert code == 1 and "does not end in .onnx" in err
    code, _, err = run(["export", str(ckpt), "--target", "tflite"], capsys)
    assert code == 1 and "unknown export target 'tflite'" in err
    assert list(tmp_path.iterdir()) == []


def test_export_with_device_profile_and_dynamic(ckpt, tmp_path, capsys):
    out = tmp_path / "nano.onnx"
    code, stdout, err = run(["export", str(ckpt), "-o", str(out), "--device", "jetson-nano", "--json", "--samples", "0"], capsys)
    assert code == 0, err
    s = json.loads(stdout)
    assert s["opset"] == 13 and s["precision"] == "fp16" and s["device_profile"] == "jetson-nano"  # the profile's defaults
    assert s["parity"]["status"] == "passed" and s["parity"]["report"]["precision"] == "fp16"
    code, _, err = run(["export", str(ckpt), "-o", str(tmp_path / "d.onnx"), "--device", "jetson-nano", "--dynamic"], capsys)
    assert code == 1 and "needs static shapes" in err
    code, stdout, err = run(["export", str(ckpt), "-o", str(tmp_path / "d.onnx"), "--dynamic", "--json", "--samples", "0"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["inputs"][0]["shape"] == ["batch", 3, "height", "width"]


def test_parity_cli_passes_and_writes_junit(ckpt, exported, tmp_path, capsys):
    junit = tmp_path / "parity.xml"
    code, stdout, err = run(["parity", str(ckpt), str(exported), "--samples", "1", "--seed", "5", "--junit", str(junit), "--json"], capsys)
    assert code == 0, err
    s = json.loads(stdout)
    assert s["status"] == "passed" and s["seed"] == 5 and s["artifacts"][0]["input_size"] == [224, 224]
    root = ET.parse(junit).getroot()
    assert root.get("failures") == "0" and int(root.get("tests")) == 5


def test_parity_cli_fails_a_perturbed_artifact(ckpt, exported, tmp_path, capsys):
    graph = onnx.load(str(exported))
    init = next(t for t in graph.graph.initializer if numpy_helper.to_array(t).ndim == 4)
    arr = numpy_helper.to_array(init)
    init.CopyFrom(numpy_helper.from_array((arr * 1.02).astype(arr.dtype), init.name))  # stem conv weights off by 2%
    broken = tmp_path / "broken.onnx"
    onnx.save(graph, str(broken))
    junit = tmp_path / "parity.xml"
    code, stdout, err = run(["parity", str(ckpt), str(exported), str(broken), "--samples", "1", "--seed", "0", "--junit", str(junit)], capsys)
    assert code == 3, err
    assert "FAIL" in stdout and "would pass at" in stdout and "rtol=" in stdout
    errors = [l for l in err.splitlines() if not l.startswith(">> ")]  # progress lines come first
    assert errors[0].startswith("error: parity failed for 1 artifact(s): broken.onnx"), err
    root = ET.parse(junit).getroot()
    assert int(root.get("failures")) >= 1
    # per-output override: the tolerance it printed lets it through
    code, stdout, _ = run(["parity", str(ckpt), str(broken), "--samples", "1", "--seed", "0", "--json"], capsys)
    checks = {c["metric"]: c for c in json.loads(stdout)["artifacts"][0]["report"]["outputs"][0]["checks"]}
    needed = checks["max_rel"]["needed"]
    code, _, err = run(["parity", str(ckpt), str(broken), "--samples", "1", "--seed", "0", "--rtol", f"logits={needed * 1.01}",
                        "--tol", "min_cosine=0.99", "--tol", "min_top1=0", "--tol", "min_top5=0"], capsys)
    assert code == 0, err


def test_parity_cli_reports_wrong_artifact_clearly(ckpt, tmp_path, capsys):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"not a model")
    code, _, err = run(["parity", str(ckpt), str(bad)], capsys)
    assert code == 1 and "cannot load" in err
    code, _, err = run(["parity", str(ckpt), str(tmp_path / "m.xyz")], capsys)
    assert code == 1 and "no parity backend" in err
    code, _, err = run(["parity", str(ckpt), str(bad), "--rtol", "abc"], capsys)
    assert code == 1 and "invalid --rtol" in err


def test_export_api_for_the_demo(ckpt, tmp_path):
    """The demo calls these two functions; their outputs are what it prints."""
    from edgeseg.export_job import export_checkpoint
    from edgeseg.parity.job import run_parity

    s = export_checkpoint(ckpt, tmp_path / "d.onnx", samples=0, seed=2)
    assert s["parity"]["status"] == "passed" and np.isfinite(s["parity"]["report"]["outputs"][0]["metrics"]["max_rel"])
    p = run_parity(ckpt, [s["output"]], samples=1, seed=2, check=True)
    assert p["status"] == "passed" and p["artifacts"][0]["precision"] == "fp32"
