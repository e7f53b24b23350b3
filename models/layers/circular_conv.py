"""Global circular convolution (ParC / EdgeFormer, hkzhang91/EdgeFormer).

A depthwise kernel as long as the feature axis is applied with wrap-around and without
centring: y[i] = sum_k K[k] * x[(i + k) mod S]. The original writes it as a 'valid' conv over
the input followed by its own first S - 1 rows (or columns); so do we, because that form is
plain Concat + Slice + Conv for every exporter (nn.Conv2d's circular padding is centred and
only exists for odd kernels).

The kernel of the original is not a parameter: a learnt "meta kernel" of fixed length is
resized (bilinear, align_corners=True) to the actual feature size at every forward.
`CircularConv` is the deploy form, with that resized kernel baked in for one size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

H_AXIS, W_AXIS = 2, 3


def wrap_pad(x: torch.Tensor, axis: int) -> torch.Tensor:
    """`x` followed by all but its last row (axis 2) or column (axis 3)."""
    if axis == H_AXIS:
        return torch.cat((x, x[:, :, :-1, :]), dim=H_AXIS)
    if axis == W_AXIS:
        return torch.cat((x, x[:, :, :, :-1]), dim=W_AXIS)
    raise ValueError(f"axis must be 2 (H) or 3 (W), got {axis}")


def circular_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, axis: int, groups: int) -> torch.Tensor:
    """Depthwise circular conv along `axis`; `weight` is (C, 1, S, 1) for H or (C, 1, 1, S) for W."""
    return F.conv2d(wrap_pad(x, axis), weight, bias, groups=groups)


def resize_along(meta: torch.Tensor, length: int, axis: int) -> torch.Tensor:
    """The original's instance kernel / position embedding: `meta` resized along `axis`
    to `length` by bilinear interpolation with align_corners=True (the other axis has size 1)."""
    size = [length, 1] if axis == H_AXIS else [1, length]
    return F.interpolate(meta, size=size, mode="bilinear", align_corners=True)


def kernel_sum(weight: torch.Tensor) -> torch.Tensor:
    """Per-channel sum of a depthwise kernel: what a circular conv does to a constant."""
    return weight.sum(dim=(1, 2, 3))


class CircularConv(nn.Module):
    """Depthwise circular conv with a static kernel of one feature size (the deploy form)."""

    def __init__(self, channels: int, length: int, axis: int, bias: bool, *, device=None, dtype=None):
        super().__init__()
        if axis not in (H_AXIS, W_AXIS):
            raise ValueError(f"axis must be 2 (H) or 3 (W), got {axis}")
        self.channels, self.length, self.axis = channels, length, axis
        shape = (channels, 1, length, 1) if axis == H_AXIS else (channels, 1, 1, length)
        self.weight = nn.Parameter(torch.empty(shape, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(channels, device=device, dtype=dtype)) if bias else None

    @classmethod
    def from_kernel(cls, weight: torch.Tensor, axis: int, bias: torch.Tensor | None = None) -> "CircularConv":
        """A conv holding copies of `weight` ((C, 1, S, 1) or (C, 1, 1, S)) and `bias` ((C,))."""
        conv = cls(weight.shape[0], weight.shape[axis], axis, bias is not None, device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(weight)
            if bias is not None:
                conv.bias.copy_(bias)
        return conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return circular_conv(x, self.weight, self.bias, self.axis, self.channels)

    def extra_repr(self) -> str:
        return f"{self.channels}, length={self.length}, axis={'H' if self.axis == H_AXIS else 'W'}, bias={self.bias is not None}"
