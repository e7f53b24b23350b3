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
from typing import Any, Sequence

from edgeseg import __version__
from edgeseg.api import load, reparameterize
from edgeseg.atomic import atomic_output, check_output_path
from edgeseg.devices import get_profile
from edgeseg.errors import EdgesegError
from edgeseg.exporters import ExportRequest, get_exporter, get_target, target_for_runtime, target_for_suffix
from edgeseg.exporters.wrap import check_postprocess
from edgeseg.hashing import artifact_sha256
from edgeseg.parity.job import ParityFailure, parity_for_model, raise_if_failed
from edgeseg.progress import as_steps

class ExportSummary(dict):
    """What `export_checkpoint` returns: the manifest plus output paths (the JSON the CLI prints),
    and `.parity`, the full parity summary, for rendering without rebuilding it from the manifest."""

    def __init__(self, data: dict[str, Any], parity: dict[str, Any] | None = None):
        super().__init__(data)
        self.parity = parity

    def __getattr__(self, name: str) -> Any:  # keys read as attributes: summary.output, summary.sha256
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"ExportSummary has no field {name!r}") from None

    def as_dict(self) -> dict[str, Any]:
        """Exactly what `edgeseg export --json` prints."""
        return dict(self)


def default_output(ckpt: Path | None, arch: str, target: str, precision: str, *, device: str | None = None,
                   postprocess: str = "none") -> Path:
    """`<stem>.<device-or-target>.<precision>[.<postprocess>].<ext>` beside the checkpoint: every
    choice that changes the artifact is in its name, so two exports never collide."""
    base = (ckpt.name if ckpt.is_dir() else ckpt.stem).removesuffix(".deploy") if ckpt else arch
    parts = [base, device or target, precision] + ([postprocess] if postprocess and postprocess != "none" else [])
    return (ckpt.parent if ckpt else Path(".")) / (".".join(parts) + get_target(target).suffix)


def resolve_target(target: str | None, output: str | Path | None, profile) -> str:
    """--target if given, else what -o's suffix names, else the device profile's runtime, else onnx."""
    if target:
        return get_target(target).name
    if output is not None:
        by_suffix = target_for_suffix(Path(output).suffix)
        if by_suffix is not None:
            return by_suffix.name
    if profile is not None:
        by_runtime = target_for_runtime(profile.runtime)
        if by_runtime is not None:
            return by_runtime.name
    return "onnx"


def preflight(target: str, precision: str, postprocess: str, options: dict[str, Any]) -> None:
    """Refusals that need no model, before the (seconds-long) model load."""
    from edgeseg.exporters.wrap import POSTPROCESS

    if postprocess not in POSTPROCESS:
        raise EdgesegError(f"unknown --postprocess {postprocess!r}", f"choose one of: {', '.join(POSTPROCESS)}")
    record = get_target(target)  # what each runtime builds is its registration record's to say
    if precision not in record.precisions:
        raise EdgesegError(f"--precision {precision} is not built for --target {record.name}",
                           f"choose one of: {', '.join(record.precisions)}")
    labels = options.get("labels")
    if isinstance(labels, (str, os.PathLike)) and not Path(labels).is_file():
        raise EdgesegError(f"labels file {labels} does not exist", "pass a text file with one class name per line")
    if target == "tensorrt" and not options.get("host"):
        import importlib.util

        if importlib.util.find_spec("tensorrt") is None:
            from edgeseg.exporters.tensorrt.build import INSTALL_HINT

            raise EdgesegError("TensorRT is not installed here", INSTALL_HINT)


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
    with atomic_output(final, overwrite=overwrite, directory=staged.is_dir()) as tmp:
        os.replace(staged, tmp)


def _write_json(data: dict, path: Path) -> None:
    import json

    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def export_checkpoint(
    ckpt: str | Path | None,
    out: str | Path | None = None,
    *,
    target: str | None = None,
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
    samples: int = 2,
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
    steps = as_steps(progress)
    timings: dict[str, float] = {}
    profile = None
    if device:
        profile = get_profile(device)
    target = resolve_target(target, out, profile)  # the canonical name is recorded (`trt` and `engine` mean tensorrt)
    exporter = get_exporter(target)
    prec = _resolve_precision(precision, profile, target)
    preflight(target, prec, postprocess, options or {})
    ckpt_path = Path(ckpt) if ckpt is not None else None

    def output_for(arch_name: str) -> Path:
        final = Path(out) if out else default_output(ckpt_path, arch_name, target, prec, device=profile.name if profile else None,
                                                     postprocess=postprocess)
        if final.suffix != exporter.suffix:
            raise EdgesegError(f"output {final} does not end in {exporter.suffix}, which --target {target} writes", f"use -o NAME{exporter.suffix}")
        check_output_path(final, overwrite, directory=exporter.suffix == ".mlpackage")  # fail before the expensive part
        # the manifest sidecar is edgeseg's own file: it may replace one, never a directory in its place
        check_output_path(final.with_name(final.name + ".manifest.json"), True)
        return final

    if ckpt_path is not None:
        output_for("")  # the name does not depend on the model: refuse an existing output before loading
    t = time.perf_counter()
    if model is not None:
        original = model
    else:
        with steps.step(f"loading {ckpt_path}"):
            original = load(ckpt_path, arch, input_size=input_size)
    timings["load_s"] = time.perf_counter() - t
    info = original.edgeseg
    size = _resolve_size(info, input_size, profile)
    final = output_for(info.arch)
    final_manifest = final.with_name(final.name + ".manifest.json")

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

    opts = {"simplify": simplify, "seed": 0 if seed is None else seed, "progress": progress, **(options or {})}
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

        manifest.setdefault("tools", {})["edgeseg"] = __version__

        if parity:
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
        _publish(mpath, final_manifest, True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return ExportSummary({"output": str(final), "manifest_path": str(final_manifest), **manifest}, parity=summary if parity else None)


ALL_DEVICES = "all"


def device_list(device: str | Sequence[str] | None) -> list[str | None]:
    """--device values: one name, several (repeated or comma-separated), or `all` (every profile)."""
    if device is None:
        return [None]
    items = [device] if isinstance(device, str) else list(device)
    names: list[str] = []
    for item in items:
        for name in str(item).split(","):
            name = name.strip()
            if not name:
                continue
            if name == ALL_DEVICES:
                from edgeseg.devices import load_profiles

                names += [n for n in load_profiles() if n != "host-cpu"]
            else:
                names.append(name)
    unique = list(dict.fromkeys(names))
    if not unique:
        raise EdgesegError("--device was given without a profile name", "see `edgeseg devices` for the names")
    return unique  # type: ignore[return-value]


def export_many(ckpt: str | Path | None, out: str | Path | None = None, *, device: str | Sequence[str] | None = None,
                progress=None, model=None, arch: str | None = None,
                input_size: tuple[int, int] | None = None, **options: Any) -> dict[str, Any] | list[dict[str, Any]]:
    """`export_checkpoint` for one device (returns its summary) or several (loads the checkpoint
    once, exports each, returns a list of summaries; a failure on one device is recorded as
    its row and the others still run)."""
    devices = device_list(device)
    if len(devices) == 1:
        return export_checkpoint(ckpt, out, device=devices[0], progress=progress, model=model, arch=arch,
                                 input_size=input_size, **options)
    if out is not None:
        raise EdgesegError("-o names one file; several --device values write one artifact each",
                           "drop -o: names are <stem>.<device>.<precision>.<ext>")
    for name in devices:
        get_profile(name)  # an unknown name fails before any export
    steps = as_steps(progress)
    if model is None:
        with steps.step(f"loading {ckpt}"):
            model = load(Path(ckpt), arch, input_size=input_size)
    summaries = []
    for name in devices:
        steps.note(f"exporting for {name}")
        try:
            summaries.append(export_checkpoint(ckpt, None, device=name, progress=progress, model=model, input_size=input_size, **options))
        except EdgesegError as exc:
            summaries.append({"device_profile": name, "error": str(exc), "exit_code": exc.exit_code,
                              **({"parity": {"status": "failed"}} if exc.exit_code == 3 else {})})
    return summaries
