"""Which LayerNorm and Softmax layers must stay fp32 in an fp16/int8 TensorRT engine.

fp16 tops out at 65504. A LayerNorm computes the mean of squared deviations, so an input
deviation beyond ~256 already overflows its variance; a softmax overflows when its scores do.
We find these regions in the ONNX graph (LayerNormalization / Softmax ops, and LayerNorm as
opset < 17 exporters decompose it: ReduceMean -> Sub -> Pow(2) -> ReduceMean -> Add -> Sqrt ->
Div), measure the values that would overflow with ONNX Runtime in fp32 on real inputs, and
keep a region in fp32 when its peak exceeds `headroom * 65504`. Policy `all` keeps every
region in fp32, `none` none. The result feeds per-layer precision in the builder (with
OBEY_PRECISION_CONSTRAINTS) or trtexec's --layerPrecisions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.exporters.onnx.runner import ort_session

FP16_MAX = 65504.0
POLICIES = ("auto", "all", "none")


@dataclass
class Region:
    kind: str  # layernorm | softmax
    nodes: list[str]  # ONNX node names (TensorRT names parsed layers after them)
    outputs: list[str]  # tensors produced inside the region
    probes: list[str]  # tensors whose magnitude decides overflow
    squared: bool = False  # probe is the LayerNorm input: its square is what overflows
    peak: float | None = None
    keep_fp32: bool = False
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PrecisionPlan:
    policy: str
    headroom: float
    regions: list[Region] = field(default_factory=list)

    @property
    def fp32_regions(self) -> list[Region]:
        return [r for r in self.regions if r.keep_fp32]

    @property
    def fp32_nodes(self) -> list[str]:
        return [n for r in self.fp32_regions for n in r.nodes]

    @property
    def fp32_tensors(self) -> list[str]:
        return [t for r in self.fp32_regions for t in r.outputs]

    def as_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "headroom": self.headroom, "regions": len(self.regions),
                "fp32_regions": [r.as_dict() for r in self.fp32_regions],
                "peaks": {r.nodes[0]: r.peak for r in self.regions}}


def _names(graph) -> None:
    """Give unnamed nodes stable names: layer names must be addressable."""
    for i, node in enumerate(graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"


def _const_value(graph, name: str) -> np.ndarray | None:
    from onnx import numpy_helper

    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            for a in node.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
    return None


def find_regions(model) -> list[Region]:
    """LayerNorm (fused op or decomposed) and Softmax regions of `model` (names nodes in place)."""
    graph = model.graph
    _names(graph)
    producer = {out: n for n in graph.node for out in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    regions: list[Region] = []
    for node in graph.node:
        if node.op_type == "LayerNormalization":
            regions.append(Region("layernorm", [node.name], list(node.output[:1]), [node.input[0]], squared=True))
        elif node.op_type == "Softmax":
            regions.append(Region("softmax", [node.name], list(node.output), [node.input[0]]))
        elif node.op_type == "Pow":
            exp = _const_value(graph, node.input[1]) if len(node.input) > 1 else None
            sub = producer.get(node.input[0])
            if exp is None or exp.size != 1 or float(exp.reshape(-1)[0]) != 2.0 or sub is None or sub.op_type != "Sub":
                continue
            mean = producer.get(sub.input[1])
            if mean is None or mean.op_type != "ReduceMean" or mean.input[0] != sub.input[0]:
                continue
            chain = [mean, sub, node]
            cur = node
            for op in ("ReduceMean", "Add", "Sqrt", "Div"):
                nxt = [c for c in consumers.get(cur.output[0], []) if c.op_type == op]
                if not nxt:
                    break
                cur = nxt[0]
                if op == "Div" and cur.input[0] != sub.output[0]:
                    break
                chain.append(cur)
            for op in ("Mul", "Add"):  # the affine part, when its parameter is a constant
                nxt = [c for c in consumers.get(cur.output[0], []) if c.op_type == op]
                if len(nxt) != 1 or not any(_const_value(graph, i) is not None for i in nxt[0].input if i != cur.output[0]):
                    break
                cur = nxt[0]
                chain.append(cur)
            regions.append(Region("layernorm", [n.name for n in chain], [o for n in chain for o in n.output],
                                  [node.output[0]] + [chain[3].output[0]] if len(chain) > 3 else [node.output[0]]))
    return regions


def measure_peaks(model, inputs: dict[str, np.ndarray], tensors: list[str]) -> dict[str, float]:
    """max |value| of each named intermediate tensor, in fp32 with ONNX Runtime."""
    import copy

    import onnx

    if not tensors:
        return {}
    probe = copy.deepcopy(model)
    have = {o.name for o in probe.graph.output}
    for name in dict.fromkeys(tensors):
        if name not in have:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    # no graph fusion: the tensors we ask for must exist as computed, not folded away
    sess = ort_session(probe, optimization="none", log_level=3)
    names = [o.name for o in sess.get_outputs()]
    values = sess.run(None, inputs)
    out = {}
    for name, v in zip(names, values):
        if name in tensors:
            v = np.asarray(v, dtype=np.float64)
            out[name] = float(np.abs(v).max()) if v.size else 0.0
    return out


def plan_precision(model, inputs, policy: str = "auto", headroom: float = 0.5) -> PrecisionPlan:
    """Decide which regions stay fp32. `inputs` (one feed {name: array}, or a list of feeds:
    the worst case over them counts) are needed for policy `auto`."""
    if policy not in POLICIES:
        raise EdgesegError(f"unknown fp32-layer policy {policy!r}", f"use one of: {', '.join(POLICIES)}")
    regions = find_regions(model)
    plan = PrecisionPlan(policy, headroom, regions)
    if policy == "none" or not regions:
        return plan
    if policy == "all":
        for r in regions:
            r.keep_fp32, r.reason = True, "policy: all LayerNorm/Softmax in fp32"
        return plan
    feeds = inputs if isinstance(inputs, (list, tuple)) else [inputs or {}]
    peaks: dict[str, float] = {}
    for feed in feeds:
        for name, v in measure_peaks(model, feed, [p for r in regions for p in r.probes]).items():
            peaks[name] = max(peaks.get(name, 0.0), v)
    limit = FP16_MAX * headroom
    for r in regions:
        vals = [peaks.get(p, 0.0) for p in r.probes]
        raw = vals[0] ** 2 if r.squared else max(vals)
        r.peak = raw
        if not np.isfinite(raw) or raw > limit:
            r.keep_fp32 = True
            what = "variance" if r.kind == "layernorm" else "scores"
            r.reason = f"{what} reach {raw:.3g} > {limit:.3g} ({headroom:g} x fp16 max)"
    return plan
