"""Folding an eval-mode BatchNorm (or any per-channel affine) into the layer that consumes it
(the `fusion.fold_bn` counterpart for a norm that comes *before* a 1x1 conv or a linear layer).

BN(x) = x * scale + shift per channel, so W @ BN(x) + b = (W * scale) @ x + (b + W @ shift).
This is exact only when the consumer sees every input position with the same weights and
no zero padding (padding would see 0, not `shift`): 1x1 convs without padding and linears.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeseg.reparam.fusion import bn_scale_shift, conv_like


@torch.no_grad()
def fold_affine_into_following(layer: nn.Conv2d | nn.Linear, scale: torch.Tensor, shift: torch.Tensor) -> nn.Conv2d | nn.Linear:
    """A copy of `layer` (a pointwise conv or a linear) that computes `layer(x * scale + shift)`."""
    if isinstance(layer, nn.Conv2d):
        k = layer.kernel_size
        if k != (1, 1) or layer.groups != 1 or layer.padding not in ((0, 0), "valid"):
            raise ValueError(f"an affine folds into a following conv only if it is 1x1, ungrouped and unpadded, got {layer}")
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


def fold_bn_into_following(layer: nn.Conv2d | nn.Linear, bn: nn.Module) -> nn.Conv2d | nn.Linear:
    """A copy of `layer` (a pointwise conv or a linear) that computes `layer(bn(x))`."""
    return fold_affine_into_following(layer, *bn_scale_shift(bn))


@torch.no_grad()
def bn_after_affine(bn: nn.BatchNorm2d, scale: torch.Tensor, shift: torch.Tensor) -> nn.BatchNorm2d:
    """An eval-mode BatchNorm2d computing `bn(x * scale + shift)`, with `bn`'s keys and shapes.

    Keeps `bn`'s running_var and eps (so its 1/std is computed exactly as before) and moves
    everything else into gamma and beta with a zero running mean.
    """
    s, t = bn_scale_shift(bn)
    var = bn.running_var
    out = nn.BatchNorm2d(bn.num_features, eps=bn.eps, momentum=bn.momentum, device=var.device, dtype=var.dtype)
    gamma = bn.weight if bn.weight is not None else torch.ones_like(var)
    out.weight.copy_(gamma * scale)
    out.bias.copy_(s * shift + t)
    out.running_mean.zero_()
    out.running_var.copy_(var)
    if bn.num_batches_tracked is not None:
        out.num_batches_tracked.copy_(bn.num_batches_tracked)
    return out.eval()


def fold_bn_into_linear(weight, bias, gamma, beta, mean, var, eps: float = 1e-5):
    """W(BN(x)) + b as W'x + b' for a BN that *precedes* a linear map (W: out x in)."""
    scale = gamma / torch.sqrt(var + eps)
    shift = beta - mean * scale
    w = weight * scale.unsqueeze(0)
    b = weight @ shift
    return w, (b if bias is None else b + bias)
