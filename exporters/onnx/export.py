"""ONNX exporter: fused model -> checked, simplified, minimal .onnx (fp32 or fp16).

Uses torch's TorchScript-based exporter (`torch.onnx.export(..., dynamo=False)`): with torch
2.13 it emits opsets 7-20 directly, which the device caps need (TensorRT 8.2 parses <= 13),
folds Conv+BN in eval mode, and needs no extra dependency; the torch.export-based exporter
needs onnxscript, targets opset 18+ and reaches lower opsets only through the ONNX version
converter. Every export is then checked (onnx.checker full check, strict shape inference),
simplified with onnxsim (on by default), pruned of dead nodes, checked for minimality and
against the device profile, and loaded in ONNX Runtime before the file reaches its path.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeseg.atomic import atomic_output
from edgeseg.compare import compare_outputs
from edgeseg.errors import EdgesegError
from edgeseg.exporters import ExportRequest, ExportResult
from edgeseg.exporters.onnx.fp16 import convert_to_fp16, emulate_fp16
from edgeseg.exporters.onnx.graph import analyze, describe_values, op_counts, prune_dead_nodes
from edgeseg.exporters.onnx.runner import ort_session
from edgeseg.exporters.wrap import check_postprocess, output_names, wrap_for_export

DEFAULT_OPSET = 17  # LayerNormalization is a single op from 17 on
MIN_OPSET = 11  # Resize/ArgMax semantics the post-processing relies on
DYNAMIC_AXES = ("batch", "height", "width")
EXPORTER_NAME = "torch.onnx.export (TorchScript-based, dynamo=False)"


@dataclass
class OnnxPlan:
    opset: int
    input_size: tuple[int, int]
    batch: int
    precision: str
    dynamic_axes: tuple[str, ...]
    postprocess: str
    simplify: bool
    avoid_ops: tuple[str, ...]
    require_minimal: bool
    keep_fp32_ops: tuple[str, ...]
    runtime: str = "onnxruntime"  # what runs the artifact: decides which graph passes are kept
    int8: Any = None  # edgeseg.exporters.onnx.int8.Int8Options for --precision int8


def _max_opset() -> int:
    from torch.onnx import _constants

    return int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 17))


def plan_export(request: ExportRequest) -> OnnxPlan:
    """Resolve opset, shapes and precision against the model and the device profile; refuse
    what cannot work with one clear reason."""
    info = request.model.edgeseg
    profile = request.profile
    constraints = profile.export if profile is not None else None
    cap = constraints.opset_max if constraints is not None else None
    opset = request.opset or (constraints.opset_default if constraints is not None else None) or DEFAULT_OPSET
    if request.opset is None and cap is not None:
        opset = min(opset, cap)
    if cap is not None and opset > cap:
        raise EdgesegError(f"opset {opset} is above what {profile.name} accepts (<= {cap})", f"use --opset {cap} or omit --opset")
    hi = _max_opset()
    if not MIN_OPSET <= opset <= hi:
        raise EdgesegError(f"opset {opset} is not supported", f"choose {MIN_OPSET}..{hi}")
    if request.precision not in ("fp32", "fp16", "int8"):
        raise EdgesegError(f"ONNX export does not produce {request.precision} models", "use --precision fp32, fp16 or int8")
    int8 = None
    if request.precision == "int8":
        from edgeseg.exporters.onnx.int8 import Int8Options

        if opset < 13:
            raise EdgesegError(f"int8 with per-channel weights needs opset 13 or later; {opset} was asked", "use --opset 13 or later")
        int8 = Int8Options.from_request(request.options, profile.name if profile is not None else None)
    if request.batch < 1:
        raise EdgesegError(f"invalid --batch {request.batch}", "use 1 or more")
    check_postprocess(info.task, request.postprocess)

    size = tuple(request.input_size)
    fixed = tuple(info.fixed_input_size) if info.fixed_input_size else None
    if fixed and size != fixed:
        raise EdgesegError(f"{info.arch} is fixed to input {fixed[0]}x{fixed[1]}; {size[0]}x{size[1]} was asked",
                           f"use --input-size {fixed[0]}x{fixed[1]} or reparameterize again at the size you need")
    d = info.size_divisor or 1
    if size[0] % d or size[1] % d:
        raise EdgesegError(f"input {size[0]}x{size[1]} is not a multiple of {d}, which {info.arch} needs", f"use a size divisible by {d}")

    axes: tuple[str, ...] = ()
    if request.dynamic:
        axes = tuple(request.options.get("dynamic_axes") or DYNAMIC_AXES)
        unknown = set(axes) - set(DYNAMIC_AXES)
        if unknown:
            raise EdgesegError(f"unknown dynamic axes {', '.join(sorted(unknown))}", f"choose from {', '.join(DYNAMIC_AXES)}")
        if constraints is not None and constraints.static_shapes:
            raise EdgesegError(f"device profile {profile.name} needs static shapes", "export without --dynamic")
        spatial = {"height", "width"} & set(axes)
        if fixed and spatial:
            raise EdgesegError(
                f"{info.arch} is resolution-baked at {fixed[0]}x{fixed[1]} (its deploy kernels/pooling are computed for that size), "
                "so height and width cannot be dynamic",
                "export without --dynamic, or with --dynamic-axes batch")
    return OnnxPlan(
        opset=opset, input_size=size, batch=request.batch, precision=request.precision, dynamic_axes=axes,
        postprocess=request.postprocess, simplify=bool(request.options.get("simplify", True)),
        avoid_ops=tuple(constraints.avoid_ops) if constraints is not None else (),
        require_minimal=bool(request.options.get("require_minimal", info.fused)),
        keep_fp32_ops=tuple(request.options.get("fp16_keep_fp32_ops") or ()),
        runtime=str(request.options.get("runtime") or (profile.runtime if profile is not None else None) or "onnxruntime"),
        int8=int8,
    )


def _torch_export(wrapper, plan: OnnxPlan, names_out: list[str], seed: int) -> tuple[bytes, list[str]]:
    import io

    import torch

    x = torch.randn(plan.batch, 3, *plan.input_size, generator=torch.Generator().manual_seed(seed))
    dyn = None
    if plan.dynamic_axes:
        axes_in = {i: n for i, n in enumerate(("batch", "channels", "height", "width")) if n in plan.dynamic_axes}
        dyn = {"input": axes_in}
        for name in names_out:
            # the exporter names the outputs' spatial dims itself (they follow the input's
            # through the graph's shape arithmetic); only the batch axis is shared by name
            dyn[name] = {0: "batch"} if "batch" in plan.dynamic_axes else {}
    buf = io.BytesIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(wrapper, (x,), buf, dynamo=False, opset_version=plan.opset, input_names=["input"],
                              output_names=names_out, dynamic_axes=dyn, do_constant_folding=True,
                              training=torch.onnx.TrainingMode.EVAL)
    notes = sorted({f"{w.category.__name__}: {str(w.message).splitlines()[0][:200]}" for w in caught
                    if not issubclass(w.category, (DeprecationWarning, FutureWarning))})
    return buf.getvalue(), notes


def _check(model, stage: str) -> Any:
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception as exc:  # onnx raises several checker/inference error types
        raise EdgesegError(f"the {stage} ONNX graph is invalid: {str(exc).strip().splitlines()[0][:300]}",
                           "rerun with --debug; try another --opset") from exc


def _to_fp16(model, keep: tuple[str, ...]) -> tuple[Any, dict]:
    """Convert, then let ONNX Runtime say which ops it cannot run in fp16 on this machine and
    keep those in fp32 (a preflight must run here; the target runtime gets the same graph)."""
    import re

    blocked = list(keep)
    for _ in range(16):
        half, stats = convert_to_fp16(model, keep_fp32=blocked)
        try:
            ort_session(half)
            stats["cpu_fp32_ops"] = blocked
            return half, stats
        except Exception as exc:  # ORT raises its own exception types
            m = re.search(r"implementation for (\w+)\(", str(exc))
            if not m or m.group(1) in blocked:
                raise EdgesegError(f"the fp16 graph does not load in ONNX Runtime: {str(exc).splitlines()[0][:300]}",
                                   "export with --precision fp32") from exc
            blocked.append(m.group(1))
    raise EdgesegError("the fp16 graph does not load in ONNX Runtime", "export with --precision fp32")


def _check_dynamic(model_bytes: bytes, wrapper, plan: OnnxPlan, info, seed: int) -> dict | None:
    """A dynamic export must compute the same function at another shape: tracing can bake a
    size into the graph without an error."""
    import numpy as np
    import torch

    if not plan.dynamic_axes:
        return None
    batch = plan.batch + 1 if "batch" in plan.dynamic_axes else plan.batch
    h, w = plan.input_size
    d = info.size_divisor or 32
    if "height" in plan.dynamic_axes:
        h = h + d
    if "width" in plan.dynamic_axes:
        w = max(d, w - d)
    x = torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        ref = [t.numpy() for t in wrapper(x)]
    try:
        graph = model_bytes_to_model(model_bytes)
        if plan.precision == "fp16":
            graph = emulate_fp16(graph)
        sess = ort_session(graph)
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy().astype(np.float32)})
    except Exception as exc:  # ORT shape errors
        raise EdgesegError(f"{info.arch} does not support dynamic shapes: the export fails at batch {batch}, {h}x{w} "
                           f"({str(exc).splitlines()[0][:200]})", "export without --dynamic (or --dynamic-axes batch)") from exc
    shapes_ok = len(ref) == len(got) and all(r.shape == g.shape for r, g in zip(ref, got))
    report = compare_outputs(ref, [np.asarray(g) for g in got], task=info.task, precision=plan.precision) if shapes_ok else None
    if report is None or not report.passed:
        detail = "output shapes differ" if report is None else report.summary_line()
        raise EdgesegError(f"{info.arch} does not support dynamic shapes: at batch {batch}, {h}x{w} the ONNX graph differs "
                           f"from PyTorch ({detail}); tracing baked a size into the graph",
                           "export without --dynamic (or --dynamic-axes batch)")
    return {"batch": batch, "input_size": [h, w], "max_rel": max(o.metrics.get("max_rel", 0.0) for o in report.outputs)}


def model_bytes_to_model(data: bytes):
    import onnx

    return onnx.load_from_string(data)


def tool_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for pkg in ("torch", "onnx", "onnxruntime", "onnxsim", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _count_outputs(wrapper, plan: OnnxPlan, info) -> int:
    """How many outputs the graph will have. The count does not depend on the input size, so
    a size-agnostic model is probed at a small size (a full-size forward costs as much as the
    export's own trace); resolution-baked models, or any that refuse the small size, at theirs."""
    import torch

    sizes = [tuple(plan.input_size)]
    d = info.size_divisor or 32
    if not info.fixed_input_size and min(plan.input_size) > 2 * d:
        sizes.insert(0, (2 * d, 2 * d))
    for i, size in enumerate(sizes):
        try:
            with torch.no_grad():
                return len(wrapper(torch.zeros(1, 3, *size)))
        except Exception:  # noqa: BLE001 - the small size is an optimisation; the full size decides
            if i == len(sizes) - 1:
                raise
    raise AssertionError("unreachable")


def build_onnx(model, plan: OnnxPlan, *, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """Export and check; returns (final ModelProto, manifest fields). Writes nothing."""
    import torch

    info = model.edgeseg
    wrapper = wrap_for_export(model, info.task, plan.postprocess)
    names_out = output_names(_count_outputs(wrapper, plan, info), info.task, plan.postprocess)

    t0 = time.perf_counter()
    try:
        data, notes = _torch_export(wrapper, plan, names_out, seed)
    except EdgesegError:
        raise
    except Exception as exc:  # the exporter raises many types for unsupported model code
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise EdgesegError(f"torch.onnx could not export {info.arch} at opset {plan.opset}: {first}",
                           "this is a limit of the model code or the opset; rerun with --debug for the traceback") from exc
    t_export = time.perf_counter() - t0

    raw = model_bytes_to_model(data)
    counts = {"exported": op_counts(raw)}
    _check(raw, "exported")
    final = raw
    passes = None
    if plan.simplify:
        from edgeseg.exporters.onnx.passes import simplify_for_runtime

        final, passes = simplify_for_runtime(raw, plan.runtime)
        counts["simplified"] = op_counts(final)
    pruned = prune_dead_nodes(final)
    final = _check(final, "simplified" if plan.simplify else "exported")

    graph = analyze(final, plan.avoid_ops)
    if plan.require_minimal and not graph.minimal:
        parts = []
        if graph.batchnorm_nodes:
            parts.append(f"{len(graph.batchnorm_nodes)} BatchNormalization ({', '.join(graph.batchnorm_nodes[:3])})")
        if graph.fusable_branch_nodes:
            parts.append(f"{len(graph.fusable_branch_nodes)} unfused linear branch merges ({', '.join(graph.fusable_branch_nodes[:3])})")
        if graph.dead_nodes:
            parts.append(f"{len(graph.dead_nodes)} dead nodes")
        raise EdgesegError(f"the fused {info.arch} graph is not minimal: {'; '.join(parts)}",
                           "the model's reparameterization misses these modules; report it with the architecture name")
    if graph.forbidden:
        ops = ", ".join(f"{op} x{len(v)} (e.g. {v[0]})" for op, v in graph.forbidden.items())
        hint = "export with --opset 16 or lower, which decomposes LayerNormalization" if "LayerNormalization" in graph.forbidden and plan.opset >= 17 \
            else "the target cannot run these ops; change the model or the device profile"
        raise EdgesegError(f"the graph contains ops the device profile forbids: {ops}", hint)

    fp16_stats = None
    if plan.precision == "fp16":
        final, fp16_stats = _to_fp16(final, plan.keep_fp32_ops)
        final = _check(final, "fp16")
        counts["fp16"] = op_counts(final)
    int8_stats = None
    if plan.precision == "int8":
        from edgeseg.exporters.onnx.int8 import quantize_onnx

        final, int8_stats = quantize_onnx(final, input_size=plan.input_size, mean=info.mean, std=info.std,
                                          channel_order=getattr(info, "channel_order", "rgb"), opts=plan.int8, task=info.task)
        counts["int8"] = op_counts(final)
    counts["final"] = op_counts(final)
    try:
        sess = ort_session(final)
    except Exception as exc:  # ORT load errors
        raise EdgesegError(f"ONNX Runtime cannot load the exported graph: {str(exc).splitlines()[0][:300]}",
                           "rerun with --debug; try another --opset or --no-simplify") from exc
    del sess
    dynamic_check = _check_dynamic(final.SerializeToString(), wrapper, plan, info, seed)

    manifest: dict[str, Any] = {
        "format": "onnx",
        "exporter": EXPORTER_NAME,
        "opset": plan.opset,
        "ir_version": int(final.ir_version),
        "precision": plan.precision,
        "input_size": list(plan.input_size),
        "batch": plan.batch,
        "dynamic_axes": list(plan.dynamic_axes),
        "postprocess": plan.postprocess,
        "simplified": plan.simplify,
        "inputs": describe_values(final.graph.input),
        "outputs": describe_values(final.graph.output),
        "node_counts": counts,
        "dead_nodes_pruned": pruned,
        "graph_checks": graph.as_dict(),
        "export_seconds": round(t_export, 3),
        "tools": tool_versions(),
        "warnings": notes[:10],
    }
    if passes is not None:
        manifest["graph_passes"] = passes
    if fp16_stats is not None:
        manifest["fp16"] = fp16_stats
    if int8_stats is not None:
        manifest["int8"] = int8_stats
    if dynamic_check is not None:
        manifest["dynamic_check"] = dynamic_check
    return final, manifest


def _save(model, path: Path) -> None:
    import onnx

    if model.ByteSize() > 1_900_000_000:  # protobuf's 2 GB limit
        raise EdgesegError("the ONNX graph exceeds 2 GB, which a single .onnx file cannot hold", "export a smaller variant")
    onnx.save_model(model, str(path))
    onnx.checker.check_model(str(path))  # what was written reads back as a valid model


def _record_metadata(model, request: ExportRequest, plan: OnnxPlan, manifest: dict[str, Any]) -> None:
    """Preprocessing, task, labels and source hash go into the file itself (metadata_props), so
    the .onnx runs correctly without its manifest."""
    from edgeseg.exporters.metadata import artifact_metadata, set_onnx_metadata
    from edgeseg.labels import check_count, read_label_file

    labels = request.options.get("labels")
    if labels is not None:
        out = manifest["outputs"][0]
        floating = out["dtype"] in ("float32", "float16")
        num_classes = out["shape"][1] if floating and len(out["shape"]) in (2, 4) and isinstance(out["shape"][1], int) else None
        if isinstance(labels, (list, tuple)):
            check_count(labels, num_classes, "--labels")
            labels = [str(x) for x in labels]
        else:
            labels = list(read_label_file(labels, num_classes).names)
        manifest["labels"] = len(labels)
    meta = artifact_metadata(request.model.edgeseg, input_size=plan.input_size, precision=plan.precision,
                             postprocess=plan.postprocess, labels=labels, target="onnx")
    set_onnx_metadata(model, meta)
    manifest["metadata_props"] = sorted(meta)


class OnnxExporter:
    name = "onnx"
    suffix = ".onnx"

    def export(self, request: ExportRequest) -> ExportResult:
        plan = plan_export(request)
        t0 = time.perf_counter()
        model, manifest = build_onnx(request.model, plan, seed=int(request.options.get("seed", 0)))
        _record_metadata(model, request, plan, manifest)
        with atomic_output(request.output, overwrite=request.overwrite) as tmp:
            _save(model, tmp)
        manifest["wall_seconds"] = round(time.perf_counter() - t0, 3)
        return ExportResult(path=Path(request.output), manifest=manifest)
