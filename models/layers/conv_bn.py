"""Conv (no bias) followed by BatchNorm, foldable into one conv at deploy time."""

from __future__ import annotations

from torch import nn

from edgeseg.reparam.fusion import fuse_conv_bn


class ConvBN(nn.Sequential):
    """Sequential(conv, bn) whose child names (`conv`, `bn` by default) match the original
    project's keys; `reparameterize()` replaces the pair by `conv` with a bias, keeping
    the conv's key name (e.g. `x.conv.weight`, `x.conv.bias`)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 1, stride: int = 1, padding: int | None = None,
                 groups: int = 1, dilation: int = 1, conv_name: str = "conv", bn_name: str = "bn", bn_eps: float = 1e-5):
        super().__init__()
        if padding is None:
            padding = (kernel_size - 1) // 2 * dilation
        self.conv_name, self.bn_name = conv_name, bn_name
        self.add_module(conv_name, nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, dilation=dilation, groups=groups, bias=False))
        self.add_module(bn_name, nn.BatchNorm2d(out_ch, eps=bn_eps))

    @property
    def is_reparameterized(self) -> bool:
        return self.bn_name not in self._modules

    def reparameterize(self) -> None:
        if self.is_reparameterized:
            return
        conv = self._modules[self.conv_name]
        bn = self._modules.pop(self.bn_name)
        self._modules[self.conv_name] = fuse_conv_bn(conv, bn)


class ConvBNReLU(ConvBN):
    """mmcv's `ConvModule(conv, norm=BN, act=ReLU)` with its child names (`conv`, `bn`,
    `activate`), as mmseg heads (FPNHead, SegformerHead, TopFormer's fuse) build it; the
    conv+BN folds at deploy time and the ReLU stays."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 1, stride: int = 1, padding: int | None = None, groups: int = 1):
        super().__init__(in_ch, out_ch, kernel_size, stride, padding, groups, conv_name="conv", bn_name="bn")
        self.add_module("activate", nn.ReLU())
