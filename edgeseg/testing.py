"""Helpers for tests of edgeseg and of user models: official-format checkpoints with
non-trivial weights, and the fused-vs-unfused assertion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeseg.api import create, reparameterize, verification_sizes
from edgeseg.checkpoint.layouts import find_layout
from edgeseg.registry import get_entry


def make_checkpoint(name: str, path: str | Path, *, layout: str | None = None, seed: int = 0, **cfg: Any):
    """Build `name` with non-trivial weights and save it in an original project's layout.

    Returns the in-memory model (the reference for load tests).
    """
    entry = get_entry(name)
    model = create(name, pretrained_like=seed, **cfg)
    lay = find_layout(entry, layout) if layout else entry.canonical_layout
    lay.save(model.state_dict(), path, entry=entry, cfg=model.edgeseg.cfg)
    return model


def convert_shape_only(layout, published: dict, infer_cfg=None) -> tuple[dict, dict]:
    """`layout.to_canonical` of a published state dict and of its shape-only copy (the
    TensorMeta values `edgeseg info` reads): asserts the same keys in the same order with the
    same shapes and dtypes, and the same `infer_cfg` result; returns (from tensors, from shapes)."""
    from edgeseg.checkpoint.tensor_meta import TensorMeta, is_meta

    def shapes(sd: dict) -> dict:
        return {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in sd.items()}

    real = layout.to_canonical(dict(published))
    meta = layout.to_canonical({k: TensorMeta.like(v) for k, v in published.items()})
    assert list(meta) == list(real) and shapes(meta) == shapes(real)
    assert all(is_meta(v) for v in meta.values())
    if infer_cfg is not None:
        assert infer_cfg(meta) == infer_cfg(real)
    return real, meta


def assert_reparam_equivalent(model, sizes=None, tolerance: float = 1e-4):
    """Fuse a copy of `model`, check it matches on fresh random inputs, return (fused, report)."""
    fused, result = reparameterize(model, verify=False)
    from edgeseg.reparam.verify import check_equivalence  # lazy: pulls torch

    sizes = sizes or verification_sizes(model.edgeseg)
    report = check_equivalence(model, fused, sizes, tolerance=tolerance)
    assert report.passed, report.as_dict()
    return fused, report


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run the `edgeseg` CLI in-process; returns (exit code, stdout, stderr) via pytest's capsys."""
    from edgeseg.cli import main  # lazy: typer and the commands load only for CLI tests

    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out = capsys.readouterr()
    return code, out.out, out.err
