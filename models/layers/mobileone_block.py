"""MobileOne's reparameterizable block and FastViT's large-kernel conv (apple/ml-mobileone,
apple/ml-fastvit): multi-branch at train time, one conv with bias at deploy time.

Attribute names follow the originals (rbr_conv.{i}.{conv,bn}, rbr_scale, rbr_skip,
reparam_conv; lkb_origin, small_conv, lkb_reparam) so their checkpoints load strictly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.reparam.fusion import conv_like, fold_bn, identity_kernel, pad_kernel


class SEBlock(nn.Module):
    """Squeeze-excite of MobileOne: global pool -> reduce -> ReLU -> expand -> sigmoid."""

    def __init__(self, channels: int, rd_ratio: float = 0.0625):
        super().__init__()
        rd = int(channels * rd_ratio)
        self.reduce = nn.Conv2d(channels, rd, 1, bias=True)
        self.expand = nn.Conv2d(rd, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = torch.sigmoid(self.expand(F.relu(self.reduce(s))))
        return x * s


def _conv_bn(in_ch: int, out_ch: int, k: int, stride: int, padding: int, groups: int) -> nn.Sequential:
    seq = nn.Sequential()
    seq.add_module("conv", nn.Conv2d(in_ch, out_ch, k, stride, padding, groups=groups, bias=False))
    seq.add_module("bn", nn.BatchNorm2d(out_ch))
    return seq


class MobileOneBlock(nn.Module):
    """act(se(sum_i BN_i(Conv_kxk_i(x)) + BN(Conv_1x1(x)) + BN_skip(x)))."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int | None = None,
                 groups: int = 1, use_se: bool = False, use_act: bool = True, use_scale_branch: bool = True,
                 num_conv_branches: int = 1, activation: nn.Module | None = None, inference_mode: bool = False):
        super().__init__()
        padding = kernel_size // 2 if padding is None else padding
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding, self.groups = kernel_size, stride, padding, groups
        self.num_conv_branches = num_conv_branches
        self.se = SEBlock(out_channels) if use_se else nn.Identity()
        self.activation = (activation if activation is not None else nn.GELU()) if use_act else nn.Identity()
        self.reparam_conv: nn.Conv2d | None = None
        self.rbr_skip = self.rbr_conv = self.rbr_scale = None
        if inference_mode:
            self.reparam_conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=True)
            return
        if out_channels == in_channels and stride == 1:
            self.rbr_skip = nn.BatchNorm2d(in_channels)
        if num_conv_branches > 0:
            self.rbr_conv = nn.ModuleList(
                _conv_bn(in_channels, out_channels, kernel_size, stride, padding, groups) for _ in range(num_conv_branches)
            )
        if kernel_size > 1 and use_scale_branch:
            self.rbr_scale = _conv_bn(in_channels, out_channels, 1, stride, 0, groups)

    @property
    def is_reparameterized(self) -> bool:
        return self.reparam_conv is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.activation(self.se(self.reparam_conv(x)))
        out = 0
        if self.rbr_skip is not None:
            out = self.rbr_skip(x)
        if self.rbr_scale is not None:
            out = out + self.rbr_scale(x)
        if self.rbr_conv is not None:
            for branch in self.rbr_conv:
                out = out + branch(x)
        return self.activation(self.se(out))

    @torch.no_grad()
    def kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single (kxk kernel, bias) equivalent to the branch sum, before SE/activation."""
        if self.reparam_conv is not None:
            return self.reparam_conv.weight, self.reparam_conv.bias
        k = self.kernel_size
        like = next(self.parameters())
        kernel = torch.zeros(self.out_channels, self.in_channels // self.groups, k, k, dtype=like.dtype, device=like.device)
        bias = torch.zeros(self.out_channels, dtype=like.dtype, device=like.device)
        if self.rbr_skip is not None:
            w, b = fold_bn(identity_kernel(self.in_channels, self.groups, k, like), None, self.rbr_skip)
            kernel, bias = kernel + w, bias + b
        if self.rbr_scale is not None:
            w, b = fold_bn(self.rbr_scale.conv.weight, None, self.rbr_scale.bn)
            kernel, bias = kernel + pad_kernel(w, k), bias + b
        if self.rbr_conv is not None:
            for branch in self.rbr_conv:
                w, b = fold_bn(branch.conv.weight, None, branch.bn)
                kernel, bias = kernel + w, bias + b
        return kernel, bias

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.reparam_conv is not None:
            return
        kernel, bias = self.kernel_bias()
        geometry = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding, groups=self.groups, device="meta")
        self.reparam_conv = conv_like(geometry, kernel, bias)
        self.rbr_skip = self.rbr_conv = self.rbr_scale = None


class ReparamLargeKernelConv(nn.Module):
    """BN(Conv_kxk(x)) + BN(Conv_small(x)), fused into one kxk conv (FastViT's patch embed).

    The original computes an activation and discards its result, so there is none here.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, groups: int,
                 small_kernel: int | None = 3, inference_mode: bool = False):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.groups = kernel_size, stride, groups
        self.padding = kernel_size // 2
        self.lkb_reparam: nn.Conv2d | None = None
        self.lkb_origin = self.small_conv = None
        if inference_mode:
            self.lkb_reparam = nn.Conv2d(in_channels, out_channels, kernel_size, stride, self.padding, groups=groups, bias=True)
            return
        self.lkb_origin = _conv_bn(in_channels, out_channels, kernel_size, stride, self.padding, groups)
        if small_kernel is not None:
            self.small_conv = _conv_bn(in_channels, out_channels, small_kernel, stride, small_kernel // 2, groups)

    @property
    def is_reparameterized(self) -> bool:
        return self.lkb_reparam is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lkb_reparam is not None:
            return self.lkb_reparam(x)
        out = self.lkb_origin(x)
        if self.small_conv is not None:
            out = out + self.small_conv(x)
        return out

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.lkb_reparam is not None:
            return
        kernel, bias = fold_bn(self.lkb_origin.conv.weight, None, self.lkb_origin.bn)
        if self.small_conv is not None:
            w, b = fold_bn(self.small_conv.conv.weight, None, self.small_conv.bn)
            kernel, bias = kernel + pad_kernel(w, self.kernel_size), bias + b
        self.lkb_reparam = conv_like(self.lkb_origin.conv, kernel, bias)
        self.lkb_origin = self.small_conv = None
