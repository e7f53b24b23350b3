"""Per-layer roofline latency model: an estimate where no device is attached.

The fused PyTorch model is traced once at the requested size (on the meta device, so a
1024x1024 segmentation model costs no memory); every aten op becomes a layer with its
FLOPs (torch's own FLOP formulas) and the bytes it moves (inputs, weights and outputs at the
target precision). A layer takes

    max(FLOPs / compute ceiling, bytes / bandwidth ceiling) + fixed per-layer overhead

and the model takes the sum. Runtimes that fuse activations, residual adds and
normalisations into the producing layer (TensorRT, Core ML, ONNX Runtime) are modelled
by merging such pointwise ops into the previous layer: no extra overhead, and only their
extra operands are read. Eager PyTorch runs every op as its own layer.

It is a model, not a measurement: results are always labelled "predicted".
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

from edgeseg.api import reparameterize
from edgeseg.bench.calibrate import calibrate_host
from edgeseg.bench.result import BenchResult
from edgeseg.bench.subject import resolve_subject
from edgeseg.devices import Ceiling, DeviceProfile, detect_host, get_profile
from edgeseg.errors import EdgesegError

_FREE = {
    "view", "_unsafe_view", "reshape", "_reshape_alias", "t", "transpose", "permute", "expand", "unsqueeze", "squeeze",
    "select", "slice", "alias", "detach", "as_strided", "split", "split_with_sizes", "unbind", "chunk", "flatten",
    "unflatten", "lift_fresh", "empty", "zeros", "ones", "full", "arange", "scalar_tensor", "zeros_like", "ones_like",
    "empty_like", "full_like", "lift_fresh_copy", "_to_copy", "sym_size", "sym_stride", "numpy_T", "view_as", "expand_as",
    "unsafe_split", "narrow", "movedim", "diagonal", "_local_scalar_dense", "item", "is_same_size", "dim", "size",
}
_POINTWISE = {
    "relu", "relu_", "relu6", "gelu", "gelu_", "silu", "silu_", "sigmoid", "sigmoid_", "hardswish", "hardswish_",
    "hardsigmoid", "hardsigmoid_", "hardtanh", "hardtanh_", "clamp", "clamp_", "clamp_min", "clamp_max", "add", "add_",
    "mul", "mul_", "sub", "sub_", "div", "div_", "neg", "tanh", "tanh_", "elu", "elu_", "leaky_relu", "leaky_relu_",
    "pow", "sqrt", "rsqrt", "exp", "erf", "abs", "minimum", "maximum", "where", "reciprocal", "mish", "softplus",
    "_native_batch_norm_legit_no_training", "native_batch_norm", "batch_norm", "_native_batch_norm_legit",
    "copy_", "fill_", "masked_fill", "addcmul", "lerp",
}
_KIND = {
    "convolution": "conv", "_convolution": "conv", "conv2d": "conv", "mm": "matmul", "addmm": "matmul", "bmm": "matmul",
    "baddbmm": "matmul", "matmul": "matmul", "_scaled_dot_product_flash_attention_for_cpu": "attention",
    "_scaled_dot_product_efficient_attention": "attention", "_scaled_dot_product_flash_attention": "attention",
    "scaled_dot_product_attention": "attention", "native_layer_norm": "norm", "layer_norm": "norm",
    "native_group_norm": "norm", "group_norm": "norm", "_softmax": "softmax", "softmax": "softmax",
    "avg_pool2d": "pool", "max_pool2d": "pool", "max_pool2d_with_indices": "pool", "adaptive_avg_pool2d": "pool",
    "_adaptive_avg_pool2d": "pool", "mean": "pool", "sum": "pool", "upsample_bilinear2d": "resize",
    "upsample_nearest2d": "resize", "_upsample_bilinear2d_aa": "resize", "cat": "copy", "clone": "copy",
    "constant_pad_nd": "copy", "roll": "copy", "index": "copy", "gather": "copy", "stack": "copy",
}
_PER_ELEMENT_FLOPS = {"norm": 5, "softmax": 5, "pool": 1, "resize": 4, "copy": 0, "pointwise": 1, "other": 1}


@dataclass
class LayerTrace:
    """One runtime layer: work in FLOPs and traffic in elements (float) plus fixed bytes."""

    name: str
    op: str
    kind: str
    flops: float = 0.0
    float_elems: float = 0.0
    other_bytes: float = 0.0
    fused: list[str] = field(default_factory=list)

    def bytes(self, elem_bytes: float) -> float:
        return self.float_elems * elem_bytes + self.other_bytes


@dataclass
class LayerEstimate:
    name: str
    op: str
    kind: str
    flops: float
    bytes: float
    compute_ms: float
    memory_ms: float
    overhead_ms: float
    ms: float
    bound: str  # compute | memory | overhead


@dataclass
class LatencyPrediction:
    device: str
    precision: str
    runtime: str
    input_size: tuple[int, int]
    batch: int
    total_ms: float
    compute_ms: float
    memory_ms: float
    overhead_ms: float
    flops: float
    bytes: float
    n_layers: int
    ceiling: dict[str, Any]
    fuse_pointwise: bool
    calibration: str | None
    layers: list[LayerEstimate] = field(default_factory=list)
    label: str = "predicted"

    def as_dict(self, top: int = 10) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        heavy = sorted(self.layers, key=lambda layer: layer.ms, reverse=True)[:top]
        d["layers"] = [asdict(layer) for layer in heavy]
        d["bound_share"] = self.bound_share()
        return d

    def bound_share(self) -> dict[str, float]:
        share: dict[str, float] = {}
        for layer in self.layers:
            share[layer.bound] = share.get(layer.bound, 0.0) + layer.ms
        return {k: v / self.total_ms for k, v in share.items()} if self.total_ms > 0 else {}


def _elem_bytes(precision: str) -> float:
    return {"fp32": 4.0, "fp16": 2.0, "int8": 1.0}[precision]


def _tensors(obj) -> list:
    import torch
    from torch.utils._pytree import tree_flatten

    leaves, _ = tree_flatten(obj)
    return [x for x in leaves if isinstance(x, torch.Tensor)]


def _traffic(tensors) -> tuple[float, float]:
    float_elems, other = 0.0, 0.0
    seen = set()
    for t in tensors:
        if id(t) in seen:
            continue
        seen.add(id(t))
        if t.is_floating_point():
            float_elems += t.numel()
        else:
            other += t.numel() * t.element_size()
    return float_elems, other


def trace_layers(model, input_size: tuple[int, int], *, batch: int = 1, channels: int = 3,
                 fuse_pointwise: bool = True) -> list[LayerTrace]:
    """Trace `model` once at `input_size` and return its runtime layers in execution order."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    layers: list[LayerTrace] = []
    last_out: dict[int, Any] = {}  # tensors written by the most recent layer (kept alive so ids stay unique)
    module_stack: list[str] = []

    def pre_hook(name):
        def hook(mod, args):
            module_stack.append(name)
        return hook

    def post_hook(mod, args, out):
        if module_stack:
            module_stack.pop()

    class Tracer(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            name = func.overloadpacket.__name__
            ins, outs = _tensors((args, kwargs)), _tensors(out)
            if name in _FREE:
                if any(id(t) in last_out for t in ins):
                    for t in outs:
                        last_out[id(t)] = t
                return out
            where = module_stack[-1] if module_stack else "model"
            if name in _POINTWISE:
                kind = "pointwise"
            else:
                kind = _KIND.get(name, "other")
            if kind == "pointwise" and fuse_pointwise and layers and any(id(t) in last_out for t in ins):
                layer = layers[-1]
                extra = [t for t in ins if id(t) not in last_out]
                fe, ob = _traffic(extra)
                layer.float_elems += fe
                layer.other_bytes += ob
                layer.flops += sum(t.numel() for t in outs)
                layer.fused.append(name)
                for t in outs:
                    last_out[id(t)] = t
                return out
            packet = func.overloadpacket
            if packet in flop_registry:
                try:
                    flops = float(flop_registry[packet](*args, **kwargs, out_val=out))
                except Exception:  # noqa: BLE001 - a formula that cannot read these args: count per element
                    flops = float(sum(t.numel() for t in outs))
            else:
                flops = float(sum(t.numel() for t in outs)) * _PER_ELEMENT_FLOPS.get(kind, 1)
            fe_in, ob_in = _traffic(ins)
            fe_out, ob_out = _traffic(outs)
            layers.append(LayerTrace(name=where, op=name, kind=kind, flops=flops, float_elems=fe_in + fe_out,
                                     other_bytes=ob_in + ob_out))
            last_out.clear()
            for t in outs:
                last_out[id(t)] = t
            return out

    def run(m, device: str):
        handles = []
        for qual, mod in m.named_modules():
            handles.append(mod.register_forward_pre_hook(pre_hook(qual or "model")))
            handles.append(mod.register_forward_hook(post_hook))
        x = torch.zeros(batch, channels, *input_size, device=device)
        try:
            with torch.no_grad(), Tracer():
                m(x)
        finally:
            for h in handles:
                h.remove()

    try:
        meta_model = copy.deepcopy(model).to("meta")
        run(meta_model, "meta")
    except (NotImplementedError, RuntimeError):
        # Some ops have no meta kernel: trace on the CPU instead (costs real compute once).
        layers.clear()
        last_out.clear()
        module_stack.clear()
        run(model, "cpu")
    if not layers:
        raise EdgesegError("the model ran no measurable layers", "check that its forward does any work")
    return layers


def estimate(layers: list[LayerTrace], ceiling, precision: str, runtime: str | None = None) -> list[LayerEstimate]:
    eb = _elem_bytes(precision)
    overhead_ms = ceiling.overhead_us(runtime) / 1000.0
    out = []
    for layer in layers:
        b = layer.bytes(eb)
        c_ms = layer.flops / (ceiling.gflops * 1e9) * 1000.0
        m_ms = b / (ceiling.gbps * 1e9) * 1000.0
        work = max(c_ms, m_ms)
        bound = "overhead" if overhead_ms > work else ("compute" if c_ms >= m_ms else "memory")
        name = layer.name + (f" ({layer.op}+{'+'.join(layer.fused)})" if layer.fused else f" ({layer.op})")
        out.append(LayerEstimate(name=name, op=layer.op, kind=layer.kind, flops=layer.flops, bytes=b, compute_ms=c_ms,
                                 memory_ms=m_ms, overhead_ms=overhead_ms, ms=work + overhead_ms, bound=bound))
    return out


def _runtime_fuses(profile, runtime: str | None) -> bool:
    if runtime == "pytorch":
        return False
    return profile.latency_model.fuse_pointwise


def predict_model_latency(model, device="host-cpu", *, precision: str | None = None, input_size: tuple[int, int] | None = None,
                          batch: int = 1, runtime: str | None = None, fuse_pointwise: bool | None = None,
                          layers: list[LayerTrace] | None = None) -> LatencyPrediction:
    """Predicted latency of `model` (a torch module as given, ideally fused) on a device profile.

    `device` is a profile name or a DeviceProfile; `runtime` picks the per-runtime layer
    overhead where the profile has one ("pytorch" also turns pointwise fusion off, as eager
    runs every op). Pass `layers` from `trace_layers` to reuse a trace across devices.
    """
    profile = device if isinstance(device, DeviceProfile) else get_profile(device)
    if profile.detect and not profile.ceilings:
        calibrate_host(profile.threads)
        profile = detect_host(profile)
    precision = precision or profile.default_precision
    ceiling = profile.ceiling(precision)
    runtime = runtime or profile.runtime
    fuse = _runtime_fuses(profile, runtime) if fuse_pointwise is None else fuse_pointwise
    info = getattr(model, "edgeseg", None)
    size = tuple(input_size or (info.fixed_input_size or info.input_size if info else (224, 224)))
    traced = layers if layers is not None else trace_layers(model, size, batch=batch, fuse_pointwise=fuse)
    est = estimate(traced, ceiling, precision, runtime)
    return LatencyPrediction(
        device=profile.name, precision=precision, runtime=runtime, input_size=size, batch=batch,
        total_ms=sum(e.ms for e in est), compute_ms=sum(e.compute_ms for e in est), memory_ms=sum(e.memory_ms for e in est),
        overhead_ms=sum(e.overhead_ms for e in est), flops=sum(e.flops for e in est), bytes=sum(e.bytes for e in est),
        n_layers=len(est), ceiling=ceiling.model_dump(), fuse_pointwise=fuse, calibration=profile.latency_model.calibration,
        layers=est,
    )


@dataclass
class CeilingFit:
    ceiling: Any  # edgeseg.devices.Ceiling
    mean_abs_rel_error: float
    rel_errors: list[float]


def fit_ceiling(traces: list[list[LayerTrace]], measured_ms: list[float], precision: str, *, start, span: float = 100.0,
                points: int = 41) -> CeilingFit:
    """Fit compute, bandwidth and per-layer overhead so the model reproduces measured latencies.

    A log-spaced grid search (then a finer one around the best point) minimising the mean
    squared log error: robust, dependency-free, and it never wanders to negative ceilings.
    `start` (a Ceiling) centres the grid; `span` is how far each ceiling may move (x/÷).
    """
    import numpy as np

    if len(traces) != len(measured_ms) or not traces:
        raise EdgesegError("fit_ceiling needs one measured latency per trace", "pass matching lists")
    eb = _elem_bytes(precision)
    flops = [np.array([layer.flops for layer in t]) for t in traces]
    nbytes = [np.array([layer.bytes(eb) for layer in t]) for t in traces]
    counts = np.array([len(t) for t in traces], dtype=float)
    meas = np.asarray(measured_ms, dtype=float)

    def search(g_grid, b_grid, o_grid):
        best = (np.inf, None)
        for g in g_grid:
            for b in b_grid:
                s = np.array([np.maximum(f / (g * 1e9), nb / (b * 1e9)).sum() * 1e3 for f, nb in zip(flops, nbytes)])
                pred = s[None, :] + counts[None, :] * o_grid[:, None] / 1e3
                err = np.mean(np.log(pred / meas[None, :]) ** 2, axis=1)
                i = int(np.argmin(err))
                if err[i] < best[0]:
                    best = (float(err[i]), (float(g), float(b), float(o_grid[i])))
        return best[1]

    o0 = max(start.layer_overhead_us, 1.0)
    g, b, o = search(start.gflops * np.geomspace(1 / span, span, points), start.gbps * np.geomspace(1 / span, span, points),
                     np.concatenate([[0.0], o0 * np.geomspace(1 / span, span, points)]))
    step = span ** (2.0 / (points - 1))
    fine = np.geomspace(1 / step, step, 21)
    g, b, o = search(g * fine, b * fine, np.concatenate([[0.0], max(o, 1e-3) * fine]))
    ceiling = Ceiling(gflops=g, gbps=b, layer_overhead_us=o)
    pred = [sum(e.ms for e in estimate(t, ceiling, precision)) for t in traces]
    rel = [(p - m) / m for p, m in zip(pred, meas)]
    return CeilingFit(ceiling=ceiling, mean_abs_rel_error=float(np.mean(np.abs(rel))), rel_errors=rel)


def predict_latency(target, device: str = "host-cpu", *, precision: str | None = None, input_size: tuple[int, int] | None = None,
                    batch: int = 1, arch: str | None = None, runtime: str | None = None, threads: int | None = None):
    """Roofline estimate for a target (model object, checkpoint, artifact with a manifest, or model name),
    reparameterized first as it would be deployed.

    Returns a LatencyPrediction (`.total_ms`, `.as_dict()`), always labelled predicted.
    """
    if hasattr(target, "forward"):
        model = target
        if not getattr(getattr(model, "edgeseg", None), "fused", True):
            model, _ = reparameterize(model, verify=False)
    else:
        subject = resolve_subject(target, arch, weights=False)
        subject.ensure_model()
        model = subject.fused()
    profile = get_profile(device, threads=threads) if isinstance(device, str) else device
    return predict_model_latency(model, profile, precision=precision, input_size=input_size, batch=batch, runtime=runtime)


def predict_result(subject, profile, precision: str, size, batch: int):
    """The bench result of a prediction (what `edgeseg bench` records where no device is attached)."""
    subject.ensure_model()
    pred = predict_model_latency(subject.fused(), profile, precision=precision, input_size=size, batch=batch)
    return BenchResult(model=subject.name, device=profile.name, backend="predicted", input_size=size, precision=precision,
                       stats=None, batch=batch, fused=True, predicted=True, predicted_ms=pred.total_ms,
                       runtime_version="roofline-1", artifact=str(subject.path) if subject.path else None,
                       artifact_sha256=subject.sha256, artifact_kind=subject.kind,
                       settings={"runtime": pred.runtime, "fuse_pointwise": pred.fuse_pointwise},
                       extra={"prediction": {**pred.as_dict(top=8), **error_band(profile)}})


def error_band(profile) -> dict:
    """The latency model's measured error on this device, shown with every prediction."""
    lm = profile.latency_model
    if lm.error_pct is None:
        return {"error_pct": None, "error_source": "not measured for this device: treat the number as an order of magnitude"}
    return {"error_pct": lm.error_pct, "error_source": lm.error_source}
