"""Ctrl-C as a flag that publishing reads, besides the KeyboardInterrupt the CLI raises.

Python raises KeyboardInterrupt at the next bytecode after SIGINT, but native code that runs
Python callbacks (pybind11 in torch, ONNX Runtime) can swallow it: the command then went on and
published its results after the user asked it to stop (seen once in ~30 interrupted exports).
The CLI's SIGINT handler also sets this flag, and `edgeseg.atomic` checks it right before each
rename, so an interrupted command never publishes an output.
"""

from __future__ import annotations

_requested = False


def request() -> None:
    global _requested
    _requested = True


def clear() -> None:
    global _requested
    _requested = False


def requested() -> bool:
    return _requested


def raise_if_requested() -> None:
    if _requested:
        raise KeyboardInterrupt
