"""Adaptive average pooling frozen for one input size, so exporters see fixed-window ops.

`adaptive_avg_pool2d(x, out)` averages, along each axis, the window
[floor(i * n / out), ceil((i + 1) * n / out)). When `out` divides `n` every window is
`n // out` wide and the windows tile the axis, which is exactly `avg_pool2d` with
kernel = stride = n // out. Otherwise the windows differ in width or overlap; a rectangular
window's mean is separable (mean over rows of the mean over columns), so the pool equals
`P_h @ x @ P_w^T` with one fixed averaging matrix per axis: plain MatMuls for ONNX, Core ML
and TensorRT, instead of an adaptive pool they cannot export.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def adaptive_windows(n_in: int, n_out: int) -> list[tuple[int, int]]:
    """The [start, end) input window of each output index of adaptive pooling (as torch computes it)."""
    return [((i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)) for i in range(n_out)]


def averaging_matrix(n_in: int, n_out: int, *, device=None, dtype=None) -> torch.Tensor:
    """(n_out, n_in) matrix whose row i averages the i-th adaptive window."""
    m = torch.zeros(n_out, n_in, device=device, dtype=dtype or torch.float32)
    for i, (a, b) in enumerate(adaptive_windows(n_in, n_out)):
        m[i, a:b] = 1.0 / (b - a)
    return m


class StaticAvgPool2d(nn.Module):
    """`adaptive_avg_pool2d(x, out_hw)` for inputs of spatial size `in_hw` only."""

    def __init__(self, in_hw: tuple[int, int], out_hw: tuple[int, int], *, device=None, dtype=None):
        super().__init__()
        self.in_hw = (int(in_hw[0]), int(in_hw[1]))
        self.out_hw = (int(out_hw[0]), int(out_hw[1]))
        if min(self.in_hw + self.out_hw) <= 0:
            raise ValueError(f"pool sizes must be positive, got {self.in_hw} -> {self.out_hw}")
        self.divisible = all(i % o == 0 for i, o in zip(self.in_hw, self.out_hw))
        self.kernel = tuple(i // o for i, o in zip(self.in_hw, self.out_hw)) if self.divisible else None
        if not self.divisible:
            # Not persistent: derived from the input size, not learnt; keeping them out of the
            # state dict keeps deploy checkpoints size-independent.
            self.register_buffer("rows", averaging_matrix(self.in_hw[0], self.out_hw[0], device=device, dtype=dtype), persistent=False)
            self.register_buffer("cols_t", averaging_matrix(self.in_hw[1], self.out_hw[1], device=device, dtype=dtype).t().contiguous(),
                                 persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel is not None:
            if self.kernel == (1, 1):
                return x
            return F.avg_pool2d(x, self.kernel, self.kernel)
        return torch.matmul(torch.matmul(self.rows, x), self.cols_t)

    def extra_repr(self) -> str:
        how = f"avg_pool kernel=stride={self.kernel}" if self.kernel else "averaging matmuls"
        return f"{self.in_hw} -> {self.out_hw}, {how}"
