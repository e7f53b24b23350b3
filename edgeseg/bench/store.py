"""Results store: every run in an embedded SQLite database, queryable and comparable.

Default location: `$EDGESEG_DB` if set (non-empty), else `results.sqlite` in the user data
dir (platformdirs). Connections are short-lived and per call, so threads of a sweep can
write concurrently (SQLite serialises them; a busy timeout covers the waits).
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from edgeseg.bench.result import BenchResult
from edgeseg.stats import LatencyStats
from edgeseg.errors import EdgesegError

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    model TEXT NOT NULL,
    device TEXT NOT NULL,
    backend TEXT NOT NULL,
    host TEXT,
    precision TEXT,
    input_h INTEGER NOT NULL,
    input_w INTEGER NOT NULL,
    batch INTEGER NOT NULL,
    threads TEXT,
    fused INTEGER,
    predicted INTEGER NOT NULL,
    preprocessing_in_timer INTEGER NOT NULL,
    runtime_version TEXT,
    artifact TEXT,
    artifact_sha256 TEXT,
    artifact_kind TEXT,
    warmup TEXT,
    warmup_iterations INTEGER,
    iterations INTEGER,
    load_ms REAL,
    compile_ms REAL,
    first_ms REAL,
    median_ms REAL,
    mean_ms REAL,
    min_ms REAL,
    p90_ms REAL,
    p99_ms REAL,
    max_ms REAL,
    std_ms REAL,
    throughput_per_s REAL,
    record_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_model_device ON runs (model, device, backend);
"""


class RegressionError(EdgesegError):
    """A run is slower than its baseline by more than the allowed margin (CI gate)."""

    exit_code = 3


def default_db_path() -> Path:
    env = os.environ.get("EDGESEG_DB")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("edgeseg")) / "results.sqlite"


@dataclass
class Comparison:
    baseline: BenchResult
    candidate: BenchResult
    change_pct: float  # + slower, - faster (median, or the predicted value)
    notes: list[str]

    def as_dict(self) -> dict[str, Any]:
        def brief(r: BenchResult) -> dict[str, Any]:
            return {"id": r.id, "model": r.model, "device": r.device, "backend": r.backend, "input_size": list(r.input_size),
                    "precision": r.precision, "label": r.label, "median_ms": r.median_ms,
                    "p90_ms": r.stats.p90_ms if r.stats else None, "p99_ms": r.stats.p99_ms if r.stats else None,
                    "iterations": r.iterations, "artifact_sha256": r.artifact_sha256}

        return {"baseline": brief(self.baseline), "candidate": brief(self.candidate), "change_pct": self.change_pct,
                "notes": self.notes}


class StoreError(EdgesegError):
    """The results database cannot be read or written."""


def _db_errors(fn):
    """sqlite3 errors become one StoreError naming the database and how to recover."""
    import functools

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            text = str(exc)
            if "readonly" in text or "read-only" in text or "unable to open" in text or "locked" in text:
                fix = "make it writable or pass another --db"
            else:
                fix = (f"recover what is readable with `sqlite3 {self.path} .recover | sqlite3 recovered.sqlite`, or move it away; "
                       "runs saved to fallback files can be re-added with `edgeseg results import FILE`")
            raise StoreError(f"results database {self.path} failed ({text})", fix) from exc

    return wrapper


class ResultStore:
    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path).expanduser() if path else default_db_path()
        self._init()

    @_db_errors
    def check(self) -> None:
        """Raise StoreError if the file is damaged (SQLite's quick check)."""
        con = self._connect()
        try:
            row = con.execute("PRAGMA quick_check").fetchone()
        finally:
            con.close()
        if row is None or row[0] != "ok":
            raise sqlite3.DatabaseError(f"database disk image is malformed: {row[0] if row else 'no answer'}")

    @_db_errors
    def import_file(self, path: str | os.PathLike) -> list[int]:
        """Add the runs of a fallback file (written when the database could not be) and return their ids."""
        data = _read_fallback(Path(path))
        return [self.add(BenchResult.from_dict(rec)) for rec in data]

    def _connect(self) -> sqlite3.Connection:
        try:
            con = sqlite3.connect(str(self.path), timeout=30)
        except sqlite3.Error as exc:
            raise EdgesegError(f"cannot open results database {self.path} ({exc})", "pass another --db") from exc
        con.row_factory = sqlite3.Row
        return con

    def _init(self) -> None:
        if self.path.exists() and self.path.is_dir():
            raise EdgesegError(f"results database {self.path} is a directory", "pass a file path to --db")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = self._connect()
        try:
            with con:
                con.executescript(_SCHEMA)
                row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if row is None:
                    con.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                elif int(row["value"]) > SCHEMA_VERSION:
                    raise EdgesegError(f"results database {self.path} was written by a newer edgeseg (schema {row['value']})",
                                       "upgrade edgeseg or use another --db")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not an edgeseg results database, or is damaged ({exc})",
                             f"pass another --db, or recover it with `sqlite3 {self.path} .recover | sqlite3 recovered.sqlite`") from exc
        finally:
            con.close()

    @_db_errors
    def add(self, r: BenchResult) -> int:
        s = r.stats
        rec = r.as_dict()
        rec.pop("id", None)
        values = {
            "created_at": r.created_at, "model": r.model, "device": r.device, "backend": r.backend, "host": r.host,
            "precision": r.precision, "input_h": int(r.input_size[0]), "input_w": int(r.input_size[1]), "batch": r.batch,
            "threads": None if r.threads is None else str(r.threads), "fused": None if r.fused is None else int(r.fused),
            "predicted": int(r.predicted), "preprocessing_in_timer": int(r.preprocessing_in_timer),
            "runtime_version": r.runtime_version, "artifact": r.artifact, "artifact_sha256": r.artifact_sha256,
            "artifact_kind": r.artifact_kind, "warmup": r.warmup, "warmup_iterations": r.warmup_iterations,
            "iterations": r.iterations, "load_ms": r.load_ms, "compile_ms": r.compile_ms, "first_ms": r.first_ms,
            "median_ms": r.median_ms, "mean_ms": s.mean_ms if s else r.predicted_ms, "min_ms": s.min_ms if s else None,
            "p90_ms": s.p90_ms if s else None, "p99_ms": s.p99_ms if s else None, "max_ms": s.max_ms if s else None,
            "std_ms": s.std_ms if s else None, "throughput_per_s": s.throughput_per_s if s else None,
            "record_json": json.dumps(rec, default=_json_default),
        }
        cols = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        con = self._connect()
        try:
            with con:
                cur = con.execute(f"INSERT INTO runs ({cols}) VALUES ({marks})", tuple(values.values()))
                r.id = int(cur.lastrowid)
        finally:
            con.close()
        return r.id

    def _row(self, row: sqlite3.Row) -> BenchResult:
        r = BenchResult.from_dict(json.loads(row["record_json"]))
        r.id = int(row["id"])
        return r

    @_db_errors
    def get(self, run_id: int) -> BenchResult:
        con = self._connect()
        try:
            row = con.execute("SELECT * FROM runs WHERE id = ?", (int(run_id),)).fetchone()
        finally:
            con.close()
        if row is None:
            raise EdgesegError(f"no run {run_id} in {self.path}", "see `edgeseg results list`")
        return self._row(row)

    @_db_errors
    def latest_id(self) -> int | None:
        con = self._connect()
        try:
            row = con.execute("SELECT MAX(id) AS m FROM runs").fetchone()
        finally:
            con.close()
        return row["m"]

    @_db_errors
    def list(self, *, model: str | None = None, device: str | None = None, backend: str | None = None,
             predicted: bool | None = None, ids: Iterable[int] | None = None, limit: int | None = 50) -> list[BenchResult]:
        where, args = [], []
        for col, val in (("model", model), ("device", device), ("backend", backend)):
            if val:
                where.append(f"{col} = ?")
                args.append(val)
        if predicted is not None:
            where.append("predicted = ?")
            args.append(int(predicted))
        if ids is not None:
            ids = [int(i) for i in ids]
            if not ids:
                return []
            where.append(f"id IN ({', '.join('?' for _ in ids)})")
            args.extend(ids)
        sql = "SELECT * FROM runs" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY id DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        con = self._connect()
        try:
            rows = con.execute(sql, args).fetchall()
        finally:
            con.close()
        return [self._row(r) for r in rows]

    def compare(self, baseline_id: int, candidate_id: int) -> Comparison:
        return compare_results(self.get(baseline_id), self.get(candidate_id))


def fallback_path(db_path: Path) -> Path:
    """Where runs go when the database cannot take them: beside it if that folder is writable,
    else the user cache dir."""
    stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    name = f"{db_path.stem}.unsaved-{stamp}.json"
    parent = db_path.parent
    if parent.is_dir() and os.access(parent, os.W_OK | os.X_OK):
        return parent / name
    from platformdirs import user_cache_dir

    cache = Path(user_cache_dir("edgeseg")) / "unsaved-results"
    cache.mkdir(parents=True, exist_ok=True)
    return cache / name


def save_fallback(results: list[BenchResult], db_path: Path) -> Path:
    """Keep measured runs in a JSON file that `edgeseg results import` adds to a database later."""
    from edgeseg.atomic import atomic_output

    path = fallback_path(db_path)
    payload = {"edgeseg_unsaved_results": 1, "db": str(db_path),
               "runs": [{k: v for k, v in r.as_dict(with_times=True).items() if k != "id"} for r in results]}
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=1, default=_json_default) + "\n")
    return path


def _read_fallback(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise EdgesegError(f"cannot read {path} ({type(exc).__name__})", "pass a file written by `edgeseg bench` when the database failed") from None
    if not isinstance(data, dict) or data.get("edgeseg_unsaved_results") != 1 or not isinstance(data.get("runs"), list):
        raise EdgesegError(f"{path} is not an edgeseg results file", "pass a file written by `edgeseg bench` when the database failed")
    return [r for r in data["runs"] if isinstance(r, dict)]


def compare_results(a: BenchResult, b: BenchResult) -> Comparison:
    for r in (a, b):
        if r.emulated:
            raise EdgesegError(f"run {r.id} ran on an emulated device ({r.emulated}): its latency says nothing about a board",
                               "compare runs measured on real hardware")
    notes = []
    for what, x, y in (("model", a.model, b.model), ("device", a.device, b.device), ("backend", a.backend, b.backend),
                       ("precision", a.precision, b.precision), ("input size", tuple(a.input_size), tuple(b.input_size)),
                       ("batch", a.batch, b.batch), ("threads", a.threads, b.threads)):
        if x != y:
            notes.append(f"{what} differs ({x} vs {y}): compare only within one runtime on one device")
    if a.predicted != b.predicted:
        notes.append("one run is predicted, the other measured")
    if a.runtime_version != b.runtime_version and a.runtime_version and b.runtime_version:
        notes.append(f"runtime version differs ({a.runtime_version} vs {b.runtime_version})")
    if a.artifact_sha256 and b.artifact_sha256 and a.artifact_sha256 == b.artifact_sha256:
        notes.append("same artifact (identical hash)")
    from edgeseg.noise import noise_flags

    for tag, r in (("A", a), ("B", b)):
        for flag in noise_flags(r.stats) if not r.predicted else []:
            notes.append(f"run {r.id} ({tag}) is noisy: {flag}")
    ma, mb = a.median_ms, b.median_ms
    if not ma or mb is None:
        raise EdgesegError(f"run {a.id} has no latency to compare against", "pick runs that completed")
    return Comparison(a, b, (mb - ma) / ma * 100.0, notes)


def regression_gate(comparison: Comparison, max_slower_pct: float) -> None:
    """Raise RegressionError when the candidate is slower than the baseline by more than `max_slower_pct`%."""
    if not math.isfinite(max_slower_pct) or max_slower_pct < 0:
        raise EdgesegError(f"--fail-if-slower must be >= 0 (got {max_slower_pct})", "pass a percentage, e.g. 5")
    c = comparison
    from edgeseg.noise import comparability_problems

    problems = comparability_problems(c.baseline, c.candidate)
    if problems:
        raise EdgesegError(f"cannot gate run {c.candidate.id} against run {c.baseline.id}: {'; '.join(problems)}",
                           "gate measured runs of one device against each other (compare without --fail-if-slower to see them)")
    if c.change_pct > max_slower_pct:
        raise RegressionError(
            f"run {c.candidate.id} is {c.change_pct:.1f}% slower than baseline run {c.baseline.id} "
            f"(median {c.candidate.median_ms:.3f} vs {c.baseline.median_ms:.3f} ms; allowed {max_slower_pct:g}%)",
            "investigate the change, or re-baseline if it is intended")


def _json_default(o):
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, LatencyStats):
        return o.as_dict()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    return str(o)
