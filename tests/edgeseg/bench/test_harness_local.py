"""`bench_artifact` on the host: PyTorch unfused/fused and ONNX Runtime, predictions, storage."""

from __future__ import annotations

import numpy as np
import pytest

from edgeseg.bench.harness import bench_artifact
from edgeseg.bench.predict import predict_latency
from edgeseg.bench.store import ResultStore
from edgeseg.errors import EdgesegError


def test_model_on_host_runs_three_backends_and_stores_them(tmp_path):
    db = ResultStore(tmp_path / "r.sqlite")
    out = bench_artifact("mobileone_s0", "host-cpu", input_size=(64, 64), iterations=4, warmup=1, threads=1, store=db)
    assert [r.backend for r in out.results] == ["pytorch-unfused", "pytorch", "onnxruntime"]
    unfused, fused, ort = out.results
    assert unfused.fused is False and fused.fused is True
    for r in out.results:
        assert r.iterations == 4 and len(r.times_ms) == 4 and r.stats.median_ms > 0 and r.first_ms > 0
        assert r.threads == 1 and r.input_size == (64, 64) and r.precision == "fp32" and r.warmup == "1"
        assert r.warmup_iterations == 1 and r.environment["cpu"]
    assert ort.load_ms > 0 and ort.runtime_version
    assert ort.parity["status"] == "passed" and ort.parity["reference"].startswith("pytorch")
    stored = db.list(limit=None)
    assert sorted(r.id for r in stored) == sorted(r.id for r in out.results)
    assert out.db == str(db.path)


def test_onnx_artifact_runs_under_onnxruntime_only(tiny_onnx):
    path, _ = tiny_onnx
    out = bench_artifact(path, iterations=3, warmup="10ms", store=False)
    (r,) = out.results
    assert r.backend == "onnxruntime" and r.input_size == (32, 32) and r.artifact_kind == "onnx"
    assert r.artifact_sha256 and len(r.artifact_sha256) == 64 and r.warmup == "0.01s"
    with pytest.raises(EdgesegError, match="only under onnxruntime"):
        bench_artifact(path, backends=["pytorch"], store=False)
    with pytest.raises(EdgesegError, match="fixed at 32x32"):
        bench_artifact(path, input_size=(64, 64), store=False)


def test_remote_profile_without_host_is_predicted_and_labelled(tmp_path):
    db = ResultStore(tmp_path / "r.sqlite")
    out = bench_artifact("mobileone_s0", "jetson-nano", input_size=(224, 224), store=db)
    (r,) = out.results
    assert r.predicted and r.backend == "predicted" and r.label == "predicted" and r.stats is None
    assert r.precision == "fp16" and r.predicted_ms > 0
    assert any("predicted" in n for n in out.notes)
    assert r.extra["prediction"]["n_layers"] > 10
    assert db.get(r.id).predicted_ms == r.predicted_ms


def test_predict_latency_api_takes_names_and_models():
    import edgeseg

    by_name = predict_latency("mobileone_s0", "iphone-12-pro", input_size=(128, 128))
    model = edgeseg.create("mobileone_s0")
    by_model = predict_latency(model, "iphone-12-pro", input_size=(128, 128))
    assert by_name.total_ms == pytest.approx(by_model.total_ms)
    assert by_name.label == "predicted" and by_name.device == "iphone-12-pro" and by_name.precision == "fp16"


def test_bad_options_are_one_line_errors():
    for kwargs, match in (({"iterations": 0}, "iterations"), ({"warmup": "2m"}, "warm-up"), ({"precision": "int8"}, "does not run int8"),
                          ({"backends": ["tflite"]}, "unknown backend")):
        with pytest.raises(EdgesegError, match=match):
            bench_artifact("mobileone_s0", "host-cpu", store=False, **kwargs)
    with pytest.raises(EdgesegError, match="neither a file nor a registered model"):
        bench_artifact("no_such_model", store=False)
    with pytest.raises(EdgesegError, match="unknown device profile"):
        bench_artifact("mobileone_s0", "jetson-nan", store=False)
    with pytest.raises(EdgesegError, match="--host is for device profiles"):
        bench_artifact("mobileone_s0", "host-cpu", host="pi@10.0.0.7", store=False)


def test_checkpoint_target(tmp_path):
    import edgeseg

    model = edgeseg.create("mobileone_s0")  # latency and bookkeeping only: default weights are enough
    entry = edgeseg.registry.get_entry("mobileone_s0")
    ckpt = tmp_path / "s0.pth"
    entry.canonical_layout.save(model.state_dict(), ckpt, entry=entry, cfg=model.edgeseg.cfg)
    out = bench_artifact(ckpt, input_size=(64, 64), iterations=2, warmup=0, backends=["pytorch-unfused", "pytorch"], store=False,
                         include_preprocessing=True)
    assert [r.backend for r in out.results] == ["pytorch-unfused", "pytorch"]
    assert all(r.preprocessing_in_timer and r.settings["include_preprocessing"] for r in out.results)
    assert out.results[0].artifact == str(ckpt) and out.results[0].artifact_kind == "model"
    assert out.results[0].model == "mobileone_s0" and np.isfinite(out.results[1].stats.median_ms)
