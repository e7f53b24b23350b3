"""MobileOne S0-S4: fusion equivalence with non-trivial weights, idempotence, sizes."""

import pytest
import torch

import edgeseg
from edgeseg.analysis import count_macs, count_params
from edgeseg.checkpoint.layouts import find_layout
from edgeseg.registry import get_entry
from edgeseg.testing import assert_reparam_equivalent, convert_shape_only

# measured here; the paper reports fused 2.1 / 4.8 / 7.8 / 10.1 / 14.8 M params
PARAMS = {
    "s0": (5_293_272, 2_078_504),
    "s1": (4_825_192, 4_764_840),
    "s2": (7_884_648, 7_808_168),
    "s3": (10_170_600, 10_078_312),
    "s4": (14_951_248, 14_838_352),
}
# paper: S0 275M, S1 825M, S2 1299M, S3 1896M, S4 2978M MACs at 224
MACS = {"s0": 275e6, "s1": 825e6, "s2": 1299e6, "s3": 1896e6, "s4": 2978e6}


def _variants():
    for v in PARAMS:
        marks = [pytest.mark.slow] if v in ("s3", "s4") else []
        yield pytest.param(v, marks=marks)


@pytest.mark.parametrize("variant", list(_variants()))
def test_fusion_is_equivalent_at_default_and_non_square_size(variant):
    model = edgeseg.create(f"mobileone_{variant}", pretrained_like=11)
    fused, report = assert_reparam_equivalent(model, sizes=[(224, 224), (160, 224)])
    assert report.max_rel < 1e-4
    assert count_params(model) == PARAMS[variant][0]
    assert count_params(fused) == PARAMS[variant][1]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())


@pytest.mark.parametrize("variant", list(_variants()))
def test_macs_match_the_paper(variant):
    model = edgeseg.create(f"mobileone_{variant}")
    fused, _ = edgeseg.reparameterize(model, verify=False)
    macs = count_macs(fused, (224, 224))
    assert abs(macs - MACS[variant]) / MACS[variant] < 0.03, macs


def test_reparameterize_twice_changes_nothing():
    model = edgeseg.create("mobileone_s0", pretrained_like=2)
    fused, first = edgeseg.reparameterize(model, verify=False)
    twice, second = edgeseg.reparameterize(fused, verify=False)
    assert first.report.total == 43 and second.report.total == 0
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(fused(x), twice(x))




@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("layout", [layout.name for layout in get_entry("mobileone_s0").layouts])
def test_layouts_convert_shape_only_values_like_tensors(layout, fused):
    """`info` reads checkpoints without torch and converts TensorMeta values: the same keys,
    shapes, dtypes and cfg as from real tensors."""
    entry = get_entry("mobileone_s0")
    lay = find_layout(entry, layout)
    model = edgeseg.create("mobileone_s0", num_classes=10)
    if fused:
        model, _ = edgeseg.reparameterize(model, verify=False)
    _, meta = convert_shape_only(lay, lay.from_canonical(model.state_dict()), entry.infer_cfg)
    assert entry.infer_cfg(meta) == {"num_classes": 10}
