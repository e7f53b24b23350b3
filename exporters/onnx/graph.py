"""Static analysis of an ONNX graph: op counts, dead nodes, and what a fused graph must not contain.

A reparameterized model should export to a minimal graph: no BatchNormalization node (every
BN folds into a conv or a neighbouring linear op) and no parallel linear branches on one
tensor (`conv(x) + bn(x)`, `x + conv(x)`) -- the pattern reparameterizable blocks exist to
remove. These checks look at the graph itself, so they also catch a fusion that silently did
nothing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# Per-channel affine ops that a conv in front of them (or the identity) absorbs.
_SCALE_OPS = {"BatchNormalization", "Mul", "Div", "Add", "Sub", "Identity"}


@dataclass
class GraphReport:
    op_counts: dict[str, int]
    dead_nodes: list[str] = field(default_factory=list)
    batchnorm_nodes: list[str] = field(default_factory=list)
    fusable_branch_nodes: list[str] = field(default_factory=list)  # Add/Sub of linear branches of one tensor
    forbidden: dict[str, list[str]] = field(default_factory=dict)  # op type -> node names

    @property
    def minimal(self) -> bool:
        return not (self.dead_nodes or self.batchnorm_nodes or self.fusable_branch_nodes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "nodes": sum(self.op_counts.values()),
            "dead_nodes": self.dead_nodes,
            "batchnorm_nodes": self.batchnorm_nodes,
            "fusable_branch_nodes": self.fusable_branch_nodes,
            "forbidden_ops": self.forbidden,
            "minimal": self.minimal,
        }


def op_counts(model) -> dict[str, int]:
    counts = Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}" for n in model.graph.node)
    return dict(sorted(counts.items()))


def _node_label(node, index: int) -> str:
    return node.name or f"{node.op_type}#{index}"


def _consumers(graph) -> dict[str, list[int]]:
    uses: dict[str, list[int]] = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            if name:
                uses.setdefault(name, []).append(i)
    return uses


def dead_node_indices(graph) -> list[int]:
    """Nodes none of whose outputs reaches a graph output (transitively)."""
    needed = {o.name for o in graph.output}
    live: set[int] = set()
    producers = {out: i for i, n in enumerate(graph.node) for out in n.output if out}
    stack = [producers[n] for n in needed if n in producers]
    while stack:
        i = stack.pop()
        if i in live:
            continue
        live.add(i)
        stack.extend(producers[name] for name in graph.node[i].input if name in producers)
    return [i for i in range(len(graph.node)) if i not in live]


def prune_dead_nodes(model) -> int:
    """Remove dead nodes and the initializers only they used; returns how many nodes went."""
    graph = model.graph
    dead = set(dead_node_indices(graph))
    if not dead:
        return 0
    keep = [n for i, n in enumerate(graph.node) if i not in dead]
    del graph.node[:]
    graph.node.extend(keep)
    used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    inits = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    return len(dead)


def _constants(graph) -> set[str]:
    consts = {t.name for t in graph.initializer}
    consts |= {out for n in graph.node if n.op_type == "Constant" for out in n.output}
    return consts


class _BranchTracer:
    """Finds the tensor an operand is a 'reparameterizable branch' of.

    A branch of x is x itself, conv(x) with constant weights, either followed by per-channel
    affine ops with constant operands (BN, scale, shift), or a sum/difference of branches of
    x. That is exactly what MobileOne/RepMixer/RepCPE-style fusion turns into one conv.
    """

    def __init__(self, graph):
        self.producer = {out: n for n in graph.node for out in n.output if out}
        self.consts = _constants(graph)
        self._memo: dict[str, str | None] = {}

    def root(self, value: str, depth: int = 0) -> str | None:
        if value in self.consts:
            return None
        if value in self._memo:
            return self._memo[value]
        node = self.producer.get(value)
        result: str | None = value  # a tensor is trivially a branch of itself
        if node is not None and depth < 64:
            op = node.op_type
            if op == "Conv" and all(i in self.consts for i in node.input[1:] if i):
                result = node.input[0]
            elif op in _SCALE_OPS:
                data = [i for i in node.input if i and i not in self.consts]
                if op == "BatchNormalization" or len(data) == 1:
                    inner = self.root(data[0], depth + 1) if data else None
                    result = inner if inner is not None else value
                elif op in ("Add", "Sub") and len(data) == 2:
                    a, b = (self.root(d, depth + 1) for d in data)
                    result = a if a is not None and a == b else value
        self._memo[value] = result
        return result

    def is_fusable_sum(self, node) -> bool:
        if node.op_type not in ("Add", "Sub"):
            return False
        data = [i for i in node.input if i and i not in self.consts]
        if len(data) != 2:
            return False
        roots = [self.root(d) for d in data]
        if roots[0] is None or roots[0] != roots[1]:
            return False
        # x + x (or x - x) is not a branch merge; at least one side must go through an op.
        return not (data[0] == roots[0] and data[1] == roots[1])


def analyze(model, avoid_ops: list[str] | tuple[str, ...] = ()) -> GraphReport:
    graph = model.graph
    tracer = _BranchTracer(graph)
    report = GraphReport(op_counts=op_counts(model))
    report.dead_nodes = [_node_label(graph.node[i], i) for i in dead_node_indices(graph)]
    avoid = set(avoid_ops)
    for i, node in enumerate(graph.node):
        label = _node_label(node, i)
        if node.op_type == "BatchNormalization":
            report.batchnorm_nodes.append(label)
        if tracer.is_fusable_sum(node):
            report.fusable_branch_nodes.append(label)
        if node.op_type in avoid:
            report.forbidden.setdefault(node.op_type, []).append(label)
    return report


_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64", 16: "bfloat16"}


def describe_values(values) -> list[dict[str, Any]]:
    """Names, shapes (symbolic dims as strings) and dtypes of graph inputs or outputs."""
    out = []
    for v in values:
        t = v.type.tensor_type
        dims = [d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else None) for d in t.shape.dim]
        out.append({"name": v.name, "shape": dims, "dtype": _DTYPES.get(t.elem_type, str(t.elem_type))})
    return out
