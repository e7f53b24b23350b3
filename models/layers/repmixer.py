"""FastViT's reparameterizable token mixer and positional encoding (apple/ml-fastvit).

Attribute names follow the original so its checkpoints load strictly: RepMixer keeps
`norm`, `mixer` (MobileOneBlocks) and `layer_scale`; RepCPE keeps `pe`. Both fuse into one
depthwise conv named `reparam_conv`, the original's fused name.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeseg.models.layers.mobileone_block import MobileOneBlock
from edgeseg.reparam.fusion import conv_like, identity_kernel


def _depthwise_geometry(in_ch: int, out_ch: int, k: int) -> nn.Conv2d:
    # Only the geometry is used; meta keeps it free (and works when detection builds on meta).
    return nn.Conv2d(in_ch, out_ch, k, 1, k // 2, groups=in_ch, device="meta")


class RepMixer(nn.Module):
    """x + ls * (mixer(x) - norm(x)): depthwise 3x3 token mixing with a train-time residual.

    `norm` is a MobileOneBlock with only its BN skip branch, `mixer` one with skip, kxk and
    1x1 branches, neither with an activation. Fused: W = I + ls * (W_mixer - W_norm),
    b = ls * (b_mixer - b_norm).
    """

    def __init__(self, dim: int, kernel_size: int = 3, use_layer_scale: bool = True, layer_scale_init_value: float = 1e-5):
        super().__init__()
        self.dim, self.kernel_size = dim, kernel_size
        self.use_layer_scale = use_layer_scale
        self.reparam_conv: nn.Conv2d | None = None
        pad = kernel_size // 2
        self.norm = MobileOneBlock(dim, dim, kernel_size, padding=pad, groups=dim, use_act=False, use_scale_branch=False,
                                   num_conv_branches=0)
        self.mixer = MobileOneBlock(dim, dim, kernel_size, padding=pad, groups=dim, use_act=False)
        if use_layer_scale:
            self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), float(layer_scale_init_value)))

    @property
    def is_reparameterized(self) -> bool:
        return self.reparam_conv is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)
        if self.use_layer_scale:
            return x + self.layer_scale * (self.mixer(x) - self.norm(x))
        return x + self.mixer(x) - self.norm(x)

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.reparam_conv is not None:
            return
        geometry = _depthwise_geometry(self.dim, self.dim, self.kernel_size)
        like = next(self.mixer.parameters())
        if like.is_meta:
            # Detection builds fused structures on meta: shapes only, so skip the arithmetic
            # (meta elementwise ops run through slow Python decompositions).
            weight = torch.empty(geometry.weight.shape, device="meta", dtype=like.dtype)
            self.reparam_conv = conv_like(geometry, weight, torch.empty(self.dim, device="meta", dtype=like.dtype))
            self._drop_branches()
            return
        w_mix, b_mix = self.mixer.kernel_bias()
        w_norm, b_norm = self.norm.kernel_bias()
        ident = identity_kernel(self.dim, self.dim, self.kernel_size, w_mix)
        if self.use_layer_scale:
            ls = self.layer_scale
            weight = ident + ls.unsqueeze(-1) * (w_mix - w_norm)
            bias = ls.reshape(-1) * (b_mix - b_norm)
        else:
            weight, bias = ident + w_mix - w_norm, b_mix - b_norm
        self.reparam_conv = conv_like(geometry, weight, bias)
        self._drop_branches()

    def _drop_branches(self) -> None:
        self.mixer = self.norm = None
        if self.use_layer_scale:
            self.layer_scale = None


class RepCPE(nn.Module):
    """Conditional positional encoding x + dwconv7x7(x) (bias), fused into one conv with the
    identity added to its centre tap."""

    def __init__(self, in_channels: int, embed_dim: int = 768, spatial_shape: int | tuple[int, int] = (7, 7)):
        super().__init__()
        if isinstance(spatial_shape, int):
            spatial_shape = (spatial_shape, spatial_shape)
        if len(spatial_shape) != 2 or spatial_shape[0] != spatial_shape[1] or spatial_shape[0] % 2 == 0:
            raise ValueError(f"RepCPE needs a square odd kernel, got {spatial_shape}")
        if embed_dim != in_channels:
            # The identity term only exists for a channel-preserving depthwise conv.
            raise ValueError(f"RepCPE needs embed_dim == in_channels, got {in_channels} -> {embed_dim}")
        self.in_channels, self.embed_dim = in_channels, embed_dim
        self.spatial_shape = tuple(spatial_shape)
        self.groups = embed_dim
        k = spatial_shape[0]
        self.reparam_conv: nn.Conv2d | None = None
        self.pe = nn.Conv2d(in_channels, embed_dim, k, 1, k // 2, bias=True, groups=embed_dim)

    @property
    def is_reparameterized(self) -> bool:
        return self.reparam_conv is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)
        return self.pe(x) + x

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.reparam_conv is not None:
            return
        k = self.spatial_shape[0]
        weight = identity_kernel(self.in_channels, self.groups, k, self.pe.weight) + self.pe.weight
        self.reparam_conv = conv_like(self.pe, weight, self.pe.bias)
        self.pe = None
