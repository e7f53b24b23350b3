"""Sweeps: file validation, and scheduling (one job at a time per device, devices in parallel)."""

from __future__ import annotations

import textwrap
import threading
import time

import pytest

from edgeseg.bench import harness
from edgeseg.bench.harness import BenchOutcome
from edgeseg.bench.matrix import load_matrix, run_matrix
from edgeseg.errors import EdgesegError


def _write(tmp_path, text, name="m.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_load_matrix(tmp_path):
    m = load_matrix(_write(tmp_path, """\
        models: [mobileone_s0, fastvit_t8]
        sizes: [256, 512x384, [128, 96]]
        devices:
          - host-cpu
          - {name: raspberry-pi-5, host: pi@10.0.0.7, identity: ~/.ssh/id_ed25519}
          - {name: jetson-nano, predict: true, options: {iterations: 5}}
        options: {iterations: 20}
        """))
    assert m.models == ["mobileone_s0", "fastvit_t8"]
    assert m.sizes == [(256, 256), (512, 384), (128, 96)]
    assert [d.key for d in m.devices] == ["host-cpu", "raspberry-pi-5@pi@10.0.0.7", "jetson-nano"]
    assert m.devices[2].predict and m.devices[2].options == {"iterations": 5}
    assert len(m.jobs()) == 2 * 3 * 3 and m.options == {"iterations": 20}


@pytest.mark.parametrize("text,match", [
    ("models: []\ndevices: [host-cpu]\n", "non-empty list"),
    ("models: [a]\n", "'devices' is empty"),
    ("models: [a]\ndevices: [jetson-nan]\n", "unknown device profile"),
    ("models: [a]\ndevices: [{name: host-cpu, hots: x}]\n", "unknown key"),
    ("models: [a]\ndevices: [host-cpu]\nsize: [1]\n", "unknown key"),
    ("models: [a]\ndevices: [host-cpu]\nsizes: [abc]\n", "invalid input size"),
    ("- not a mapping\n", "must be a mapping"),
    ("models: [a\n", "not valid YAML"),
])
def test_bad_matrix_files(tmp_path, text, match):
    with pytest.raises(EdgesegError, match=match):
        load_matrix(_write(tmp_path, text))


def test_json_matrix(tmp_path):
    p = _write(tmp_path, '{"models": ["x"], "devices": ["host-cpu"]}', "m.json")
    assert load_matrix(p).sizes == [None]


def test_one_job_at_a_time_per_device_devices_in_parallel(tmp_path, monkeypatch):
    spans: list[tuple[str, float, float]] = []
    lock = threading.Lock()

    def fake_bench(model, device, **kw):
        t0 = time.monotonic()
        time.sleep(0.15)
        with lock:
            spans.append((device, t0, time.monotonic()))
        if model == "boom":
            raise EdgesegError("device fell over", "retry")
        return BenchOutcome(target=model, device=device)

    monkeypatch.setattr(harness, "bench_artifact", fake_bench)
    import edgeseg.bench.matrix as matrix_module

    monkeypatch.setattr(matrix_module, "bench_artifact", fake_bench)  # matrix binds the name at import
    m = load_matrix(_write(tmp_path, """\
        models: [a, boom, b]
        sizes: [64, 128]
        devices: [host-cpu, {name: jetson-nano, predict: true}, {name: rk3588, predict: true}]
        """))
    started = []
    outcomes = run_matrix(m, store=False, on_job_start=lambda j: started.append(j.device.name))
    assert len(outcomes) == 18 and len(started) == 18
    assert sum(1 for o in outcomes if o.error) == 6 and all("device fell over" in o.error for o in outcomes if o.error)
    for dev in ("host-cpu", "jetson-nano", "rk3588"):
        mine = sorted((a, b) for d, a, b in spans if d == dev)
        assert len(mine) == 6
        assert all(prev_end <= start for (_, prev_end), (start, _) in zip(mine, mine[1:])), f"{dev} ran two jobs at once"
    first = {dev: min(a for d, a, _ in spans if d == dev) for dev in ("host-cpu", "jetson-nano", "rk3588")}
    assert max(first.values()) - min(first.values()) < 0.5  # the devices started together, not one after another
    assert [(o.job.model, o.job.size) for o in outcomes[:6]] == [("a", (64, 64)), ("a", (128, 128)), ("boom", (64, 64)),
                                                                  ("boom", (128, 128)), ("b", (64, 64)), ("b", (128, 128))]
