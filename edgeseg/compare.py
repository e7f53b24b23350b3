"""Backend-agnostic comparison of a candidate's outputs with the reference's.

Per output: max abs error, max error relative to the output's scale (max |reference|),
cosine similarity, NaN/Inf counts, and the task's own agreement: for segmentation the argmax
pixel agreement and the mIoU between the reference mask and the candidate mask, for
classification top-1 and top-5 agreement. Each metric is checked against a threshold that
depends on precision, and every check records the smallest tolerance that would have passed.

Error check: max |candidate - reference| <= atol + rtol * scale (scale = max |reference|).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Mapping, Sequence

import numpy as np

from edgeseg.errors import EdgesegError


@dataclass(frozen=True)
class Tolerances:
    rtol: float  # allowed max error, relative to the output's scale
    atol: float  # allowed max error, absolute (added to rtol * scale)
    min_cosine: float
    min_top1: float  # classification: share of samples with the same top-1 class
    min_top5: float  # classification: mean overlap of the top-5 class sets
    min_pixel_agreement: float  # segmentation: share of pixels with the same argmax label
    min_miou: float  # segmentation: mIoU between the reference and candidate masks

    def with_overrides(self, values: Mapping[str, float]) -> "Tolerances":
        known = {f.name for f in fields(self)}
        bad = set(values) - known
        if bad:
            raise EdgesegError(f"unknown tolerance {', '.join(sorted(bad))}", f"known: {', '.join(sorted(known))}")
        return replace(self, **{k: float(v) for k, v in values.items()})


# fp32: both sides compute in float32; differences are rounding order, ~1e-6 of scale.
# fp16: 10-bit mantissa; relative error per op ~5e-4 and it accumulates through depth.
# int8: quantization error is a few percent of scale; agreement metrics matter most.
DEFAULT_TOLERANCES: dict[str, Tolerances] = {
    "fp32": Tolerances(rtol=1e-4, atol=0.0, min_cosine=0.99999, min_top1=1.0, min_top5=0.99,
                       min_pixel_agreement=0.999, min_miou=0.99),
    "fp16": Tolerances(rtol=2e-2, atol=0.0, min_cosine=0.999, min_top1=0.8, min_top5=0.9,
                       min_pixel_agreement=0.98, min_miou=0.9),
    "int8": Tolerances(rtol=0.15, atol=0.0, min_cosine=0.98, min_top1=0.6, min_top5=0.7,
                       min_pixel_agreement=0.9, min_miou=0.7),
}


def default_tolerances(precision: str) -> Tolerances:
    if precision not in DEFAULT_TOLERANCES:
        raise EdgesegError(f"no default tolerances for precision {precision!r}", f"known: {', '.join(DEFAULT_TOLERANCES)}")
    return DEFAULT_TOLERANCES[precision]


def resolve_tolerances(precision: str, overrides: Any, names: Sequence[str]) -> dict[str, Tolerances]:
    """Per-output tolerances: precision defaults, then global overrides ({"rtol": ..}), then
    per-output ones ({"logits": {"rtol": ..}}). A ready `Tolerances` applies to every output."""
    base = default_tolerances(precision)
    if isinstance(overrides, Tolerances):
        return {n: overrides for n in names}
    overrides = dict(overrides or {})
    per_output = {k: v for k, v in overrides.items() if isinstance(v, Mapping)}
    unknown = set(per_output) - set(names)
    if unknown:
        raise EdgesegError(f"tolerance given for unknown output {', '.join(sorted(unknown))}", f"outputs: {', '.join(names)}")
    common = base.with_overrides({k: v for k, v in overrides.items() if not isinstance(v, Mapping)})
    return {n: common.with_overrides(per_output.get(n, {})) for n in names}


@dataclass
class Check:
    metric: str
    value: float
    threshold: float
    passed: bool
    op: str  # "<=" (value must not exceed) or ">=" (value must reach)
    needed: float | None = None  # smallest tolerance setting that would have passed
    tolerance: str | None = None  # which Tolerances field `needed` is for

    def describe(self) -> str:
        s = f"{self.metric} {_fmt(self.value)} (needs {self.op} {_fmt(self.threshold)})"
        if not self.passed and self.needed is not None:
            s += f"; passes with {self.tolerance}={_fmt(self.needed)}"
        return s


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and (np.isnan(v) or np.isinf(v)):
        return str(v)
    if v == 0 or 1e-3 <= abs(v) < 1e4:
        return f"{v:.6g}" if abs(v) >= 0.9 else f"{v:.4g}"
    return f"{v:.3e}"


@dataclass
class OutputParity:
    name: str
    shape: list[int]
    dtype: str
    kind: str  # "classification", "segmentation", "labels" (int label map), "tensor"
    metrics: dict[str, float] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": self.shape, "dtype": self.dtype, "kind": self.kind, "passed": self.passed,
                "metrics": self.metrics, "checks": [asdict(c) for c in self.checks]}


@dataclass
class ParityReport:
    precision: str
    task: str
    outputs: list[OutputParity] = field(default_factory=list)
    tolerances: dict[str, Tolerances] = field(default_factory=dict)
    status: str = "passed"  # passed | failed | skipped
    reason: str | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def skipped(self) -> bool:
        return self.status == "skipped"

    @classmethod
    def skip(cls, reason: str, *, precision: str = "fp32", task: str = "") -> "ParityReport":
        return cls(precision=precision, task=task, status="skipped", reason=reason)

    def failures(self) -> list[tuple[str, Check]]:
        return [(o.name, c) for o in self.outputs for c in o.checks if not c.passed]

    def summary_line(self) -> str:
        if self.status == "skipped":
            return f"skipped: {self.reason}"
        if self.reason and not self.outputs:
            return f"failed: {self.reason}"
        bad = self.failures()
        if not bad:
            worst = max((o.metrics.get("max_rel", 0.0) for o in self.outputs), default=0.0)
            return f"passed (max error {_fmt(worst)} of output scale)"
        return "failed: " + "; ".join(f"{name}: {c.describe()}" for name, c in bad[:4])

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "precision": self.precision,
            "task": self.task,
            "summary": self.summary_line(),
            "outputs": [o.as_dict() for o in self.outputs],
            "tolerances": {k: asdict(v) for k, v in self.tolerances.items()},
        }


def _kind(ref: np.ndarray, task: str) -> str:
    integer = np.issubdtype(ref.dtype, np.integer)
    if task == "segmentation":
        if integer and ref.ndim in (3, 4):
            return "labels"
        if not integer and ref.ndim == 4 and ref.shape[1] > 1:
            return "segmentation"
    if task == "classification" and not integer and ref.ndim == 2 and ref.shape[1] > 1:
        return "classification"
    return "labels" if integer else "tensor"


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def mask_agreement(ref_mask: np.ndarray, cand_mask: np.ndarray) -> tuple[float, float]:
    """(pixel agreement, mIoU over the classes present in either mask)."""
    r, c = ref_mask.ravel().astype(np.int64), cand_mask.ravel().astype(np.int64)
    agreement = float(np.mean(r == c)) if r.size else 1.0
    classes = np.union1d(np.unique(r), np.unique(c))
    lo = int(classes.min()) if classes.size else 0
    r, c = r - lo, c - lo
    n = int(classes.max()) - lo + 1 if classes.size else 1
    inter = np.bincount(r[r == c], minlength=n).astype(np.float64)
    union = np.bincount(r, minlength=n) + np.bincount(c, minlength=n) - inter
    present = union > 0
    miou = float(np.mean(inter[present] / union[present])) if present.any() else 1.0
    return agreement, miou


def topk_agreement(ref: np.ndarray, cand: np.ndarray, k: int = 5, tie_margin: float = 0.0) -> tuple[float, float]:
    """(top-1 agreement, mean overlap of the top-k sets) over the samples (rows).

    A sample whose candidate top-1 class scores, in the reference, within `tie_margin` of the
    reference's best agrees: when the tolerance lets every logit move by that much, the reference
    itself does not decide between those classes (int8 on one noise input: top-1 of near-tied
    logits flips between two correct int8 kernels, x86 vs Arm)."""
    k = min(k, ref.shape[1])
    picked = np.take_along_axis(ref, cand.argmax(1)[:, None], axis=1)[:, 0]
    top1 = float(np.mean((ref.argmax(1) == cand.argmax(1)) | (picked >= ref.max(1) - tie_margin)))
    rk = np.argsort(-ref, axis=1, kind="stable")[:, :k]
    ck = np.argsort(-cand, axis=1, kind="stable")[:, :k]
    overlap = [len(set(a) & set(b)) / k for a, b in zip(rk, ck)]
    return top1, float(np.mean(overlap))


def _ge(metric: str, value: float, threshold: float, field_name: str) -> Check:
    ok = bool(np.isfinite(value) and value >= threshold)
    return Check(metric, value, threshold, ok, ">=", needed=value if np.isfinite(value) else None, tolerance=field_name)


def _compare_one(name: str, ref: np.ndarray, cand: np.ndarray, task: str, tol: Tolerances) -> OutputParity:
    kind = _kind(ref, task)
    out = OutputParity(name=name, shape=list(cand.shape), dtype=str(cand.dtype), kind=kind)
    if ref.shape != cand.shape:
        out.checks.append(Check("shape", float("nan"), float("nan"), False, "=="))
        out.metrics["reference_shape"] = list(ref.shape)  # type: ignore[assignment]
        return out
    if kind == "labels":
        agree, miou = mask_agreement(ref, cand)
        out.metrics.update(pixel_agreement=agree, miou=miou)
        out.checks += [_ge("pixel_agreement", agree, tol.min_pixel_agreement, "min_pixel_agreement"),
                       _ge("miou", miou, tol.min_miou, "min_miou")]
        return out

    r64, c64 = ref.astype(np.float64).ravel(), cand.astype(np.float64).ravel()
    bad_ref, bad_cand = int((~np.isfinite(r64)).sum()), int((~np.isfinite(c64)).sum())
    out.metrics.update(nonfinite_reference=bad_ref, nonfinite_candidate=bad_cand)
    out.checks.append(Check("nan_inf", float(bad_ref + bad_cand), 0.0, bad_ref + bad_cand == 0, "<="))
    if bad_ref or bad_cand:
        return out
    diff = np.abs(c64 - r64)
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(r64).max()) if r64.size else 0.0
    scale = scale if scale > 0 else 1.0
    max_rel = max_abs / scale
    cos = _cosine(r64, c64)
    out.metrics.update(max_abs=max_abs, max_rel=max_rel, scale=scale, mean_abs=float(diff.mean()) if diff.size else 0.0, cosine=cos)
    allowed = tol.atol + tol.rtol * scale
    out.checks.append(Check("max_rel", max_rel, tol.rtol + tol.atol / scale, max_abs <= allowed, "<=",
                            needed=max(0.0, max_abs - tol.atol) / scale, tolerance="rtol"))
    out.checks.append(_ge("cosine", cos, tol.min_cosine, "min_cosine"))
    if kind == "classification":
        t1, t5 = topk_agreement(ref.astype(np.float64), cand.astype(np.float64), tie_margin=allowed)
        out.metrics.update(top1_agreement=t1, top5_agreement=t5)
        out.checks += [_ge("top1_agreement", t1, tol.min_top1, "min_top1"), _ge("top5_agreement", t5, tol.min_top5, "min_top5")]
    elif kind == "segmentation":
        agree, miou = mask_agreement(ref.argmax(1), cand.argmax(1))
        out.metrics.update(pixel_agreement=agree, miou=miou)
        out.checks += [_ge("pixel_agreement", agree, tol.min_pixel_agreement, "min_pixel_agreement"),
                       _ge("miou", miou, tol.min_miou, "min_miou")]
    return out


def compare_outputs(reference: list[np.ndarray], candidate: list[np.ndarray], *, task: str, precision: str,
                    tolerances: Any = None, names: Sequence[str] | None = None) -> ParityReport:
    """Compare per output (arrays batch-first; stack samples along axis 0 to pool them).

    `tolerances`: None (defaults for `precision`), a `Tolerances`, or overrides as a dict:
    {"rtol": 1e-3} for every output, {"logits": {"min_miou": 0.95}} for one.
    """
    names = list(names) if names is not None else ([f"output_{i}" for i in range(len(reference))] if len(reference) != 1 else ["output"])
    if len(names) != len(reference):
        raise EdgesegError(f"{len(names)} output names for {len(reference)} reference outputs", "pass one name per output")
    tols = resolve_tolerances(precision, tolerances, names)
    report = ParityReport(precision=precision, task=task, tolerances=tols)
    if len(candidate) != len(reference):
        report.status = "failed"
        report.reason = f"the candidate gives {len(candidate)} outputs, the reference {len(reference)}"
        return report
    for name, r, c in zip(names, reference, candidate):
        report.outputs.append(_compare_one(name, np.asarray(r), np.asarray(c), task, tols[name]))
    report.status = "passed" if all(o.passed for o in report.outputs) else "failed"
    return report
