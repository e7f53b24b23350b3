"""`edgeseg export`: checkpoint -> verified artifact + manifest, or nothing at the output path.

load -> reparameterize (unless already fused; the equivalence gate runs) -> export through the
exporter registry into a private staging directory -> parity of the staged artifact against
the PyTorch model as loaded -> manifest -> rename both into place. Any failure removes the
staging directory, so a failed check leaves no file at the output path.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from edgeseg.errors import EdgesegError
from edgeseg.hashing import artifact_sha256
from edgeseg.exporters import ExportRequest, get_exporter, get_target

class ExportSummary(dict):
    """What `export_checkpoint` returns: the manifest plus output paths (the JSON the CLI prints),
    and `.parity`, the full parity summary, for rendering without rebuilding it from the manifest."""

    def __init__(self, data: dict[str, Any], parity: dict[str, Any] | None = None):
        super().__init__(data)
        self.parity = parity


def default_output(ckpt: Path, arch: str, target: str, precision: str) -> Path:
    base = (ckpt.name if ckpt.is_dir() else ckpt.stem).removesuffix(".deploy") if ckpt else arch
    tag = "" if precision == "fp32" else f".{precision}"
    return (ckpt.parent if ckpt else Path(".")) / f"{base}{tag}{get_target(target).suffix}"


def _resolve_size(info, input_size, profile) -> tuple[int, int]:
    fixed = tuple(info.fixed_input_size) if info.fixed_input_size else None
    prof = tuple(profile.export.input_size) if profile is not None and profile.export.input_size else None
    size = tuple(input_size) if input_size else (prof or fixed or tuple(info.input_size))
    if prof and size != prof:
        raise EdgesegError(f"device profile {profile.name} runs {prof[0]}x{prof[1]} inputs; {size[0]}x{size[1]} was asked",
                           f"use --input-size {prof[0]}x{prof[1]} or another profile")
    d = profile.export.size_divisor if profile is not None and profile.export.size_divisor else None
    if d and (size[0] % d or size[1] % d):
        raise EdgesegError(f"device profile {profile.name} needs sizes divisible by {d}; got {size[0]}x{size[1]}", f"pick a multiple of {d}")
    return size  # type: ignore[return-value]


def _resolve_precision(precision: str | None, profile, target: str = "onnx") -> str:
    if profile is None:
        return precision or get_target(target).default_precision
    chosen = precision or profile.default_precision
    if chosen not in profile.precisions:
        raise EdgesegError(f"{profile.name} does not run {chosen}", f"choose one of: {', '.join(profile.precisions)}")
    return chosen


def _publish(staged: Path, final: Path, overwrite: bool) -> None:
    from edgeseg.atomic import atomic_output

    with atomic_output(final, overwrite=overwrite, directory=staged.is_dir()) as tmp:
        os.replace(staged, tmp)
        if tmp.is_file():  # temp files are created private; the artifact gets the usual umask mode
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)


def _write_json(data: dict, path: Path) -> None:
    import json

    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def export_checkpoint(
    ckpt: str | Path | None,
    out: str | Path | None = None,
    *,
    target: str = "onnx",
    arch: str | None = None,
    input_size: tuple[int, int] | None = None,
    batch: int = 1,
    dynamic: bool = False,
    opset: int | None = None,
    precision: str | None = None,
    device: str | None = None,
    postprocess: str = "none",
    simplify: bool = True,
    overwrite: bool = False,
    options: dict[str, Any] | None = None,
    parity: bool = True,
    images: str | Path | None = None,
    samples: int = 1,
    seed: int | None = None,
    tolerances: Any = None,
    verify_reparam: bool = True,
    model=None,
    progress: Any = None,
) -> dict[str, Any]:
    """Export a checkpoint (or an edgeseg-loaded `model`) for `target`; returns the summary.

    Raises EdgesegError on refusals and `edgeseg.parity.job.ParityFailure` (exit code 3,
    with `.summary`) when the artifact does not match PyTorch; neither leaves a file behind.
    `progress`: an `edgeseg.progress.Steps` (or a callable taking each step's message).
    """
    from edgeseg.progress import as_steps

    steps = as_steps(progress)
    from edgeseg.api import load, reparameterize
    from edgeseg.atomic import check_output_path

    timings: dict[str, float] = {}
    exporter = get_exporter(target)
    target = get_target(target).name  # the canonical name is recorded (`trt` and `engine` mean tensorrt)
    profile = None
    if device:
        from edgeseg.devices import get_profile

        profile = get_profile(device)
    prec = _resolve_precision(precision, profile, target)
    ckpt_path = Path(ckpt) if ckpt is not None else None

    t = time.perf_counter()
    if model is not None:
        original = model
    else:
        with steps.step(f"loading {ckpt_path}"):
            original = load(ckpt_path, arch, input_size=input_size)
    timings["load_s"] = time.perf_counter() - t
    info = original.edgeseg
    size = _resolve_size(info, input_size, profile)
    final = Path(out) if out else default_output(ckpt_path, info.arch, target, prec)
    if final.suffix != exporter.suffix:
        raise EdgesegError(f"output {final} does not end in {exporter.suffix}, which --target {target} writes", f"use -o NAME{exporter.suffix}")
    check_output_path(final, overwrite)  # fail before the expensive part
    from edgeseg.exporters.wrap import check_postprocess

    check_postprocess(info.task, postprocess)

    t = time.perf_counter()
    if info.fused:
        fused, reparam = original, None
        steps.note("checkpoint is already reparameterized")
    else:
        with steps.step("reparameterizing (fused vs unfused gate)"):
            fused, result = reparameterize(original, verify=verify_reparam, input_size=size, seed=seed)
        reparam = {"fused_blocks": result.report.as_dict(), "equivalence": result.equivalence.as_dict() if result.equivalence else None}
    timings["reparameterize_s"] = time.perf_counter() - t

    opts = {"simplify": simplify, "seed": 0 if seed is None else seed, **(options or {})}
    stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".stage", dir=final.parent if str(final.parent) else "."))
    try:
        staged = stage / final.name
        request = ExportRequest(model=fused, output=staged, input_size=size, batch=batch, precision=prec, opset=opset,
                                dynamic=dynamic, postprocess=postprocess, profile=profile, overwrite=True, options=opts)
        t = time.perf_counter()
        with steps.step(f"exporting to {target} ({prec}, {size[0]}x{size[1]}, batch {batch})"):
            result = exporter.export(request)
        timings["export_s"] = time.perf_counter() - t
        manifest: dict[str, Any] = {
            "artifact": final.name,
            "target": target,
            "arch": info.arch,
            "family": info.family,
            "task": info.task,
            "cfg": info.cfg,
            "source": {"path": str(ckpt_path) if ckpt_path else None, "format": info.source_format, "sha256": info.source_sha256,
                       "layout": info.layout, "reparameterized_before_export": info.fused},
            "reparam": reparam,
            "mean": list(info.mean),
            "std": list(info.std),
            "device_profile": profile.name if profile is not None else None,
            **result.manifest,
        }
        manifest.setdefault("precision", prec)
        manifest.setdefault("input_size", list(size))
        manifest.setdefault("batch", batch)
        manifest.setdefault("postprocess", postprocess)
        from edgeseg import __version__

        manifest.setdefault("tools", {})["edgeseg"] = __version__

        if parity:
            from edgeseg.parity.job import ParityFailure, parity_for_model, raise_if_failed  # lazy: parity sits above the export job

            t = time.perf_counter()
            # shapes, names and post-processing go to parity in memory, as the manifest will record them
            with steps.step("parity against PyTorch"):
                summary = parity_for_model(original, [result.path], images=images, samples=samples, seed=seed, tolerances=tolerances,
                                           manifests={str(result.path): manifest})
            timings["parity_s"] = time.perf_counter() - t
            entry = summary["artifacts"][0]
            manifest["parity"] = {"status": entry["status"], "reason": entry.get("reason"), "backend": entry.get("backend"),
                                  "backend_mode": entry.get("backend_mode"), "seconds": entry.get("seconds"),
                                  "seed": summary["seed"], "inputs": summary["inputs"], "report": entry["report"],
                                  "reference": summary["reference"]}
            try:
                raise_if_failed(summary)
            except ParityFailure as exc:
                exc.summary["export"] = {"target": target, "output": str(final), "written": False}
                raise
            entry["artifact"] = str(final)  # passed: the staged file is about to become the output
        else:
            manifest["parity"] = {"status": "not run"}
        manifest["sha256"] = artifact_sha256(result.path)
        manifest["timings"] = {k: round(v, 3) for k, v in timings.items()}
        mpath = stage / (final.name + ".manifest.json")
        _write_json(manifest, mpath)
        _publish(result.path, final, overwrite)
        final_manifest = final.with_name(final.name + ".manifest.json")
        _publish(mpath, final_manifest, True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return ExportSummary({"output": str(final), "manifest_path": str(final_manifest), **manifest}, parity=summary if parity else None)
