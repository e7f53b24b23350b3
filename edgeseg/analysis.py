"""Model size and cost: parameters and MACs (torch's FLOP counter counts 2 FLOPs per MAC)."""

from __future__ import annotations

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_size: tuple[int, int], batch: int = 1, channels: int = 3, device: str = "cpu") -> int:
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(batch, channels, *input_size, device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    return counter.get_total_flops() // 2
