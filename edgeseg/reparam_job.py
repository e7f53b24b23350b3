"""`edgeseg reparam`: checkpoint -> verified deploy checkpoint, with what changed and by how much."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from edgeseg.api import load, reparameterize, save_deploy
from edgeseg.atomic import check_output_path
from edgeseg.progress import as_steps
from edgeseg.timing import time_torch_model


def default_deploy_path(ckpt: Path) -> Path:
    base = ckpt.name if ckpt.is_dir() else ckpt.stem
    return ckpt.parent / f"{base.removesuffix('.deploy')}.deploy.safetensors"


def reparam_checkpoint(
    ckpt: str | Path,
    out: str | Path | None = None,
    *,
    arch: str | None = None,
    input_size: tuple[int, int] | None = None,
    verify: bool = True,
    overwrite: bool = False,
    latency_iterations: int = 10,
    seed: int | None = None,
    model=None,
    progress: Any = None,
) -> dict[str, Any]:
    """Load (or take `model`), fuse, verify, measure, and write the deploy checkpoint.

    `progress`: an `edgeseg.progress.Steps` (or a callable taking each step's message).
    """
    from edgeseg.analysis import count_macs, count_params  # lazy: pulls torch
    from edgeseg.checkpoint.deploy import check_deploy_path

    steps = as_steps(progress)

    ckpt = Path(ckpt)
    out = Path(out) if out else default_deploy_path(ckpt)
    check_deploy_path(out)
    check_output_path(out, overwrite)  # fail before the expensive part
    if model is None:
        with steps.step(f"loading {ckpt}"):
            model = load(ckpt, arch, input_size=input_size)
    info = model.edgeseg
    size = tuple(input_size or info.fixed_input_size or info.input_size)
    with steps.step("reparameterizing" + (" (fused vs unfused gate)" if verify else "")):
        fused, result = reparameterize(model, verify=verify, input_size=size, seed=seed)
    with steps.step(f"counting MACs at {size[0]}x{size[1]}"):
        macs = {"before": count_macs(model, size), "after": count_macs(fused, size)}
    summary: dict[str, Any] = {
        "source": str(ckpt),
        "output": str(out),
        "arch": info.arch,
        "family": info.family,
        "task": info.task,
        "layout": info.layout,
        "already_fused": info.fused,
        "input_size": list(size),
        "fused_blocks": result.report.as_dict(),
        "params": {"before": count_params(model), "after": count_params(fused)},
        "macs": macs,
        "equivalence": result.equivalence.as_dict() if result.equivalence else None,
    }
    if latency_iterations > 0:
        with steps.step(f"host latency before/after ({latency_iterations} iterations each)"):
            before, _ = time_torch_model(model, size, iterations=latency_iterations)
            after, _ = time_torch_model(fused, size, iterations=latency_iterations)
        summary["latency_ms"] = {
            "iterations": latency_iterations,
            "before": before.as_dict(),
            "after": after.as_dict(),
            "speedup": before.median_ms / after.median_ms,
        }
        from edgeseg.noise import noise_flags

        flags = [f"{tag}: {f}" for tag, st in (("before", before), ("after", after)) for f in noise_flags(st)]
        if flags:  # a ratio of noisy medians is not a result: say so next to it
            summary["latency_ms"]["unreliable"] = flags
    with steps.step(f"writing {out}"):
        save_deploy(fused, out, overwrite=overwrite)
    return summary
