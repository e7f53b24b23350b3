"""trtexec: command construction per TensorRT version, and parsing of 7.x / 8.2 / 10.3 output."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest

from edgeseg.exporters.tensorrt import trtexec as tx
from edgeseg.devices import get_profile
from edgeseg.errors import EdgesegError

DATA = Path(__file__).parent / "data"


def _read(name: str) -> str:
    return (DATA / name).read_text()


@pytest.mark.parametrize("text,expected", [("8.2.1", (8, 2, 1)), ("v8201", (8, 2, 1)), ("v100300", (10, 3, 0)),
                                           ("10.3", (10, 3)), ("8.6.1.6", (8, 6, 1, 6)), ("", ())])
def test_parse_version(text, expected):
    assert tx.parse_version(text) == expected


def test_build_command_trt82_jetson_nano():
    nano = get_profile("jetson-nano")
    argv = tx.build_command("/tmp/x y/model.onnx", nano, "fp16", engine_path="/tmp/x y/model.engine", build_only=True,
                            workspace_mib=256, timing_cache="/tmp/x y/t.cache")
    assert argv[0] == "/usr/src/tensorrt/bin/trtexec"
    assert "--fp16" in argv and "--buildOnly" in argv and "--workspace=256" in argv
    assert not any(a.startswith(("--memPoolSize", "--skipInference")) for a in argv)
    assert "--timingCacheFile=/tmp/x y/t.cache" in argv
    line = tx.command_line(argv)
    assert shlex.split(line) == argv  # a path with a space stays one argument


def test_build_command_trt10_orin():
    orin = get_profile("jetson-orin-nano")
    argv = tx.build_command("m.onnx", orin, "int8", engine_path="m.engine", build_only=True, workspace_mib=1024,
                            input_shapes={"input": (1, 3, 512, 512)})
    assert "--int8" in argv and "--skipInference" in argv and "--memPoolSize=workspace:1024" in argv
    assert "--buildOnly" not in argv and not any(a.startswith("--workspace") for a in argv)
    assert "--minShapes=input:1x3x512x512" in argv and "--maxShapes=input:1x3x512x512" in argv


def test_timing_command_and_precision_checks():
    nano = get_profile("jetson-nano")
    argv = tx.build_command(None, nano, load_engine="e.engine", warmup_ms=200, iterations=100, duration_s=0,
                            export_times="t.json", export_output="o.json", load_inputs={"input": "in.bin"})
    assert argv[1:] == ["--loadEngine=e.engine", "--warmUp=200", "--iterations=100", "--duration=0", "--exportTimes=t.json",
                        "--exportOutput=o.json", "--loadInputs=input:in.bin", "--useSpinWait"]
    with pytest.raises(EdgesegError, match="does not support int8"):
        tx.build_command("m.onnx", nano, "int8")
    with pytest.raises(EdgesegError):
        tx.build_command("m.onnx", nano, load_engine="e.engine")


def test_parse_trt82_build_log():
    log = tx.parse_log(_read("trtexec_8.2_nano_build.log"))
    assert log.passed is True and log.version == (8, 2, 1)
    assert log.build_s == pytest.approx(412.213)
    assert log.device == "NVIDIA Tegra X1" and log.compute_capability == "5.3"
    assert log.metrics == {}


def test_parse_trt82_timing_log():
    log = tx.parse_log(_read("trtexec_8.2_nano_timing.log"))
    assert log.passed and log.version == (8, 2, 1)
    assert log.warmup_queries == 9 and log.timed_queries == 20
    assert log.throughput_qps == pytest.approx(43.3614)
    lat = log.metrics["latency"]
    assert (lat.min_ms, lat.max_ms, lat.mean_ms, lat.median_ms) == (22.6521, 23.1077, 22.814, 22.8099)
    assert lat.percentiles == {99.0: 23.1077}
    assert log.metrics["end_to_end"].median_ms == 22.8281
    assert log.metrics["gpu_compute"].mean_ms == 22.6365
    assert log.metrics["h2d"].max_ms == 0.166992 and log.metrics["d2h"].min_ms == 0.0195312
    assert log.metrics["enqueue"].percentiles[99.0] == 3.12915
    assert log.load_s == pytest.approx(0.0338 + 1.91742)
    assert log.walltime_s == pytest.approx(0.461238)


def test_parse_trt10_timing_log():
    log = tx.parse_log(_read("trtexec_10.3_orin_timing.log"))
    assert log.passed and log.version == (10, 3, 0)
    assert log.device == "Orin" and log.compute_capability == "8.7"
    lat = log.metrics["latency"]
    assert lat.median_ms == 1.75928
    assert lat.percentiles == {90.0: 1.77417, 95.0: 1.78223, 99.0: 1.79736}
    assert "end_to_end" not in log.metrics
    assert log.metrics["gpu_compute"].percentiles[95.0] == 1.70605
    assert log.warmup_queries == 117 and log.timed_queries == 20
    assert log.load_s == pytest.approx(0.0182436)
    assert log.errors == []


def test_parse_trt7_block_format():
    log = tx.parse_log(_read("trtexec_7.1_block_summary.log"))
    assert log.passed and log.version == ()
    lat = log.metrics["latency"]
    assert (lat.min_ms, lat.max_ms, lat.mean_ms, lat.median_ms) == (1.64058, 6.2915, 1.66069, 1.65601)
    assert lat.percentiles == {99.0: 1.67065}
    assert log.metrics["gpu_compute"].median_ms == 1.56958
    assert log.metrics["enqueue"].max_ms == 1.21484
    assert log.timed_queries == 983


def test_parse_failure_names_the_reason():
    text = _read("trtexec_8.2_nano_parse_failure.log")
    log = tx.parse_log(text)
    assert log.passed is False
    reason = tx.failure_reason(text)
    assert "LayerNormalization" in reason and "\n" not in reason


def test_times_trt82_drops_warmups_using_the_log():
    log = tx.parse_log(_read("trtexec_8.2_nano_timing.log"))
    raw = json.loads(_read("trtexec_8.2_times.json"))
    t = tx.parse_times(_read("trtexec_8.2_times.json"), warmup_queries=log.warmup_queries, timed_queries=log.timed_queries)
    assert t.dropped_warmup == 9 and len(t.latency_ms) == 20
    assert t.latency_ms == pytest.approx([r["latencyMs"] for r in raw[9:]])
    assert t.compute_ms == pytest.approx([r["computeMs"] for r in raw[9:]])


def test_times_trt82_without_log_uses_trtexec_warmup_rule():
    raw = json.loads(_read("trtexec_8.2_times.json"))
    t = tx.parse_times(_read("trtexec_8.2_times.json"), warmup_ms=200)
    assert t.dropped_warmup == sum(1 for r in raw if r["startComputeMs"] < 200) == 9


def test_times_trt10_keeps_everything():
    raw = json.loads(_read("trtexec_10.3_times.json"))
    t = tx.parse_times(_read("trtexec_10.3_times.json"), warmup_queries=117, timed_queries=20, warmup_ms=200)
    assert t.dropped_warmup == 0 and len(t.latency_ms) == 20
    assert t.latency_ms == pytest.approx([r["latencyMs"] for r in raw])
    from edgeseg.stats import LatencyStats

    s = LatencyStats.from_times(t.latency_ms)
    assert s.median_ms == pytest.approx(float(np.median([r["latencyMs"] for r in raw])))


def test_times_key_spellings_and_derived_fields():
    # capitalised keys ("H2D"/"D2H") and rows without the derived durations
    text = json.dumps([{"startH2DMs": 0.0, "endH2DMs": 0.5, "startComputeMs": 0.5, "endComputeMs": 3.0, "startD2HMs": 3.0,
                        "endD2HMs": 3.25}])
    t = tx.parse_times(text)
    assert t.h2d_ms == [0.5] and t.compute_ms == [2.5] and t.d2h_ms == [0.25] and t.latency_ms == [3.25]


def test_times_errors():
    with pytest.raises(EdgesegError):
        tx.parse_times("not json")
    with pytest.raises(EdgesegError):
        tx.parse_times("[]")
    with pytest.raises(EdgesegError):
        tx.parse_times('[{"latencyMs": 1.0}]')


def test_parse_outputs_with_nan_and_shapes():
    text = ('[\n  { "name" : "logits"\n  , "dimensions" : "1x2x2"\n  , "values" : [ 0.5, -1, nan, 3e-05 ]\n  }\n'
            ', { "name" : "aux"\n  , "dimensions" : "1x2"\n  , "values" : [ 1, 2 ]\n  }\n]\n')
    out = tx.parse_outputs(text)
    assert out["logits"].shape == (1, 2, 2) and np.isnan(out["logits"][0, 1, 0])
    assert out["logits"][0, 1, 1] == pytest.approx(3e-5)
    assert out["aux"].tolist() == [[1.0, 2.0]]
    with pytest.raises(EdgesegError):
        tx.parse_outputs('[{"name": "x", "dimensions": "1x3", "values": [1, 2]}]')
