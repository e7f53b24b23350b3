"""The ONNX a TensorRT engine is built from: the ONNX exporter's output (opset cap, ops to
avoid, static shapes from the device profile, all checked there), always fp32 (TensorRT
picks fp16/int8 kernels itself), then checked once more against what the target's parser
takes, with its inputs and dynamic dimensions described for the build plan."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgeseg.errors import EdgesegError
from edgeseg.exporters import ExportRequest, get_exporter
from edgeseg.exporters.onnx.graph import op_counts
from edgeseg.hashing import sha256_bytes


@dataclass
class OnnxInput:
    name: str
    shape: tuple  # ints, or str for a dynamic dimension

    @property
    def dynamic(self) -> bool:
        return any(not isinstance(d, int) for d in self.shape)


@dataclass
class PreparedOnnx:
    path: Path
    sha256: str
    opset: int
    inputs: list[OnnxInput]
    outputs: list[dict]
    op_counts: dict[str, int]
    manifest: dict[str, Any] = field(default_factory=dict)


def _dims(value) -> tuple:
    dims = []
    for d in value.type.tensor_type.shape.dim:
        dims.append(int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?"))
    return tuple(dims)


def describe(path: Path, profile=None) -> PreparedOnnx:
    """Read back an ONNX file and check it against the profile's parser limits."""
    import onnx

    data = path.read_bytes()
    model = onnx.load_from_string(data)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    counts = op_counts(model)
    if profile is not None:
        cap = profile.export.opset_max
        if cap is not None and opset > cap:
            raise EdgesegError(f"the ONNX graph has opset {opset}; {profile.name}'s TensorRT parses <= {cap}", f"export with --opset {cap}")
        bad = sorted(set(profile.export.avoid_ops) & set(counts))
        if bad:
            raise EdgesegError(f"the ONNX graph contains {', '.join(bad)}, which {profile.name} cannot parse",
                               "lower --opset (LayerNormalization decomposes below 17)")
    inits = {i.name for i in model.graph.initializer}
    inputs = [OnnxInput(v.name, _dims(v)) for v in model.graph.input if v.name not in inits]
    if profile is not None and profile.export.static_shapes and any(i.dynamic for i in inputs):
        raise EdgesegError(f"{profile.name} needs static shapes; the ONNX input has dynamic dimensions", "export without --dynamic")
    outputs = [{"name": v.name, "shape": list(_dims(v))} for v in model.graph.output]
    return PreparedOnnx(path=path, sha256=sha256_bytes(data), opset=opset, inputs=inputs, outputs=outputs,
                        op_counts=counts)


def prepare_onnx(request: ExportRequest, workdir: Path) -> PreparedOnnx:
    """Export the request's model to `workdir/model.onnx` with the ONNX exporter (fp32, the
    profile's constraints) and describe it. A user-given `options['onnx']` file is used as is."""
    given = request.options.get("onnx")
    if given:
        path = Path(given)
        if not path.is_file():
            raise EdgesegError(f"ONNX file {path} does not exist", "pass an existing .onnx or omit it to export from the model")
        prepared = describe(path, request.profile)
        prepared.manifest = {"source": str(path)}
        return prepared
    path = workdir / "model.onnx"
    onnx_req = replace(request, output=path, precision="fp32", overwrite=True, options=dict(request.options))
    result = get_exporter("onnx").export(onnx_req)
    prepared = describe(result.path, request.profile)
    prepared.manifest = {k: result.manifest[k] for k in ("opset", "exporter", "node_counts", "dynamic_axes") if k in result.manifest}
    return prepared
