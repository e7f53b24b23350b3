"""Capture a torch module and convert it to a Core ML ML program.

Capture goes through `torch.export` first: it records shapes as static ints (no `aten::Int`
casts of traced shape values, the failure of `torch.jit.trace` + coremltools on models that
compute shapes) and gives the converter a functional ATen graph. Fallbacks, in order: the
same program decomposed to core ATen (for an op the converter only knows in decomposed form),
then `torch.jit.trace`. The path that worked is recorded in the manifest; `capture=` pins one.
"""

from __future__ import annotations

import contextlib
import io
import logging
import platform
import sys
from dataclasses import dataclass, field
from typing import Any

from edgeseg.errors import EdgesegError

CAPTURES = ("export", "export-decomposed", "trace")
TARGETS = ("iOS15", "iOS16", "iOS17", "iOS18", "macOS12", "macOS13", "macOS14", "macOS15")


@dataclass
class Conversion:
    model: Any  # ct.models.MLModel
    capture: str
    attempts: dict[str, str] = field(default_factory=dict)  # capture -> error of the ones that failed


def import_coremltools():
    """coremltools, imported without its import-time warnings off macOS (an untested-torch
    notice and one 'Failed to load _ML...Proxy' line per runtime class: expected on Linux)."""
    if "coremltools" in sys.modules:
        return sys.modules["coremltools"]
    logger = logging.getLogger("coremltools")
    level = logger.level
    if platform.system() != "Darwin":
        logger.setLevel(logging.ERROR)
    try:
        import coremltools
    finally:
        logger.setLevel(level)
    return coremltools


def ct_target(name: str):
    ct = import_coremltools()

    if name not in TARGETS or not hasattr(ct.target, name):
        raise EdgesegError(f"unknown Core ML deployment target {name!r}", f"use one of: {', '.join(TARGETS)}")
    return getattr(ct.target, name)


@contextlib.contextmanager
def quiet():
    """coremltools prints progress bars and per-pass warnings; keep them out of the CLI."""
    loggers = [logging.getLogger(n) for n in ("coremltools", "root")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    buf = io.StringIO()
    try:
        import warnings

        with warnings.catch_warnings(), contextlib.redirect_stderr(buf):
            warnings.simplefilter("ignore")
            yield buf
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def convert(module, example, *, inputs: list, outputs: list, precision: str, target: str, classifier=None,
            capture: str = "auto") -> Conversion:
    """Convert `module` (eval mode) traced on `example`; raises EdgesegError naming every failure."""
    import torch

    ct = import_coremltools()

    if precision not in ("fp16", "fp32"):
        raise EdgesegError(f"Core ML export does not support precision {precision}", "use fp16 (Neural Engine) or fp32")
    order = CAPTURES if capture == "auto" else (capture,)
    if capture != "auto" and capture not in CAPTURES:
        raise EdgesegError(f"unknown capture method {capture!r}", f"use auto or one of: {', '.join(CAPTURES)}")
    kwargs: dict[str, Any] = dict(
        inputs=inputs, outputs=outputs, convert_to="mlprogram", minimum_deployment_target=ct_target(target),
        compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32, skip_model_load=True,
    )
    if classifier is not None:
        kwargs["classifier_config"] = classifier
    attempts: dict[str, str] = {}
    exported, export_error = None, None
    for how in order:
        try:
            with quiet():
                if how == "trace":
                    with torch.no_grad():
                        program = torch.jit.trace(module, example, check_trace=False)
                else:
                    if exported is None and export_error is None:
                        try:
                            exported = torch.export.export(module, (example,), strict=False)
                        except Exception as exc:  # noqa: BLE001 - recorded; the next capture path gets its turn
                            export_error = _first_line(exc)
                    if export_error is not None:
                        attempts[how] = f"torch.export: {export_error}"
                        continue
                    program = exported.run_decompositions({} if how == "export" else None)
                mlmodel = ct.convert(program, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every capture path gets its chance; all reasons are reported
            attempts[how] = _first_line(exc)
            continue
        return Conversion(mlmodel, how, attempts)
    detail = "; ".join(f"{k}: {v}" for k, v in attempts.items())
    raise EdgesegError(f"Core ML conversion failed ({detail})",
                       "the model code likely computes shapes from tensors at run time; keep them Python ints (see the docs)")
