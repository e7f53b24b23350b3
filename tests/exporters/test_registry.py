"""A target is its registration record: the target list, parity and bench find a new one from
the record alone (here a second name for ONNX files, `.onnxalt`, run by the ONNX Runtime runner)."""

import shutil
import tomllib
from pathlib import Path

import pytest

import edgeseg
from edgeseg import exporters
from edgeseg.exporters import ExportRequest, Target, get_exporter, get_target, open_runner, register_target, target_for_suffix


def test_records_and_aliases():
    names = [t.name for t in exporters.targets()]
    assert names == ["onnx", "coreml", "tensorrt"]
    assert get_target("trt") is get_target("engine") is get_target("tensorrt")
    assert get_target("tensorrt").suffix == ".engine" and get_exporter("trt") is get_exporter("tensorrt")
    assert {t.name: t.default_precision for t in exporters.targets()} == {"onnx": "fp32", "coreml": "fp16", "tensorrt": "fp16"}
    assert target_for_suffix(".plan").name == "tensorrt" and target_for_suffix(".mlmodel").name == "coreml"
    with pytest.raises(edgeseg.EdgesegError, match="unknown export target"):
        get_target("tflite")
    for t in exporters.targets():  # every record names code that exists
        for spec in (t.exporter, t.runner, t.remote):
            assert callable(exporters.load_attr(spec))


def test_every_target_package_is_installed():
    """setuptools installs only the packages pyproject.toml names: a new target must be listed."""
    listed = set(tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert {f"edgeseg.exporters.{p}" for p in exporters.PACKAGES} <= listed


@pytest.fixture()
def alt_target():
    record = register_target(Target(name="onnxalt", aliases=("alt",), runtime="onnxruntime-alt", suffix=".onnxalt", kind="onnxalt",
                                    default_precision="fp32", precisions=("fp32",),
                                    exporter="edgeseg.exporters.onnx.export:OnnxExporter",
                                    runner="edgeseg.exporters.onnx.runner:open_onnx"))
    yield record
    exporters._TARGETS.pop("onnxalt")


def test_parity_and_bench_pick_up_a_new_target_from_its_record(alt_target, tmp_path):
    from edgeseg.bench.subject import resolve_subject
    from edgeseg.parity.job import parity_for_model

    model = edgeseg.create("mobileone_s0", num_classes=10, num_blocks=(1, 1, 1, 1), pretrained_like=0)
    fused, _ = edgeseg.reparameterize(model, verify=False)
    onnx = get_exporter("onnx").export(ExportRequest(model=fused, output=tmp_path / "m.onnx", input_size=(32, 32))).path
    alt = tmp_path / "m.onnxalt"
    shutil.copy(onnx, alt)
    assert get_target("alt") is alt_target and "onnxalt" in [t.name for t in exporters.targets()]
    assert open_runner(alt).name == "onnxruntime"
    summary = parity_for_model(fused, [alt], samples=1, max_images=1, seed=0, input_size=(32, 32))
    assert summary["artifacts"][0]["status"] == "passed"
    subject = resolve_subject(alt)
    assert subject.kind == "onnxalt" and subject.sha256
