"""Read a saved Core ML model's spec on any OS: inputs, outputs, shapes, precision, op types,
and the ops that are known to keep a model off the Neural Engine.

The spec is read with `coremltools.utils.load_spec`, which needs no Core ML runtime.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from edgeseg.exporters.coreml.convert import import_coremltools

# Core ML specification version -> the first OS release that reads it (coremltools' table).
SPEC_VERSION_TARGET = {4: "iOS13", 5: "iOS14", 6: "iOS15", 7: "iOS16", 8: "iOS17", 9: "iOS18"}
TARGET_SPEC_VERSION = {**{v: k for k, v in SPEC_VERSION_TARGET.items()}, "macOS12": 6, "macOS13": 7, "macOS14": 8, "macOS15": 9}

# Ops known to fall off the Neural Engine (the model then runs them on GPU/CPU, paying a
# device switch). Incomplete by nature: Apple publishes no list. Sources:
#  [hollance] M. Hollemans, "Which Core ML layers are not supported by the ANE?",
#             github.com/hollance/neural-engine docs/unsupported-layers.md (gather, dilated
#             convolutions, RNN layers, custom layers)
#  [ct-typed] coremltools guide "Typed Execution": fp32 ML programs run on CPU/GPU only
#  [ct-flex]  coremltools guide "Flexible Input Shapes": range shapes keep models off the ANE
#  [ane-tr]   Apple ML Research, "Deploying Transformers on the Apple Neural Engine" (2022):
#             the ANE's native layout is rank-4 channels-first; other ranks cost copies
OFF_ANE_OPS = {
    "gather": "hollance", "gather_nd": "hollance", "gather_along_axis": "hollance",
    "lstm": "hollance", "gru": "hollance", "rnn": "hollance",
    "custom_op": "hollance",
}
SOURCES = {
    "hollance": "github.com/hollance/neural-engine/blob/master/docs/unsupported-layers.md",
    "ct-typed": "apple.github.io/coremltools/docs-guides/source/typed-execution.html",
    "ct-flex": "apple.github.io/coremltools/docs-guides/source/flexible-inputs.html",
    "ane-tr": "machinelearning.apple.com/research/neural-engine-transformers",
}
_SKIP_PRECISION = {"const", "cast"}


@dataclass
class TensorDesc:
    name: str
    kind: str  # multiarray | image | dictionary | string | int64 | double
    shape: tuple[int, ...] = ()
    dtype: str = ""
    flexible: bool = False
    color: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "shape": list(self.shape)}
        if self.dtype:
            out["dtype"] = self.dtype
        if self.flexible:
            out["flexible"] = True
        if self.color:
            out["color"] = self.color
        return out


@dataclass
class AneFinding:
    what: str
    count: int
    severity: str  # off-ane | risk
    source: str

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "source": SOURCES.get(self.source, self.source)}


@dataclass
class SpecSummary:
    spec_version: int
    model_type: str
    inputs: list[TensorDesc]
    outputs: list[TensorDesc]
    op_counts: dict[str, int] = field(default_factory=dict)
    compute_dtypes: dict[str, int] = field(default_factory=dict)  # op output dtype -> count (consts/casts excluded)
    weight_dtypes: dict[str, int] = field(default_factory=dict)
    ane: list[AneFinding] = field(default_factory=list)
    classifier: bool = False
    metadata: dict[str, str] = field(default_factory=dict)
    author: str = ""
    version: str = ""
    description: str = ""

    @property
    def target(self) -> str:
        return SPEC_VERSION_TARGET.get(self.spec_version, f"spec v{self.spec_version}")

    @property
    def precision(self) -> str:
        f16, f32 = self.compute_dtypes.get("FLOAT16", 0), self.compute_dtypes.get("FLOAT32", 0)
        if f16 and not f32:
            return "fp16"
        if f32 and not f16:
            return "fp32"
        return "mixed" if (f16 or f32) else "none"

    def as_dict(self) -> dict[str, Any]:
        return {
            "spec_version": self.spec_version, "target": self.target, "model_type": self.model_type,
            "inputs": [t.as_dict() for t in self.inputs], "outputs": [t.as_dict() for t in self.outputs],
            "precision": self.precision, "compute_dtypes": self.compute_dtypes, "weight_dtypes": self.weight_dtypes,
            "op_counts": dict(sorted(self.op_counts.items(), key=lambda kv: (-kv[1], kv[0]))),
            "ane": [f.as_dict() for f in self.ane], "classifier": self.classifier,
        }


def load_spec(path: str | Path):
    return import_coremltools().utils.load_spec(str(path))


def _feature(desc) -> TensorDesc:
    import_coremltools()
    from coremltools.proto import FeatureTypes_pb2 as ft

    t = desc.type
    which = t.WhichOneof("Type")
    if which == "multiArrayType":
        arr = t.multiArrayType
        return TensorDesc(desc.name, "multiarray", tuple(int(s) for s in arr.shape), ft.ArrayFeatureType.ArrayDataType.Name(arr.dataType),
                          flexible=arr.WhichOneof("ShapeFlexibility") is not None)
    if which == "imageType":
        img = t.imageType
        return TensorDesc(desc.name, "image", (int(img.height), int(img.width)), "", flexible=img.WhichOneof("SizeFlexibility") is not None,
                          color=ft.ImageFeatureType.ColorSpace.Name(img.colorSpace))
    kinds = {"dictionaryType": "dictionary", "stringType": "string", "int64Type": "int64", "doubleType": "double"}
    return TensorDesc(desc.name, kinds.get(which, which or "unknown"))


def _walk(block):
    for op in block.operations:
        yield op
        for inner in op.blocks:
            yield from _walk(inner)


def _tensor_dtype(value_type) -> tuple[str, int]:
    from coremltools.proto import MIL_pb2

    if value_type.WhichOneof("type") != "tensorType":
        return "", -1
    tt = value_type.tensorType
    return MIL_pb2.DataType.Name(tt.dataType), int(tt.rank)


def _const_ints(op) -> list[int] | None:
    val = op.attributes.get("val") if "val" in op.attributes else None
    if val is None or val.WhichOneof("value") != "immediateValue":
        return None
    tensor = val.immediateValue.tensor
    if tensor.WhichOneof("value") == "ints":
        return list(tensor.ints.values)
    return None


def summarize(spec) -> SpecSummary:
    desc = spec.description
    summary = SpecSummary(
        spec_version=int(spec.specificationVersion), model_type=spec.WhichOneof("Type") or "",
        inputs=[_feature(d) for d in desc.input], outputs=[_feature(d) for d in desc.output],
        classifier=bool(desc.predictedFeatureName), metadata=dict(desc.metadata.userDefined),
        author=desc.metadata.author, version=desc.metadata.versionString, description=desc.metadata.shortDescription,
    )
    if summary.model_type != "mlProgram":
        return summary
    ops: Counter = Counter()
    compute: Counter = Counter()
    weights: Counter = Counter()
    consts: dict[str, list[int] | None] = {}
    # coremltools applies an ImageType's scale/bias as fp32 mul/add ops named after the input,
    # ahead of the fp16 cast: preprocessing, not model compute.
    preprocessing = {f"{t.name}__{kind}__" for t in summary.inputs if t.kind == "image" for kind in ("scaled", "biased")}
    dilated = 0
    high_rank = 0
    for fn in spec.mlProgram.functions.values():
        block = fn.block_specializations[fn.opset]
        for op in _walk(block):
            ops[op.type] += 1
            if op.type == "const":
                dtype, rank = _tensor_dtype(op.outputs[0].type)
                consts[op.outputs[0].name] = _const_ints(op)
                if dtype.startswith("FLOAT") and rank > 0:
                    weights[dtype] += 1
                continue
            for out in op.outputs:
                dtype, rank = _tensor_dtype(out.type)
                if op.type not in _SKIP_PRECISION and out.name not in preprocessing and dtype.startswith(("FLOAT", "BFLOAT")):
                    compute[dtype] += 1
                if rank > 4:
                    high_rank += 1
            if op.type == "conv" and "dilations" in op.inputs:
                args = op.inputs["dilations"].arguments
                names = [a.name for a in args if a.WhichOneof("binding") == "name"]
                vals = consts.get(names[0]) if names else None
                if vals and any(v != 1 for v in vals):
                    dilated += 1
    summary.op_counts, summary.compute_dtypes, summary.weight_dtypes = dict(ops), dict(compute), dict(weights)
    summary.ane = ane_findings(summary, dilated=dilated, high_rank=high_rank)
    return summary


def ane_findings(summary: SpecSummary, *, dilated: int = 0, high_rank: int = 0) -> list[AneFinding]:
    found = [AneFinding(f"{op} op", n, "off-ane", OFF_ANE_OPS[op]) for op, n in sorted(summary.op_counts.items()) if op in OFF_ANE_OPS]
    if dilated:
        found.append(AneFinding("dilated conv", dilated, "off-ane", "hollance"))
    if summary.compute_dtypes.get("FLOAT32"):
        found.append(AneFinding("fp32 compute (the ANE runs fp16 only)", summary.compute_dtypes["FLOAT32"], "off-ane", "ct-typed"))
    flexible = [t.name for t in summary.inputs if t.flexible]
    if flexible:
        found.append(AneFinding(f"flexible input shape ({', '.join(flexible)})", len(flexible), "off-ane", "ct-flex"))
    if high_rank:
        found.append(AneFinding("tensors of rank > 4", high_rank, "risk", "ane-tr"))
    return found


@dataclass
class Expected:
    input_name: str
    input_kind: str  # multiarray | image
    input_shape: tuple[int, ...]
    outputs: list[tuple[str, tuple[int, ...] | None]]
    precision: str
    target: str
    classifier: bool = False
    input_color: str | None = None  # image inputs: "RGB" | "BGR", the model's channel order


def check(summary: SpecSummary, expected: Expected) -> list[str]:
    """Everything in the spec that differs from what the export asked for."""
    problems: list[str] = []
    if summary.model_type != "mlProgram":
        problems.append(f"model type is {summary.model_type}, expected an ML program")
    want_version = TARGET_SPEC_VERSION.get(expected.target)
    if want_version and summary.spec_version < want_version:
        problems.append(f"spec version {summary.spec_version} is below {expected.target} ({want_version})")
    if len(summary.inputs) != 1:
        problems.append(f"{len(summary.inputs)} inputs, expected 1")
    else:
        inp = summary.inputs[0]
        if inp.name != expected.input_name or inp.kind != expected.input_kind:
            problems.append(f"input {inp.name} ({inp.kind}), expected {expected.input_name} ({expected.input_kind})")
        shape = inp.shape if inp.kind == "multiarray" else (1, 3, *inp.shape)
        if tuple(shape) != tuple(expected.input_shape):
            problems.append(f"input shape {shape}, expected {expected.input_shape}")
        if inp.flexible:
            problems.append("input shape is flexible, expected a fixed shape")
        if expected.input_color and inp.kind == "image" and inp.color != expected.input_color:
            problems.append(f"input color layout {inp.color}, expected {expected.input_color} (the model's channel order)")
    if expected.classifier:
        if not summary.classifier:
            problems.append("classifier outputs missing")
    else:
        got = [(o.name, o.shape) for o in summary.outputs]
        if [n for n, _ in got] != [n for n, _ in expected.outputs]:
            problems.append(f"outputs {[n for n, _ in got]}, expected {[n for n, _ in expected.outputs]}")
        for (name, shape), (_, want) in zip(got, expected.outputs):
            # Output shapes are optional in a spec; when present they must be right.
            if want is not None and shape and tuple(shape) != tuple(want):
                problems.append(f"output {name} shape {shape}, expected {want}")
    if expected.precision != summary.precision:
        problems.append(f"compute precision {summary.precision}, expected {expected.precision}")
    return problems
