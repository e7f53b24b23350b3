"""Issue 9, case 4: a measurement is never thrown away when the results database fails, and a
damaged database is reported (non-zero exit, how to recover) instead of read as if fine."""

import json
import os
import sqlite3

import pytest

from edgeseg.bench import store as store_mod
from edgeseg.bench.result import BenchResult
from edgeseg.stats import LatencyStats
from edgeseg.bench.store import ResultStore
from edgeseg.testing import run_cli

BENCH = ["bench", "mobileone_s0", "--input-size", "64", "-n", "5", "--warmup", "1", "--backend", "pytorch", "--no-parity"]


def _fill(path, n=300):
    s = ResultStore(path)
    for i in range(n):
        t = [1.0 + i * 0.001] * 3
        s.add(BenchResult(model=f"m{i}", device="host-cpu", backend="pytorch", input_size=(64, 64), precision="fp32",
                          stats=LatencyStats.from_times(t), times_ms=t, settings={"pad": "x" * 200}))
    return s


@pytest.fixture()
def read_only(monkeypatch):
    """The database file opens read-only, as for a file the user cannot write (root ignores chmod)."""
    real = sqlite3.connect

    def connect(path, *a, **k):
        return real(f"file:{path}?mode=ro", *a, uri=True, **k)

    monkeypatch.setattr(store_mod.sqlite3, "connect", connect)


def test_read_only_database_keeps_the_measurement(tmp_path, capsys, monkeypatch):
    db = tmp_path / "ro" / "r.sqlite"
    db.parent.mkdir()
    ResultStore(db)  # exists, with its tables
    real = sqlite3.connect
    monkeypatch.setattr(store_mod.sqlite3, "connect", lambda p, *a, **k: real(f"file:{p}?mode=ro", *a, uri=True, **k))
    code, out, err = run_cli([*BENCH, "--db", str(db)], capsys)
    monkeypatch.undo()
    assert code == 1
    assert "mobileone_s0" in out and "median" in out  # the statistics are shown first
    assert "readonly" in err and "results import" in err, err
    (fallback,) = [p for p in db.parent.iterdir() if p.name.endswith(".json")]
    assert str(fallback) in err
    runs = json.loads(fallback.read_text())["runs"]
    assert len(runs) == 1 and len(runs[0]["times_ms"]) == 5
    other = tmp_path / "new.sqlite"
    code, out, err = run_cli(["results", "import", str(fallback), "--db", str(other), "--json"], capsys)
    assert code == 0, err
    (rid,) = json.loads(out)["imported"][str(fallback)]
    got = ResultStore(other).get(rid)
    assert got.times_ms == runs[0]["times_ms"] and got.model == "mobileone_s0"


def test_damaged_database_is_reported_and_the_run_kept(tmp_path, capsys):
    db = tmp_path / "r.sqlite"
    _fill(db)
    size = db.stat().st_size
    with open(db, "r+b") as f:  # damage pages in the middle of the file
        f.seek(size // 2)
        f.write(os.urandom(4096 * 3))
    code, out, err = run_cli(["results", "list", "--db", str(db)], capsys)
    assert code != 0 and ".recover" in err and "malformed" in err, (code, out, err)
    code, out, err = run_cli([*BENCH, "--db", str(db)], capsys)
    assert code != 0
    if "measured but not stored" in err:  # the insert hit the damage: numbers shown and kept
        assert "median" in out and "results import" in err
        assert [p for p in tmp_path.iterdir() if p.name.endswith(".json")]
    else:  # refused before measuring, with the recovery hint
        assert ".recover" in err, err
