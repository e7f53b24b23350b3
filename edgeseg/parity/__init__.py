"""Parity: run the PyTorch reference and each exported artifact on the same inputs and
compare tensor-wise and task-wise. Artifacts run through their target's Runner
(`edgeseg.exporters.open_runner`); the comparison code never knows which runtime produced an
output."""

from edgeseg.compare import ParityReport, Tolerances, compare_outputs
from edgeseg.errors import BackendUnavailable
from edgeseg.exporters import open_runner, register_runner
from edgeseg.exporters.runner import Runner

__all__ = ["BackendUnavailable", "ParityReport", "Runner", "Tolerances", "compare_outputs", "open_runner", "register_runner"]

# `edgeseg.parity(...)` runs the workflow (edgeseg.workflows.parity); the package stays importable
from edgeseg.callable import callable_module  # noqa: E402

callable_module(__name__, "parity")
