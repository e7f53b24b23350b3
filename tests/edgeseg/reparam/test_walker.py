"""The walker: our protocol, timm's conventions, the generic Conv-BN pass, idempotence."""

import copy

import pytest
import torch
from torch import nn

from edgeseg.models.layers import MobileOneBlock, ReparamLargeKernelConv
from edgeseg.reparam import reparameterize_model
from edgeseg.reparam.verify import check_equivalence
from edgeseg.synthetic import randomize_weights_


class SwitchToDeployBlock(nn.Module):
    """A user block following the RepVGG/timm `switch_to_deploy()` convention."""

    def __init__(self, c):
        super().__init__()
        self.a = nn.Conv2d(c, c, 3, padding=1)
        self.b = nn.Conv2d(c, c, 1)
        self.deploy = None

    def forward(self, x):
        return self.deploy(x) if self.deploy is not None else self.a(x) + self.b(x)

    @torch.no_grad()
    def switch_to_deploy(self):
        w = self.a.weight + nn.functional.pad(self.b.weight, [1, 1, 1, 1])
        self.deploy = nn.Conv2d(self.a.in_channels, self.a.out_channels, 3, padding=1)
        self.deploy.weight.copy_(w)
        self.deploy.bias.copy_(self.a.bias + self.b.bias)
        del self.a, self.b


class FuseReturnsModule(nn.Module):
    """timm/LeViT-style `fuse()` that returns a replacement module."""

    def __init__(self, c):
        super().__init__()
        self.c = nn.Conv2d(c, c, 1, bias=False)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return self.bn(self.c(x))

    @torch.no_grad()
    def fuse(self):
        from edgeseg.reparam.fusion import fuse_conv_bn

        return fuse_conv_bn(self.c, self.bn)


def _net():
    return nn.Sequential(
        MobileOneBlock(3, 32, 3, stride=2, num_conv_branches=3),
        MobileOneBlock(32, 32, 3, groups=32, use_se=True),
        ReparamLargeKernelConv(32, 16, 7, 2, groups=16),
        SwitchToDeployBlock(16),
        FuseReturnsModule(16),
        nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, bias=True), nn.BatchNorm2d(16), nn.ReLU()),
    )


@pytest.mark.parametrize("size", [(32, 32), (40, 56)])
def test_every_convention_is_fused_and_equivalent(size):
    ref = randomize_weights_(_net().eval(), seed=7, calib_size=(32, 32))
    fused = copy.deepcopy(ref)
    report = reparameterize_model(fused)
    assert report.as_dict() == {
        "MobileOneBlock": 2, "ReparamLargeKernelConv": 1, "SwitchToDeployBlock": 1, "FuseReturnsModule": 1, "Conv2d+BatchNorm2d": 1,
    }
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert isinstance(fused[4], nn.Conv2d)
    eq = check_equivalence(ref, fused, [size], samples=2)
    assert eq.passed and eq.max_rel < 1e-5, eq.as_dict()


def test_idempotent():
    model = randomize_weights_(_net().eval(), seed=1, calib_size=(32, 32))
    reparameterize_model(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    again = reparameterize_model(model)
    assert again.total == 0
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_mobileone_block_fusion_math_with_identity_and_groups():
    # grouped conv with 2 channels per group: the identity kernel must index i % (in/groups)
    blk = MobileOneBlock(8, 8, 3, groups=4, num_conv_branches=2, use_act=False)
    randomize_weights_(blk.eval(), seed=2, calib_size=None)
    ref = copy.deepcopy(blk)
    blk.reparameterize()
    assert set(dict(blk.named_children())) >= {"reparam_conv"} and blk.rbr_skip is None
    x = torch.randn(2, 8, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(blk(x), ref(x), rtol=1e-5, atol=1e-5)


def test_layer_scales_are_far_from_init_in_synthetic_weights():
    class LS(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer_scale = nn.Parameter(1e-5 * torch.ones(4, 1, 1))
            self.conv = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            return x + self.layer_scale * self.conv(x)

    m = randomize_weights_(LS(), seed=0, calib_size=None)
    assert float(m.layer_scale.min()) >= 0.2
