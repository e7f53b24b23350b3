"""fp16 preflight on Linux: predict the drift of an fp16 Core ML model before any Mac sees it.

Default method `emulate`: weights and the input are rounded to fp16, and every torch op's
floating output is rounded to fp16 as it is produced (a TorchFunctionMode), while the
arithmetic inside an op runs in fp32. That is fp16 storage everywhere, as in an fp16 ML
program, at fp32 kernel speed; a value beyond the fp16 range becomes inf, as it would on
device. Method `half` runs `model.half()` with PyTorch's CPU fp16 kernels instead (slower,
same storage semantics). The Neural Engine's internal accumulation differs from both, so the
figures are a prediction, not a measurement. Inputs: the bundled natural images,
preprocessed with the model's mean/std, and random ones.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from edgeseg.compare import default_tolerances
from edgeseg.images import Preprocess, bundled_images

FP16_MAX = 65504.0
METHODS = ("emulate", "half")


def preflight_inputs(size, mean, std, random_samples: int = 1, seed: int = 0, images: bool = True,
                     channel_order: str = "rgb") -> tuple[list[str], np.ndarray]:
    names, arrays = [], []
    if images:
        pre = Preprocess(tuple(size), tuple(mean), tuple(std), channel_order=channel_order)
        for p in bundled_images():
            names.append(p.stem)
            arrays.append(pre.load(p))
    rng = np.random.default_rng(seed)
    for i in range(random_samples):
        names.append(f"random{i}(seed={seed})")
        arrays.append(rng.standard_normal((3, *size)).astype(np.float32))
    return names, np.stack(arrays)


def _tensors(out) -> list:
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    return [out.logits] if hasattr(out, "logits") else []


def _fp16_mode():
    import torch
    from torch.overrides import TorchFunctionMode

    def round16(v):
        if isinstance(v, torch.Tensor):
            return v.to(torch.float16).to(torch.float32) if v.dtype == torch.float32 else v
        if isinstance(v, list):
            return [round16(x) for x in v]
        if isinstance(v, tuple) and not isinstance(v, torch.Size):
            vals = [round16(x) for x in v]
            if hasattr(v, "_fields"):  # namedtuple
                return type(v)(*vals)
            try:
                return type(v)(vals)  # tuple, torch.return_types structseqs
            except TypeError:
                return tuple(vals)
        return v

    def finite(v) -> bool:
        return not (isinstance(v, torch.Tensor) and v.is_floating_point() and v.numel() and not bool(torch.isfinite(v).all()))

    class Fp16Storage(TorchFunctionMode):
        """Rounds every op's float32 output to fp16 precision (and range: overflow -> inf), and
        remembers the first op that turned finite inputs into inf/NaN, with its module."""

        def __init__(self):
            super().__init__()
            self.modules: list[str] = []
            self.first_overflow: dict | None = None

        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = round16(func(*args, **(kwargs or {})))
            if self.first_overflow is None and not finite(out) and all(finite(a) for a in args):
                self.first_overflow = {"module": self.modules[-1] if self.modules else "<model>",
                                       "op": getattr(func, "__name__", str(func))}
            return out

    return Fp16Storage()


def _run_fp16(model, x, method: str) -> tuple[list, dict | None]:
    """fp16 outputs, and (emulation only) where the first inf/NaN appeared."""
    import torch

    if method == "half":
        return [t.float() for t in _tensors(copy.deepcopy(model).half().eval()(x.half()))], None
    emu = copy.deepcopy(model).eval()
    for t in list(emu.parameters()) + list(emu.buffers()):
        if t.dtype == torch.float32:
            t.data = t.data.to(torch.float16).to(torch.float32)
    mode = _fp16_mode()
    def enter(name):
        def pre(_m, _i) -> None:
            mode.modules.append(name)
        return pre

    def leave(_m, _i, _o) -> None:  # returning None keeps the module's output
        mode.modules.pop()

    hooks = []
    for name, mod in emu.named_modules():
        if name:
            hooks.append(mod.register_forward_pre_hook(enter(name)))
            hooks.append(mod.register_forward_hook(leave))
    try:
        with mode:
            outs = [t.float() for t in _tensors(emu(x.to(torch.float16).to(torch.float32)))]
    finally:
        for h in hooks:
            h.remove()
    return outs, mode.first_overflow


def _with_peaks(model, x) -> tuple[list, dict[str, float]]:
    """fp32 reference outputs, and the largest |activation| per leaf module (fp16 overflow)."""
    import torch

    peaks: dict[str, float] = {}
    hooks = []

    def hook(name):
        def fn(_m, _i, out):
            for t in _tensors(out):
                if t.is_floating_point() and t.numel():
                    peaks[name] = max(peaks.get(name, 0.0), float(t.detach().abs().max()))
        return fn

    for name, mod in model.named_modules():
        if name and not list(mod.children()):
            hooks.append(mod.register_forward_hook(hook(name)))
    try:
        outs = [t.float() for t in _tensors(model(x))]
    finally:
        for h in hooks:
            h.remove()
    return outs, peaks


def fp16_preflight(model, *, input_size: tuple[int, int], task: str, mean, std, random_samples: int = 1, seed: int = 0,
                   images: bool = True, method: str = "emulate", channel_order: str = "rgb") -> dict[str, Any]:
    """Worst-case fp16-vs-fp32 figures over the inputs (per sample for the task metric)."""
    import torch

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}")
    names, batch = preflight_inputs(input_size, mean, std, random_samples, seed, images, channel_order)
    x = torch.from_numpy(batch)
    with torch.no_grad():
        refs, peaks = _with_peaks(model, x)
        gots, first_overflow = _run_fp16(model, x, method)
    result: dict[str, Any] = {"method": method, "samples": names, "nonfinite": False}
    max_abs = max_rel = 0.0
    min_cos = 1.0
    bad = total = 0
    for ref, got in zip(refs, gots):
        finite = torch.isfinite(got)
        bad, total = bad + int((~finite).sum()), total + finite.numel()
        diff = (ref - got).abs()
        per_sample_scale = ref.flatten(1).abs().amax(1).clamp_min(1e-12)
        max_abs = max(max_abs, float(diff.max()))
        max_rel = max(max_rel, float((diff.flatten(1).amax(1) / per_sample_scale).max()))
        cos = torch.nn.functional.cosine_similarity(ref.flatten(1).double(), got.flatten(1).double(), dim=1)
        min_cos = min(min_cos, float(cos.min()))
    metric = "top1_agreement" if task == "classification" else "pixel_agreement"
    if bad:
        # inf/NaN outputs: error figures are meaningless; say how much of the output is lost
        result.update(nonfinite=True, nonfinite_fraction=bad / total, max_abs=None, max_rel=None, min_cosine=None,
                      first_overflow=first_overflow)
        result[metric] = None
    else:
        result.update(max_abs=max_abs, max_rel=max_rel, min_cosine=min_cos)
    ref, got = refs[0], gots[0]
    if not bad and ref.dim() >= 2 and ref.is_floating_point():
        agree = (ref.argmax(1) == got.argmax(1)).reshape(ref.shape[0], -1).float().mean(1)
        result[metric] = float(agree.min())
        result[f"mean_{metric}"] = float(agree.mean())
    over = sorted(((k, v) for k, v in peaks.items() if v > FP16_MAX), key=lambda kv: -kv[1])
    result["overflow_modules"] = [{"module": k, "max_abs": v} for k, v in over[:10]]
    result["peak_activation"] = max(peaks.values()) if peaks else 0.0
    result["predicted_gate"] = predicted_gate(result, task)
    return result


def predicted_gate(result: dict[str, Any], task: str) -> str:
    """Would these figures pass the fp16 parity gate (edgeseg.compare's defaults)?"""
    tol = default_tolerances("fp16")
    fails = []
    if result["nonfinite"]:
        return f"fail: {result['nonfinite_fraction']:.1%} of the outputs are inf/NaN (fp16 overflow)"
    if result["max_rel"] > tol.rtol:
        fails.append(f"max_rel {result['max_rel']:.2e} > {tol.rtol:g}")
    if result["min_cosine"] < tol.min_cosine:
        fails.append(f"cosine {result['min_cosine']:.5f} < {tol.min_cosine:g}")
    key, need = ("top1_agreement", tol.min_top1) if task == "classification" else ("pixel_agreement", tol.min_pixel_agreement)
    if result.get(key) is not None and result[key] < need:
        fails.append(f"{key} {result[key]:.4f} < {need:g}")
    return "pass" if not fails else "fail: " + "; ".join(fails)
