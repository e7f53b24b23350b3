"""The equivalence gate: a fused model must compute the function of the unfused one."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch

# Fused and unfused fp32 models differ only by rounding order; the gate bounds the largest
# error relative to the output's scale (max |reference|), which is insensitive to logit scale.
FP32_REL_TOL = 1e-4


def flatten_outputs(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in flatten_outputs(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in flatten_outputs(v)]
    if hasattr(out, "logits"):  # model-output dataclasses
        return [out.logits]
    raise TypeError(f"cannot compare outputs of type {type(out).__name__}")


@dataclass
class SizeResult:
    input_size: tuple[int, int]
    max_abs: float
    max_rel: float  # max abs error / max |reference|
    output_scale: float
    finite: bool
    batch: int = 1


@dataclass
class EquivalenceReport:
    results: list[SizeResult] = field(default_factory=list)
    tolerance: float = FP32_REL_TOL
    seed: int = 0
    samples: int = 0

    @property
    def max_abs(self) -> float:
        return max((r.max_abs for r in self.results), default=0.0)

    @property
    def max_rel(self) -> float:
        return max((r.max_rel for r in self.results), default=0.0)

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.finite and r.max_rel <= self.tolerance for r in self.results)

    def as_dict(self) -> dict:
        return {
            "passed": self.passed,
            "tolerance_rel": self.tolerance,
            "max_abs": self.max_abs,
            "max_rel": self.max_rel,
            "seed": self.seed,
            "samples": self.samples,
            "sizes": [
                {"input_size": list(r.input_size), "batch": r.batch, "max_abs": r.max_abs, "max_rel": r.max_rel, "output_scale": r.output_scale, "finite": r.finite}
                for r in self.results
            ],
        }


@torch.no_grad()
def check_equivalence(
    reference: torch.nn.Module,
    candidate: torch.nn.Module,
    input_sizes: Iterable[tuple[int, int]],
    *,
    batch: int = 2,
    samples: int = 1,
    seed: int | None = None,
    tolerance: float = FP32_REL_TOL,
    channels: int = 3,
) -> EquivalenceReport:
    """Compare both models on fresh random inputs (seed recorded) at each size."""
    seed = int.from_bytes(os.urandom(4), "little") if seed is None else seed
    gen = torch.Generator().manual_seed(seed)
    reference.eval()
    candidate.eval()
    report = EquivalenceReport(tolerance=tolerance, seed=seed, samples=samples)
    for size in input_sizes:
        worst_abs, scale, finite = 0.0, 0.0, True
        for _ in range(samples):
            x = torch.randn(batch, channels, *size, generator=gen)
            refs = flatten_outputs(reference(x))
            cands = flatten_outputs(candidate(x))
            if len(refs) != len(cands):
                raise ValueError(f"reference gives {len(refs)} outputs, candidate {len(cands)}")
            for r, c in zip(refs, cands):
                if r.shape != c.shape:
                    raise ValueError(f"output shapes differ: {tuple(r.shape)} vs {tuple(c.shape)}")
                finite &= bool(torch.isfinite(c).all() and torch.isfinite(r).all())
                worst_abs = max(worst_abs, float((r.double() - c.double()).abs().max()))
                scale = max(scale, float(r.abs().max()))
        rel = worst_abs / scale if scale > 0 else worst_abs
        report.results.append(SizeResult(tuple(size), worst_abs, rel, scale, finite, batch))
    return report
