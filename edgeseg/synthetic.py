"""Deterministic non-trivial weights, for the demo and the numerical tests.

Fresh BatchNorm statistics (mean 0, var 1) and layer scales at their 1e-5 init hide fusion
bugs; these weights make every branch, statistic and scale matter.
"""

from __future__ import annotations

import re

import torch
from torch import nn

_LAYER_SCALE = re.compile(r"(^|\.)(layer_scale(_\d)?|gamma(_\d)?|ls\d?|layer_scale\.gamma|scale_\d)$")


@torch.no_grad()
def randomize_weights_(model: nn.Module, seed: int = 0, calib_size: tuple[int, int] | None = (64, 64)) -> nn.Module:
    """Random weights and layer scales; BN statistics measured on random inputs, then perturbed.

    Measuring the statistics first keeps activations at a trained network's scale (random
    statistics alone compound through depth); the perturbation keeps them off the identity.
    """
    gen = torch.Generator().manual_seed(seed)

    def uniform(t: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        return torch.rand(t.shape, generator=gen, dtype=torch.float32).to(t.dtype) * (hi - lo) + lo

    def normal(t: torch.Tensor, std: float) -> torch.Tensor:
        return torch.randn(t.shape, generator=gen, dtype=torch.float32).to(t.dtype) * std

    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if _LAYER_SCALE.search(name) and not isinstance(p, nn.UninitializedParameter):
            p.copy_(uniform(p, 0.2, 0.9))
        elif p.dim() > 1:
            fan_in = p[0].numel() if p.numel() else 1
            p.copy_(normal(p, (1.0 / max(fan_in, 1)) ** 0.5))
        elif leaf == "bias":
            p.copy_(normal(p, 0.05))
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for mod in bns:
        if mod.weight is not None:
            mod.weight.copy_(uniform(mod.weight, 0.5, 1.5))
            mod.bias.copy_(normal(mod.bias, 0.1))
    if calib_size is not None and bns:
        _measure_bn_stats(model, bns, calib_size, gen)
    for mod in bns:
        std = mod.running_var.clamp_min(1e-6).sqrt()
        mod.running_mean.add_(normal(mod.running_mean, 0.2) * std)
        mod.running_var.mul_(uniform(mod.running_var, 0.5, 2.0))
    for mod in model.modules():
        if isinstance(mod, (nn.LayerNorm, nn.GroupNorm)) and mod.weight is not None:
            mod.weight.copy_(uniform(mod.weight, 0.6, 1.4))
            mod.bias.copy_(normal(mod.bias, 0.1))
    return model


def _measure_bn_stats(model: nn.Module, bns: list, size: tuple[int, int], gen: torch.Generator) -> None:
    was_training = model.training
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    model.train()
    try:
        for _ in range(2):
            model(torch.randn(4, 3, *size, generator=gen))
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        model.train(was_training)
