"""MobileOne S0-S4 (Vasu et al., "MobileOne: An Improved One millisecond Mobile Backbone",
arXiv:2206.04040), module names of apple/ml-mobileone `mobileone.py`; the timm port's layout is
in `mobileone_layouts.py`. Forward returns ImageNet logits. The variants are registered in
`mobileone_entries.py` (torch-free); their table is in `mobileone_layouts.py`."""

from __future__ import annotations

import torch
from torch import nn

from edgeseg.models.layers import MobileOneBlock
from edgeseg.models.mobileone_layouts import VARIANTS  # noqa: F401 (re-exported)

BLOCKS = (2, 8, 10, 1)


class MobileOne(nn.Module):
    def __init__(self, width_multipliers=(1.0, 1.0, 1.0, 1.0), num_conv_branches: int = 1, use_se: bool = False,
                 num_classes: int = 1000, num_blocks=BLOCKS):
        super().__init__()
        self.num_conv_branches = num_conv_branches
        self.in_planes = min(64, int(64 * width_multipliers[0]))
        self.stage0 = MobileOneBlock(3, self.in_planes, 3, stride=2, padding=1, activation=nn.ReLU())
        widths = [int(64 * width_multipliers[0]), int(128 * width_multipliers[1]), int(256 * width_multipliers[2]), int(512 * width_multipliers[3])]
        se_blocks = [0, 0, num_blocks[2] // 2 if use_se else 0, num_blocks[3] if use_se else 0]
        for i in range(4):
            setattr(self, f"stage{i + 1}", self._make_stage(widths[i], num_blocks[i], se_blocks[i]))
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(widths[3], num_classes)

    def _make_stage(self, planes: int, num_blocks: int, num_se: int) -> nn.Sequential:
        blocks = []
        for ix in range(num_blocks):
            use_se = ix >= num_blocks - num_se
            stride = 2 if ix == 0 else 1
            blocks.append(MobileOneBlock(self.in_planes, self.in_planes, 3, stride=stride, padding=1, groups=self.in_planes,
                                         use_se=use_se, num_conv_branches=self.num_conv_branches, activation=nn.ReLU()))
            blocks.append(MobileOneBlock(self.in_planes, planes, 1, stride=1, padding=0, use_se=use_se,
                                         num_conv_branches=self.num_conv_branches, activation=nn.ReLU()))
            self.in_planes = planes
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage0(x)
        x = self.stage4(self.stage3(self.stage2(self.stage1(x))))
        x = self.gap(x).flatten(1)
        return self.linear(x)
