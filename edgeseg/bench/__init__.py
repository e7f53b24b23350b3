"""Latency measurement: statistics, local timing harness, device runs, latency model."""

# `edgeseg.bench(...)` runs the workflow (edgeseg.workflows.bench); the package stays importable
from edgeseg.callable import callable_module  # noqa: E402

callable_module(__name__, "bench")
