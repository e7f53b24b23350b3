"""Building blocks shared by several families."""

from edgeseg.models.layers.conv_bn import ConvBN, ConvBNReLU
from edgeseg.models.layers.drop_path import DropPath, drop_path
from edgeseg.models.layers.mobileone_block import MobileOneBlock, ReparamLargeKernelConv, SEBlock

__all__ = ["ConvBN", "ConvBNReLU", "DropPath", "drop_path", "MobileOneBlock", "ReparamLargeKernelConv", "SEBlock"]
