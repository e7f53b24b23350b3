"""BoostFormer: a SegFormer-B2 derivative for ADE20K segmentation (boostcamp AI Tech 4, team CV-16).

Architecture (module names of the final release, boostcampaitech4lv23cv3/final-project-level3-cv-16,
`boostformer/modeling_segformer.py`, a patched copy of transformers' `modeling_segformer.py`):
- patch embedding: AvgPool2d(patch, stride, patch // 2, count_include_pad=False) -> 1x1 conv
  (`conv`) -> LayerNorm; patches 7/4, then 3/2;
- stages 1-2, PoolFormer blocks (Yu et al., "MetaFormer is Actually What You Need for Vision",
  arXiv:2111.11418): x += ls1 * (AvgPool3x3(x) - x); x += ls2 * MixCFN(BN(x)); x = BN(x);
- stages 3-4: x += Attn(x) (no pre-norm, no output projection); x = LN(x + MixCFN(LN(x))); the
  attention takes keys and values from a 7x7 average pool of the map, LN and GELU (the "linear
  SRA" of PVTv2, Wang et al., arXiv:2106.13797), scaled dot product over head_dim;
- Mix-CFN: 1x1 conv -> BN -> depthwise 3x3 on the first half of the channels and 5x5 on the
  second (MixConv, Tan & Le, arXiv:1907.09595) -> BN -> config.hidden_act -> 1x1 conv;
- head: per-stage Linear -> 768, bilinear upsampling to 1/4, times a learnt scalar per stage,
  summed, BN, ReLU, dropout, 1x1 classifier. `linear_fuse` exists in the checkpoints but never runs.
LayerNorms use torch's default eps (transformers' modeling code does not read
config.layer_norm_eps). The forward returns logits at 1/4 resolution, as the original does.
Checkpoint layouts and the published configuration: `boostformer_layouts.py`; the registry entry
(torch-free): `boostformer_entries.py`.

Deploy (`edgeseg.reparameterize`): Mix-CFN BNs fold into the convs around them, the BN in front
of each stage 1-2 Mix-CFN and layer_scale_2 into its 1x1 convs, the head's scalars and BN into
its projections; the block-end BNs are carried forward (`boostformer_deploy.py`); the input
size is baked (AdaptiveAvgPool2d(7) becomes fixed pooling, upsampling gets constant sizes).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.errors import EdgesegError
from edgeseg.models.boostformer_deploy import propagate_block_norms
from edgeseg.models.boostformer_layouts import (DECODER_DIM, DEPTHS, DIMS, HEADS, HIDDEN_ACTS, MLP_RATIO, PATCH_SIZES, POOL_STAGES,
                                                STRIDES)
from edgeseg.models.layers.norm_fold import fold_bn_into_following
from edgeseg.models.layers.static_pool import StaticAvgPool2d
from edgeseg.reparam.fusion import bn_scale_shift, conv_like, fuse_conv_bn

KV_POOL = 7
LAYER_SCALE_INIT = 1e-5

_ACTIVATIONS = dict(zip(HIDDEN_ACTS, (nn.GELU, nn.ReLU, nn.ReLU6)))


def _act(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise EdgesegError(f"BoostFormer hidden_act {name!r} is not supported", f"use one of {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


def _embed_out(n: int, patch: int, stride: int) -> int:
    """Output length of AvgPool2d(patch, stride, patch // 2) (floor mode) on n positions."""
    return (n + 2 * (patch // 2) - patch) // stride + 1


def stage_sizes(input_size: tuple[int, int]) -> list[tuple[int, int]]:
    """Feature-map size of each stage for an input image size."""
    h, w = input_size
    out = []
    for p, s in zip(PATCH_SIZES, STRIDES):
        h, w = _embed_out(h, p, s), _embed_out(w, p, s)
        out.append((h, w))
    return out


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)


def _channels_first(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2)


# ---------------------------------------------------------------- encoder


class PoolingPatchEmbeddings(nn.Module):
    """Overlapping patches by average pooling, then a pointwise projection and LayerNorm.

    Returns channels-last (B, H, W, C): LayerNorm and the following Linear layers act on the
    last axis, so no reshape needs the spatial size (exporters see no shape arithmetic).
    """

    def __init__(self, patch_size: int, stride: int, in_ch: int, dim: int):
        super().__init__()
        self.pool = nn.AvgPool2d(patch_size, stride, patch_size // 2, count_include_pad=False)
        self.conv = nn.Conv2d(in_ch, dim, 1)
        self.layer_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(_channels_last(self.conv(self.pool(x))))


class MixConv2d(nn.Module):
    """Depthwise 3x3 on the first half of the channels, depthwise 5x5 on the second."""

    def __init__(self, dim: int):
        super().__init__()
        a, b = dim // 2, dim - dim // 2
        self.conv_3 = nn.Conv2d(a, a, 3, padding=1, groups=a)
        self.conv_5 = nn.Conv2d(b, b, 5, padding=2, groups=b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Constant split sizes (chunk exports as shape arithmetic); equal to chunk(2) for even widths.
        x1, x2 = x.split([self.conv_3.in_channels, self.conv_5.in_channels], dim=1)
        return torch.cat([self.conv_3(x1), self.conv_5(x2)], dim=1)


class MixDWConv(nn.Module):
    """The original's `SegformerDWConv` wrapper (it only adds the `mixconv` key level)."""

    def __init__(self, dim: int):
        super().__init__()
        self.mixconv = MixConv2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mixconv(x)


class MixCFN(nn.Module):
    """1x1 conv -> BN -> MixConv -> BN -> act -> 1x1 conv, on NCHW.

    The original names the pointwise convs `conv1`/`conv2` in stage 1-2 blocks and
    `conv_1`/`conv_2` in stage 3-4 blocks; `names` keeps both spellings.
    """

    def __init__(self, dim: int, hidden: int, act: str, names: tuple[str, str] = ("conv_1", "conv_2")):
        super().__init__()
        self.names = names
        self.add_module(names[0], nn.Conv2d(dim, hidden, 1))
        self.norm_1: nn.BatchNorm2d | None = nn.BatchNorm2d(hidden)
        self.dwconv = MixDWConv(hidden)
        self.norm_2: nn.BatchNorm2d | None = nn.BatchNorm2d(hidden)
        self.intermediate_act_fn = _act(act)
        self.add_module(names[1], nn.Conv2d(hidden, dim, 1))

    @property
    def conv_in(self) -> nn.Conv2d:
        return self._modules[self.names[0]]

    @property
    def conv_out(self) -> nn.Conv2d:
        return self._modules[self.names[1]]

    @property
    def is_reparameterized(self) -> bool:
        return self.norm_1 is None

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold both BNs: norm_1 into the first 1x1 conv, norm_2 (per half) into the depthwise convs."""
        if self.is_reparameterized:
            return
        self._modules[self.names[0]] = fuse_conv_bn(self.conv_in, self.norm_1)
        mix = self.dwconv.mixconv
        scale, shift = bn_scale_shift(self.norm_2)
        a = mix.conv_3.out_channels
        for name, sl in (("conv_3", slice(0, a)), ("conv_5", slice(a, None))):
            conv = getattr(mix, name)
            bias = conv.bias * scale[sl] + shift[sl]
            setattr(mix, name, conv_like(conv, conv.weight * scale[sl].reshape(-1, 1, 1, 1), bias))
        self.norm_1 = None
        self.norm_2 = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        if self.norm_1 is not None:
            x = self.norm_1(x)
        x = self.dwconv(x)
        if self.norm_2 is not None:
            x = self.norm_2(x)
        return self.conv_out(self.intermediate_act_fn(x))


class TokenMixerPooling(nn.Module):
    """PoolFormer's token mixer: pool(x) - x (the block adds x back)."""

    def __init__(self, pool_size: int = 3):
        super().__init__()
        self.pool = nn.AvgPool2d(pool_size, 1, pool_size // 2, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x) - x


class PoolFormerLayer(nn.Module):
    """Stage 1-2 block on NCHW: x += ls1*(pool(x)-x); x += ls2*MixCFN(BN(x)); x = BN(x)."""

    def __init__(self, dim: int, mlp_ratio: int, act: str):
        super().__init__()
        self.pooling = TokenMixerPooling()
        self.norm_1: nn.BatchNorm2d | None = nn.BatchNorm2d(dim)
        self.norm_2: nn.BatchNorm2d | None = nn.BatchNorm2d(dim)  # None once carried forward (deploy)
        self.mlp = MixCFN(dim, dim * mlp_ratio, act, names=("conv1", "conv2"))
        self.layer_scale_1 = nn.Parameter(LAYER_SCALE_INIT * torch.ones(dim))
        self.layer_scale_2 = nn.Parameter(LAYER_SCALE_INIT * torch.ones(dim))

    @property
    def is_reparameterized(self) -> bool:
        return self.norm_1 is None

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the Mix-CFN's BNs, the BN in front of it, and layer_scale_2 into its 1x1 convs."""
        if self.is_reparameterized:
            return
        self.mlp.reparameterize()
        mlp = self.mlp
        mlp._modules[mlp.names[0]] = fold_bn_into_following(mlp.conv_in, self.norm_1)
        out = mlp.conv_out
        ls = self.layer_scale_2
        mlp._modules[mlp.names[1]] = conv_like(out, out.weight * ls.reshape(-1, 1, 1, 1), out.bias * ls)
        self.norm_1 = None
        del self._parameters["layer_scale_2"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.layer_scale_1.reshape(-1, 1, 1) * self.pooling(x)
        if self.norm_1 is not None:
            x = x + self.layer_scale_2.reshape(-1, 1, 1) * self.mlp(self.norm_1(x))
        else:
            x = x + self.mlp(x)
        return self.norm_2(x) if self.norm_2 is not None else x


class PooledKVSelfAttention(nn.Module):
    """Queries from every token; keys and values from a 7x7 adaptive average of the map.

    Works on channels-last (B, H, W, C). The K/V pool is `nn.AdaptiveAvgPool2d(7)` until the
    root bakes an input size; then it is a `StaticAvgPool2d` for this stage's size.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} is not a multiple of {heads} heads")
        self.num_attention_heads = heads
        self.attention_head_size = dim // heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.pool: nn.Module = nn.AdaptiveAvgPool2d(KV_POOL)
        self.norm = nn.LayerNorm(dim)
        self.act = nn.GELU()
        self.static_hw: tuple[int, int] | None = None  # this stage's map size once baked

    def _heads(self, x: torch.Tensor, n: int | None) -> torch.Tensor:
        """(B, ..., C) tokens -> (B, heads, N, head_dim); `n` (the token count) when it is fixed."""
        if n is None:
            x = x.flatten(1, -2).unflatten(-1, (self.num_attention_heads, self.attention_head_size))
        else:  # one Reshape with a constant shape in exported graphs
            x = x.reshape(-1, n, self.num_attention_heads, self.attention_head_size)
        return x.transpose(1, 2)

    def bake(self, hw: tuple[int, int]) -> None:
        self.pool = StaticAvgPool2d(hw, (KV_POOL, KV_POOL))
        self.static_hw = tuple(hw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.static_hw[0] * self.static_hw[1] if self.static_hw is not None else None
        q = self._heads(self.query(x), n)
        kv = self.act(self.norm(_channels_last(self.pool(_channels_first(x)))))
        k = self._heads(self.key(kv), KV_POOL * KV_POOL)
        v = self._heads(self.value(kv), KV_POOL * KV_POOL)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.attention_head_size)
        ctx = torch.matmul(F.softmax(scores, dim=-1), v).transpose(1, 2)  # (B, N, heads, head_dim)
        if self.static_hw is not None:
            return ctx.reshape(-1, *self.static_hw, self.num_attention_heads * self.attention_head_size)
        return ctx.flatten(2).reshape_as(x)


class Attention(nn.Module):
    """The original's `SegformerAttention` with its output projection removed."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.self = PooledKVSelfAttention(dim, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.self(x)


class AttentionLayer(nn.Module):
    """Stage 3-4 block on channels-last: x += Attn(x); x = LN(x + MixCFN(LN(x)))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, act: str):
        super().__init__()
        self.attention = Attention(dim, heads)
        self.layer_norm_1 = nn.LayerNorm(dim)
        self.layer_norm_2 = nn.LayerNorm(dim)
        self.mlp = MixCFN(dim, dim * mlp_ratio, act, names=("conv_1", "conv_2"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(x)
        y = _channels_last(self.mlp(_channels_first(self.layer_norm_1(x))))
        return self.layer_norm_2(x + y)


class BoostFormerEncoder(nn.Module):
    def __init__(self, act: str):
        super().__init__()
        self.patch_embeddings = nn.ModuleList(
            PoolingPatchEmbeddings(PATCH_SIZES[i], STRIDES[i], 3 if i == 0 else DIMS[i - 1], DIMS[i]) for i in range(4))
        self.block = nn.ModuleList(
            nn.ModuleList(
                PoolFormerLayer(DIMS[i], MLP_RATIO, act) if i < POOL_STAGES else AttentionLayer(DIMS[i], HEADS[i], MLP_RATIO, act)
                for _ in range(DEPTHS[i]))
            for i in range(4))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, (embed, blocks) in enumerate(zip(self.patch_embeddings, self.block)):
            x = embed(x)
            if i < POOL_STAGES:
                x = _channels_first(x)
                for blk in blocks:
                    x = blk(x)
            else:
                for blk in blocks:
                    x = blk(x)
                x = _channels_first(x)
            feats.append(x)
        return feats


class BoostFormerBackbone(nn.Module):
    """Holds the encoder under `segformer.encoder`, the key prefix transformers saves."""

    def __init__(self, act: str):
        super().__init__()
        self.encoder = BoostFormerEncoder(act)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.encoder(x)


# ---------------------------------------------------------------- decoder


class SegformerMLP(nn.Module):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _channels_first(self.proj(_channels_last(x)))


class WeightedSumDecodeHead(nn.Module):
    """Project each stage to 768, upsample to 1/4, weight by a learnt scalar, sum, classify."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.linear_c = nn.ModuleList(SegformerMLP(d, DECODER_DIM) for d in DIMS)
        # Created by the original but never run; kept so its checkpoints load strictly.
        self.linear_fuse: nn.Conv2d | None = nn.Conv2d(DECODER_DIM * len(DIMS), DECODER_DIM, 1, bias=False)
        self.weights = nn.Parameter(torch.ones(len(DIMS), 1))
        self.batch_norm: nn.BatchNorm2d | None = nn.BatchNorm2d(DECODER_DIM)
        self.activation = nn.ReLU()
        self.dropout = nn.Dropout(0.1)
        self.classifier = nn.Conv2d(DECODER_DIM, num_classes, 1)
        self.static_hw: tuple[int, int] | None = None  # set when the resolution is baked
        self.static_scales: tuple[tuple[float, float] | None, ...] | None = None

    def bake(self, sizes: list[tuple[int, int]]) -> None:
        """Constant upsampling: an exact integer ratio becomes a constant scale (one Resize with
        constant scales, the same sampling grid as the size), any other ratio a constant size."""
        (h0, w0) = self.static_hw = tuple(sizes[0])
        self.static_scales = tuple((float(h0 // h), float(w0 // w)) if h0 % h == 0 and w0 % w == 0 else None for h, w in sizes)

    @property
    def is_reparameterized(self) -> bool:
        return self.batch_norm is None

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the stage scalars and the BN into the projections (bilinear upsampling is linear
        and keeps constants, so BN's shift can ride on the stage-1 projection, which is not resampled)."""
        if self.is_reparameterized:
            return
        scale, shift = bn_scale_shift(self.batch_norm)
        for i, mlp in enumerate(self.linear_c):
            lin = mlp.proj
            s = scale * self.weights[i]
            new = nn.Linear(lin.in_features, lin.out_features, device=lin.weight.device, dtype=lin.weight.dtype)
            new.weight = nn.Parameter((lin.weight * s.reshape(-1, 1)).clone())
            new.bias = nn.Parameter((lin.bias * s + (shift if i == 0 else 0)).clone())
            mlp.proj = new
        self.batch_norm = None
        self.linear_fuse = None
        del self._parameters["weights"]

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = self.static_hw or feats[0].shape[-2:]
        fused = self.batch_norm is None
        total = None
        for i, (f, mlp) in enumerate(zip(feats, self.linear_c)):
            y = mlp(f)
            if i > 0:  # the original also resamples stage 1 to its own size: an exact copy
                scale = self.static_scales[i] if self.static_scales is not None else None
                if scale is not None:
                    y = F.interpolate(y, scale_factor=scale, mode="bilinear", align_corners=False)
                else:
                    y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            if not fused:
                y = self.weights[i] * y
            total = y if total is None else total + y
        if not fused:
            total = self.batch_norm(total)
        return self.classifier(self.dropout(self.activation(total)))


# ---------------------------------------------------------------- model


class BoostFormer(nn.Module):
    """transformers-style SegformerForSemanticSegmentation(BoostFormer): image -> logits at 1/4."""

    def __init__(self, num_classes: int = 150, hidden_act: str = "gelu", keep_block_norms: Sequence[str] = ()):
        super().__init__()
        self.segformer = BoostFormerBackbone(hidden_act)
        self.decode_head = WeightedSumDecodeHead(num_classes)
        self.baked_input_size: tuple[int, int] | None = None
        # Block-end BNs the deploy transform must keep: how a deploy file whose weights forced
        # some to stay (see `boostformer_layouts.infer_cfg`) gets its structure back without those weights.
        self.keep_block_norms = tuple(keep_block_norms)
        self.kept_block_norms: tuple[str, ...] | None = None  # set once the block norms are carried

    @property
    def is_reparameterized(self) -> bool:
        return self.baked_input_size is not None

    def reparameterize(self, input_size: tuple[int, int] | None = None) -> None:
        """Carry the stage 1-2 block-end BNs into their consumers, and bake the input size (the
        walker folds the other norms block by block, after this hook).

        AdaptiveAvgPool2d(7) on a map whose size is not a multiple of 7 (32x32 in stage 3 at
        512 input) has no ONNX/Core ML equivalent; for a fixed size it is plain pooling or two
        constant matmuls. Upsampling sizes become constants too.
        """
        if input_size is not None:
            h, w = (int(s) for s in input_size)
            if h < 32 or w < 32:
                raise EdgesegError(f"cannot bake BoostFormer for input size {h}x{w}", "give a size of at least 32x32, e.g. 512x512")
        if self.kept_block_norms is None:
            self.kept_block_norms = tuple(propagate_block_norms(self, self.keep_block_norms))
        if input_size is None:
            return
        sizes = stage_sizes((h, w))
        for i in range(POOL_STAGES, len(DIMS)):
            for blk in self.segformer.encoder.block[i]:
                blk.attention.self.bake(sizes[i])
        self.decode_head.bake(sizes)
        self.baked_input_size = (h, w)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # Not while tracing: exporters trace at the baked size, and the check would be traced as a constant.
        if self.baked_input_size is not None and not torch.jit.is_tracing() and tuple(pixel_values.shape[-2:]) != self.baked_input_size:
            bh, bw = self.baked_input_size
            h, w = pixel_values.shape[-2:]
            raise EdgesegError(
                f"this BoostFormer deploy model is baked for {bh}x{bw} input, got {h}x{w}",
                f"resize or pad images to {bh}x{bw}, or reparameterize the original checkpoint with --input-size {h}x{w}",
            )
        return self.decode_head(self.segformer(pixel_values))


def executed_param_count(model: nn.Module) -> int:
    """Parameters of the leaf modules a forward runs (the original's 17.575M convention).

    Its profiler (thop) sums each leaf module's own parameters, so the learnt layer scales and
    head scalars (plain nn.Parameters of non-leaf modules, 1,412 in all) are not counted; and
    the never-run `linear_fuse` is left out here.
    """
    unused = getattr(getattr(model, "decode_head", None), "linear_fuse", None)
    total = 0
    for m in model.modules():
        if next(m.children(), None) is None and m is not unused:
            total += sum(p.numel() for p in m.parameters(recurse=False))
    return total
