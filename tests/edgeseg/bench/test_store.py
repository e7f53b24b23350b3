"""SQLite results store: round trips, queries, comparison and the regression gate."""

from __future__ import annotations

import sqlite3

import pytest

from edgeseg.bench.result import BenchResult
from edgeseg.stats import LatencyStats
from edgeseg.bench.store import RegressionError, ResultStore, compare_results, default_db_path, regression_gate
from edgeseg.errors import EdgesegError


def make(times, model="m", device="host-cpu", backend="pytorch", size=(64, 64), **kw) -> BenchResult:
    return BenchResult(model=model, device=device, backend=backend, input_size=size, precision="fp32",
                       stats=LatencyStats.from_times(times), times_ms=list(times), iterations=len(times), threads=2,
                       runtime_version="2.13.0", environment={"cpu": "test"}, settings={"threads": 2}, **kw)


def test_round_trip_keeps_raw_times_and_settings(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    r = make([1.0, 2.0, 3.0, 10.0], load_ms=5.0, first_ms=7.5, parity={"status": "passed"}, artifact_sha256="ab" * 32)
    rid = store.add(r)
    got = store.get(rid)
    assert got.id == rid and got.times_ms == [1.0, 2.0, 3.0, 10.0]
    assert got.stats == r.stats and got.input_size == (64, 64)
    assert got.load_ms == 5.0 and got.first_ms == 7.5 and got.parity == {"status": "passed"}
    assert got.environment == {"cpu": "test"} and got.settings == {"threads": 2}
    row = sqlite3.connect(store.path).execute("SELECT median_ms, p99_ms, input_h, predicted FROM runs WHERE id = ?", (rid,)).fetchone()
    assert row == (r.stats.median_ms, r.stats.p99_ms, 64, 0)


def test_predicted_rows(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    p = BenchResult(model="m", device="jetson-nano", backend="predicted", input_size=(224, 224), precision="fp16", stats=None,
                    predicted=True, predicted_ms=4.2)
    got = store.get(store.add(p))
    assert got.predicted and got.median_ms == 4.2 and got.label == "predicted" and got.stats is None


def test_list_filters_and_order(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    a = store.add(make([1.0], model="a"))
    b = store.add(make([2.0], model="b", device="rk3588"))
    c = store.add(make([3.0], model="a", backend="onnxruntime"))
    assert [r.id for r in store.list()] == [c, b, a]
    assert [r.id for r in store.list(model="a")] == [c, a]
    assert [r.id for r in store.list(device="rk3588")] == [b]
    assert [r.id for r in store.list(backend="onnxruntime")] == [c]
    assert [r.id for r in store.list(ids=[a, c])] == [c, a]
    assert store.list(ids=[]) == []
    assert len(store.list(limit=1)) == 1 and store.latest_id() == c
    with pytest.raises(EdgesegError, match="no run 999"):
        store.get(999)


def test_compare_and_gate(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    base = store.add(make([10.0, 10.0, 10.0]))
    slower = store.add(make([11.0, 11.0, 11.0]))
    other = store.add(make([5.0], device="rk3588"))
    comp = store.compare(base, slower)
    assert comp.change_pct == pytest.approx(10.0) and comp.notes == []
    regression_gate(comp, 15)  # within budget
    with pytest.raises(RegressionError) as ei:
        regression_gate(comp, 5)
    assert ei.value.exit_code == 3 and "10.0% slower" in str(ei.value)
    faster = store.compare(slower, base)
    assert faster.change_pct == pytest.approx(-100 / 11)
    regression_gate(faster, 0)
    assert any("device differs" in n for n in store.compare(base, other).notes)
    with pytest.raises(EdgesegError):
        regression_gate(comp, -1)


def test_compare_notes_identical_artifacts():
    a = make([1.0], artifact_sha256="x")
    b = make([1.0], artifact_sha256="x")
    a.id, b.id = 1, 2
    assert "same artifact (identical hash)" in compare_results(a, b).notes


def test_default_path_follows_env_and_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESEG_DB", str(tmp_path / "env.sqlite"))
    assert default_db_path() == tmp_path / "env.sqlite"
    monkeypatch.setenv("EDGESEG_DB", "")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_db_path() == tmp_path / "xdg" / "edgeseg" / "results.sqlite"
    store = ResultStore()
    assert store.path.is_file()


def test_not_a_database(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"definitely not sqlite" * 100)
    with pytest.raises(EdgesegError, match="not an edgeseg results database"):
        ResultStore(bad)
    with pytest.raises(EdgesegError, match="directory"):
        ResultStore(tmp_path)


def test_concurrent_writers(tmp_path):
    import threading

    store = ResultStore(tmp_path / "r.sqlite")

    def writer(k):
        for i in range(10):
            store.add(make([float(k * 100 + i)]))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.list(limit=None)) == 40
