"""TopFormer Tiny/Small/Base for ADE20K segmentation (hustvl/TopFormer, mmseg).

Module names follow the mmseg checkpoints (`backbone.tpm...`, `backbone.trans...`,
`backbone.SIM...`, `decode_head...`) so the published files load strictly. The forward
returns the decode head's logits at 1/8 of the input, as mmseg's `encode_decode` does
before its final resize. The variants are registered, without torch, in topformer_entries.py.

Deploy: every conv+BN folds (walker), and `reparameterize(input_size=...)` on the root bakes
the resolution: the pyramid pool's adaptive pooling becomes fixed windows and every
reshape/resize size becomes a Python constant, so traced graphs carry no shape arithmetic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.errors import EdgesegError
from edgeseg.models.layers.conv_bn import ConvBN, ConvBNReLU
from edgeseg.models.layers.static_pool import StaticAvgPool2d
from edgeseg.models.topformer_layouts import DESCRIPTIONS, MMSEG, VARIANTS  # noqa: F401 (re-exported)

DECODE_LEVELS = (1, 2, 3)  # pyramid levels that receive semantics: 1/8, 1/16, 1/32


def token_pyramid_rows(channels, extra_row: bool) -> list[tuple[int, int, int, int]]:
    """MobileNetV2 rows (kernel, expansion, out channels, stride) of the configs."""
    c1, c2, c3, c4 = channels
    rows = [(3, 1, 16, 1), (3, 4, c1, 2), (3, 3, c1, 1), (5, 3, c2, 2), (5, 3, c2, 1),
            (3, 3, c3, 2), (3, 3, c3, 1), (5, 6, c4, 2), (5, 6, c4, 1)]
    if extra_row:
        rows.append((3, 6, c4, 1))
    return rows


def _conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1) -> ConvBN:
    """TopFormer's Conv2d_BN (children `c`, `bn`)."""
    return ConvBN(cin, cout, k, stride, k // 2, groups, conv_name="c", bn_name="bn")


def _conv_module(cin: int, cout: int, groups: int = 1) -> ConvBN:
    """mmcv's ConvModule(1x1, BN, no activation): bias-free conv `conv` + `bn`."""
    return ConvBN(cin, cout, 1, 1, 0, groups, conv_name="conv", bn_name="bn")


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int):
        super().__init__()
        hidden = int(round(cin * expand))
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [_conv_bn(cin, hidden), nn.ReLU()]
        layers += [_conv_bn(hidden, hidden, k, stride, groups=hidden), nn.ReLU(), _conv_bn(hidden, cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class TokenPyramidModule(nn.Module):
    def __init__(self, rows, out_indices, stem_channels: int = 16):
        super().__init__()
        self.rows = [tuple(r) for r in rows]
        self.out_indices = tuple(out_indices)
        self.stem = nn.Sequential(_conv_bn(3, stem_channels, 3, 2), nn.ReLU())
        cin = stem_channels
        for i, (k, t, c, s) in enumerate(self.rows):
            self.add_module(f"layer{i + 1}", InvertedResidual(cin, c, k, s, t))
            cin = c

    def level_sizes(self, h: int, w: int) -> list[tuple[int, int]]:
        """Spatial size of each output: odd kernels with padding k//2 give ceil(n / stride)."""
        h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1  # stem
        out = []
        for i, (_, _, _, s) in enumerate(self.rows):
            h, w = (h - 1) // s + 1, (w - 1) // s + 1
            if i in self.out_indices:
                out.append((h, w))
        return out

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        x = self.stem(x)
        for i in range(len(self.rows)):
            x = getattr(self, f"layer{i + 1}")(x)
            if i in self.out_indices:
                outs.append(x)
        return outs


class PyramidPoolAgg(nn.Module):
    """Pool every level to the size of the coarsest one divided by `stride` (ceil), concat."""

    def __init__(self, stride: int = 2):
        super().__init__()
        self.stride = stride
        self.pools: nn.ModuleList | None = None  # set when the resolution is baked

    def out_size(self, coarsest: tuple[int, int]) -> tuple[int, int]:
        return (coarsest[0] - 1) // self.stride + 1, (coarsest[1] - 1) // self.stride + 1

    def bake(self, level_sizes: list[tuple[int, int]], device=None) -> None:
        out = self.out_size(level_sizes[-1])
        self.pools = nn.ModuleList(StaticAvgPool2d(s, out, device=device) for s in level_sizes)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        if self.pools is not None:
            return torch.cat([pool(x) for pool, x in zip(self.pools, inputs)], dim=1)
        size = self.out_size((inputs[-1].shape[2], inputs[-1].shape[3]))
        return torch.cat([F.adaptive_avg_pool2d(x, size) for x in inputs], dim=1)


class Attention(nn.Module):
    """Multi-head attention over the token map; softmax(q k) WITHOUT 1/sqrt(d) (as the original)."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: float):
        super().__init__()
        self.num_heads, self.key_dim = num_heads, key_dim
        self.d = int(attn_ratio * key_dim)
        self.dh = self.d * num_heads
        self.to_q = _conv_bn(dim, key_dim * num_heads)
        self.to_k = _conv_bn(dim, key_dim * num_heads)
        self.to_v = _conv_bn(dim, self.dh)
        self.proj = nn.Sequential(nn.ReLU6(), _conv_bn(self.dh, dim))
        self.static_hw: tuple[int, int] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.static_hw or (x.shape[2], x.shape[3])
        n = h * w
        q = self.to_q(x).reshape(-1, self.num_heads, self.key_dim, n).transpose(2, 3)
        k = self.to_k(x).reshape(-1, self.num_heads, self.key_dim, n)
        v = self.to_v(x).reshape(-1, self.num_heads, self.d, n).transpose(2, 3)
        attn = torch.matmul(q, k).softmax(dim=-1)
        out = torch.matmul(attn, v).transpose(2, 3).reshape(-1, self.dh, h, w)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = _conv_bn(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden, bias=True)
        self.act = nn.ReLU6()
        self.fc2 = _conv_bn(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x))))


class Block(nn.Module):
    def __init__(self, dim: int, key_dim: int, num_heads: int, mlp_ratio: float, attn_ratio: float):
        super().__init__()
        self.attn = Attention(dim, key_dim, num_heads, attn_ratio)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


class BasicLayer(nn.Module):
    def __init__(self, depth: int, dim: int, key_dim: int, num_heads: int, mlp_ratio: float, attn_ratio: float):
        super().__init__()
        self.transformer_blocks = nn.ModuleList(Block(dim, key_dim, num_heads, mlp_ratio, attn_ratio) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.transformer_blocks:
            x = blk(x)
        return x


class HSigmoid(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x + 3) / 6


class InjectionMultiSum(nn.Module):
    """Semantic injection: local(x_l) * up(h_sigmoid(act(x_g))) + up(embed(x_g)), bilinear."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.local_embedding = _conv_module(cin, cout)
        self.global_embedding = _conv_module(cin, cout)
        self.global_act = _conv_module(cin, cout)
        self.act = HSigmoid()
        self.static_hw: tuple[int, int] | None = None

    def forward(self, x_l: torch.Tensor, x_g: torch.Tensor) -> torch.Tensor:
        size = self.static_hw or (x_l.shape[2], x_l.shape[3])
        local = self.local_embedding(x_l)
        gate = F.interpolate(self.act(self.global_act(x_g)), size=size, mode="bilinear", align_corners=False)
        glob = F.interpolate(self.global_embedding(x_g), size=size, mode="bilinear", align_corners=False)
        return local * gate + glob


class TopFormerBackbone(nn.Module):
    def __init__(self, channels, extra_row: bool, num_heads: int, out_dim: int, depth: int = 4, key_dim: int = 16,
                 attn_ratio: float = 2.0, mlp_ratio: float = 2.0, c2t_stride: int = 2):
        super().__init__()
        self.channels = tuple(channels)
        out_indices = (2, 4, 6, 9) if extra_row else (2, 4, 6, 8)
        self.tpm = TokenPyramidModule(token_pyramid_rows(channels, extra_row), out_indices)
        self.ppa = PyramidPoolAgg(c2t_stride)
        self.trans = BasicLayer(depth, sum(channels), key_dim, num_heads, mlp_ratio, attn_ratio)
        self.SIM = nn.ModuleList(InjectionMultiSum(c, out_dim) if i in DECODE_LEVELS else nn.Identity() for i, c in enumerate(channels))

    def bake(self, h: int, w: int) -> tuple[int, int]:
        """Freeze every size for an h x w input; returns the size of the 1/8 level."""
        levels = self.tpm.level_sizes(h, w)
        device = next(self.parameters()).device
        self.ppa.bake(levels, device=device)
        tokens = self.ppa.out_size(levels[-1])
        for blk in self.trans.transformer_blocks:
            blk.attn.static_hw = tokens
        for i in DECODE_LEVELS:
            self.SIM[i].static_hw = levels[i]
        return levels[DECODE_LEVELS[0]]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        levels = self.tpm(x)
        tokens = self.trans(self.ppa(levels))
        semantics = tokens.split(self.channels, dim=1)
        return [self.SIM[i](levels[i], semantics[i]) for i in DECODE_LEVELS]


class SimpleHead(nn.Module):
    """Sum the injected levels at the finest one, 1x1 conv+BN+ReLU, dropout, classifier."""

    def __init__(self, channels: int, num_classes: int, depthwise: bool, dropout: float = 0.1):
        super().__init__()
        self.linear_fuse = ConvBNReLU(channels, channels, groups=channels if depthwise else 1)
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        self.static_hw: tuple[int, int] | None = None

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[0]
        size = self.static_hw or (x.shape[2], x.shape[3])
        for f in feats[1:]:
            x = x + F.interpolate(f, size=size, mode="bilinear", align_corners=False)
        return self.conv_seg(self.dropout(self.linear_fuse(x)))


class TopFormer(nn.Module):
    """mmseg EncoderDecoder(Topformer, SimpleHead): image -> logits at 1/8 resolution."""

    def __init__(self, channels, extra_row: bool, num_heads: int, out_dim: int, head_depthwise: bool, num_classes: int = 150):
        super().__init__()
        self.backbone = TopFormerBackbone(channels, extra_row, num_heads, out_dim)
        self.decode_head = SimpleHead(out_dim, num_classes, head_depthwise)
        self.baked_input_size: tuple[int, int] | None = None

    @property
    def is_reparameterized(self) -> bool:
        return self.baked_input_size is not None

    def reparameterize(self, input_size: tuple[int, int] | None = None) -> None:
        """Bake the resolution (conv+BN folding is done block by block by the walker).

        Exact for any size: the pool becomes avg_pool2d where each level divides evenly (input
        a multiple of 64) and fixed averaging matmuls elsewhere (e.g. 480x480).
        """
        if input_size is None or self.baked_input_size is not None:
            return
        h, w = (int(s) for s in input_size)
        if h < 1 or w < 1:
            raise EdgesegError(f"cannot bake TopFormer for input size {h}x{w}", "give a positive size, e.g. 512x512 (multiples of 64 keep plain pooling)")
        self.decode_head.static_hw = self.backbone.bake(h, w)
        self.baked_input_size = (h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.baked_input_size is not None and (x.shape[2], x.shape[3]) != self.baked_input_size:
            bh, bw = self.baked_input_size
            raise EdgesegError(
                f"this TopFormer deploy model is baked for {bh}x{bw} input, got {x.shape[2]}x{x.shape[3]}",
                f"resize or pad images to {bh}x{bw}, or reparameterize the original checkpoint with --input-size {x.shape[2]}x{x.shape[3]}",
            )
        return self.decode_head(self.backbone(x))
