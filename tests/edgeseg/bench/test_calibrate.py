"""Host calibration: measured ceilings are cached per machine and picked up by host-cpu."""

from __future__ import annotations

import json

from edgeseg.bench.calibrate import _cache_path, cached_calibration, calibrate_host
from edgeseg.devices import get_profile


def test_calibration_measures_caches_and_feeds_the_profile():
    assert cached_calibration(1) is None
    cal = calibrate_host(1, quick=True)
    assert cal.threads == 1 and cal.gemm_gflops > 0.1 and cal.copy_gbps > 0.05
    assert set(cal.overhead_us) == {"pytorch", "onnxruntime"} and all(v > 0 for v in cal.overhead_us.values())
    data = json.loads(_cache_path().read_text())
    assert len(data["entries"]) == 1
    again = cached_calibration(1)
    assert again == cal
    assert cached_calibration(2) is None  # a different thread count is a different machine configuration


def test_predict_on_uncalibrated_host_calibrates_first(monkeypatch):
    from torch import nn

    from edgeseg.bench.predict import predict_latency

    monkeypatch.setattr("edgeseg.devices.host_threads", lambda: 1)
    assert not get_profile("host-cpu").ceilings
    p = predict_latency(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval(), "host-cpu", input_size=(16, 16))
    assert p.total_ms > 0 and p.calibration and "measured" in p.calibration
    assert get_profile("host-cpu").ceilings  # cached for next time
