"""TensorRT on a Jetson through trtexec: build the engine on the device, time it, fetch results.

The device needs nothing but JetPack (trtexec ships with it): no Python package, no edgeseg.
Engines are built where they run, because they are tied to the TensorRT version and GPU.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.atomic import atomic_output, check_output_path
from edgeseg.exporters.onnx.runner import input_spec
from edgeseg.exporters.runner import RemoteRun
from edgeseg.exporters.tensorrt import trtexec as tx
from edgeseg.remote.common import rjoin
from edgeseg.remote.ssh import RemoteError, SSHSession
from edgeseg.timing import Measurement, Warmup

DEFAULT_WARMUP_MS = 200.0  # trtexec's own default; it warms up by time only


def _trtexec_path(profile) -> str:
    return profile.software.trtexec or tx.DEFAULT_TRTEXEC


def check_trtexec(session: SSHSession, profile) -> None:
    path = _trtexec_path(profile)
    done = session.run(["test", "-x", path], step="find trtexec", timeout=session.timeouts.connect * 2, check=False)
    if done.returncode != 0:
        raise RemoteError(f"trtexec not found at {path} on {session.target}",
                          "install JetPack's TensorRT samples, or set software.trtexec in the device profile")


def device_environment(session: SSHSession) -> dict[str, Any]:
    """Power mode and L4T release: recorded because Jetson timings depend on them."""
    env: dict[str, Any] = {}
    for key, argv in (("nvpmodel", ["nvpmodel", "-q"]), ("l4t", ["cat", "/etc/nv_tegra_release"]), ("uname", ["uname", "-a"])):
        done = session.run(argv, step=f"read {key}", timeout=session.timeouts.connect * 2, check=False)
        if done.returncode == 0 and done.stdout.strip():
            env[key] = " | ".join(x.strip() for x in done.stdout.strip().splitlines()[:3])
    return env


def _run_trtexec(session: SSHSession, argv: list[str], step: str, cwd: str, timeout: float | None):
    done = session.run(argv, step=step, timeout=timeout, cwd=cwd, check=False)
    text = done.stdout + "\n" + done.stderr
    log = tx.parse_log(text)
    if done.returncode != 0 or log.passed is False:
        raise RemoteError(f"trtexec {step} failed on {session.target}: {tx.failure_reason(text)}",
                          "check the ONNX constraints of the profile (opset, ops to avoid) or rerun with --debug")
    return log, text


def _build(session: SSHSession, tmp: str, onnx_path: Path, profile, precision: str, *, workspace_mib: int | None,
           timing_cache: Path | None, extra_flags: list[str] | None, timeout: float | None) -> tuple[str, tx.TrtexecLog, list[str]]:
    model = rjoin(tmp, "model.onnx")
    engine = rjoin(tmp, "model.engine")
    session.put(onnx_path, model)
    cache_remote = None
    if timing_cache is not None:
        cache_remote = rjoin(tmp, "timing.cache")
        if timing_cache.is_file():
            session.put(timing_cache, cache_remote)
    argv = tx.build_command(model, profile, precision, engine_path=engine, build_only=True, workspace_mib=workspace_mib,
                            timing_cache=cache_remote, extra=extra_flags)
    log, _ = _run_trtexec(session, argv, "engine build", tmp, timeout)
    if not session.exists(engine):
        raise RemoteError(f"trtexec reported success but wrote no engine on {session.target}", "check free space on the device")
    if cache_remote and session.exists(cache_remote):
        with atomic_output(timing_cache, overwrite=True) as t:
            session.get(cache_remote, t)
    return engine, log, argv


def build_engine_remote(session: SSHSession, onnx_path: str | Path, profile, precision: str | None = None, *,
                        output: str | Path, workspace_mib: int | None = None, timing_cache: str | Path | None = None,
                        extra_flags: list[str] | None = None, workdir: str | None = None, timeout: float | None = None,
                        overwrite: bool = False) -> dict[str, Any]:
    """Build a TensorRT engine on the device with trtexec and fetch it to `output`.

    Returns a manifest: TensorRT version, GPU and compute capability (from trtexec's log),
    precision, the exact command, build time, and the device's power mode/L4T release.
    """

    precision = precision or profile.default_precision
    output = check_output_path(output, overwrite)
    check_trtexec(session, profile)
    env = device_environment(session)
    with session.tempdir(workdir or profile.access.workdir) as tmp:
        engine, log, argv = _build(session, tmp, Path(onnx_path), profile, precision, workspace_mib=workspace_mib,
                                   timing_cache=Path(timing_cache) if timing_cache else None, extra_flags=extra_flags,
                                   timeout=timeout)
        with atomic_output(output, overwrite=overwrite) as t:
            session.get(engine, t)
            if t.stat().st_size == 0:
                raise RemoteError("the fetched engine is empty", "rerun the build")
    return {
        "engine": str(output), "device": profile.name, "host": str(session.target), "precision": precision,
        "tensorrt": ".".join(map(str, log.version)) or profile.software.tensorrt, "gpu": log.device,
        "compute_capability": log.compute_capability, "build_s": log.build_s, "command": tx.command_line(argv),
        "environment": env,
    }


def bench_trtexec_remote(session: SSHSession, onnx_path: str | Path, profile, precision: str | None = None, *,
                         warmup: "str | int | Warmup" = "200ms", iterations: int = 100, input_array: np.ndarray | None = None,
                         input_name: str | None = None, workspace_mib: int | None = None, workdir: str | None = None,
                         timeout: float | None = None, extra_flags: list[str] | None = None) -> Measurement:
    """Build on the device, then time the engine with trtexec; statistics come from `--exportTimes`.

    With `input_array`, trtexec runs on that exact tensor (`--loadInputs`) and its output
    comes back through `--exportOutput` in `extra["outputs"]` (name -> array) for parity.
    """
    precision = precision or profile.default_precision
    w = Warmup.parse(warmup)
    warmup_ms = w.as_ms() if w.by_time else DEFAULT_WARMUP_MS
    check_trtexec(session, profile)
    env = device_environment(session)
    with tempfile.TemporaryDirectory(prefix="edgeseg-trt-") as local_tmp, session.tempdir(workdir or profile.access.workdir) as tmp:
        engine, build_log, build_argv = _build(session, tmp, Path(onnx_path), profile, precision, workspace_mib=workspace_mib,
                                               timing_cache=None, extra_flags=extra_flags, timeout=timeout)
        times_remote = rjoin(tmp, "times.json")
        load_inputs, export_output = None, None
        if input_array is not None:
            if not input_name:
                raise RemoteError("parity on the device needs the ONNX input name", "internal: pass input_name")
            local_in = Path(local_tmp) / "input.bin"
            np.ascontiguousarray(input_array, dtype=np.float32).tofile(local_in)  # raw little-endian, as trtexec reads it
            session.put(local_in, rjoin(tmp, "input.bin"))
            load_inputs = {input_name: rjoin(tmp, "input.bin")}
            export_output = rjoin(tmp, "output.json")
        argv = tx.build_command(None, profile, precision, load_engine=engine, warmup_ms=warmup_ms, iterations=iterations,
                                duration_s=0, export_times=times_remote, export_output=export_output, load_inputs=load_inputs)
        log, text = _run_trtexec(session, argv, "timing run", tmp, timeout)
        times = tx.parse_times(session.read_text(times_remote), warmup_queries=log.warmup_queries,
                               timed_queries=log.timed_queries, warmup_ms=warmup_ms)
        outputs = tx.parse_outputs(session.read_text(export_output)) if export_output else None
    if len(times.latency_ms) < iterations:
        raise RemoteError(f"trtexec timed {len(times.latency_ms)} iterations, expected at least {iterations}",
                          "unexpected trtexec behaviour; rerun with --debug")
    m = Measurement(times_ms=times.latency_ms, first_ms=None, warmup_iterations=log.warmup_queries or times.dropped_warmup,
                    load_ms=log.load_s * 1000.0 if log.load_s is not None else None)
    m.extra.update({
        "runtime": "tensorrt", "runtime_version": ".".join(map(str, log.version or build_log.version)) or profile.software.tensorrt,
        "timer": "trtexec host latency (H2D + GPU compute + D2H) per iteration, from --exportTimes",
        "gpu_compute_ms": times.compute_ms, "compile_ms": build_log.build_s * 1000.0 if build_log.build_s is not None else None,
        "warmup_effective": f"{warmup_ms:g}ms", "trtexec_summary": log.as_dict(), "gpu": log.device or build_log.device,
        "compute_capability": log.compute_capability or build_log.compute_capability,
        "commands": [tx.command_line(build_argv), tx.command_line(argv)], "environment": env,
    })
    if outputs is not None:
        m.extra["outputs"] = outputs
    return m



def time_on_device(session: SSHSession, artifact: Path, run: RemoteRun) -> Measurement:
    """bench's entry (Target.remote): build the engine from `artifact` (ONNX) on the Jetson,
    time it with trtexec; outputs come back in the ONNX graph's output order."""
    import onnx  # lazy: only remote TensorRT runs read the graph's names

    name = input_spec(artifact)[0]
    out_names = [o.name for o in onnx.load(str(artifact), load_external_data=False).graph.output]
    warm = Warmup.parse(run.warmup)
    m = bench_trtexec_remote(session, artifact, run.profile, run.precision, warmup=warm if warm.by_time else "200ms",
                             iterations=run.iterations, input_array=run.input_array, input_name=name, workdir=run.workdir,
                             timeout=run.timeout)
    if not warm.by_time:
        m.extra["warmup_note"] = "trtexec warms up by time: a count was replaced by 200 ms"
    outs = m.extra.get("outputs")
    if run.input_array is not None:
        missing = [n for n in out_names if n not in (outs or {})]
        if missing:
            m.extra["outputs"] = None
            m.extra["parity_failed"] = f"trtexec exported no output named {', '.join(missing)}"
        else:
            m.extra["outputs"] = [outs[n] for n in out_names]
    m.extra["settings"] = {"seed": run.seed, "power_mode": m.extra.get("environment", {}).get("nvpmodel")}
    return m
