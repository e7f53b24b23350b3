"""FastViT + Semantic FPN for ADE20K (150 classes, 512x512), as in the FastViT paper.

apple/ml-fastvit ships no segmentation code, so this model follows mmsegmentation, which
the paper's Semantic FPN experiments use: the FastViT backbone with `fork_feat` (a BN per
output, named `norm{i}` after its network index), mmseg's `FPN` neck (256 channels, 1x1
lateral and 3x3 output convs with bias, nearest 2x top-down) and `FPNHead` (128-channel
scale heads of 3x3 conv+BN+ReLU with 2x bilinear upsampling, summed, dropout, `conv_seg`).
Keys use mmseg's layout (`backbone.*`, `neck.lateral_convs.{i}.conv`,
`neck.fpn_convs.{i}.conv`, `decode_head.scale_heads.{i}.{k}.{conv,bn}`,
`decode_head.conv_seg`) in an mmseg container `{'meta', 'state_dict'}`.

Features are taken after every stage, including the attention stage of SA/MA models (the
original's fork indices skip it). `forward(x)` returns logits at 1/4 of the input size.
Input sizes must be multiples of 32; then each FPN level is exactly twice the next, and
fixed-factor upsampling equals mmseg's size-matched resizing (the final resize to the
first level's size is an identity and is omitted).

The variants are registered in `fastvit_entries.py` (torch-free).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.models.fastvit import build_fastvit
from edgeseg.models.fastvit_layouts import SEG_VARIANTS  # noqa: F401 (re-exported)
from edgeseg.models.layers import ConvBNReLU


def _conv(in_ch: int, out_ch: int, k: int) -> nn.Sequential:
    """mmcv ConvModule without norm/activation: the conv (with bias) is its child `conv`."""
    conv = nn.Conv2d(in_ch, out_ch, k, padding=k // 2, bias=True)
    nn.init.xavier_uniform_(conv.weight)
    nn.init.zeros_(conv.bias)
    return nn.Sequential(OrderedDict(conv=conv))


class FPN(nn.Module):
    """mmseg FPN neck: laterals, top-down sum with nearest 2x upsampling, 3x3 output convs."""

    def __init__(self, in_channels: list[int], out_channels: int = 256):
        super().__init__()
        self.lateral_convs = nn.ModuleList(_conv(c, out_channels, 1) for c in in_channels)
        self.fpn_convs = nn.ModuleList(_conv(out_channels, out_channels, 3) for _ in in_channels)

    def forward(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], scale_factor=2.0, mode="nearest")
        return [conv(x) for conv, x in zip(self.fpn_convs, laterals)]


class FPNHead(nn.Module):
    """mmseg FPNHead: per level log2(stride/4) conv blocks (at least one), each followed by a
    2x bilinear upsampling for strides > 4; levels summed; dropout; 1x1 `conv_seg`."""

    def __init__(self, in_channels: list[int], feature_strides=(4, 8, 16, 32), channels: int = 128, num_classes: int = 150,
                 dropout_ratio: float = 0.1):
        super().__init__()
        base = feature_strides[0]
        self.scale_heads = nn.ModuleList()
        for i, stride in enumerate(feature_strides):
            layers: list[nn.Module] = []
            for k in range(max(1, (stride // base).bit_length() - 1)):
                layers.append(ConvBNReLU(in_channels[i] if k == 0 else channels, channels, 3))
                if stride != base:
                    layers.append(nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*layers))
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, std=0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        out = self.scale_heads[0](feats[0])
        for head, x in zip(self.scale_heads[1:], feats[1:]):
            out = out + head(x)
        return self.conv_seg(self.dropout(out))


class FastViTSeg(nn.Module):
    """FastViT backbone + Semantic FPN; logits (B, num_classes, H/4, W/4).

    `reparameterize()` folds the backbone's output BNs into the FPN's 1x1 lateral convs
    (exact: BN then a 1x1 conv without padding); the block fusions are done by the generic
    walker (`edgeseg.reparameterize`), which calls this hook too.
    """

    def __init__(self, variant: str, num_classes: int = 150, fpn_channels: int = 256, head_channels: int = 128,
                 dropout_ratio: float = 0.1, **backbone_kw):
        super().__init__()
        self.backbone = build_fastvit(variant, fork_feat=True, **backbone_kw)
        dims = list(self.backbone.embed_dims)
        self.neck = FPN(dims, fpn_channels)
        self.decode_head = FPNHead([fpn_channels] * len(dims), channels=head_channels, num_classes=num_classes,
                                   dropout_ratio=dropout_ratio)

    def _output_norms(self) -> list[tuple[str, nn.Module]]:
        return [(f"norm{i}", getattr(self.backbone, f"norm{i}")) for i in self.backbone.stage_indices]

    @property
    def is_reparameterized(self) -> bool:
        return not any(isinstance(m, nn.BatchNorm2d) for _, m in self._output_norms())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_head(self.neck(self.backbone(x)))

    @torch.no_grad()
    def reparameterize(self) -> None:
        for (name, bn), lateral in zip(self._output_norms(), self.neck.lateral_convs):
            if not isinstance(bn, nn.BatchNorm2d):
                continue
            conv = lateral.conv
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            shift = bn.bias - bn.running_mean * scale
            w2d = conv.weight[:, :, 0, 0]
            fused = nn.Conv2d(conv.in_channels, conv.out_channels, 1, bias=True, device=conv.weight.device, dtype=conv.weight.dtype)
            fused.weight = nn.Parameter(conv.weight * scale.reshape(1, -1, 1, 1))
            fused.bias = nn.Parameter(conv.bias + w2d @ shift)
            lateral.conv = fused
            setattr(self.backbone, name, nn.Identity())
