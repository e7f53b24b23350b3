"""Fusion arithmetic shared by every reparameterizable block.

All functions work on tensors of any device (meta included: detection builds fused
structures without real weights).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def bn_scale_shift(bn: nn.BatchNorm2d | nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """BN in eval mode is y = x * scale + shift."""
    std = torch.sqrt(bn.running_var + bn.eps)
    gamma = bn.weight if bn.weight is not None else torch.ones_like(std)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(std)
    scale = gamma / std
    return scale, beta - bn.running_mean * scale


def fold_bn(kernel: torch.Tensor, bias: torch.Tensor | None, bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold a BN that follows a conv/linear with `kernel` (out first) and optional `bias`."""
    scale, shift = bn_scale_shift(bn)
    shape = (-1,) + (1,) * (kernel.dim() - 1)
    b = shift if bias is None else bias * scale + shift
    return kernel * scale.reshape(shape), b


def identity_kernel(channels: int, groups: int, k: int, like: torch.Tensor) -> torch.Tensor:
    """A kxk grouped conv kernel that returns its input."""
    per_group = channels // groups
    kernel = torch.zeros(channels, per_group, k, k, dtype=like.dtype, device=like.device)
    idx = torch.arange(channels, device=like.device)
    kernel[idx, idx % per_group, k // 2, k // 2] = 1.0
    return kernel


def pad_kernel(kernel: torch.Tensor, k: int) -> torch.Tensor:
    """Zero-pad a smaller odd kernel to kxk around its centre."""
    p = (k - kernel.shape[-1]) // 2
    return F.pad(kernel, [p, p, p, p]) if p > 0 else kernel


def conv_like(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Conv2d:
    """A conv with `conv`'s geometry carrying the given weights (bias added when given)."""
    out = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=bias is not None,
        padding_mode=conv.padding_mode,
        device=weight.device,
        dtype=weight.dtype,
    )
    out.weight = nn.Parameter(weight.detach().clone())
    if bias is not None:
        out.bias = nn.Parameter(bias.detach().clone())
    return out


@torch.no_grad()
def fuse_conv_bn(conv: nn.Conv2d, bn: nn.Module) -> nn.Conv2d:
    w, b = fold_bn(conv.weight, conv.bias, bn)
    return conv_like(conv, w, b)


@torch.no_grad()
def fuse_linear_bn(linear: nn.Linear, bn: nn.Module) -> nn.Linear:
    w, b = fold_bn(linear.weight, linear.bias, bn)
    out = nn.Linear(linear.in_features, linear.out_features, device=w.device, dtype=w.dtype)
    out.weight = nn.Parameter(w.detach().clone())
    out.bias = nn.Parameter(b.detach().clone())
    return out
