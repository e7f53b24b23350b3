"""EdgeFormer / ParC-Net (hkzhang91/EdgeFormer, built on ml-cvnets v0.1), ImageNet classification.

Key names are those of the original's plain state dict (`conv_1.block.conv.weight`,
`layer_3.1.spatial_global_rep.0.meta_kernel_1_H`, `classifier.fc.weight`, ...), including
the `residual.*` duplicate of `layer_5.0.*` that the original saves because its constructor
keeps the last stage's MobileNetV2 block as `self.residual`.

Inputs as the original feeds them: BGR (OpenCV) in [0, 1], no mean/std normalization.
Registered, without torch, in edgeformer_entries.py (layouts in edgeformer_layouts.py).
"""

from __future__ import annotations

import torch
from torch import nn

from edgeseg.errors import EdgesegError
from edgeseg.models.edgeformer_layouts import (CVNETS, NO_NORMALIZATION, VARIANTS, deploy_size_from_kernels,  # noqa: F401 (re-exported)
                                               with_residual_alias)
from edgeseg.models.layers.edgeformer_blocks import ConvLayer, GCCFrame, InvertedResidual

STAGE_OUT = (96, 128, 160)
META_KERNEL = (32, 16, 8)
BAKE_DIVISOR = 32


class GlobalPool(nn.Module):
    """cvnets GlobalPool('mean', keep_dim=False)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.mean(x, dim=[-2, -1])


class BakedInputSize:
    """Resolution-specific deploy form shared by the EdgeFormer roots.

    `reparameterize(input_size)` bakes every GCC block for that size and folds all norms;
    the baked model then refuses other sizes (its kernels only fit the baked feature maps).
    """

    baked_input_size: tuple[int, int] | None = None

    @property
    def is_reparameterized(self) -> bool:
        return self.baked_input_size is not None

    def check_input_size(self, x: torch.Tensor) -> None:
        baked = self.baked_input_size
        if baked is not None and tuple(x.shape[-2:]) != baked:
            raise EdgesegError(
                f"this EdgeFormer is baked for {baked[0]}x{baked[1]} inputs, got {x.shape[-2]}x{x.shape[-1]}",
                "reparameterize the unfused checkpoint again with input_size set to the size you need",
            )

    @torch.no_grad()
    def reparameterize(self, input_size: tuple[int, int] | None = None) -> None:
        from edgeseg.reparam.walker import reparameterize_model

        size = _bake_size(input_size)
        if self.baked_input_size is not None:
            if size != self.baked_input_size:
                raise EdgesegError(f"this EdgeFormer is already baked for {self.baked_input_size}, not {size}",
                                   "reparameterize the unfused checkpoint at the new size")
            return
        for child in list(self.children()):
            reparameterize_model(child, input_size=size)
        self.baked_input_size = size


def _bake_size(input_size) -> tuple[int, int]:
    if input_size is None:
        raise EdgesegError("EdgeFormer's global circular convs are baked for one input size", "pass input_size=(H, W)")
    try:
        h, w = (int(s) for s in input_size)
    except (TypeError, ValueError):
        raise EdgesegError(f"input size must be (H, W), got {input_size!r}", "pass two integers") from None
    if h <= 0 or w <= 0 or h % BAKE_DIVISOR or w % BAKE_DIVISOR:
        raise EdgesegError(f"EdgeFormer bakes only sizes that are positive multiples of {BAKE_DIVISOR}, got {h}x{w}",
                           f"choose H and W divisible by {BAKE_DIVISOR}")
    return h, w


class EdgeFormer(BakedInputSize, nn.Module):
    """cvnets `edgeformer` with edge.mode=outer_frame_v1, kernel=gcc_ca, instance_kernel=interpolation_bilinear,
    use_pe=True. `output_stride` 16 / 8 dilates layer 5 / layers 4-5 as for DeepLab; `with_head=False`
    drops conv_1x1_exp and the classifier (what the segmentation model does)."""

    def __init__(self, variant: str = "s", num_classes: int = 1000, classifier_dropout: float = 0.2,
                 output_stride: int | None = None, with_head: bool = True):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown EdgeFormer variant {variant!r}")
        if output_stride not in (None, 8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        stages, fusion = VARIANTS[variant]
        dilate = {8: (True, True), 16: (False, True)}.get(output_stride, (False, False))
        act = nn.SiLU
        self.conv_1 = ConvLayer(3, 16, 3, stride=2, act_layer=act)
        self.layer_1 = nn.Sequential(InvertedResidual(16, 32, 1, 4, act_layer=act))
        self.layer_2 = nn.Sequential(*[InvertedResidual(32 if i == 0 else 64, 64, 2 if i == 0 else 1, 4, act_layer=act)
                                       for i in range(3)])
        in_ch, dilation, downsample = 64, 1, 2
        for i, ((cf_s, ffn, n_blocks), out_ch, meta_k) in enumerate(zip(stages, STAGE_OUT, META_KERNEL)):
            prev_dilation, stride = dilation, 2
            if i >= 1 and dilate[i - 1]:
                dilation, stride = dilation * 2, 1
            downsample += stride == 2
            mv2 = InvertedResidual(in_ch, out_ch, stride, 4, dilation=prev_dilation, act_layer=act)
            frame = GCCFrame(out_ch, cf_s, n_blocks, meta_k, ffn, fusion, use_pe=True, downsample=downsample, act_layer=act)
            setattr(self, f"layer_{i + 3}", nn.Sequential(mv2, frame))
            in_ch = out_ch
        # The original assigns each stage's MobileNetV2 block to self.residual while building,
        # so the last one is registered twice and saved under both names.
        self.residual = self.layer_5[0]
        self.out_channels = in_ch
        if with_head:
            exp = min(4 * in_ch, 960)
            self.conv_1x1_exp = ConvLayer(in_ch, exp, 1, act_layer=act)
            self.classifier = nn.Sequential()
            self.classifier.add_module("global_pool", GlobalPool())
            if 0.0 < classifier_dropout < 1.0:
                self.classifier.add_module("dropout", nn.Dropout(classifier_dropout))
            self.classifier.add_module("fc", nn.Linear(exp, num_classes))
        else:
            self.conv_1x1_exp = None
            self.classifier = None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer_2(self.layer_1(self.conv_1(x)))
        return self.layer_5(self.layer_4(self.layer_3(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_size(x)
        x = self.forward_features(x)
        if self.classifier is None:
            return x
        return self.classifier(self.conv_1x1_exp(x))
