"""fp32 -> fp16 ONNX conversion that ONNX Runtime's CPU provider can run (the fp16 preflight).

Weights and activations become float16; graph inputs and outputs stay float32 (a Cast at each
end), so callers feed the same arrays as to the fp32 model. Ops named in `keep_fp32` compute
in float32 between casts: ops whose float inputs are shape arithmetic (Resize scales/roi) and
ops a runtime lacks fp16 kernels for. The conversion is ours rather than a dependency's
(onnxconverter-common) because the rules that matter here are few.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

FP16_MAX = float(np.finfo(np.float16).max)

# (op type, input index) whose float tensor must stay float32 whatever the data type.
_FIXED_FP32_INPUTS = {("Resize", 1), ("Resize", 2), ("Upsample", 1)}
# Ops with a dtype-selecting attribute.
_CAST_OPS = {"Cast", "EyeLike", "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike"}


def _value_types(model) -> dict[str, int]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in list(g.value_info) + list(g.input) + list(g.output)}
    types.update({t.name: t.data_type for t in g.initializer})
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    types[n.output[0]] = a.t.data_type
    return types


def _fp32_closure(graph, types: dict[str, int], keep_fp32: set[str]) -> set[int]:
    """Indices of nodes that must compute in float32: blocked op types, plus every node
    upstream of an input that must stay float32 (e.g. the arithmetic feeding Resize scales)."""
    from onnx import TensorProto

    producer = {out: i for i, n in enumerate(graph.node) for out in n.output if out}
    fp32 = {i for i, n in enumerate(graph.node) if n.op_type in keep_fp32}
    stack = []
    for n in graph.node:
        for k, name in enumerate(n.input):
            if name and (n.op_type, k) in _FIXED_FP32_INPUTS and name in producer:
                stack.append(producer[name])
    while stack:
        i = stack.pop()
        if i in fp32:
            continue
        fp32.add(i)
        for name in graph.node[i].input:
            if name in producer and types.get(name) == TensorProto.FLOAT:
                stack.append(producer[name])
    return fp32


def convert_to_fp16(model, keep_fp32: Iterable[str] = ()) -> tuple[object, dict]:
    """Return (fp16 model, stats). The input model is not modified."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    types = _value_types(model)
    graph = model.graph
    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
    fp32_nodes = _fp32_closure(graph, types, set(keep_fp32))
    inits = {t.name: t for t in graph.initializer}
    stats = {"clipped_weights": 0, "fp32_nodes": sorted({graph.node[i].op_type for i in fp32_nodes}), "casts": 0}

    # The float type each value carries after conversion (non-float values are untouched).
    produced_half: set[str] = set()
    for i, n in enumerate(graph.node):
        if i in fp32_nodes:
            continue
        for out in n.output:
            if types.get(out) == FLOAT:
                produced_half.add(out)

    new_nodes = []
    cast_cache: dict[tuple[str, int], str] = {}
    half_inits: dict[str, str] = {}

    def cast(name: str, to: int) -> str:
        key = (name, to)
        if key not in cast_cache:
            out = f"{name}__to_{'fp16' if to == HALF else 'fp32'}"
            new_nodes.append(helper.make_node("Cast", [name], [out], to=to, name=f"{out}_cast"))
            cast_cache[key] = out
            stats["casts"] += 1
        return cast_cache[key]

    def half_initializer(name: str) -> str:
        if name not in half_inits:
            arr = numpy_helper.to_array(inits[name]).astype(np.float32)
            over = np.abs(arr) > FP16_MAX
            stats["clipped_weights"] += int(over.sum())
            arr = np.clip(arr, -FP16_MAX, FP16_MAX)
            new_name = f"{name}__fp16"
            graph.initializer.append(numpy_helper.from_array(arr.astype(np.float16), new_name))
            half_inits[name] = new_name
        return half_inits[name]

    graph_inputs = {v.name for v in graph.input}
    for i, node in enumerate(graph.node):
        want = FLOAT if i in fp32_nodes else HALF
        for k, name in enumerate(node.input):
            if not name or types.get(name) != FLOAT:
                continue
            target = FLOAT if (node.op_type, k) in _FIXED_FP32_INPUTS else want
            if name in inits:
                if target == HALF:
                    node.input[k] = half_initializer(name)
                continue
            is_half = name in produced_half
            if target == HALF and (not is_half or name in graph_inputs):
                node.input[k] = cast(name, HALF)
            elif target == FLOAT and is_half:
                node.input[k] = cast(name, FLOAT)
        if i not in fp32_nodes:
            if node.op_type == "Constant":
                for a in node.attribute:
                    if a.name == "value" and a.t.data_type == FLOAT:
                        arr = np.clip(numpy_helper.to_array(a.t), -FP16_MAX, FP16_MAX).astype(np.float16)
                        a.t.CopyFrom(numpy_helper.from_array(arr, a.t.name))
            elif node.op_type == "ConstantOfShape":
                for a in node.attribute:
                    if a.name == "value" and a.t.data_type == FLOAT:
                        a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
            if node.op_type in _CAST_OPS:
                for a in node.attribute:
                    if a.name in ("to", "dtype") and a.i == FLOAT:
                        a.i = HALF
        new_nodes.append(node)

    # Graph outputs keep their names and float32 type: rename the fp16 producer, cast back.
    rename = {}
    for out in graph.output:
        if out.name in produced_half:
            rename[out.name] = f"{out.name}__fp16"
    for n in new_nodes:
        for k, name in enumerate(n.output):
            if name in rename:
                n.output[k] = rename[name]
        for k, name in enumerate(n.input):
            if name in rename:
                n.input[k] = rename[name]
    for original, half in rename.items():
        new_nodes.append(helper.make_node("Cast", [half], [original], to=FLOAT, name=f"{original}_to_fp32"))
        stats["casts"] += 1

    del graph.node[:]
    graph.node.extend(_toposort(new_nodes, graph))
    used = {name for n in graph.node for name in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.value_info[:]  # stale float32 annotations; re-inferred below
    model = onnx.shape_inference.infer_shapes(model)
    return model, stats


def _toposort(nodes: list, graph) -> list:
    available = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(nodes)
    ordered = []
    while pending:
        progress = False
        rest = []
        for n in pending:
            if all(name in available for name in n.input):
                ordered.append(n)
                available.update(n.output)
                progress = True
            else:
                rest.append(n)
        if not progress:
            raise ValueError(f"fp16 conversion produced a cycle or a dangling input at {rest[0].name or rest[0].op_type}")
        pending = rest
    return ordered


def emulate_fp16(model) -> object:
    """An fp32 graph that computes what `model` (an fp16 graph) computes on fp16 hardware:
    every op evaluated in float32, every float16 tensor rounded to float16 (overflow -> inf).

    Needed because ONNX Runtime's CPU provider runs fp16 nodes it has no kernel for in float32
    regions without rounding in between, which would hide fp16 precision loss and overflow.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    types = _value_types(model)
    graph = model.graph
    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16

    for t in graph.initializer:
        if t.data_type == HALF:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name))
    nodes = []

    def rounded(name: str) -> tuple[str, list]:
        raw = f"{name}__unrounded"
        return raw, [helper.make_node("Cast", [raw], [f"{name}__half"], to=HALF, name=f"{name}__round16"),
                     helper.make_node("Cast", [f"{name}__half"], [name], to=FLOAT, name=f"{name}__round32")]

    renames: set[str] = set()
    head = []
    for v in graph.input:
        if v.type.tensor_type.elem_type == HALF:  # round the caller's float32 input as an fp16 input would be
            v.type.tensor_type.elem_type = FLOAT
            renames.add(v.name)
            head.append(helper.make_node("Cast", [v.name], [f"{v.name}__half"], to=HALF, name=f"{v.name}__in16"))
            head.append(helper.make_node("Cast", [f"{v.name}__half"], [f"{v.name}__in"], to=FLOAT, name=f"{v.name}__in32"))
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name in renames:
                node.input[k] = f"{name}__in"
        for a in node.attribute:
            if a.name == "value" and a.type == onnx.AttributeProto.TENSOR and a.t.data_type == HALF:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float32), a.t.name))
            if node.op_type in _CAST_OPS and a.name in ("to", "dtype") and a.i == HALF:
                a.i = FLOAT
        tail = []
        for k, out in enumerate(node.output):
            if out and types.get(out) == HALF:
                raw, pair = rounded(out)
                node.output[k] = raw
                tail += pair
        nodes.append(node)
        nodes.extend(tail)
    for v in graph.output:
        if v.type.tensor_type.elem_type == HALF:
            v.type.tensor_type.elem_type = FLOAT
    del graph.node[:]
    graph.node.extend(head + nodes)
    del graph.value_info[:]
    return onnx.shape_inference.infer_shapes(model)
