"""EdgeFormer (ParC-Net) building blocks with the module names of hkzhang91/EdgeFormer's
ml-cvnets code, so its checkpoints load strictly:

- `ConvLayer`: cvnets' conv/norm/act block (`block.{conv,norm,act}`).
- `InvertedResidual`: MobileNetV2 block (`block.{exp_1x1,conv_3x3,red_1x1}`).
- `GCCBlock`: `gcc_ca_mf_block`, a meta-former block whose token mixer is a pair of global
  circular convs per half of the channels (H then W, and W then H), followed by
  x + CA(FFN(x)).
- `GCCFrame`: `outer_frame_v1`, local conv -> GCC blocks -> BN -> channel projection ->
  fusion with the stage input.

`GCCBlock.reparameterize(input_size)` is resolution-specific: it bakes the resized kernels and
position embeddings of one input size into static circular convs and bias maps.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from edgeseg.errors import EdgesegError
from edgeseg.models.layers.circular_conv import H_AXIS, W_AXIS, CircularConv, circular_conv, kernel_sum, resize_along
from edgeseg.reparam.fusion import bn_scale_shift, conv_like


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """cvnets' channel rounding (as in MobileNetV2)."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def feature_size(input_size: tuple[int, int] | None, downsample: int) -> tuple[int, int]:
    """Spatial size after `downsample` stride-2 convs (kernel 3, padding 1: ceil(n / 2) each)."""
    if input_size is None:
        raise EdgesegError("EdgeFormer's global circular convs are baked for one input size",
                           "pass input_size=(H, W) to reparameterize")
    h, w = (int(s) for s in input_size)
    for _ in range(downsample):
        h, w = -(-h // 2), -(-w // 2)
    return h, w


@torch.no_grad()
def fold_bn_into_pointwise(bn: nn.BatchNorm2d, conv: nn.Conv2d) -> nn.Conv2d:
    """A conv computing conv(bn(x)) for an unpadded 1x1 conv, grouped or not.

    BN is x * scale + shift per input channel; each output channel of group g sees only
    the inputs of g, so the scale multiplies its weights and the shift adds W @ shift.
    """
    if conv.kernel_size != (1, 1) or conv.padding not in ((0, 0), "valid"):
        raise ValueError(f"a preceding BN folds exactly only into an unpadded 1x1 conv, got {conv}")
    scale, shift = bn_scale_shift(bn)
    g, out_ch = conv.groups, conv.out_channels

    def per_out(v: torch.Tensor) -> torch.Tensor:  # (in,) -> (out, in / groups): what each output sees
        return v.reshape(g, -1).repeat_interleave(out_ch // g, dim=0)

    w = conv.weight
    bias = conv.bias if conv.bias is not None else torch.zeros(out_ch, dtype=w.dtype, device=w.device)
    new_w = w * per_out(scale)[:, :, None, None]
    new_b = bias + (w[:, :, 0, 0] * per_out(shift)).sum(dim=1)
    return conv_like(conv, new_w, new_b)


class ConvLayer(nn.Module):
    """cvnets ConvLayer: conv (padding (k-1)//2 * dilation), optional BN, optional activation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1, groups: int = 1,
                 bias: bool = False, use_norm: bool = True, act_layer: type[nn.Module] | None = None):
        super().__init__()
        block = nn.Sequential()
        block.add_module("conv", nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2 * dilation,
                                           dilation=dilation, groups=groups, bias=bias))
        if use_norm:
            block.add_module("norm", nn.BatchNorm2d(out_channels))
        if act_layer is not None:
            block.add_module("act", act_layer())
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> 3x3 depthwise -> 1x1 reduce (+ x when shapes allow)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: float, dilation: int = 1,
                 act_layer: type[nn.Module] = nn.SiLU):
        super().__init__()
        hidden = make_divisible(int(round(in_channels * expand_ratio)), 8)
        self.use_res_connect = stride == 1 and in_channels == out_channels
        block = nn.Sequential()
        if expand_ratio != 1:
            block.add_module("exp_1x1", ConvLayer(in_channels, hidden, 1, act_layer=act_layer))
        block.add_module("conv_3x3", ConvLayer(hidden, hidden, 3, stride=stride, dilation=dilation, groups=hidden, act_layer=act_layer))
        block.add_module("red_1x1", ConvLayer(hidden, out_channels, 1))
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.use_res_connect else self.block(x)


class CALayer(nn.Module):
    """Channel attention of the GCC block: x * hardsigmoid(BN(conv(hardswish(BN(conv(gap(x))))))."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        mid = channels // reduction
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Conv2d(channels, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.Hardswish(),
            nn.Conv2d(mid, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.Hardsigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(self.gap(x))


_META_KERNELS = ("meta_kernel_1_H", "meta_kernel_1_W", "meta_kernel_2_H", "meta_kernel_2_W")
_META_PES = ("meta_pe_1_H", "meta_pe_1_W", "meta_pe_2_H", "meta_pe_2_W")


class GCCBlock(nn.Module):
    """gcc_ca_mf_block. Channels split in halves x_1, x_2 (dim each):

        x_1 + circW(circH(BN_1(x_1 + pe_1_H); K_1_H) + pe_2_W; K_2_W)
        x_2 + circH(circW(BN_2(x_2 + pe_1_W); K_1_W) + pe_2_H; K_2_H)

    then x + CA(FFN(x)). Kernels K and position embeddings pe are the meta tensors resized to
    the feature size at every forward. The original resizes all of them to the height (it
    assumes square inputs and fails on others); we resize the H ones to the height and the
    W ones to the width, which is the same on square inputs and also runs on non-square ones.
    """

    def __init__(self, dim: int, meta_kernel_size: int, ffn_dim: int, use_pe: bool, downsample: int,
                 ffn_dropout: float = 0.0, dropout: float = 0.1):
        super().__init__()
        self.dim, self.use_pe, self.downsample = dim, use_pe, downsample
        self.baked_size: tuple[int, int] | None = None
        self.pre_Norm_1 = nn.BatchNorm2d(dim)
        self.pre_Norm_2 = nn.BatchNorm2d(dim)
        k = meta_kernel_size
        for name, shape in zip(_META_KERNELS, ((dim, 1, k, 1), (dim, 1, 1, k), (dim, 1, k, 1), (dim, 1, 1, k))):
            p = nn.Parameter(torch.empty(shape))
            nn.init.kaiming_uniform_(p, a=math.sqrt(5))  # the original takes them from fresh nn.Conv2d's
            self.register_parameter(name, p)
        if use_pe:
            for name, shape in zip(_META_PES, ((1, dim, k, 1), (1, dim, 1, k), (1, dim, k, 1), (1, dim, 1, k))):
                self.register_parameter(name, nn.Parameter(torch.randn(shape)))
        self.ffn = nn.Sequential(
            nn.BatchNorm2d(2 * dim), nn.Conv2d(2 * dim, ffn_dim, 1), nn.Hardswish(), nn.Dropout(ffn_dropout),
            nn.Conv2d(ffn_dim, 2 * dim, 1), nn.Dropout(dropout),
        )
        self.ca = CALayer(2 * dim)

    @property
    def is_reparameterized(self) -> bool:
        return self.baked_size is not None

    def _halves(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # torch.chunk exports as Shape/Div arithmetic; the split point is a constant here.
        return x[:, : self.dim], x[:, self.dim :]

    def _resized(self, name: str, h: int, w: int) -> torch.Tensor:
        """Meta tensor `name` resized along its axis (suffix _H or _W) to the feature size."""
        if name.endswith("_H"):
            return resize_along(getattr(self, name), h, H_AXIS)
        return resize_along(getattr(self, name), w, W_AXIS)

    def _mix(self, x: torch.Tensor) -> torch.Tensor:
        x_1, x_2 = self._halves(x)
        h, w = x.shape[-2:]
        d = self.dim

        def r(name: str) -> torch.Tensor:
            return self._resized(name, h, w)

        a_1, a_2 = (x_1 + r("meta_pe_1_H"), x_2 + r("meta_pe_1_W")) if self.use_pe else (x_1, x_2)
        y_1 = circular_conv(self.pre_Norm_1(a_1), r("meta_kernel_1_H"), None, H_AXIS, d)
        y_2 = circular_conv(self.pre_Norm_2(a_2), r("meta_kernel_1_W"), None, W_AXIS, d)
        if self.use_pe:
            y_1, y_2 = y_1 + r("meta_pe_2_W"), y_2 + r("meta_pe_2_H")
        y_1 = circular_conv(y_1, r("meta_kernel_2_W"), None, W_AXIS, d)
        y_2 = circular_conv(y_2, r("meta_kernel_2_H"), None, H_AXIS, d)
        return torch.cat((x_1 + y_1, x_2 + y_2), dim=1)

    def _mix_baked(self, x: torch.Tensor) -> torch.Tensor:
        x_1, x_2 = self._halves(x)
        y_1 = self.gcc_2_W(self.gcc_1_H(x_1))
        y_2 = self.gcc_2_H(self.gcc_1_W(x_2))
        if self.use_pe:
            y_1 = y_1 + self.pe_bias_1_h + self.pe_bias_1_w
            y_2 = y_2 + self.pe_bias_2_w + self.pe_bias_2_h
        return torch.cat((x_1 + y_1, x_2 + y_2), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._mix_baked(x) if self.baked_size is not None else self._mix(x)
        return x + self.ca(self.ffn(x))

    def _bake_half(self, norm: nn.BatchNorm2d, first: torch.Tensor, first_axis: int, second: torch.Tensor, second_axis: int,
                   pe_first: torch.Tensor | None, pe_second: torch.Tensor | None):
        """circ2(circ1(norm(x + pe_first)) + pe_second) as circ2'(circ1'(x)) + constant.

        The norm's scale goes into the first kernel. A circular conv maps a per-channel
        constant c to c * sum(K), and a map that varies along one axis stays a map along that
        axis; so the constant is a per-channel bias (on the second conv) plus, with position
        embeddings, one map along each axis."""
        scale, shift = bn_scale_shift(norm)
        conv_1 = CircularConv.from_kernel(first * scale.reshape(-1, 1, 1, 1), first_axis)
        conv_2 = CircularConv.from_kernel(second, second_axis, bias=shift * kernel_sum(first) * kernel_sum(second))
        if pe_first is None:
            return conv_1, conv_2, None
        along_first = circular_conv(pe_first * scale.reshape(1, -1, 1, 1), first, None, first_axis, self.dim)
        along_first = along_first * kernel_sum(second).reshape(1, -1, 1, 1)
        along_second = circular_conv(pe_second, second, None, second_axis, self.dim)
        return conv_1, conv_2, (nn.Parameter(along_first), nn.Parameter(along_second))

    @torch.no_grad()
    def reparameterize(self, input_size: tuple[int, int] | None = None) -> None:
        """Bake kernels, position embeddings and pre-norms for the feature size of `input_size`
        (the image size; this block sees it downsampled `downsample` times)."""
        if self.baked_size is not None:
            return
        h, w = feature_size(input_size, self.downsample)
        r = {name: self._resized(name, h, w) for name in _META_KERNELS + (_META_PES if self.use_pe else ())}
        self.gcc_1_H, self.gcc_2_W, maps_1 = self._bake_half(self.pre_Norm_1, r["meta_kernel_1_H"], H_AXIS, r["meta_kernel_2_W"], W_AXIS,
                                                             r.get("meta_pe_1_H"), r.get("meta_pe_2_W"))
        self.gcc_1_W, self.gcc_2_H, maps_2 = self._bake_half(self.pre_Norm_2, r["meta_kernel_1_W"], W_AXIS, r["meta_kernel_2_H"], H_AXIS,
                                                             r.get("meta_pe_1_W"), r.get("meta_pe_2_H"))
        if self.use_pe:
            self.pe_bias_1_h, self.pe_bias_1_w = maps_1
            self.pe_bias_2_w, self.pe_bias_2_h = maps_2
        for name in r:
            delattr(self, name)
        del self.pre_Norm_1, self.pre_Norm_2
        self.ffn[1] = fold_bn_into_pointwise(self.ffn[0], self.ffn[1])
        self.ffn[0] = nn.Identity()
        self.baked_size = (h, w)


class GCCFrame(nn.Module):
    """outer_frame_v1: dim_adaptive -> GCC blocks + BN -> channel_adaptive -> fusion with the input
    (`concat`: 3x3 conv over [x, input]; `add`: 3x3 conv over x + input)."""

    def __init__(self, in_channels: int, cf_s_channels: int, n_blocks: int, meta_kernel_size: int, ffn_channels: int,
                 fusion: str, use_pe: bool, downsample: int, act_layer: type[nn.Module] = nn.SiLU,
                 ffn_dropout: float = 0.0, dropout: float = 0.1):
        super().__init__()
        if fusion not in ("concat", "add"):
            raise ValueError(f"fusion must be 'concat' or 'add', got {fusion!r}")
        groups = math.gcd(cf_s_channels, in_channels)
        self.fusion = fusion
        self.folded = False
        self.dim_adaptive = nn.Sequential(
            ConvLayer(in_channels, cf_s_channels, 3, groups=groups, act_layer=act_layer),
            ConvLayer(cf_s_channels, cf_s_channels, 1, use_norm=False),
        )
        blocks = [GCCBlock(cf_s_channels // 2, meta_kernel_size, ffn_channels, use_pe and i == 0, downsample, ffn_dropout, dropout)
                  for i in range(n_blocks)]
        self.spatial_global_rep = nn.Sequential(*blocks, nn.BatchNorm2d(cf_s_channels))
        self.channel_adaptive = ConvLayer(cf_s_channels, in_channels, 1, groups=groups, act_layer=act_layer)
        fusion_in = 2 * in_channels if fusion == "concat" else in_channels
        self.local_global_fusion = ConvLayer(fusion_in, in_channels, 3, act_layer=act_layer)

    @property
    def is_reparameterized(self) -> bool:
        return self.folded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = x
        x = self.channel_adaptive(self.spatial_global_rep(self.dim_adaptive(x)))
        if self.fusion == "concat":
            return self.local_global_fusion(torch.cat((x, res), dim=1))
        return self.local_global_fusion(x + res)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the BN that closes the GCC blocks into the (grouped 1x1) channel projection."""
        if self.folded:
            return
        last = len(self.spatial_global_rep) - 1
        block = self.channel_adaptive.block
        block.conv = fold_bn_into_pointwise(self.spatial_global_rep[last], block.conv)
        self.spatial_global_rep[last] = nn.Identity()
        self.folded = True
