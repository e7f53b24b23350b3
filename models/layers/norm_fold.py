"""Folding an eval-mode BatchNorm into the layer that consumes it (the `fusion.fold_bn`
counterpart for a norm that comes *before* a 1x1 conv or a linear layer).

BN(x) = x * scale + shift per channel, so W @ BN(x) + b = (W * scale) @ x + (b + W @ shift).
This is exact only when the consumer sees every input position with the same weights and
no zero padding (padding would see 0, not `shift`): 1x1 convs without padding and linears.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeseg.reparam.fusion import bn_scale_shift, conv_like


@torch.no_grad()
def fold_bn_into_following(layer: nn.Conv2d | nn.Linear, bn: nn.Module) -> nn.Conv2d | nn.Linear:
    """A copy of `layer` (a pointwise conv or a linear) that computes `layer(bn(x))`."""
    if isinstance(layer, nn.Conv2d):
        k = layer.kernel_size
        if k != (1, 1) or layer.groups != 1 or layer.padding not in ((0, 0), "valid"):
            raise ValueError(f"a BN folds into a following conv only if it is 1x1, ungrouped and unpadded, got {layer}")
    scale, shift = bn_scale_shift(bn)
    w = layer.weight
    w2d = w.reshape(w.shape[0], w.shape[1])
    bias = layer.bias if layer.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    new_w = w * scale.reshape((1, -1) + (1,) * (w.dim() - 2))
    new_b = bias + w2d @ shift
    if isinstance(layer, nn.Conv2d):
        return conv_like(layer, new_w, new_b)
    out = nn.Linear(layer.in_features, layer.out_features, device=w.device, dtype=w.dtype)
    out.weight = nn.Parameter(new_w.detach().clone())
    out.bias = nn.Parameter(new_b.detach().clone())
    return out
