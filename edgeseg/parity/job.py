"""`edgeseg parity`: run the PyTorch reference and each artifact on the same inputs, compare.

An artifact's manifest (written by `edgeseg export` beside it) supplies its input size,
batch, post-processing and precision; without one they come from the artifact's static input
shape or the model's defaults. Artifacts whose runtime is missing here are reported as
skipped with the reason, never as passed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgeseg.api import load
from edgeseg.compare import ParityReport, compare_outputs
from edgeseg.errors import BackendUnavailable, EdgesegError, VerificationError
from edgeseg.exporters import open_runner
from edgeseg.exporters.pytorch import TorchRunner
from edgeseg.images import make_inputs
from edgeseg.manifest import read_manifest
from edgeseg.parity.junit import write_junit
from edgeseg.progress import as_steps

DEFAULT_RANDOM_BATCHES = 2


class ParityFailure(VerificationError):
    """The gate failed; `summary` holds the full comparison so callers can show the table."""

    def __init__(self, problem: str, fix: str | None, summary: dict[str, Any]):
        super().__init__(problem, fix)
        self.summary = summary


def _static_input(backend) -> tuple[int | None, tuple[int, int] | None]:
    shape = getattr(backend, "input_shape", None)
    if not shape or len(shape) != 4:
        return None, None
    b = shape[0] if isinstance(shape[0], int) else None
    hw = (shape[2], shape[3]) if isinstance(shape[2], int) and isinstance(shape[3], int) else None
    return b, hw


def _infer_postprocess(backend, size) -> str:
    """Without a manifest, read what a segmentation graph ends with from its first output."""
    meta = getattr(backend, "output_meta", None)
    if not meta:
        return "none"
    shape, dtype = meta[0]
    if "int" in dtype:
        return "argmax"
    if len(shape) == 4 and tuple(shape[2:]) == tuple(size):
        return "upsample"
    return "none"


def compare_artifact(artifact: str | Path, *, reference_for: Callable[[str], Any], inputs_for: Callable[[tuple[int, int], int], Any],
                     task: str, info, tolerances: Any = None, precision: str | None = None, input_size: tuple[int, int] | None = None,
                     batch: int | None = None, postprocess: str | None = None, backend_options: dict | None = None,
                     manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """Parity of one artifact against `reference_for(postprocess)` (a backend running the
    PyTorch model); returns its entry of the summary (never raises on a mismatch)."""
    artifact = Path(artifact)
    t0 = time.perf_counter()
    manifest = manifest if manifest is not None else (read_manifest(artifact) or {})
    if manifest.get("arch") and manifest["arch"] != info.arch:
        raise EdgesegError(f"{artifact} was exported from {manifest['arch']}, the checkpoint is {info.arch}",
                           "pass the checkpoint the artifact came from")
    given = postprocess or manifest.get("postprocess")
    post = given or "none"
    entry: dict[str, Any] = {"artifact": str(artifact), "manifest": bool(manifest), "postprocess": post}
    warning = source_mismatch(artifact, manifest, info)
    if warning:
        entry["warnings"] = [warning]
    try:
        backend = open_runner(artifact, postprocess=post, **(backend_options or {}))
    except BackendUnavailable as exc:
        prec = precision or manifest.get("precision") or "fp32"
        entry.update(backend=None, precision=prec, status="skipped", reason=exc.problem,
                     report=ParityReport.skip(exc.problem, precision=prec, task=task).as_dict(), seconds=0.0)
        return entry
    b_static, hw_static = _static_input(backend)
    size = tuple(input_size or manifest.get("input_size") or hw_static or info.fixed_input_size or info.input_size)
    if given is None and task == "segmentation":
        post = entry["postprocess"] = _infer_postprocess(backend, size)
    n = int(batch or b_static or manifest.get("batch") or 1)
    prec = precision or manifest.get("precision") or getattr(backend, "precision", "fp32")
    names = [o["name"] for o in manifest.get("outputs", [])] or getattr(backend, "output_names", None)
    inputs = inputs_for(size, n)
    ref_model = reference_for(post)
    refs, cands = [], []
    entry.update(backend=backend.name, backend_mode=getattr(backend, "mode", None), precision=prec, input_size=list(size), batch=n,
                 inputs=[s.name for s in inputs.samples])
    try:
        refs = ref_model.run_many([sample.array for sample in inputs.samples])
        for sample in inputs.samples:
            cands.append(backend.run(sample.array))
    except EdgesegError:
        raise
    except Exception as exc:  # a runtime error in the artifact is a failed gate, not a crash
        reason = f"{backend.name} failed to run: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__}"
        report = ParityReport(precision=prec, task=task, status="failed", reason=reason)
        entry.update(status="failed", reason=reason, report=report.as_dict(), seconds=round(time.perf_counter() - t0, 3))
        return entry
    n_out = len(refs[0])
    if names is None or len(names) != n_out:
        names = ["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
    if any(len(c) != n_out for c in cands):
        report = ParityReport(precision=prec, task=task, status="failed",
                              reason=f"the artifact gives {len(cands[0])} outputs, the reference {n_out}")
    else:
        ref_cat = [np.concatenate([r[i] for r in refs]) for i in range(n_out)]
        try:
            cand_cat = [np.concatenate([c[i] for c in cands]) for i in range(n_out)]
        except ValueError:  # per-sample shapes differ: compare reports the mismatch
            cand_cat = [c[i] for c in cands[:1] for i in range(n_out)]
        report = compare_outputs(ref_cat, cand_cat, task=task, precision=prec, tolerances=tolerances, names=names)
    entry.update(status=report.status, reason=report.reason if report.status != "passed" else None, report=report.as_dict(),
                 seconds=round(time.perf_counter() - t0, 3))
    return entry


def recorded_source_hash(artifact: Path, manifest: dict[str, Any]) -> str | None:
    """The sha256 of the checkpoint an artifact was exported from: its manifest, else the
    hash the artifact itself records (ONNX metadata_props)."""
    source = manifest.get("source") if isinstance(manifest.get("source"), dict) else {}
    recorded = source.get("sha256") or manifest.get("source_sha256")
    if not recorded and artifact.suffix == ".onnx" and artifact.is_file():
        import onnx

        try:
            props = {p.key: p.value for p in onnx.load(str(artifact), load_external_data=False).metadata_props}
        except Exception:  # an unreadable file fails later, in its backend, with the real reason
            return None
        recorded = props.get("edgeseg.source_sha256")
    return str(recorded) if recorded else None


def source_mismatch(artifact: Path, manifest: dict[str, Any], info) -> str | None:
    """A warning when the reference checkpoint is not the one the artifact was built from:
    parity then compares against other weights than were exported."""
    recorded = recorded_source_hash(artifact, manifest)
    if recorded and info.source_sha256 and recorded != info.source_sha256:
        return (f"{artifact.name} was exported from a checkpoint with sha256 {recorded[:12]}..., the reference is "
                f"{info.source_sha256[:12]}...: pass the checkpoint it came from")
    return None


def verdict(entries: list[dict]) -> str:
    """'2 passed, 1 skipped (needs macOS)': counts per status, with why artifacts were skipped."""
    parts = []
    for status in ("passed", "failed", "skipped"):
        group = [e for e in entries if e["status"] == status]
        if not group:
            continue
        text = f"{len(group)} {status}"
        if status == "skipped":
            reasons = []
            for e in group:
                reason = str(e.get("reason") or "runtime missing")
                reason = "needs macOS" if "macos" in reason.lower() else reason
                if reason not in reasons:
                    reasons.append(reason)
            text += f" ({'; '.join(reasons)})"
        parts.append(text)
    return ", ".join(parts) or "nothing checked"


def _overall(entries: list[dict]) -> str:
    if any(e["status"] == "failed" for e in entries):
        return "failed"
    if any(e["status"] == "skipped" for e in entries):
        return "skipped"
    return "passed"


def parity_for_model(model, artifacts: Sequence[str | Path], *, images: str | Path | None = None, bundled_images: bool = True,
                     max_images: int | None = None, samples: int = DEFAULT_RANDOM_BATCHES, seed: int | None = None,
                     tolerances: Any = None, precision: str | None = None, input_size: tuple[int, int] | None = None,
                     batch: int | None = None, postprocess: str | None = None, threads: int | None = None,
                     manifests: dict[str, dict[str, Any]] | None = None, progress: Any = None) -> dict[str, Any]:
    """Compare `model` (the PyTorch reference) with each artifact; returns the summary.

    `manifests` (artifact path -> manifest) hands over what an export job knows in memory;
    other artifacts have theirs read from beside them."""
    info = model.edgeseg
    seed = int.from_bytes(os.urandom(4), "little") if seed is None else int(seed)
    input_sets: dict[tuple, Any] = {}
    references: dict[str, TorchRunner] = {}

    def inputs_for(size, n):
        key = (tuple(size), n)
        if key not in input_sets:
            input_sets[key] = make_inputs(size, info.mean, info.std, batch=n, images=images, bundled=bundled_images,
                                          max_images=max_images, random_batches=samples, seed=seed,
                                          channel_order=info.channel_order)
        return input_sets[key]

    def reference_for(post):
        if post not in references:
            references[post] = TorchRunner(model, postprocess=post)
        return references[post]

    entries = []
    opts = {"threads": threads} if threads else {}
    steps = as_steps(progress)
    for art in artifacts:
        with steps.step(f"parity of {Path(art).name}"):
            entries.append(compare_artifact(art, reference_for=reference_for, inputs_for=inputs_for, task=info.task, info=info,
                                            tolerances=tolerances, precision=precision, input_size=input_size, batch=batch,
                                            postprocess=postprocess, backend_options=opts,
                                            manifest=(manifests or {}).get(str(art))))
    first = next(iter(input_sets.values()), None)
    status = _overall(entries)
    return {
        "arch": info.arch,
        "task": info.task,
        "reference": "pytorch (as loaded{})".format(", fused" if info.fused else ", unfused"),
        "seed": seed,
        "inputs": first.describe() if first else {"seed": seed, "none": "no artifact could run here"},
        "artifacts": entries,
        "status": status,
        "verdict": verdict(entries),
        "passed": status != "failed",
        "warnings": [w for e in entries for w in e.get("warnings", [])],
    }


def raise_if_failed(summary: dict[str, Any], *, strict: bool = False) -> None:
    failed = [e for e in summary["artifacts"] if e["status"] == "failed"]
    skipped = [e for e in summary["artifacts"] if e["status"] == "skipped"]
    if failed:
        first = failed[0]
        raise ParityFailure(f"parity failed for {len(failed)} artifact(s): {Path(first['artifact']).name}: "
                            f"{first['report']['summary'].removeprefix('failed: ')}",
                            f"seed {summary['seed']}; loosen with --rtol/--tol only if the drift is expected", summary)
    if strict and skipped:
        raise ParityFailure(f"parity skipped for {len(skipped)} artifact(s): {skipped[0]['reason']}",
                            "run where the runtime exists, or drop --strict", summary)


def run_parity(checkpoint, artifacts: Sequence[str | Path], *, arch: str | None = None, junit: str | Path | None = None,
               check: bool = False, strict: bool = False, **options: Any) -> dict[str, Any]:
    """Load `checkpoint` (a path, or an edgeseg-loaded model) and gate each artifact against it.

    Options as `parity_for_model` (images, samples, seed, tolerances, precision, input_size,
    batch, postprocess, threads). Writes a JUnit XML with `junit`; raises ParityFailure with
    `check` when an artifact fails (or, with `strict`, is skipped).
    """
    if not artifacts:
        raise EdgesegError("no artifacts to check", "pass one or more exported files after the checkpoint")
    if hasattr(checkpoint, "edgeseg"):
        model = checkpoint
    else:
        with as_steps(options.get("progress")).step(f"loading {checkpoint}"):
            model = load(checkpoint, arch)
    summary = parity_for_model(model, artifacts, **options)
    summary["checkpoint"] = str(checkpoint) if not hasattr(checkpoint, "edgeseg") else (model.edgeseg.source_path or model.edgeseg.arch)
    if junit:
        summary["junit"] = str(write_junit(summary, junit))
    if check:
        raise_if_failed(summary, strict=strict)
    return summary
