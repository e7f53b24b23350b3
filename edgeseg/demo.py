"""`edgeseg demo`: the whole pipeline on a built-in model, with no downloads.

A zoo model gets deterministic non-trivial weights, is saved in its original project's
checkpoint format, and then goes through the same steps a user's checkpoint does:
load -> reparameterize + verify -> ONNX export + parity -> host benchmark -> predicted
latency on targets that are not attached.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable
from edgeseg.api import create
from edgeseg.bench.harness import bench_artifact
from edgeseg.export_job import export_checkpoint
from edgeseg.registry import get_entry, list_models
from edgeseg.reparam_job import reparam_checkpoint

DEFAULT_MODEL = "fastvit_t8"
PREDICTED_DEVICES = ("jetson-nano", "iphone-12-pro")


def _default_model() -> str:
    names = [e.name for e in list_models()]
    return DEFAULT_MODEL if DEFAULT_MODEL in names else names[0]


def run_demo(model_name: str | None = None, workdir: str | Path = "edgeseg-demo", *, seed: int = 0, iterations: int = 20,
             progress: Callable[[str], None] = lambda msg: None) -> dict[str, Any]:
    name = model_name or _default_model()
    entry = get_entry(name)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    layout = entry.canonical_layout
    ckpt = workdir / (name if layout.container == "hf" else f"{name}.pth")
    db = workdir / "results.sqlite"

    progress(f"building {name} with deterministic weights (seed {seed}), saved as {layout.name}")
    model = create(name, pretrained_like=seed)
    layout.save(model.state_dict(), ckpt, entry=entry, cfg=model.edgeseg.cfg)
    steps: dict[str, Any] = {"model": name, "workdir": str(workdir), "checkpoint": str(ckpt), "checkpoint_layout": layout.name}

    progress("load -> reparameterize -> verify")
    steps["reparam"] = reparam_checkpoint(ckpt, workdir / f"{name}.deploy.safetensors", overwrite=True,
                                          latency_iterations=min(10, iterations))

    progress("export to ONNX -> check -> simplify -> parity")
    steps["export"] = export_checkpoint(ckpt, workdir / f"{name}.onnx", overwrite=True, progress=progress)

    progress(f"host benchmark ({iterations} iterations per backend)")
    host = bench_artifact(ckpt, "host-cpu", iterations=iterations, warmup="3", store=db, progress=progress)
    steps["bench"] = host.as_dict()
    steps["predicted"] = {}
    for device in PREDICTED_DEVICES:
        progress(f"latency model: {device}")
        steps["predicted"][device] = bench_artifact(ckpt, device, predict=True, store=db).as_dict()
    return steps
