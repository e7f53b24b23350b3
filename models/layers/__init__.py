"""Building blocks shared by several families."""

from edgeseg.models.layers.conv_bn import ConvBN
from edgeseg.models.layers.mobileone_block import MobileOneBlock, ReparamLargeKernelConv, SEBlock

__all__ = ["ConvBN", "MobileOneBlock", "ReparamLargeKernelConv", "SEBlock"]
