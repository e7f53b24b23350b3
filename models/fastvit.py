"""FastViT T8 ... MA36 (apple/ml-fastvit), ImageNet classification at 256x256.

Module attribute names are the original's, unfused and fused (`reparam_conv`,
`lkb_reparam`), so Apple's `{'state_dict': sd}` checkpoints load strictly; timm's renamed
port loads through the `timm` layout. `forward(x)` returns the logits the original returns.

Deploy-time fusion goes one step beyond the original's `reparameterize_model`: ConvFFN's
depthwise conv+BN and the attention block's BN (folded into the qkv projection, which
gains a bias) are folded too. Fused checkpoints written by the original (`*_reparam.pth.tar`)
or by timm still carry those BNs; the layouts fold them on load, exactly.

The variants are registered in `fastvit_entries.py` (torch-free); their table is in `fastvit_layouts.py`.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from edgeseg.models.fastvit_layouts import LARGE, VARIANTS  # noqa: F401 (re-exported)
from edgeseg.models.layers import ConvBN, MobileOneBlock, ReparamLargeKernelConv
from edgeseg.models.layers.drop_path import drop_path as make_drop_path
from edgeseg.models.layers.norm_fold import fold_bn_into_linear
from edgeseg.models.layers.repmixer import RepCPE, RepMixer


def _init_trunc_normal(module: nn.Module) -> None:
    """The original's init (trunc normal std 0.02, zero bias). Skipped on the meta device,
    where torch runs it through slow Python decompositions and the values do not exist."""
    if module.weight.is_meta:
        return
    nn.init.trunc_normal_(module.weight, std=0.02)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def convolutional_stem(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 s2 conv, depthwise 3x3 s2, pointwise 1x1: all MobileOne blocks with GELU."""
    return nn.Sequential(
        MobileOneBlock(in_channels, out_channels, 3, stride=2, padding=1),
        MobileOneBlock(out_channels, out_channels, 3, stride=2, padding=1, groups=out_channels),
        MobileOneBlock(out_channels, out_channels, 1, stride=1, padding=0),
    )


class MHSA(nn.Module):
    """Multi-head self-attention over the H*W tokens of a (B, C, H, W) map; head dim 32.

    Reshapes are shape-agnostic (flatten/unflatten by constants, reshape_as) so tracing
    records no tensor-to-int casts; the arithmetic is the original's.
    """

    def __init__(self, dim: int, head_dim: int = 32, qkv_bias: bool = False, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % head_dim:
            raise ValueError(f"dim {dim} must be divisible by head_dim {head_dim}")
        self.head_dim = head_dim
        self.num_heads = dim // head_dim
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(2).transpose(-2, -1)  # (B, N, C)
        qkv = self.qkv(tokens).unflatten(-1, (3, self.num_heads, self.head_dim)).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        attn = self.attn_drop(attn)
        out = (attn @ v).transpose(1, 2).flatten(2)  # (B, N, C)
        out = self.proj_drop(self.proj(out))
        return out.transpose(-2, -1).reshape_as(x)


class PatchEmbed(nn.Module):
    """Downsampling between stages: depthwise 7x7 s2 (with a 3x3 branch) then a 1x1 block."""

    def __init__(self, patch_size: int, stride: int, in_channels: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Sequential(
            ReparamLargeKernelConv(in_channels, embed_dim, patch_size, stride, groups=in_channels, small_kernel=3),
            MobileOneBlock(embed_dim, embed_dim, 1, stride=1, padding=0),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class ConvFFN(nn.Module):
    """Depthwise 7x7 conv+BN -> 1x1 -> GELU -> 1x1. The conv+BN folds at deploy time."""

    def __init__(self, in_channels: int, hidden_channels: int, drop: float = 0.0):
        super().__init__()
        self.conv = ConvBN(in_channels, in_channels, 7, groups=in_channels, conv_name="conv", bn_name="bn")
        self.fc1 = nn.Conv2d(in_channels, hidden_channels, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden_channels, in_channels, 1)
        self.drop = nn.Dropout(drop)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                _init_trunc_normal(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.fc1(self.conv(x)))
        return self.drop(self.fc2(self.drop(x)))


class RepMixerBlock(nn.Module):
    """x = RepMixer(x); x = x + ls * ConvFFN(x)."""

    def __init__(self, dim: int, kernel_size: int = 3, mlp_ratio: float = 4.0, drop: float = 0.0, drop_path: float = 0.0,
                 use_layer_scale: bool = True, layer_scale_init_value: float = 1e-5):
        super().__init__()
        self.token_mixer = RepMixer(dim, kernel_size, use_layer_scale, layer_scale_init_value)
        self.convffn = ConvFFN(dim, int(dim * mlp_ratio), drop)
        self.drop_path = make_drop_path(drop_path)
        self.use_layer_scale = use_layer_scale
        if use_layer_scale:
            self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), float(layer_scale_init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.token_mixer(x)
        y = self.convffn(x)
        return x + self.drop_path(self.layer_scale * y if self.use_layer_scale else y)


class AttentionBlock(nn.Module):
    """x = x + ls1 * MHSA(BN(x)); x = x + ls2 * ConvFFN(x).

    `reparameterize()` folds the BN into the qkv projection (exact: attention has no
    padding); the projection gains a bias and `norm` becomes an identity.
    """

    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop: float = 0.0, drop_path: float = 0.0, use_layer_scale: bool = True,
                 layer_scale_init_value: float = 1e-5):
        super().__init__()
        self.norm = nn.BatchNorm2d(dim)
        self.token_mixer = MHSA(dim)
        self.convffn = ConvFFN(dim, int(dim * mlp_ratio), drop)
        self.drop_path = make_drop_path(drop_path)
        self.use_layer_scale = use_layer_scale
        if use_layer_scale:
            self.layer_scale_1 = nn.Parameter(torch.full((dim, 1, 1), float(layer_scale_init_value)))
            self.layer_scale_2 = nn.Parameter(torch.full((dim, 1, 1), float(layer_scale_init_value)))

    @property
    def is_reparameterized(self) -> bool:
        return not isinstance(self.norm, nn.BatchNorm2d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.token_mixer(self.norm(x))
        x = x + self.drop_path(self.layer_scale_1 * a if self.use_layer_scale else a)
        f = self.convffn(x)
        return x + self.drop_path(self.layer_scale_2 * f if self.use_layer_scale else f)

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.is_reparameterized:
            return
        weight, bias = fold_bn_into_linear(self.token_mixer.qkv.weight, self.token_mixer.qkv.bias, self.norm.weight, self.norm.bias,
                                           self.norm.running_mean, self.norm.running_var, self.norm.eps)
        qkv = self.token_mixer.qkv
        fused = nn.Linear(qkv.in_features, qkv.out_features, bias=True, device=weight.device, dtype=weight.dtype)
        fused.weight = nn.Parameter(weight)
        fused.bias = nn.Parameter(bias)
        self.token_mixer.qkv = fused
        self.norm = nn.Identity()


def basic_blocks(dim: int, stage: int, layers: Sequence[int], token_mixer: str, mlp_ratio: float, drop_rate: float,
                 drop_path_rate: float, use_layer_scale: bool, layer_scale_init_value: float, kernel_size: int = 3) -> nn.Sequential:
    blocks = []
    total = sum(layers)
    for j in range(layers[stage]):
        # Python floats: factories must also build on the meta device.
        dpr = drop_path_rate * (j + sum(layers[:stage])) / max(total - 1, 1)
        if token_mixer == "repmixer":
            blocks.append(RepMixerBlock(dim, kernel_size, mlp_ratio, drop_rate, dpr, use_layer_scale, layer_scale_init_value))
        elif token_mixer == "attention":
            blocks.append(AttentionBlock(dim, mlp_ratio, drop_rate, dpr, use_layer_scale, layer_scale_init_value))
        else:
            raise ValueError(f"unknown token mixer {token_mixer!r}")
    return nn.Sequential(*blocks)


class FastViT(nn.Module):
    """The original's FastViT: `patch_embed` (stem), `network` (stages, PatchEmbeds and RepCPE
    in one ModuleList), `conv_exp` + global pool + `head`.

    With `fork_feat=True` it returns the four stage outputs, each through a BN named
    `norm{i}` after its network index. The original forks at network indices [0, 2, 4, 6],
    which for SA/MA models is the RepCPE output, before the attention stage; here the fork
    is after each stage's last block (index 7 for SA/MA models), so no stage is skipped.
    """

    def __init__(self, layers: Sequence[int], token_mixers: Sequence[str], embed_dims: Sequence[int], mlp_ratios: Sequence[float],
                 pos_embs: Sequence[bool] | None = None, num_classes: int = 1000, down_patch_size: int = 7, down_stride: int = 2,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, use_layer_scale: bool = True,
                 layer_scale_init_value: float = 1e-5, fork_feat: bool = False, cls_ratio: float = 2.0, repmixer_kernel_size: int = 3):
        super().__init__()
        self.fork_feat = fork_feat
        self.num_classes = num_classes
        self.embed_dims = tuple(embed_dims)
        pos_embs = pos_embs or [False] * len(layers)
        self.patch_embed = convolutional_stem(3, embed_dims[0])
        network: list[nn.Module] = []
        self.stage_indices: list[int] = []
        for i in range(len(layers)):
            if pos_embs[i]:
                network.append(RepCPE(embed_dims[i], embed_dims[i], spatial_shape=(7, 7)))
            network.append(basic_blocks(embed_dims[i], i, layers, token_mixers[i], mlp_ratios[i], drop_rate, drop_path_rate,
                                        use_layer_scale, layer_scale_init_value, repmixer_kernel_size))
            self.stage_indices.append(len(network) - 1)
            if i < len(layers) - 1:
                network.append(PatchEmbed(down_patch_size, down_stride, embed_dims[i], embed_dims[i + 1]))
        self.network = nn.ModuleList(network)
        if fork_feat:
            for dim, idx in zip(embed_dims, self.stage_indices):
                self.add_module(f"norm{idx}", nn.BatchNorm2d(dim))
        else:
            hidden = int(embed_dims[-1] * cls_ratio)
            self.gap = nn.AdaptiveAvgPool2d(1)
            self.conv_exp = MobileOneBlock(embed_dims[-1], hidden, 3, stride=1, padding=1, groups=embed_dims[-1], use_se=True)
            self.head = nn.Linear(hidden, num_classes) if num_classes > 0 else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Linear):
                _init_trunc_normal(m)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs after each stage (normalized by `norm{i}` when fork_feat)."""
        x = self.patch_embed(x)
        outs = []
        for idx, block in enumerate(self.network):
            x = block(x)
            if idx in self.stage_indices:
                outs.append(getattr(self, f"norm{idx}")(x) if self.fork_feat else x)
        return outs

    def forward(self, x: torch.Tensor):
        feats = self.forward_features(x)
        if self.fork_feat:
            return feats
        x = self.gap(self.conv_exp(feats[-1])).flatten(1)
        return self.head(x)


def build_fastvit(variant: str, **kwargs) -> FastViT:
    layers, dims, mlp_ratio, attention, ls_init = VARIANTS[variant]
    mixers = ("repmixer",) * 3 + ("attention" if attention else "repmixer",)
    kwargs.setdefault("layer_scale_init_value", ls_init)
    return FastViT(layers, mixers, dims, (mlp_ratio,) * 4, pos_embs=(False, False, False, attention), **kwargs)
