"""trtexec: command construction from a device profile, and parsing of what it prints.

Flags differ between TensorRT releases: 8.2 (JetPack 4.6, the Jetson Nano's last) takes
`--workspace=MiB` and `--buildOnly`; 8.4 introduced `--memPoolSize=workspace:MiB`; 8.6
renamed `--buildOnly` to `--skipInference`; 10.x dropped the old spellings. Outputs
differ too: 8.x prints an "End-to-End Host Latency" line and only percentile(99%); 8.6+
and 10.x print percentile(90/95/99%) and no end-to-end line; 7.x printed blocks of
"min: ... ms (end to end ...)". `--exportTimes` JSON in 8.2 keeps the warm-up iterations
(and an endToEndMs key); later releases drop both. Our statistics come from the raw
per-iteration times, so none of these differences leak into results.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from edgeseg.errors import EdgesegError

DEFAULT_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"


def parse_version(text: str | None) -> tuple[int, ...]:
    """'8.2.1' -> (8, 2, 1); also trtexec's banner codes 'v8201' -> (8, 2, 1) and 'v100300' -> (10, 3, 0)."""
    if not text:
        return ()
    text = str(text).strip().lstrip("v")
    if text.isdigit() and len(text) >= 4:
        n = int(text)
        if len(text) >= 6:  # 10.x banner: MMmmpp
            return (n // 10000, n // 100 % 100, n % 100)
        return (n // 1000, n // 100 % 10, n % 100)
    parts = re.findall(r"\d+", text)
    return tuple(int(p) for p in parts[:4])


def _shape(shape) -> str:
    return "x".join(str(int(d)) for d in shape)


def build_command(onnx_path: str | None, profile, precision: str | None = None, *, engine_path: str | None = None,
                  load_engine: str | None = None, build_only: bool = False, workspace_mib: int | None = None,
                  timing_cache: str | None = None, input_shapes: dict[str, Any] | None = None,
                  warmup_ms: float | None = None, iterations: int | None = None, duration_s: float | None = None,
                  export_times: str | None = None, export_output: str | None = None,
                  load_inputs: dict[str, str] | None = None, spin_wait: bool = True, verbose: bool = False,
                  trtexec: str | None = None, tensorrt_version: str | None = None, extra: list[str] | None = None) -> list[str]:
    """trtexec argv for building (`onnx_path` -> `engine_path`) and/or timing (`load_engine`).

    The TensorRT version (from the profile unless given) picks the flag spellings; the
    profile's precision list is enforced. Returns a list: run it with `shlex.join`.
    """
    precision = precision or profile.default_precision
    if precision not in profile.precisions:
        raise EdgesegError(f"{profile.name} does not support {precision}", f"choose one of: {', '.join(profile.precisions)}")
    if bool(onnx_path) == bool(load_engine):
        raise EdgesegError("trtexec needs exactly one of an ONNX model to build or an engine to load", "internal: pass one")
    ver = parse_version(tensorrt_version or profile.software.tensorrt)
    if not ver:
        raise EdgesegError(f"profile {profile.name} does not state its TensorRT version", "set software.tensorrt in the profile")
    argv = [trtexec or profile.software.trtexec or DEFAULT_TRTEXEC]
    if onnx_path:
        argv.append(f"--onnx={onnx_path}")
        if engine_path:
            argv.append(f"--saveEngine={engine_path}")
        if precision == "fp16":
            argv.append("--fp16")
        elif precision == "int8":
            argv.append("--int8")  # without a calibration cache trtexec uses dummy scales: timing only
        if workspace_mib:
            argv.append(f"--workspace={int(workspace_mib)}" if ver < (8, 4) else f"--memPoolSize=workspace:{int(workspace_mib)}")
        if timing_cache:
            argv.append(f"--timingCacheFile={timing_cache}")
        if input_shapes:
            for flag in ("--minShapes", "--optShapes", "--maxShapes"):
                argv.append(f"{flag}=" + ",".join(f"{k}:{_shape(v)}" for k, v in input_shapes.items()))
        if build_only:
            argv.append("--buildOnly" if ver < (8, 6) else "--skipInference")
    else:
        argv.append(f"--loadEngine={load_engine}")
        if input_shapes:
            argv.append("--shapes=" + ",".join(f"{k}:{_shape(v)}" for k, v in input_shapes.items()))
    if not build_only:
        if warmup_ms is not None:
            argv.append(f"--warmUp={int(round(warmup_ms))}")
        if iterations is not None:
            argv.append(f"--iterations={int(iterations)}")
        if duration_s is not None:
            argv.append(f"--duration={int(math.ceil(duration_s))}")
        if export_times:
            argv.append(f"--exportTimes={export_times}")
        if export_output:
            argv.append(f"--exportOutput={export_output}")
        if load_inputs:
            argv.append("--loadInputs=" + ",".join(f"{k}:{v}" for k, v in load_inputs.items()))
        if spin_wait:
            argv.append("--useSpinWait")
    if verbose:
        argv.append("--verbose")
    argv.extend(extra or [])
    return argv


def command_line(argv: list[str]) -> str:
    return shlex.join(argv)


# ---------------------------------------------------------------- parsing the log

@dataclass
class MetricSummary:
    min_ms: float | None = None
    max_ms: float | None = None
    mean_ms: float | None = None
    median_ms: float | None = None
    percentiles: dict[float, float] = field(default_factory=dict)


@dataclass
class TrtexecLog:
    passed: bool | None = None
    version: tuple[int, ...] = ()
    throughput_qps: float | None = None
    metrics: dict[str, MetricSummary] = field(default_factory=dict)  # "latency", "gpu_compute", "enqueue", "h2d", "d2h", "end_to_end"
    build_s: float | None = None
    load_s: float | None = None
    warmup_queries: int | None = None
    timed_queries: int | None = None
    walltime_s: float | None = None
    device: str | None = None
    compute_capability: str | None = None
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed, "tensorrt": ".".join(map(str, self.version)) or None, "throughput_qps": self.throughput_qps,
            "metrics": {k: {"min_ms": v.min_ms, "max_ms": v.max_ms, "mean_ms": v.mean_ms, "median_ms": v.median_ms,
                            "percentiles": {f"p{p:g}": x for p, x in v.percentiles.items()}} for k, v in self.metrics.items()},
            "build_s": self.build_s, "load_s": self.load_s, "warmup_queries": self.warmup_queries,
            "timed_queries": self.timed_queries, "walltime_s": self.walltime_s, "device": self.device,
            "compute_capability": self.compute_capability, "errors": self.errors[:5],
        }


_NUM = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf)"
_PREFIX = re.compile(r"^(?:\[[^\]]*\]\s*)*")  # "[06/26/2023-11:30:51] [I] " and friends
_METRIC_NAMES = {
    "latency": "latency", "host latency": "latency", "gpu compute time": "gpu_compute", "gpu compute": "gpu_compute",
    "enqueue time": "enqueue", "h2d latency": "h2d", "d2h latency": "d2h", "end-to-end host latency": "end_to_end",
}
_SUMMARY_LINE = re.compile(r"^(?P<name>[A-Za-z][A-Za-z0-9 \-]*?):\s*(?P<body>min\s*=?\s*.*)$")
_FIELD = re.compile(r"(min|max|mean|median)\s*=?\s*" + _NUM + r"\s*ms", re.IGNORECASE)
_PCT = re.compile(r"percentile\s*\(\s*(\d+(?:\.\d+)?)\s*%\s*\)\s*=?\s*" + _NUM + r"\s*ms", re.IGNORECASE)
_BLOCK_FIELD = re.compile(r"^(min|max|mean|median):\s*" + _NUM + r"\s*ms", re.IGNORECASE)
_BLOCK_PCT = re.compile(r"^percentile:\s*" + _NUM + r"\s*ms at (\d+(?:\.\d+)?)%", re.IGNORECASE)
_BLOCK_HEADERS = {"host latency": "latency", "enqueue time": "enqueue", "gpu compute": "gpu_compute",
                  "gpu compute time": "gpu_compute", "h2d latency": "h2d", "d2h latency": "d2h"}


def _strip(line: str) -> str:
    return _PREFIX.sub("", line.rstrip("\r\n")).strip()


def _float(text: str) -> float:
    return float(text)


def parse_log(text: str) -> TrtexecLog:
    """Parse trtexec's console output (7.x block format, 8.x and 10.x one-line summaries)."""
    log = TrtexecLog()
    block: str | None = None
    for raw in text.splitlines():
        line = _strip(raw)
        if not line:
            continue
        low = line.lower()
        m = re.search(r"&&&& (PASSED|FAILED|RUNNING) TensorRT\.trtexec(?: \[TensorRT v(\d+)\])?", raw)
        if m:
            if m.group(1) != "RUNNING":
                log.passed = m.group(1) == "PASSED"
            if m.group(2) and not log.version:
                log.version = parse_version("v" + m.group(2))
            continue
        m = re.match(r"TensorRT version:\s*([\d.]+)", line)
        if m:
            log.version = parse_version(m.group(1))
            continue
        m = re.match(r"Selected Device:\s*(.+)", line)
        if m:
            log.device = m.group(1).strip()
            continue
        m = re.match(r"Compute Capability:\s*([\d.]+)", line)
        if m:
            log.compute_capability = m.group(1)
            continue
        m = re.match(r"Engine built in\s*" + _NUM + r"\s*sec", line, re.IGNORECASE)
        if m:
            log.build_s = _float(m.group(1))
            continue
        m = re.match(r"Engine (?:loaded|deserialized) in\s*" + _NUM + r"\s*sec", line, re.IGNORECASE)
        if m:
            log.load_s = (log.load_s or 0.0) + _float(m.group(1))
            continue
        m = re.match(r"Warmup completed\s*(\d+)\s*queries", line, re.IGNORECASE)
        if m:
            log.warmup_queries = int(m.group(1))
            continue
        m = re.match(r"Timing trace has\s*(\d+)\s*queries", line, re.IGNORECASE)
        if m:
            log.timed_queries = int(m.group(1))
            continue
        m = re.match(r"Throughput:\s*" + _NUM + r"\s*qps", line, re.IGNORECASE)
        if m:
            log.throughput_qps = _float(m.group(1))
            continue
        m = re.match(r"(?:Total Host )?Walltime:\s*" + _NUM + r"\s*s\b", line, re.IGNORECASE)
        if m:
            log.walltime_s = _float(m.group(1))
            continue
        if "[e]" in raw.lower() or low.startswith("error"):
            log.errors.append(line)
        m = _SUMMARY_LINE.match(line)
        if m and m.group("name").strip().lower() in _METRIC_NAMES:
            key = _METRIC_NAMES[m.group("name").strip().lower()]
            summary = MetricSummary()
            for fm in _FIELD.finditer(m.group("body")):
                setattr(summary, f"{fm.group(1).lower()}_ms", _float(fm.group(2)))
            for pm in _PCT.finditer(m.group("body")):
                summary.percentiles[float(pm.group(1))] = _float(pm.group(2))
            log.metrics[key] = summary
            block = None
            continue
        if low in _BLOCK_HEADERS:  # 7.x: a header line, then "min: x ms (end to end y ms)" lines
            block = _BLOCK_HEADERS[low]
            log.metrics.setdefault(block, MetricSummary())
            continue
        if block:
            bm = _BLOCK_FIELD.match(line)
            if bm:
                setattr(log.metrics[block], f"{bm.group(1).lower()}_ms", _float(bm.group(2)))
                continue
            bp = _BLOCK_PCT.match(line)
            if bp:
                log.metrics[block].percentiles[float(bp.group(2))] = _float(bp.group(1))
                continue
            if not low.startswith(("throughput", "walltime")):
                block = None
    return log


def failure_reason(text: str) -> str:
    """The most useful single line of a failed trtexec run."""
    log = parse_log(text)
    if log.errors:
        reason = "; ".join(dict.fromkeys(log.errors[:3]))
        return reason if len(reason) <= 400 else reason[:397] + "..."
    lines = [_strip(x) for x in text.splitlines() if _strip(x)]
    return lines[-1] if lines else "trtexec printed nothing"


# ---------------------------------------------------------------- --exportTimes / --exportOutput

_BAD_NUMBERS = re.compile(r"(?<![\w\"])(-?nan|-?inf)(?![\w\"])", re.IGNORECASE)


def _loads_lenient(text: str):
    """json.loads that accepts the bare nan/inf C++ streams print."""
    fixed = _BAD_NUMBERS.sub(lambda m: '"' + m.group(1).lower() + '"', text)
    data = json.loads(fixed)
    return data


def _num(v) -> float:
    if isinstance(v, str):
        return float(v)
    return float(v)


@dataclass
class IterationTimes:
    latency_ms: list[float]       # H2D + compute + D2H, per iteration (trtexec's "Latency")
    compute_ms: list[float]       # GPU compute only
    h2d_ms: list[float]
    d2h_ms: list[float]
    dropped_warmup: int = 0


def parse_times(text: str, *, warmup_queries: int | None = None, timed_queries: int | None = None,
                warmup_ms: float | None = None) -> IterationTimes:
    """Per-iteration times from `--exportTimes` JSON (8.x keeps warm-ups in it, later releases do not).

    Warm-ups are dropped using the log's counts when given (most reliable), else by
    trtexec's own rule: an iteration is a warm-up when its compute started before warm-up
    time elapsed. Keys are matched case-insensitively ("startH2dMs" / "startH2DMs").
    """
    try:
        data = _loads_lenient(text)
    except ValueError as exc:
        raise EdgesegError(f"trtexec --exportTimes output is not JSON ({exc})", "rerun; check the device's disk space") from exc
    if not isinstance(data, list) or not data:
        raise EdgesegError("trtexec --exportTimes output has no iterations", "run with --iterations >= 1")
    rows = [{str(k).lower(): v for k, v in row.items()} for row in data if isinstance(row, dict)]

    def get(row, *names):
        for n in names:
            if n in row:
                return _num(row[n])
        return None

    drop = 0
    if timed_queries is not None and len(rows) > timed_queries:
        drop = len(rows) - timed_queries
    elif warmup_queries and timed_queries is None and "endtoendms" in rows[0]:
        drop = min(warmup_queries, len(rows) - 1)
    elif warmup_ms and "endtoendms" in rows[0]:
        starts = [get(r, "startcomputems") for r in rows]
        drop = sum(1 for s in starts if s is not None and s < warmup_ms)
        drop = min(drop, len(rows) - 1)
    rows = rows[drop:]
    lat, comp, h2d, d2h = [], [], [], []
    for r in rows:
        c = get(r, "computems")
        if c is None:
            s, e = get(r, "startcomputems"), get(r, "endcomputems")
            c = (e - s) if s is not None and e is not None else None
        h = get(r, "h2dms")
        if h is None:
            s, e = get(r, "starth2dms"), get(r, "endh2dms")
            h = (e - s) if s is not None and e is not None else 0.0
        d = get(r, "d2hms")
        if d is None:
            s, e = get(r, "startd2hms"), get(r, "endd2hms")
            d = (e - s) if s is not None and e is not None else 0.0
        latency = get(r, "latencyms")
        if latency is None:
            latency = (c or 0.0) + h + d
        if c is None:
            raise EdgesegError("trtexec --exportTimes rows carry no compute time", "unsupported trtexec output; file an issue")
        lat.append(latency)
        comp.append(c)
        h2d.append(h)
        d2h.append(d)
    return IterationTimes(latency_ms=lat, compute_ms=comp, h2d_ms=h2d, d2h_ms=d2h, dropped_warmup=drop)


def parse_outputs(text: str) -> dict[str, np.ndarray]:
    """`--exportOutput` JSON -> {name: array shaped by its "dimensions" ("1x1000" or "1x3x64x64")}."""
    try:
        data = _loads_lenient(text)
    except ValueError as exc:
        raise EdgesegError(f"trtexec --exportOutput file is not JSON ({exc})", "rerun the benchmark") from exc
    out: dict[str, np.ndarray] = {}
    for entry in data if isinstance(data, list) else []:
        name = entry.get("name")
        dims = [int(d) for d in re.findall(r"\d+", str(entry.get("dimensions", "")))]
        values = np.asarray([_num(v) for v in entry.get("values", [])], dtype=np.float32)
        if dims and int(np.prod(dims)) == values.size:
            values = values.reshape(dims)
        elif dims:
            raise EdgesegError(f"trtexec output {name!r} has {values.size} values for dimensions {dims}",
                               "unexpected --exportOutput format")
        out[str(name)] = values
    if not out:
        raise EdgesegError("trtexec --exportOutput file holds no outputs", "rerun the benchmark")
    return out


def remote_path(*parts: str) -> str:
    return str(PurePosixPath(*parts))
