"""SegFormer's decode head for deployment: the fuse conv split per stage and run before upsampling.

Both SegFormer heads project every stage to E channels, resize stages 2-4 to stage 1's size
(1/4), concatenate and mix with one 1x1 conv (4E -> E) at 1/4 resolution: at 512x512 input
that conv is 4.3 of SegFormer-B0's 8.4 GMACs. A 1x1 conv only mixes channels and bilinear
resizing only mixes pixels (per channel, with weights that sum to 1, so a bias passes through
unchanged), so the two commute:

    fuse(cat_s(resize(P_s(x_s)))) = sum_s resize(W_s P_s(x_s)) + b

where W_s is the fuse conv's block of columns for stage s. Each stage then costs a C_s -> E conv
at its own resolution, and the 4E-channel map at 1/4 is never built.

- NVlabs / Hugging Face all-MLP head: P_s is linear (no activation), so W_s P_s is one conv
  C_s -> E (for B0's stage 1: 32 -> 256 channels at 1/4 instead of 1024 -> 256).
- mmsegmentation's head: P_s = ReLU(BN(conv)), so only W_s moves in front of the resize: stage s
  runs its folded ConvBNReLU, then an E -> E conv at its own resolution.

Equal to the unfused head up to float rounding (the equivalence gate checks it on every
reparameterize). Measured by `benchmarks/vs_by_hand.py`: SegFormer-B0 @512 in ONNX Runtime,
1 thread, 322 -> about 170 ms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.reparam.fusion import fuse_conv_bn


def _pointwise(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Conv2d:
    """A 1x1 conv holding `weight` (out, in) and `bias`, on their device and dtype."""
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], 1, bias=bias is not None, device=weight.device, dtype=weight.dtype)
    conv.weight = nn.Parameter(weight.reshape(*weight.shape, 1, 1).contiguous())
    if bias is not None:
        conv.bias = nn.Parameter(bias.contiguous())
    return conv


class StagewiseFuseHead(nn.Module):
    """sum_s resize(branch_s(x_s)) -> ReLU -> classifier. Branch 0 (stage 1, already at the
    output size) carries the fuse conv's bias. The classifier keeps the original head's name
    (`linear_pred` for NVlabs, `conv_seg` for mmseg), which also tells the heads apart in a
    deploy file's keys."""

    def __init__(self, branches: list[nn.Module], classifier: nn.Conv2d, classifier_name: str):
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.act = nn.ReLU()
        self.classifier_name = classifier_name
        self.add_module(classifier_name, classifier)

    @property
    def is_reparameterized(self) -> bool:
        return True

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[2:]
        total = self.branches[0](feats[0])
        for branch, x in zip(self.branches[1:], feats[1:]):
            total = total + F.interpolate(branch(x), size=size, mode="bilinear", align_corners=False)
        return getattr(self, self.classifier_name)(self.act(total))


def _fuse_blocks(fuse: nn.Module, stage_order: list[int]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The folded fuse conv's weight split into per-stage (E, E) blocks, in stage order, and its bias.
    `stage_order[j]` is the stage whose features sit in the j-th block of the concatenation."""
    conv = fuse_conv_bn(fuse.conv, fuse.bn) if "bn" in fuse._modules else fuse.conv
    weight = conv.weight[:, :, 0, 0].double()
    e = weight.shape[0]
    blocks = [None] * len(stage_order)
    for j, stage in enumerate(stage_order):
        blocks[stage] = weight[:, j * e:(j + 1) * e]
    bias = conv.bias.double() if conv.bias is not None else torch.zeros(e, dtype=torch.float64, device=weight.device)
    return blocks, bias


def deploy_mlp_head(head: nn.Module) -> StagewiseFuseHead:
    """NVlabs' SegFormerHead (linear_c1..4 -> concat [c4, c3, c2, c1] -> linear_fuse ConvBN)."""
    blocks, bias = _fuse_blocks(head.linear_fuse, [3, 2, 1, 0])
    branches = []
    for s, block in enumerate(blocks):
        proj = getattr(head, f"linear_c{s + 1}").proj  # nn.Linear on tokens = a 1x1 conv on the map
        dtype = proj.weight.dtype
        weight = block @ proj.weight.double()
        b = block @ proj.bias.double() if proj.bias is not None else None
        if s == 0:
            b = bias if b is None else b + bias
        branches.append(_pointwise(weight.to(dtype), None if b is None else b.to(dtype)))
    return StagewiseFuseHead(branches, head.linear_pred, "linear_pred")


def deploy_mmseg_head(head: nn.Module) -> StagewiseFuseHead:
    """mmsegmentation's SegformerHead (convs[s]: ConvBNReLU -> concat [c1..c4] -> fusion_conv ConvBNReLU)."""
    blocks, bias = _fuse_blocks(head.fusion_conv, [0, 1, 2, 3])
    branches = []
    for s, (conv_module, block) in enumerate(zip(head.convs, blocks)):
        conv = conv_module.conv
        folded = fuse_conv_bn(conv, conv_module.bn) if "bn" in conv_module._modules else conv
        dtype = folded.weight.dtype
        mix = _pointwise(block.to(dtype), bias.to(dtype) if s == 0 else None)
        branches.append(nn.Sequential(folded, nn.ReLU(), mix))
    return StagewiseFuseHead(branches, head.conv_seg, "conv_seg")
