"""BoostFormer (boostcamp AI Tech 4 final project, team CV-16): a SegFormer-B2 derivative.

Where each fact comes from:
- The training code (choipp/lightweight-transformer-modeling, `train.py`) builds the model
  from its patched copy of transformers' `modeling_segformer.py` and saves it with
  `model.module.save_pretrained(dir)`: a Hugging Face directory (config.json, a SegformerConfig
  with model_type "segformer", plus the weights), keys `segformer.encoder.*` and
  `decode_head.*`. That is the canonical layout here; a bare state dict with the same keys
  (the directory's weights file on its own) is accepted too.
- Module names, from the only version of that repository's `custom/modeling_segformer.py`
  we could read (the team's final `boostformer/` code, in
  boostcampaitech4lv23cv3/final-project-level3-cv-16, was not available): stage 1-2 blocks
  `pooling`, `layer_scale_1/2`, `norm_1/2`, `mlp.{conv1, norm_1, dwconv.mixconv.conv_3|conv_5, norm_2, conv2}`; stage 3-4
  blocks `attention.self.{query, key, value, pool, norm, act}` (no `attention.output`),
  `layer_norm_1/2`, `mlp.{conv_1, norm_1, dwconv.mixconv.conv_3|conv_5, norm_2, conv_2}`; no
  per-stage encoder LayerNorm; head `decode_head.{linear_c.i.proj, linear_fuse, weights,
  batch_norm, classifier}`. The parameter count these sizes give under the original's
  profiler convention, 17,575,190, is its published 17.575M.
- Numerics, from that file where it agrees with edgeseg's reference facts
  (shared/reference/models.md), from the reference facts where that file is an earlier
  experiment (it still had GroupNorm where the final model has BatchNorm, a second residual
  of the block input, and strided-conv patch embeddings):
  * patch embedding: AvgPool2d(patch, stride, patch // 2, count_include_pad=False) -> 1x1
    conv -> LayerNorm; patches 7/4 then 3/2;
  * stages 1-2 (PoolFormer): x += ls1 * (AvgPool3x3(x) - x); x += ls2 * MixCFN(BN(x));
    x = BN(x); layer scales initialised to 1e-5;
  * stages 3-4: x += Attn(x) (no pre-norm, no output projection); x = LN(x + MixCFN(LN(x)));
    attention: q = Linear(x); k, v = Linear(GELU(LN(AdaptiveAvgPool2d(7)(x)))); softmax of
    q k^T / sqrt(head_dim);
  * Mix-CFN: 1x1 conv -> BN -> [dw3x3 on the first half | dw5x5 on the second] -> BN ->
    act (config.hidden_act, "gelu" = exact erf GELU) -> 1x1 conv;
  * every LayerNorm is nn.LayerNorm(dim) (eps 1e-5: transformers' modeling code never reads
    config.layer_norm_eps), every BN nn.BatchNorm2d defaults;
  * head: per-stage Linear -> 768, bilinear upsample (align_corners=False) to 1/4, times a
    learnt scalar (`weights`, shape (4, 1)), summed; BN, ReLU, dropout 0.1, 1x1 classifier.
    `linear_fuse` (3072 -> 768, no bias) is created but never run. The forward returns the
    logits at 1/4 resolution, as the original does (it upsamples only inside its loss).

Deploy (`edgeseg.reparam.reparameterize_model`): every Mix-CFN BN folds into the conv before
it (the post-concat BN per half into the two depthwise convs), the BN in front of each stage
1-2 Mix-CFN folds into its first 1x1 conv, layer_scale_2 into the last 1x1 conv, the head's
scalars and BN into the four projections; `linear_fuse` is dropped. The root's hook bakes the
input size: AdaptiveAvgPool2d(7) becomes fixed pooling (matmuls where the size is not a
multiple of 7), upsampling gets constant sizes, and the model then refuses other sizes.
The root's hook also removes the BN at the end of every stage 1-2 block (after the residual
sum, so it has no single conv to fold into): see `propagate_block_norms`.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.checkpoint.layouts import KeyLayout, LayoutMismatch
from edgeseg.errors import CheckpointError, EdgesegError
from edgeseg.models.layers.norm_fold import bn_after_affine, fold_affine_into_following, fold_bn_into_following
from edgeseg.models.layers.static_pool import StaticAvgPool2d
from edgeseg.registry import register_model
from edgeseg.reparam.fusion import bn_scale_shift, conv_like, fuse_conv_bn

DIMS = (64, 128, 320, 512)
DEPTHS = (3, 4, 6, 3)
HEADS = (1, 2, 5, 8)
PATCH_SIZES = (7, 3, 3, 3)
STRIDES = (4, 2, 2, 2)
MLP_RATIO = 4
DECODER_DIM = 768
POOL_STAGES = 2  # stages 1-2 mix tokens by pooling, stages 3-4 by attention
KV_POOL = 7
LAYER_SCALE_INIT = 1e-5
# A carried block-end BN is undone by dividing each Mix-CFN output by its scale; smaller
# scales (a zero gamma, a pruned channel) would blow that up, so the BN is kept there.
MIN_CARRIED_SCALE = 1e-6

_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "relu6": nn.ReLU6}


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
        self.proj = nn.Conv2d(in_ch, dim, 1)
        self.layer_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(_channels_last(self.proj(self.pool(x))))


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


# ---------------------------------------------------------------- block-end BN removal


def _is_mean_pool(pool: nn.Module) -> bool:
    """Window weights sum to 1 everywhere (padding excluded), so pool(a*x + b) = a*pool(x) + b."""
    return (isinstance(pool, nn.AvgPool2d) and not pool.count_include_pad and not pool.ceil_mode
            and pool.divisor_override is None)


def _carried_scale_ok(scale: torch.Tensor) -> bool:
    if scale.is_meta:  # structure only: refusals depend on weights, forced ones come from the cfg
        return True
    return bool((scale.abs() >= MIN_CARRIED_SCALE).all())  # False for NaN too


@torch.no_grad()
def _absorb_into_block(blk: PoolFormerLayer, a: torch.Tensor, b: torch.Tensor) -> None:
    """Make `blk` run on u where its real input is a*u + b (per channel); its output is then
    a*u' + b for the real output before norm_2. The token mixer needs nothing (mean pooling
    commutes with the affine, and x + ls1*(pool(x) - x) then does too); the Mix-CFN branch
    sees the affine through its input norm and is scaled by 1/a where it joins the stream."""
    mlp = blk.mlp
    if blk.norm_1 is not None:
        blk.norm_1 = bn_after_affine(blk.norm_1, a, b)
    else:
        mlp._modules[mlp.names[0]] = fold_affine_into_following(mlp.conv_in, a, b)
    out = mlp.conv_out
    inv = 1.0 / a
    mlp._modules[mlp.names[1]] = conv_like(out, out.weight * inv.reshape(-1, 1, 1, 1), out.bias * inv)


@torch.no_grad()
def propagate_block_norms(model: BoostFormer, keep: Sequence[str] = ()) -> list[str]:
    """Remove the BN ending each stage 1-2 block by carrying it forward as a per-channel affine.

    Exact: the next block absorbs it (`_absorb_into_block`) and its own BN composes with it; at
    the stage end, both consumers of the stage output (the next patch embedding's mean pool and
    1x1 conv, and the head's projection of that stage) fold it into their input side. A BN stays
    (composed with what it carries) where the carried scale would have to be divided by and is
    tiny, or where `keep` names it ("stage.block"). Returns the kept BNs' names.
    """
    enc, head = model.segformer.encoder, model.decode_head
    kept: list[str] = []
    for i in range(POOL_STAGES):
        blocks = enc.block[i]
        embed = enc.patch_embeddings[i + 1]
        if not (_is_mean_pool(embed.pool) and all(_is_mean_pool(blk.pooling.pool) for blk in blocks)):
            kept += [f"{i}.{j}" for j in range(len(blocks))]
            continue
        pending: tuple[torch.Tensor, torch.Tensor] | None = None
        for j, blk in enumerate(blocks):
            if pending is not None:
                _absorb_into_block(blk, *pending)
            s, t = bn_scale_shift(blk.norm_2)
            if pending is not None:
                a, b = pending
                s, t = s * a, s * b + t
            last = j == len(blocks) - 1  # the stage's consumers only multiply by the scale
            if f"{i}.{j}" in keep or not (last or _carried_scale_ok(s)):
                if pending is not None:
                    blk.norm_2 = bn_after_affine(blk.norm_2, *pending)
                kept.append(f"{i}.{j}")
                pending = None
            else:
                blk.norm_2 = None
                pending = (s, t)
        if pending is not None:
            embed.proj = fold_affine_into_following(embed.proj, *pending)
            head.linear_c[i].proj = fold_affine_into_following(head.linear_c[i].proj, *pending)
    return kept


# ---------------------------------------------------------------- model


class BoostFormer(nn.Module):
    """transformers-style SegformerForSemanticSegmentation(BoostFormer): image -> logits at 1/4."""

    def __init__(self, num_classes: int = 150, hidden_act: str = "gelu", keep_block_norms: Sequence[str] = ()):
        super().__init__()
        self.segformer = BoostFormerBackbone(hidden_act)
        self.decode_head = WeightedSumDecodeHead(num_classes)
        self.baked_input_size: tuple[int, int] | None = None
        # Block-end BNs the deploy transform must keep: how a deploy file whose weights forced
        # some to stay (see `_infer_cfg`) gets its structure back without those weights.
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


# ---------------------------------------------------------------- checkpoints

_ENC = "segformer.encoder."


def _to_canonical(sd: dict) -> dict:
    # Keys every BoostFormer state dict has, fused or not, and no SegFormer one does: pooling
    # patch embeddings (1x1 projections) and the stage 1-2 layer scales.
    proj = sd.get(f"{_ENC}patch_embeddings.0.proj.weight")
    if (proj is None or tuple(proj.shape[-2:]) != (1, 1) or f"{_ENC}block.0.0.layer_scale_1" not in sd
            or "decode_head.classifier.weight" not in sd):
        raise LayoutMismatch("not a BoostFormer state dict (pooling patch embeddings, pool blocks, weighted-sum head)")
    return dict(sd)


def _hf_config(entry, cfg: dict) -> dict:
    """config.json as the original's save_pretrained writes it (its SegformerConfig, B2 sizes)."""
    n = int(cfg.get("num_classes", 150))
    id2label = {str(i): f"LABEL_{i}" for i in range(n)}
    return {
        "architectures": ["SegformerForSemanticSegmentation"],
        "model_type": "segformer",
        "num_channels": 3,
        "num_encoder_blocks": 4,
        "depths": list(DEPTHS),
        "sr_ratios": [8, 4, 2, 1],
        "hidden_sizes": list(DIMS),
        "patch_sizes": list(PATCH_SIZES),
        "strides": list(STRIDES),
        "num_attention_heads": list(HEADS),
        "mlp_ratios": [MLP_RATIO] * 4,
        "hidden_act": cfg.get("hidden_act", "gelu"),
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "classifier_dropout_prob": 0.1,
        "initializer_range": 0.02,
        "drop_path_rate": 0.1,
        "layer_norm_eps": 1e-06,
        "decoder_hidden_size": DECODER_DIM,
        "semantic_loss_ignore_index": 255,
        "reshape_last_stage": True,
        "id2label": id2label,
        "label2id": {v: int(k) for k, v in id2label.items()},
        "torch_dtype": "float32",
        "transformers_version": "4.25.1",
    }


def _cfg_from_hf_config(config: dict) -> dict:
    if config.get("model_type") != "segformer":
        raise LayoutMismatch("config.json is not a SegformerConfig")
    act = config.get("hidden_act", "gelu")
    if act not in _ACTIVATIONS:
        # Only reached once the keys are BoostFormer's (to_canonical runs first).
        raise CheckpointError(f"config.json sets hidden_act={act!r}; edgeseg's BoostFormer supports {', '.join(_ACTIVATIONS)}",
                              "retrain or convert with a supported activation")
    cfg: dict = {"hidden_act": act}
    labels = config.get("id2label")
    if isinstance(labels, dict) and labels:
        cfg["num_classes"] = len(labels)
    return cfg


HF = KeyLayout(
    "boostformer-hf",
    "boostcamp BoostFormer save_pretrained directory: config.json (SegformerConfig) + weights, segformer.encoder.*, decode_head.*",
    to_canonical=_to_canonical,
    container="hf",
    hf_config=_hf_config,
    cfg_from_hf_config=_cfg_from_hf_config,
)
PLAIN = KeyLayout("boostformer-pth", "the same keys as a bare state dict (the directory's weights file on its own)",
                  to_canonical=_to_canonical, container="plain")


def _infer_cfg(sd: dict) -> dict:
    cfg: dict = {"num_classes": int(sd["decode_head.classifier.weight"].shape[0])}
    if f"{_ENC}block.0.0.layer_scale_2" not in sd:  # fused: which block-end BNs its weights kept
        kept = [f"{i}.{j}" for i in range(POOL_STAGES) for j in range(DEPTHS[i]) if f"{_ENC}block.{i}.{j}.norm_2.weight" in sd]
        if kept:
            cfg["keep_block_norms"] = kept
    return cfg


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


@register_model("boostformer", family="boostformer", task="segmentation", input_size=(512, 512), layouts=(HF, PLAIN),
                infer_cfg=_infer_cfg, labels="ade20k", size_divisor=32, alt_input_size=(480, 544),
                default_cfg={"num_classes": 150},
                description="BoostFormer (boostcamp SegFormer-B2 derivative, ADE20K, 512; logits at 1/4)")
def boostformer(num_classes: int = 150, hidden_act: str = "gelu", keep_block_norms: Sequence[str] = ()) -> BoostFormer:
    return BoostFormer(num_classes=num_classes, hidden_act=hidden_act, keep_block_norms=keep_block_norms)
