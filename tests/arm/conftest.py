"""Fixtures for the `arm` tests: the arm64 board stand-in (tests/arm/standin.py), built once into
its cache (normally by .ci/run before pytest starts; here when it is missing, with progress),
served by one sshd for the whole session and torn down at its end, failure or Ctrl-C included."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("edgeseg_arm_standin", Path(__file__).with_name("standin.py"))
standin = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = standin  # dataclasses look their module up by name
_spec.loader.exec_module(standin)

# the conftest at the top isolates XDG dirs per test; the stand-in cache is the user's, resolved now
try:
    CACHE_ROOT = standin.cache_root()
except standin.Unavailable as exc:
    CACHE_ROOT, CACHE_PROBLEM = None, str(exc)
else:
    CACHE_PROBLEM = None

_FINDINGS: list[str] = []


def _terminal_log(config):
    """Progress lines that reach the terminal even while pytest captures output."""
    tr = config.pluginmanager.get_plugin("terminalreporter")
    capman = config.pluginmanager.get_plugin("capturemanager")

    def log(msg: str) -> None:
        if tr is None:
            print(msg, file=sys.stderr, flush=True)
            return
        with capman.global_and_fixture_disabled() if capman else _nothing():
            tr.write_line(msg)

    return log


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture(scope="session")
def arm_build(request, tmp_path_factory):
    if CACHE_PROBLEM:
        pytest.skip(f"arm64 stand-in: {CACHE_PROBLEM}")
    reason = standin.why_unavailable()
    if reason:
        pytest.skip(f"arm64 stand-in unavailable: {reason} (.ci/run sets it up as root)")
    log = _terminal_log(request.config)
    import os

    os.environ.setdefault("EDGESEG_ARM_CACHE", str(CACHE_ROOT))
    try:
        build = standin.ensure_built(log=log)
    except standin.Unavailable as exc:
        pytest.skip(f"arm64 stand-in unavailable: {exc}")
    except standin.BuildError as exc:
        pytest.fail(f"arm64 stand-in build failed: {exc}", pytrace=False)
    log(f"[stand-in] {build.describe()}")
    return build


@pytest.fixture(scope="session")
def arm_device(arm_build, request):
    log = _terminal_log(request.config)
    t0 = time.monotonic()
    try:
        with standin.serve(arm_build, log=log) as dev:
            log(f"[stand-in] ready in {time.monotonic() - t0:.1f} s")
            yield dev
    except standin.BuildError as exc:
        pytest.fail(f"arm64 stand-in: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def arm_findings(request):
    """Lines for the end-of-run summary (x86 vs aarch64 differences, per-model figures)."""
    yield _FINDINGS


def pytest_terminal_summary(terminalreporter):
    if _FINDINGS:
        terminalreporter.section("arm64 stand-in: aarch64 vs host")
        for line in _FINDINGS:
            terminalreporter.write_line(line)
