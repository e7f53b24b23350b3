"""The facts `edgeseg models` shows, computed from the registry."""

from __future__ import annotations

from typing import Any
from edgeseg.registry import list_models


def _describe(entry, with_macs: bool, device: str) -> dict[str, Any]:
    import copy

    import torch

    from edgeseg.analysis import count_macs, count_params  # lazy: pulls torch
    from edgeseg.reparam.walker import reparameterize_model  # lazy: pulls torch

    with torch.device(device):
        model = entry.build()
        fused = copy.deepcopy(model)
        report = reparameterize_model(fused, input_size=entry.input_size)
        row = {
            "name": entry.name,
            "family": entry.family,
            "task": entry.task,
            "input_size": list(entry.input_size),
            "params": count_params(model),
            "params_fused": count_params(fused),
            "reparam_blocks": report.as_dict(),
            "layouts": [l.name for l in entry.layouts],
            "description": entry.description,
        }
        if with_macs:
            row["macs_fused"] = count_macs(fused, entry.input_size, device=device)
    return row


def describe_models(family: str | None = None, with_macs: bool = True) -> list[dict[str, Any]]:
    """Sizes come from meta-device builds (no weights, no compute); models whose forward
    needs real data fall back to the CPU."""
    rows = []
    for entry in list_models(family):
        try:
            rows.append(_describe(entry, with_macs, "meta"))
        except Exception:
            rows.append(_describe(entry, with_macs, "cpu"))
    return rows
