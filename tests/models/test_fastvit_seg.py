"""FastViT + Semantic FPN: structure, fusion equivalence, mmseg layout, detection, deploy files."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import edgeseg
from edgeseg.analysis import count_macs, count_params
from edgeseg.checkpoint.detect import detect
from edgeseg.checkpoint.layouts import LayoutMismatch, find_layout
from edgeseg.models.layers import MobileOneBlock, ReparamLargeKernelConv
from edgeseg.models.layers.repmixer import RepCPE, RepMixer
from edgeseg.registry import get_entry
from edgeseg.testing import convert_shape_only
from edgeseg.reparam.walker import reparameterize_model
from edgeseg.synthetic import randomize_weights_

SLOW = ["fastvit_sa24_seg", "fastvit_sa36_seg", "fastvit_ma36_seg"]
TOL = 1e-4

# Measured: params (train, fused) and fused MACs at 512x512 (150 classes).
SIZES = {
    "fastvit_sa12_seg": (14_661_654, 14_625_366, 29_271_261_184),
    "fastvit_sa24_seg": (24_634_902, 24_579_414, 36_671_324_160),
    "fastvit_sa36_seg": (34_608_150, 34_533_462, 44_071_387_136),
    "fastvit_ma36_seg": (46_946_478, 46_857_954, 53_133_000_704),
}

_CACHE: dict[str, nn.Module] = {}


def _size(name: str) -> tuple[int, int]:
    return (128, 128) if name == "fastvit_sa12_seg" else (256, 256)


def _model(name: str) -> nn.Module:
    """Non-trivial weights; BN statistics measured at half the test size, then perturbed."""
    if name not in _CACHE:
        model = edgeseg.create(name)
        randomize_weights_(model, seed=11, calib_size=tuple(s // 2 for s in _size(name)))
        _CACHE[name] = model.eval()
    return _CACHE[name]


def test_features_after_every_stage_including_attention():
    model = _model("fastvit_sa12_seg")
    backbone = model.backbone
    assert backbone.stage_indices == [0, 2, 4, 7]  # 6 is the RepCPE, 7 the attention stage
    names = {n for n, _ in backbone.named_children()}
    assert {"norm0", "norm2", "norm4", "norm7"} <= names and "norm6" not in names
    x = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        feats = backbone(x)
        assert [tuple(f.shape[1:]) for f in feats] == [(64, 32, 24), (128, 16, 12), (256, 8, 6), (512, 4, 3)]
        changed = copy.deepcopy(model)
        changed.backbone.network[7][1].layer_scale_1.mul_(2.0)  # the last attention block
        assert not torch.allclose(changed.backbone(x)[3], feats[3])
        out = model(x)
    assert out.shape == (1, 150, 32, 24)


def test_neck_and_head_match_mmseg_size_based_resizing():
    """Fixed 2x upsampling equals mmseg's resize-to-the-next-level's-size (input % 32 == 0)."""
    model = _model("fastvit_sa12_seg")
    with torch.no_grad():
        feats = model.backbone(torch.randn(2, 3, 96, 160))
        lat = [conv(x) for conv, x in zip(model.neck.lateral_convs, feats)]
        for i in range(3, 0, -1):
            lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[2:], mode="nearest")
        outs = [conv(x) for conv, x in zip(model.neck.fpn_convs, lat)]
        for got, ref in zip(model.neck(feats), outs):
            assert torch.equal(got, ref)
        head = model.decode_head
        acc = None
        for seq, x in zip(head.scale_heads, outs):
            for layer in seq:
                if isinstance(layer, nn.Upsample):
                    x = F.interpolate(x, size=[2 * x.shape[2], 2 * x.shape[3]], mode="bilinear", align_corners=False)
                else:
                    x = layer(x)
            acc = x if acc is None else acc + F.interpolate(x, size=acc.shape[2:], mode="bilinear", align_corners=False)
        assert torch.equal(head(outs), head.conv_seg(acc))


@pytest.mark.parametrize("name", ["fastvit_sa12_seg"] + [pytest.param(n, marks=pytest.mark.slow) for n in SLOW])
def test_reparam_equivalence_and_idempotence(name):
    size = _size(name)
    fused, result = edgeseg.reparameterize(_model(name), input_size=size, seed=99)
    eq = result.equivalence
    assert [tuple(r.input_size) for r in eq.results] == [size, (size[0] - 32, size[1] + 32)]
    assert eq.max_rel < TOL, f"{name}: max_rel {eq.max_rel:.3g} (max_abs {eq.max_abs:.3g})"
    assert not [n for n, m in fused.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert result.report.as_dict()["FastViTSeg"] == 1  # output BNs folded into the FPN laterals
    assert result.report.as_dict()["ConvBNReLU"] == 7  # 1 + 1 + 2 + 3 scale-head convs
    again, second = edgeseg.reparameterize(fused, input_size=size, verify=False)
    assert second.report.total == 0
    sd, sd2 = fused.state_dict(), again.state_dict()
    assert list(sd) == list(sd2) and all(torch.equal(sd[k], sd2[k]) for k in sd)


@pytest.mark.parametrize("name", ["fastvit_sa12_seg"] + [pytest.param(n, marks=pytest.mark.slow) for n in SLOW])
def test_params_and_macs(name):
    train, fused_n, macs = SIZES[name]
    entry = get_entry(name)
    with torch.device("meta"):
        model = entry.build()
        assert count_params(model) == train
        reparameterize_model(model, input_size=entry.input_size)
        assert count_params(model) == fused_n
        assert count_macs(model, entry.input_size, device="meta") == macs


@pytest.mark.parametrize("name", list(SIZES))
def test_detect_every_variant(name):
    entry = get_entry(name)
    mmseg = find_layout(entry, "mmseg-fastvit-fpn")
    classes = 19 if name == "fastvit_sa12_seg" else 150
    with torch.device("meta"):
        model = entry.build(num_classes=classes)
        fused = entry.build()
        reparameterize_model(fused, input_size=(64, 64))
    for sd, is_fused, n_cls in ((model.state_dict(), False, classes), (fused.state_dict(), True, 150)):
        det = detect(mmseg.from_canonical(sd))
        assert (det.entry.name, det.fused, det.cfg["num_classes"]) == (name, is_fused, n_cls)
    with pytest.raises(LayoutMismatch):  # classification dicts are not this layout, and vice versa
        mmseg.to_canonical({k[len("backbone."):]: v for k, v in model.state_dict().items() if k.startswith("backbone.")})
    with pytest.raises(LayoutMismatch):
        find_layout(get_entry("fastvit_sa12"), "apple-ml-fastvit").to_canonical(model.state_dict())





@pytest.mark.parametrize("state", ["unfused", "original_fused", "fused"])
def test_layout_converts_shape_only_values_like_tensors(state):
    """`info` reads checkpoints without torch and converts TensorMeta values: the same keys,
    shapes, dtypes and cfg as from real tensors, the backbone's leftover BNs folded by shape."""
    name = "fastvit_sa12_seg"
    entry = get_entry(name)
    lay = find_layout(entry, "mmseg-fastvit-fpn")
    model = copy.deepcopy(_model(name))
    if state == "original_fused":  # what ml-fastvit's reparameterize_model fuses: ConvFFN and attention BNs stay
        for mod in list(model.modules()):
            if isinstance(mod, (RepMixer, RepCPE, MobileOneBlock, ReparamLargeKernelConv)) and not mod.is_reparameterized:
                mod.reparameterize()
    elif state == "fused":
        reparameterize_model(model, input_size=(64, 64))
    _, meta = convert_shape_only(lay, lay.from_canonical(model.state_dict()), entry.infer_cfg)
    assert entry.infer_cfg(meta) == {"num_classes": 150, "head_channels": 128, "fpn_channels": 256}
    if state != "unfused":
        assert not any(".convffn.conv.bn." in k for k in meta) and "backbone.network.7.0.token_mixer.qkv.bias" in meta

def test_mmseg_checkpoint_load_fused_and_deploy(tmp_path):
    name = "fastvit_sa12_seg"
    model = _model(name)
    mmseg = find_layout(get_entry(name), "mmseg-fastvit-fpn")
    mmseg.save(model.state_dict(), tmp_path / "seg.pth")
    raw = torch.load(tmp_path / "seg.pth", weights_only=True)
    assert set(raw) == {"meta", "state_dict"}
    for k in ["backbone.patch_embed.0.rbr_conv.0.conv.weight", "backbone.network.6.pe.weight", "backbone.norm7.running_var",
              "neck.lateral_convs.3.conv.bias", "neck.fpn_convs.0.conv.weight", "decode_head.scale_heads.0.0.conv.weight",
              "decode_head.scale_heads.3.4.bn.running_var", "decode_head.conv_seg.weight"]:
        assert k in raw["state_dict"], k
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    loaded = edgeseg.load(tmp_path / "seg.pth")
    assert (loaded.edgeseg.arch, loaded.edgeseg.task, loaded.edgeseg.fused) == (name, "segmentation", False)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    fused, _ = edgeseg.reparameterize(model, input_size=(64, 64), verify=False)
    mmseg.save(fused.state_dict(), tmp_path / "seg_fused.pth")
    loaded_f = edgeseg.load(tmp_path / "seg_fused.pth")
    assert loaded_f.edgeseg.fused
    deploy = edgeseg.save_deploy(loaded_f, tmp_path / "seg.deploy.safetensors")
    from_deploy = edgeseg.load(deploy)
    assert (from_deploy.edgeseg.arch, from_deploy.edgeseg.fused) == (name, True)
    with torch.no_grad():
        ref = fused(x)
        assert torch.equal(loaded_f(x), ref) and torch.equal(from_deploy(x), ref)
