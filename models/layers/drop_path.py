"""Stochastic depth (Huang et al., "Deep Networks with Stochastic Depth", arXiv:1603.09382), as
timm's `timm/layers/drop.py` `DropPath` applies it to residual branches: while training, each
sample's branch is dropped with probability `p` and the kept ones are scaled by 1 / (1 - p).
In eval mode (every edgeseg pipeline step) it is the identity.
"""

from __future__ import annotations

import torch
from torch import nn


class DropPath(nn.Module):
    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def drop_path(p: float) -> nn.Module:
    """DropPath(p), or a plain Identity when nothing is dropped (no module in exported graphs)."""
    return DropPath(p) if p > 0.0 else nn.Identity()
