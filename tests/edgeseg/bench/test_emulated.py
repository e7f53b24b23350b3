"""Runs on an emulated device (the qemu-user arm64 stand-in, or any device whose sshd sets
EDGESEG_EMULATED) are labelled emulated and kept out of latency comparisons and plots."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from edgeseg.bench.report import plot_devices, plot_size_scaling, render_markdown
from edgeseg.bench.result import BenchResult
from edgeseg.stats import LatencyStats
from edgeseg.bench.store import ResultStore, compare_results
from edgeseg.errors import EdgesegError

QEMU = "qemu-user aarch64 (cortex-a72), edgeseg arm stand-in"


def run(i, size, ms, device="raspberry-pi-4", emulated=QEMU, model="mobileone_s0"):
    times = [ms * f for f in (0.98, 1.0, 1.02)]
    env = {"machine": "aarch64", "emulated": emulated}
    return BenchResult(model=model, device=device, backend="onnxruntime", input_size=(size, size), precision="fp32",
                       stats=LatencyStats.from_times(times), times_ms=times, iterations=3, fused=True, environment=env, id=i)


def test_label_survives_the_store(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    got = store.get(store.add(run(None, 64, 900.0)))
    assert got.emulated == QEMU and got.label == "emulated" and got.as_dict()["label"] == "emulated"
    real = store.get(store.add(run(None, 64, 3.0, emulated=None)))
    assert real.emulated is None and real.label == "measured"


@pytest.mark.parametrize("which", ["baseline", "candidate"])
def test_emulated_runs_are_never_compared(which):
    emu, real = run(1, 64, 900.0), run(2, 64, 3.0, emulated=None)
    a, b = (emu, real) if which == "baseline" else (real, emu)
    with pytest.raises(EdgesegError) as ei:
        compare_results(a, b)
    assert "emulated device" in str(ei.value) and "\n" not in str(ei.value)
    assert compare_results(real, run(3, 64, 3.3, emulated=None)).change_pct == pytest.approx(10.0)


def test_plots_leave_emulated_runs_out(tmp_path):
    emulated = [run(1, 64, 900.0), run(2, 128, 3600.0), run(3, 64, 800.0, device="rk3588")]
    assert not plot_size_scaling(emulated, tmp_path / "size.png")
    assert not plot_devices(emulated, tmp_path / "devices.png")
    real = [run(4, 64, 3.0, emulated=None), run(5, 128, 12.0, emulated=None), run(6, 64, 1.0, device="rk3588", emulated=None)]
    assert plot_size_scaling(emulated + real, tmp_path / "size.png")
    assert plot_devices(emulated + real, tmp_path / "devices.png")


def test_markdown_says_which_rows_are_emulated():
    text = render_markdown([run(1, 64, 900.0), run(2, 64, 3.0, emulated=None)])
    assert "| emulated |" in text and "| measured |" in text and "left out of the plots and comparisons" in text


def test_runner_reports_the_device_emulation(tiny_onnx, tmp_path, monkeypatch):
    from edgeseg.exporters.onnx.remote import DEVICE_RUNNER

    path, _ = tiny_onnx
    for value in (QEMU, None):
        env = {k: v for k, v in os.environ.items() if k != "EDGESEG_EMULATED"}
        if value:
            env["EDGESEG_EMULATED"] = value
        out = tmp_path / "result.json"
        subprocess.run([sys.executable, str(DEVICE_RUNNER), "--model", str(path), "--out", str(out),
                        "--warmup", "0", "--iterations", "1"], check=True, env=env, timeout=120)
        assert json.loads(out.read_text())["environment"]["emulated"] == value
