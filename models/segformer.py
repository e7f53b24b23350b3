"""SegFormer B0-B5 (Xie et al., arXiv:2105.15203; NVlabs/SegFormer, mmseg-based), with NVlabs key names.

Loads the NVlabs checkpoints, the Hugging Face transformers port and mmsegmentation's own
implementation (see segformer_layouts.py); forward returns the decode head's logits at 1/4
resolution. The variants are registered, without torch, in segformer_entries.py.

Export notes: tokens -> image is `transpose(1, 2).reshape(batch, -1, h, w)` where every size
comes straight from a `.shape` (H, W of the conv output that made the tokens), never through
int()/tensor arithmetic: traced graphs then hold no aten::Int (Core ML accepts them) and keep
H, W symbolic, so ONNX export with dynamic batch/height/width works. `unflatten(2, (h, w))`
computes the same but the TorchScript ONNX exporter bakes h, w into constants there. Numerics
equal the originals' reshape/permute.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.models.layers import ConvBN, ConvBNReLU
from edgeseg.models.layers.drop_path import drop_path as make_drop_path
from edgeseg.models.segformer_deploy import deploy_mlp_head, deploy_mmseg_head
from edgeseg.models.segformer_layouts import ADE_MIOU, VARIANTS  # noqa: F401 (re-exported)
from edgeseg.models.segformer_layouts import EMBED_NORM_EPS, NVLABS_NORM_EPS, SegFormerSpec


def _to_image(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, H*W, C) -> (B, C, H, W); h, w are read from a conv output's `.shape` (see module doc)."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)


def _to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C)."""
    return x.flatten(2).transpose(1, 2)


class OverlapPatchEmbed(nn.Module):
    def __init__(self, in_ch: int, dim: int, patch: int, stride: int, norm_eps: float = EMBED_NORM_EPS):
        super().__init__()
        self.proj = nn.Conv2d(in_ch, dim, patch, stride, padding=patch // 2)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        h, w = x.shape[2], x.shape[3]
        return self.norm(_to_tokens(x)), h, w


class EfficientAttention(nn.Module):
    """Multi-head attention whose keys/values come from an sr x sr strided-conv reduction."""

    def __init__(self, dim: int, heads: int, sr_ratio: int, sr_norm_eps: float = EMBED_NORM_EPS):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim ** -0.5
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)  # rows: all of K, then all of V
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=sr_norm_eps)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.unflatten(2, (self.heads, self.head_dim)).transpose(1, 2)  # B, heads, N, d

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        q = self._heads(self.q(x))
        kv_in = self.norm(_to_tokens(self.sr(_to_image(x, h, w)))) if self.sr_ratio > 1 else x
        # chunk, not a (2, heads, d) split of one 5-D tensor: same values, rank <= 4 (Core ML/ANE)
        k, v = (self._heads(t) for t in self.kv(kv_in).chunk(2, dim=-1))
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).flatten(2))


class DWConv(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return _to_tokens(self.dwconv(_to_image(x, h, w)))


class MixFFN(nn.Module):
    """fc1 -> depthwise 3x3 (the positional cue) -> GELU -> fc2."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x), h, w)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int, sr_ratio: int, norm_eps: float, drop_path: float,
                 embed_norm_eps: float = EMBED_NORM_EPS):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = EfficientAttention(dim, heads, sr_ratio, embed_norm_eps)
        self.drop_path = make_drop_path(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MixFFN(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class MixVisionTransformer(nn.Module):
    """MiT encoder: four stages of (overlapping patch embed, blocks, LayerNorm); NCHW outputs."""

    def __init__(self, spec: SegFormerSpec, norm_eps: float = NVLABS_NORM_EPS, drop_path_rate: float = 0.1, in_ch: int = 3,
                 embed_norm_eps: float = EMBED_NORM_EPS):
        super().__init__()
        total = sum(spec.depths)
        # Python floats (no torch.linspace(...).item()): factories run on the meta device.
        rates = [drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
        cur = 0
        for s in range(4):
            dim = spec.dims[s]
            setattr(self, f"patch_embed{s + 1}", OverlapPatchEmbed(in_ch if s == 0 else spec.dims[s - 1], dim, spec.patch_sizes[s], spec.strides[s],
                                                                        embed_norm_eps))
            setattr(self, f"block{s + 1}", nn.ModuleList(
                Block(dim, spec.heads[s], spec.mlp_ratios[s], spec.sr_ratios[s], norm_eps, rates[cur + j], embed_norm_eps)
                for j in range(spec.depths[s])
            ))
            setattr(self, f"norm{s + 1}", nn.LayerNorm(dim, eps=norm_eps))
            cur += spec.depths[s]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for s in range(1, 5):
            x, h, w = getattr(self, f"patch_embed{s}")(x)
            for blk in getattr(self, f"block{s}"):
                x = blk(x, h, w)
            x = _to_image(getattr(self, f"norm{s}")(x), h, w)
            outs.append(x)
        return outs


class MLP(nn.Module):
    """Per-pixel linear projection of one stage's features (NVlabs' `linear_c{s}.proj`)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]
        return _to_image(self.proj(_to_tokens(x)), h, w)


class SegFormerHead(nn.Module):
    """All-MLP decoder: project each stage to E channels, upsample to 1/4, concat [c4, c3, c2, c1],
    fuse (1x1 conv + BN + ReLU), classify."""

    def __init__(self, in_dims, embed_dim: int, num_classes: int, conv_seg_channels: int | None = 128, dropout: float = 0.1):
        super().__init__()
        for s, d in enumerate(in_dims, start=1):
            setattr(self, f"linear_c{s}", MLP(d, embed_dim))
        self.linear_fuse = ConvBN(4 * embed_dim, embed_dim, 1, conv_name="conv", bn_name="bn")
        self.act = nn.ReLU()
        self.dropout = nn.Dropout2d(dropout)
        self.linear_pred = nn.Conv2d(embed_dim, num_classes, 1)
        if conv_seg_channels is not None:
            # mmseg's BaseDecodeHead builds this classifier for every head; SegFormer never calls
            # it, yet its checkpoints carry it, so strict loading needs the module.
            self.conv_seg = nn.Conv2d(conv_seg_channels, num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        c1 = feats[0]
        size = c1.shape[2:]
        projected = [self.linear_c1(c1)]
        for s in range(2, 5):
            y = getattr(self, f"linear_c{s}")(feats[s - 1])
            projected.append(F.interpolate(y, size=size, mode="bilinear", align_corners=False))
        x = self.act(self.linear_fuse(torch.cat(projected[::-1], dim=1)))
        return self.linear_pred(self.dropout(x))

    def reparameterize(self) -> nn.Module:
        """The fuse conv split per stage and run before upsampling (segformer_deploy.py); the
        never-run `conv_seg` is left out."""
        return deploy_mlp_head(self)


class MMSegSegformerHead(nn.Module):
    """open-mmlab/mmsegmentation's `SegformerHead` (mmseg/models/decode_heads/segformer_head.py):
    per stage a 1x1 ConvModule (conv, BN, ReLU) to `channels`, bilinear resize to stage 1's size,
    concat in stage order [c1, c2, c3, c4], `fusion_conv` (1x1 conv, BN, ReLU), then
    BaseDecodeHead.cls_seg: Dropout2d and the 1x1 `conv_seg`. It differs from NVlabs' all-MLP head
    (BN + ReLU after every projection, concat order), so it is a head of its own."""

    def __init__(self, in_dims, channels: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.convs = nn.ModuleList(ConvBNReLU(d, channels) for d in in_dims)
        self.fusion_conv = ConvBNReLU(channels * len(in_dims), channels)
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[2:]
        outs = [self.convs[0](feats[0])]
        for conv, x in zip(self.convs[1:], feats[1:]):
            outs.append(F.interpolate(conv(x), size=size, mode="bilinear", align_corners=False))
        return self.conv_seg(self.dropout(self.fusion_conv(torch.cat(outs, dim=1))))

    def reparameterize(self) -> nn.Module:
        """The fusion conv split per stage and run before upsampling (segformer_deploy.py)."""
        return deploy_mmseg_head(self)


class SegFormer(nn.Module):
    """MiT encoder + decode head; returns logits (B, num_classes, H/4, W/4).

    `head="mlp"`: NVlabs' all-MLP head (NVlabs and Hugging Face checkpoints); `head="mmseg"`:
    mmsegmentation's SegformerHead with `decoder_dim` channels (256 in its configs).
    """

    def __init__(self, spec: SegFormerSpec, num_classes: int = 150, norm_eps: float = NVLABS_NORM_EPS,
                 conv_seg_channels: int | None = 128, drop_path_rate: float = 0.1, embed_norm_eps: float = EMBED_NORM_EPS,
                 head: str = "mlp", decoder_dim: int | None = None):
        super().__init__()
        self.backbone = MixVisionTransformer(spec, norm_eps=norm_eps, drop_path_rate=drop_path_rate, embed_norm_eps=embed_norm_eps)
        channels = decoder_dim or spec.decoder_dim
        if head == "mlp":
            self.decode_head = SegFormerHead(spec.dims, channels, num_classes, conv_seg_channels)
        elif head == "mmseg":
            self.decode_head = MMSegSegformerHead(spec.dims, channels, num_classes)
        else:
            raise ValueError(f"unknown SegFormer head {head!r} (mlp or mmseg)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_head(self.backbone(x))
