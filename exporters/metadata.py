"""What an artifact records about itself, so it can be run without its sidecar manifest:
preprocessing (mean, std, channel order, input size), task, post-processing, labels and the
hash of the checkpoint it came from. ONNX stores these as `metadata_props`, Core ML as
user-defined metadata; both under `edgeseg.*` keys with string values."""

from __future__ import annotations

from typing import Any, Sequence

PREFIX = "edgeseg."


def artifact_metadata(info, *, input_size: Sequence[int], precision: str, postprocess: str,
                      labels: Sequence[str] | None = None, target: str = "") -> dict[str, str]:
    """The `edgeseg.*` key/value pairs for a model exported from `info` (edgeseg.api.ModelInfo)."""
    from edgeseg import __version__

    meta = {
        "arch": info.arch, "family": info.family, "task": info.task,
        "input_size": f"{int(input_size[0])}x{int(input_size[1])}",
        "mean": ",".join(f"{m:g}" for m in info.mean), "std": ",".join(f"{s:g}" for s in info.std),
        "channel_order": getattr(info, "channel_order", "rgb"), "pixel_scale": "1/255",
        "resize": "crop" if info.task == "classification" else "stretch",  # edgeseg.images.RESIZE_MODES
        "precision": precision, "postprocess": postprocess, "source_sha256": info.source_sha256 or "",
        "target": target, "version": __version__,
    }
    label_set = _label_set(info)
    if label_set:
        meta["label_set"] = label_set
    if labels:
        meta["labels"] = "\n".join(str(x) for x in labels)
    return {PREFIX + k: str(v) for k, v in meta.items()}


def _label_set(info) -> str | None:
    try:
        from edgeseg.registry import get_entry

        return get_entry(info.arch).labels
    except Exception:  # custom (module:factory) models have no registry entry
        return None


def set_onnx_metadata(model, meta: dict[str, str]) -> None:
    """Replace the ONNX model's `edgeseg.*` metadata_props by `meta` (others, e.g. onnxsim's, stay)."""
    keep = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    for key, value in [*keep, *sorted(meta.items())]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def parse(meta: dict[str, str]) -> dict[str, Any]:
    """`edgeseg.*` string metadata -> typed fields (mean/std lists, input_size, labels list).
    Malformed values are dropped, not trusted: the caller falls back to the manifest or model."""
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if not key.startswith(PREFIX):
            continue
        name = key[len(PREFIX):]
        try:
            if name in ("mean", "std"):
                vals = [float(v) for v in value.split(",")]
                if len(vals) != 3:
                    continue
                out[name] = vals
            elif name == "input_size":
                h, w = (int(v) for v in value.lower().split("x"))
                out[name] = [h, w]
            elif name == "labels":
                out[name] = [line for line in value.split("\n") if line.strip()]
            elif name == "min_target":
                out.setdefault("target", value)
            else:
                out[name] = value
        except ValueError:
            continue
    if out.get("channel_order") not in (None, "rgb", "bgr"):
        out.pop("channel_order")
    return out
