"""A model carrying a checkpoint's weights, without paying for a random initialisation.

Built on the meta device (shapes only), the model then takes the checkpoint's tensors as its
parameters and buffers (`load_state_dict(assign=True)`): no init, no copy. A model that makes
tensors of its own while being built (non-persistent buffers, tensor attributes) would keep
them on the meta device; those are detected and built on the CPU the usual way instead.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from edgeseg.errors import DetectionError

OPTIONAL_SUFFIXES = ("num_batches_tracked",)


def optional_key(key: str) -> bool:
    """Keys a checkpoint may omit (BN's step counter: older checkpoints do not have it)."""
    return key.endswith(OPTIONAL_SUFFIXES)


def load_state_dict_strict(model, state_dict: Mapping[str, Any], *, assign: bool = False) -> None:
    result = model.load_state_dict(state_dict, strict=False, assign=assign)
    missing = [k for k in result.missing_keys if not optional_key(k)]
    if missing or result.unexpected_keys:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}")
        if result.unexpected_keys:
            parts.append(f"unexpected {', '.join(result.unexpected_keys[:5])}")
        raise DetectionError(f"strict load failed: {'; '.join(parts)}", "check --arch or the checkpoint")


def meta_tensors(model) -> Iterator[str]:
    """Names of the tensors of `model` that still have no data."""
    import torch

    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_meta:
            yield name
    for mod_name, module in model.named_modules():
        for attr, value in vars(module).items():
            if isinstance(value, torch.Tensor) and value.is_meta:
                yield f"{mod_name}.{attr}" if mod_name else attr


def _with_model_dtypes(expected: Mapping[str, Any], state_dict: Mapping[str, Any]) -> dict[str, Any]:
    # assign=True would keep a checkpoint's dtype (fp16 weights) and its storage (a view into the
    # read file's buffer, possibly unaligned, which changes which CPU kernels run and so the last
    # bits of the outputs): the module gets its own copy in its own dtype, as load_state_dict makes
    return {k: (v.to(expected[k].dtype) if k in expected and v.dtype != expected[k].dtype and v.is_floating_point() else v.clone())
            for k, v in state_dict.items()}


def _fill_optional(model) -> None:
    import torch

    for module in model.modules():
        for name, buf in list(module._buffers.items()):
            if buf is not None and buf.is_meta and optional_key(name):
                module._buffers[name] = torch.zeros((), dtype=buf.dtype)


def build_loaded(build, state_dict: Mapping[str, Any]):
    """`build(device)` makes the (untrained) model; returns it holding `state_dict`'s weights."""
    try:
        model = build("meta")
    except Exception:  # noqa: BLE001 - some constructors need real tensors
        model = None
    if model is not None:
        load_state_dict_strict(model, _with_model_dtypes(model.state_dict(), state_dict), assign=True)
        _fill_optional(model)
        if next(meta_tensors(model), None) is None:
            return model.eval()
    model = build("cpu")
    load_state_dict_strict(model, state_dict)
    return model.eval()
