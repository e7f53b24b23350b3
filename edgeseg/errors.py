"""Errors that the CLI turns into one clear line and a non-zero exit."""

from __future__ import annotations


class EdgesegError(Exception):
    """A user-facing problem: what went wrong and, where known, how to fix it."""

    exit_code = 1

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(problem if not fix else f"{problem} ({fix})")


class CheckpointError(EdgesegError):
    """The file cannot be read safely as a checkpoint."""


class DetectionError(EdgesegError):
    """The checkpoint does not match a registered architecture (or matches several)."""


class VerificationError(EdgesegError):
    """A numerical gate failed (equivalence after fusion, export parity)."""

    exit_code = 3


class OutputError(EdgesegError):
    """An output path cannot be written safely."""


class BackendUnavailable(EdgesegError):
    """The runtime for this artifact is not installed here (e.g. Core ML off macOS): parity
    reports 'skipped' with this reason, never a pass."""
