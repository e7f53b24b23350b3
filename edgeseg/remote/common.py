"""Helpers shared by the remote runners: preflight checks and the runner result protocol."""

from __future__ import annotations

import json
import math
import posixpath

from edgeseg.remote.ssh import RemoteError, SSHSession
from edgeseg.timing import Measurement


def check_python(session: SSHSession, python: str, modules: list[str], install_hint: str) -> dict:
    """The device's Python can import `modules`; returns their versions."""
    code = ("import sys, json, importlib; v = dict((m, getattr(importlib.import_module(m), '__version__', '?')) for m in "
            + json.dumps(modules) + "); v['python'] = sys.version.split()[0]; print(json.dumps(v))")
    done = session.run([python, "-c", code], step="check the device's Python", timeout=session.timeouts.connect * 4, check=False)
    if done.returncode != 0:
        line = done.last_error_line()
        if "not found" in line or done.returncode == 127:
            raise RemoteError(f"{python} is not available on {session.target}", "install Python 3.6+ there or set access.python in the profile")
        raise RemoteError(f"{python} on {session.target} cannot import {', '.join(modules)}: {line}", install_hint)
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise RemoteError(f"unexpected answer from {python} on {session.target}: {done.stdout[:200]!r}", "check the device's Python") from exc


def measurement_from_runner(text: str, iterations: int, what: str) -> Measurement:
    """Validate a runner's JSON result and turn it into a Measurement."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise RemoteError(f"{what} wrote an unreadable result ({exc})", "rerun; check free space on the device") from exc
    times = data.get("times_ms")
    if not isinstance(times, list) or len(times) != iterations or not all(
            isinstance(t, (int, float)) and math.isfinite(t) and t >= 0 for t in times):
        raise RemoteError(f"{what} returned {len(times) if isinstance(times, list) else 'no'} valid timings, expected {iterations}",
                          "rerun; the runner and edgeseg versions may differ")
    extra = {k: v for k, v in data.items() if k not in ("times_ms", "load_ms", "first_ms", "warmup_iterations")}
    return Measurement(times_ms=[float(t) for t in times], first_ms=data.get("first_ms"),
                       warmup_iterations=int(data.get("warmup_iterations") or 0), load_ms=data.get("load_ms"), extra=extra)


def rjoin(*parts: str) -> str:
    return posixpath.join(*parts)
