"""DeepLabV3 on EdgeFormer-S (hkzhang91/EdgeFormer, ml-cvnets v0.1 `encoder_decoder` + `deeplabv3`
head), Pascal VOC.

As in the original: the encoder runs at output stride 16 (layer 5 not strided) with Swish,
the head uses ReLU, and the head ends with x16 bilinear upsampling (align_corners=False), so
forward returns logits at the input size. Keys `encoder.*` (with the `residual` duplicate)
and `seg_head.{aspp.aspp_layer, classifier.classifier}.*`. Registered, without torch, in edgeformer_entries.py.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgeseg.models.edgeformer import BakedInputSize, EdgeFormer
from edgeseg.models.edgeformer_layouts import CVNETS_SEG  # noqa: F401 (re-exported)
from edgeseg.models.layers.edgeformer_blocks import ConvLayer


class ASPPPooling(nn.Module):
    """Image-level branch: global average -> 1x1 conv -> broadcast back to the feature size.

    The original resizes the 1x1 map bilinearly to the feature size; from one pixel that is a
    broadcast (up to one rounding of w*v + (1-w)*v), and multiplying by ones shaped like
    the input exports without reading the shape into integers."""

    def __init__(self, in_channels: int, out_channels: int, act_layer: type[nn.Module]):
        super().__init__()
        self.aspp_pool = nn.Sequential()
        self.aspp_pool.add_module("global_pool", nn.AdaptiveAvgPool2d(1))
        self.aspp_pool.add_module("conv_1x1", ConvLayer(in_channels, out_channels, 1, act_layer=act_layer))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.aspp_pool(x) * torch.ones_like(x[:, :1])


class ASPP(nn.Module):
    """cvnets ASPP: 1x1, three dilated 3x3 and the pooling branch, concatenated and projected."""

    def __init__(self, in_channels: int, out_channels: int, rates: tuple[int, int, int], dropout: float, act_layer: type[nn.Module]):
        super().__init__()
        branches: list[nn.Module] = [ConvLayer(in_channels, out_channels, 1, act_layer=act_layer)]
        branches += [ConvLayer(in_channels, out_channels, 3, dilation=r, act_layer=act_layer) for r in rates]
        branches.append(ASPPPooling(in_channels, out_channels, act_layer))
        self.convs = nn.ModuleList(branches)
        self.project = ConvLayer((len(rates) + 2) * out_channels, out_channels, 1, act_layer=act_layer)
        self.dropout = nn.Dropout(dropout) if 0.0 < dropout < 1.0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project(torch.cat([conv(x) for conv in self.convs], dim=1))
        return self.dropout(x) if self.dropout is not None else x


class DeepLabV3Head(nn.Module):
    """cvnets v0.1 DeeplabV3 head: aspp -> classifier (dropout, 1x1 conv with bias, x`output_stride` upsample)."""

    def __init__(self, in_channels: int, num_classes: int, output_stride: int = 16, aspp_channels: int = 256,
                 aspp_rates: tuple[int, int, int] = (6, 12, 18), aspp_dropout: float = 0.1, classifier_dropout: float = 0.1):
        super().__init__()
        self.aspp = nn.Sequential()
        self.aspp.add_module("aspp_layer", ASPP(in_channels, aspp_channels, tuple(aspp_rates), aspp_dropout, nn.ReLU))
        self.classifier = nn.Sequential()
        if 0.0 < classifier_dropout < 1.0:
            self.classifier.add_module("classifier_dropout", nn.Dropout2d(classifier_dropout))
        self.classifier.add_module("classifier", ConvLayer(aspp_channels, num_classes, 1, bias=True, use_norm=False))
        self.classifier.add_module(f"up_{output_stride}", nn.Upsample(scale_factor=output_stride, mode="bilinear", align_corners=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.aspp(x))


class EdgeFormerDeepLabV3(BakedInputSize, nn.Module):
    def __init__(self, num_classes: int = 21, output_stride: int = 16, variant: str = "s", **head_cfg: Any):
        super().__init__()
        self.encoder = EdgeFormer(variant, output_stride=output_stride, with_head=False)
        self.seg_head = DeepLabV3Head(self.encoder.out_channels, num_classes, output_stride, **head_cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_size(x)
        return self.seg_head(self.encoder.forward_features(x))
