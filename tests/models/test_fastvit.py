"""FastViT classification: fusion equivalence, sizes, key layouts, detection, deploy files, CLI.

Fast set: t8, t12, s12, sa12 at 128x128 (and 96x160); slow set: sa24, sa36, ma36 at 256.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

import edgeseg
from edgeseg.analysis import count_macs, count_params
from edgeseg.checkpoint.layouts import LayoutMismatch, find_layout
from edgeseg.errors import DetectionError
from edgeseg.models.fastvit import MHSA
from edgeseg.models.layers import MobileOneBlock, ReparamLargeKernelConv
from edgeseg.models.layers.repmixer import RepCPE, RepMixer
from edgeseg.registry import get_entry
from edgeseg.reparam.walker import reparameterize_model
from edgeseg.synthetic import randomize_weights_
from edgeseg.testing import convert_shape_only, make_checkpoint

FAST = ["fastvit_t8", "fastvit_t12", "fastvit_s12", "fastvit_sa12"]
SLOW = ["fastvit_sa24", "fastvit_sa36", "fastvit_ma36"]
ALL = FAST + [pytest.param(n, marks=pytest.mark.slow) for n in SLOW]
LAYOUTS = ["apple-ml-fastvit", "timm"]
SMALL = (128, 128)
TOL = 1e-4  # fp32, max error relative to max |output|

# Measured: params (train, fused the way the original's reparameterize_model fuses, fused by
# edgeseg, which also folds ConvFFN's BN and the attention BN) and fused MACs at 256x256.
# Reference table (M): 4.026/3.996, 7.554/7.509, 9.474/9.429, 11.581/11.545, 21.554/21.501,
# 31.527/31.457, 44.068/43.985; GMACs 0.685, 1.391, 1.794, 1.937, 3.762, 5.587, 7.815.
SIZES = {
    "fastvit_t8": (4_026_232, 3_996_040, 3_994_216, 685_160_448, 0.685),
    "fastvit_t12": (7_553_704, 7_508_840, 7_505_896, 1_390_944_256, 1.391),
    "fastvit_s12": (9_473_576, 9_428_712, 9_425_768, 1_793_597_440, 1.794),
    "fastvit_sa12": (11_580_968, 11_545_320, 11_543_400, 1_937_219_584, 1.937),
    "fastvit_sa24": (21_554_216, 21_501_288, 21_497_448, 3_762_069_504, 3.762),
    "fastvit_sa36": (31_527_464, 31_457_256, 31_451_496, 5_586_919_424, 5.587),
    "fastvit_ma36": (44_068_004, 43_984_632, 43_977_792, 7_814_930_432, 7.815),
}
TABLE_M = {"fastvit_t8": (4.026, 3.996), "fastvit_t12": (7.554, 7.509), "fastvit_s12": (9.474, 9.429),
           "fastvit_sa12": (11.581, 11.545), "fastvit_sa24": (21.554, 21.501), "fastvit_sa36": (31.527, 31.457),
           "fastvit_ma36": (44.068, 43.985)}

_CACHE: dict[str, nn.Module] = {}


def _size(name: str) -> tuple[int, int]:
    return SMALL if name in FAST else get_entry(name).input_size


def _model(name: str) -> nn.Module:
    """One non-trivially weighted model per variant, shared by the tests of this module: BN
    statistics measured at half the test size (as `create(pretrained_like=...)` does), then
    perturbed; layer scales U(0.2, 0.9). Statistics measured far below the test size leave
    the deep SA/MA models ill-conditioned (fp32 vs fp64 of the *same* model differ ~5e-3)."""
    if name not in _CACHE:
        model = edgeseg.create(name)
        randomize_weights_(model, seed=sum(map(ord, name)), calib_size=tuple(s // 2 for s in _size(name)))
        _CACHE[name] = model.eval()
    return _CACHE[name]


def _original_style_fuse(model: nn.Module) -> nn.Module:
    """What apple/ml-fastvit's reparameterize_model fuses (ConvFFN BN and attention BN stay)."""
    for mod in list(model.modules()):
        if isinstance(mod, (RepMixer, RepCPE, MobileOneBlock, ReparamLargeKernelConv)) and not mod.is_reparameterized:
            mod.reparameterize()
    return model


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


@pytest.mark.parametrize("name", ALL)
def test_reparam_equivalence_and_completeness(name):
    model = _model(name)
    size = _size(name)
    fused, result = edgeseg.reparameterize(model, input_size=size, seed=1234)
    eq = result.equivalence
    sizes = [tuple(r.input_size) for r in eq.results]
    assert sizes == [size, (size[0] - 32, size[1] + 32)], sizes  # square deploy size and a non-square one
    assert eq.max_rel < TOL, f"{name}: max_rel {eq.max_rel:.3g} (max_abs {eq.max_abs:.3g}) at {sizes}"
    # Nothing train-time is left: no BN anywhere, every reparameterizable block fused.
    assert not [n for n, m in fused.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.is_reparameterized for m in fused.modules() if hasattr(m, "is_reparameterized"))
    blocks = result.report.as_dict()
    assert blocks["RepMixer"] >= 10 and blocks["ReparamLargeKernelConv"] == 3 and blocks["MobileOneBlock"] == 7
    if "sa" in name or "ma" in name:
        assert blocks["RepCPE"] == 1 and blocks["AttentionBlock"] >= 2
    keys = fused.state_dict().keys()
    assert "network.1.proj.0.lkb_reparam.weight" in keys and "patch_embed.0.reparam_conv.weight" in keys
    assert "network.0.0.token_mixer.reparam_conv.bias" in keys


@pytest.mark.parametrize("name", ["fastvit_t8", "fastvit_sa12"])
def test_reparam_is_idempotent(name):
    fused, _ = edgeseg.reparameterize(_model(name), input_size=SMALL, verify=False)
    before = {k: v.clone() for k, v in fused.state_dict().items()}
    again, result = edgeseg.reparameterize(fused, input_size=SMALL, verify=False)
    assert result.report.total == 0, result.report.as_dict()
    after = again.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)
    for m in fused.modules():  # each block's own hook is a no-op the second time
        if hasattr(m, "reparameterize") and hasattr(m, "is_reparameterized"):
            m.reparameterize()
    assert all(torch.equal(fused.state_dict()[k], before[k]) for k in before)


@pytest.mark.parametrize("name", FAST + [pytest.param(n, marks=pytest.mark.slow) for n in SLOW])
def test_params_and_macs_match_reference(name):
    train, original_fused, fused_n, macs, table_gmacs = SIZES[name]
    entry = get_entry(name)
    with torch.device("meta"):  # shapes only; also proves the factory builds on meta
        model = entry.build()
        assert count_params(model) == train
        _original_style_fuse(model)
        assert count_params(model) == original_fused
        reparameterize_model(model, input_size=entry.input_size)
        assert count_params(model) == fused_n
        measured = count_macs(model, entry.input_size, device="meta")
    assert measured == macs
    assert abs(measured / 1e9 - table_gmacs) / table_gmacs < 0.01
    table_train, table_fused = TABLE_M[name]
    assert round(train / 1e6, 3) == table_train and round(original_fused / 1e6, 3) == table_fused


@pytest.mark.parametrize("name", ["fastvit_t8", "fastvit_sa12", "fastvit_ma36", "fastvit_sa12_seg", "fastvit_ma36_seg"])
def test_factories_build_on_meta(name):
    with torch.device("meta"):
        model = get_entry(name).build(drop_path_rate=0.1)
        reparameterize_model(model, input_size=(64, 64))
    assert all(p.is_meta for p in model.parameters())


@pytest.mark.parametrize("name", ["fastvit_t8", "fastvit_sa12", "fastvit_ma36"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("fused", [False, True])
def test_layout_round_trip_and_rejection(name, layout, fused):
    entry = get_entry(name)
    lay = find_layout(entry, layout)
    with torch.device("meta"):
        model = entry.build()
        if fused:
            reparameterize_model(model, input_size=(64, 64))
    sd = model.state_dict()
    out = lay.from_canonical(sd)
    back = lay.to_canonical(out)
    assert list(back) == list(sd) and all(back[k] is sd[k] for k in sd)
    other = find_layout(entry, LAYOUTS[1 - LAYOUTS.index(layout)])
    with pytest.raises(LayoutMismatch):
        other.to_canonical(out)
    mobileone = {"stage0.rbr_conv.0.conv.weight": torch.zeros(1), "linear.weight": torch.zeros(1)}
    with pytest.raises(LayoutMismatch):
        lay.to_canonical(mobileone)





@pytest.mark.parametrize("state", ["unfused", "original_fused", "fused"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts_convert_shape_only_values_like_tensors(layout, state):
    """`info` reads checkpoints without torch and converts TensorMeta values: the same keys,
    shapes, dtypes and cfg as from real tensors, the original's leftover BNs folded by shape."""
    entry = get_entry("fastvit_sa12")
    lay = find_layout(entry, layout)
    model = copy.deepcopy(_model("fastvit_sa12"))
    if state == "original_fused":
        _original_style_fuse(model)
    elif state == "fused":
        reparameterize_model(model, input_size=(64, 64))
    _, meta = convert_shape_only(lay, lay.from_canonical(model.state_dict()), entry.infer_cfg)
    assert entry.infer_cfg(meta) == {"num_classes": 1000}
    if state != "unfused":  # the folded forms: no BN left in ConvFFN or in front of attention
        assert not any(".convffn.conv.bn." in k or ".norm.running_var" in k for k in meta)
        assert "network.7.0.token_mixer.qkv.bias" in meta

def test_timm_key_names():
    entry = get_entry("fastvit_sa12")
    timm = find_layout(entry, "timm")
    with torch.device("meta"):
        model = entry.build()
    keys = set(timm.from_canonical(model.state_dict()))
    for k in ["stem.0.conv_kxk.0.conv.weight", "stem.0.conv_scale.bn.running_var", "stem.2.identity.weight",
              "stages.0.blocks.0.token_mixer.norm.identity.weight", "stages.0.blocks.0.token_mixer.mixer.conv_kxk.0.bn.bias",
              "stages.0.blocks.0.token_mixer.layer_scale.gamma", "stages.0.blocks.0.layer_scale.gamma",
              "stages.0.blocks.0.mlp.conv.conv.weight", "stages.0.blocks.0.mlp.conv.bn.weight", "stages.0.blocks.0.mlp.fc1.weight",
              "stages.1.downsample.proj.0.large_conv.conv.weight", "stages.1.downsample.proj.0.small_conv.bn.bias",
              "stages.1.downsample.proj.1.conv_kxk.0.conv.weight", "stages.3.pos_emb.pos_enc.weight",
              "stages.3.blocks.0.norm.weight", "stages.3.blocks.0.token_mixer.qkv.weight", "stages.3.blocks.1.layer_scale_2.gamma",
              "final_conv.se.fc1.weight", "final_conv.se.fc2.bias", "final_conv.conv_kxk.0.conv.weight", "head.fc.weight"]:
        assert k in keys, k
    assert not any(k.startswith(("network.", "patch_embed.", "conv_exp.")) for k in keys)
    reparameterize_model(model, input_size=(64, 64))
    fused_keys = set(timm.from_canonical(model.state_dict()))
    for k in ["stem.0.reparam_conv.weight", "stages.1.downsample.proj.0.reparam_conv.weight",
              "stages.1.downsample.proj.1.reparam_conv.bias", "stages.3.pos_emb.reparam_conv.weight",
              "stages.0.blocks.0.token_mixer.reparam_conv.weight", "final_conv.reparam_conv.weight", "final_conv.se.fc1.weight"]:
        assert k in fused_keys, k


def _save_fused(model, path, layout_name, fuse=None):
    entry = get_entry(model.edgeseg.arch)
    fused = fuse(model) if fuse else edgeseg.reparameterize(model, verify=False)[0]
    find_layout(entry, layout_name).save(fused.state_dict(), path)
    return fused


@pytest.mark.parametrize("name", list(SIZES))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_detect_every_variant_fused_and_unfused(name, layout):
    """Keys and shapes alone identify variant, layout and fusion state (meta tensors: cheap)."""
    from edgeseg.checkpoint.detect import detect

    entry = get_entry(name)
    lay = find_layout(entry, layout)
    classes = 10 if name == "fastvit_t8" else 1000  # num_classes is read from the head
    with torch.device("meta"):
        model = entry.build(num_classes=classes)
        original_fused = _original_style_fuse(entry.build())
        fused = entry.build()
        reparameterize_model(fused, input_size=(64, 64))
    for sd, is_fused, n_cls in ((model.state_dict(), False, classes), (original_fused.state_dict(), True, 1000),
                                (fused.state_dict(), True, 1000)):
        det = detect(lay.from_canonical(sd))
        assert (det.entry.name, det.layout.name, det.fused, det.cfg["num_classes"]) == (name, layout, is_fused, n_cls)


LOAD_CASES = [("fastvit_t8", "apple-ml-fastvit"), ("fastvit_sa12", "timm")] + [
    pytest.param(n, lay, marks=pytest.mark.slow) for n in FAST + SLOW for lay in LAYOUTS
    if (n, lay) not in (("fastvit_t8", "apple-ml-fastvit"), ("fastvit_sa12", "timm"))]


@pytest.mark.parametrize(("name", "layout"), LOAD_CASES)
def test_load_unfused_and_fused(name, layout, tmp_path):
    size = (64, 96) if name in FAST else (128, 160)
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(5))
    if name == "fastvit_t8":
        model = make_checkpoint(name, tmp_path / "unfused.pth", layout=layout, seed=3)  # the documented helper
    else:
        model = _model(name)
        find_layout(get_entry(name), layout).save(model.state_dict(), tmp_path / "unfused.pth")
    loaded = edgeseg.load(tmp_path / "unfused.pth")
    info = loaded.edgeseg
    assert (info.arch, info.layout, info.fused, info.cfg["num_classes"]) == (name, layout, False, 1000)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    fused = _save_fused(model, tmp_path / "fused.pth", layout)
    loaded_f = edgeseg.load(tmp_path / "fused.pth")
    assert (loaded_f.edgeseg.arch, loaded_f.edgeseg.layout, loaded_f.edgeseg.fused) == (name, layout, True)
    with torch.no_grad():
        assert torch.equal(loaded_f(x), fused(x))


@pytest.mark.parametrize("name", ["fastvit_sa12", pytest.param("fastvit_t8", marks=pytest.mark.slow)])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_originals_fused_checkpoints_load(name, layout, tmp_path):
    """Apple's `*_reparam.pth.tar` (and timm's fused state) keep ConvFFN's BN and the
    attention BN; loading folds them, so the result equals the original's fused model."""
    model = _model(name)
    partial = _original_style_fuse(copy.deepcopy(model))
    keys = set(find_layout(get_entry(name), layout).from_canonical(partial.state_dict()))
    assert any(k.endswith(("convffn.conv.bn.running_var", "mlp.conv.bn.running_var")) for k in keys)
    _save_fused(model, tmp_path / "orig_fused.pth", layout, fuse=lambda m: partial)
    loaded = edgeseg.load(tmp_path / "orig_fused.pth")
    assert (loaded.edgeseg.arch, loaded.edgeseg.fused) == (name, True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in loaded.modules())
    x = torch.randn(2, 3, 96, 64, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        rel = _rel(loaded(x), partial(x))
    assert rel < 1e-5, f"max_rel {rel:.3g}"


def test_deploy_round_trip(tmp_path):
    model = _model("fastvit_sa12")
    fused, _ = edgeseg.reparameterize(model, input_size=SMALL, verify=False)
    path = edgeseg.save_deploy(fused, tmp_path / "sa12.deploy.safetensors")
    loaded = edgeseg.load(path)  # no arch: the file describes itself
    assert (loaded.edgeseg.arch, loaded.edgeseg.fused) == ("fastvit_sa12", True)
    x = torch.randn(1, 3, 96, 160)
    with torch.no_grad():
        assert torch.equal(loaded(x), fused(x))


def test_strict_loading_errors_name_the_key(tmp_path):
    model = _model("fastvit_t8")
    apple = find_layout(get_entry("fastvit_t8"), "apple-ml-fastvit")
    sd = dict(model.state_dict())
    missing = "network.2.1.convffn.fc2.bias"
    del sd[missing]
    apple.save(sd, tmp_path / "missing.pth")
    for arch in (None, "fastvit_t8"):
        with pytest.raises(DetectionError, match=missing.replace(".", r"\.")) as err:
            edgeseg.load(tmp_path / "missing.pth", arch)
        assert "missing" in str(err.value)
    sd = dict(model.state_dict())
    bad = "network.4.0.convffn.fc1.weight"
    sd[bad] = torch.zeros(7, 192, 1, 1)
    apple.save(sd, tmp_path / "shape.pth")
    with pytest.raises(DetectionError, match=bad.replace(".", r"\.")) as err:
        edgeseg.load(tmp_path / "shape.pth", "fastvit")
    assert "[7, 192, 1, 1]" in str(err.value)


def test_mhsa_matches_original_reshapes():
    """The shape-agnostic rewrite computes exactly what the original's reshapes compute."""
    torch.manual_seed(0)
    attn = MHSA(64).eval()
    x = torch.randn(2, 64, 6, 10)
    B, C, H, W = x.shape
    t = x.flatten(2).transpose(-2, -1)
    qkv = attn.qkv(t).reshape(B, H * W, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    a = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
    ref = attn.proj((a @ v).transpose(1, 2).reshape(B, H * W, C)).transpose(-2, -1).reshape(B, C, H, W)
    with torch.no_grad():
        assert torch.equal(attn(x), ref)


@pytest.mark.parametrize("name", ["fastvit_sa12", pytest.param("fastvit_t8", marks=pytest.mark.slow)])
def test_trace_has_no_int_casts(name):
    fused, _ = edgeseg.reparameterize(_model(name), input_size=SMALL, verify=False)
    with torch.no_grad():
        graph = str(torch.jit.trace(fused, torch.randn(1, 3, 64, 64)).inlined_graph)
    assert "aten::Int" not in graph and "aten::size" not in graph


def test_cli_reparam(tmp_path, capsys):
    from edgeseg.cli import main

    ckpt = tmp_path / "fastvit_t8.pth"
    find_layout(get_entry("fastvit_t8"), "apple-ml-fastvit").save(_model("fastvit_t8").state_dict(), ckpt)
    out = tmp_path / "t8.deploy.safetensors"
    main(["reparam", str(ckpt), "-o", str(out), "--input-size", "64", "--latency-iterations", "0", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["arch"] == "fastvit_t8" and summary["layout"] == "apple-ml-fastvit" and not summary["already_fused"]
    assert summary["fused_blocks"] == {"ConvBN": 10, "MobileOneBlock": 7, "RepMixer": 10, "ReparamLargeKernelConv": 3}
    assert summary["params"] == {"before": 4_026_232, "after": 3_994_216}
    eq = summary["equivalence"]
    assert eq["passed"] and eq["max_rel"] < TOL and [s["input_size"] for s in eq["sizes"]] == [[64, 64], [32, 96]]
    assert "latency_ms" not in summary  # --latency-iterations 0 skips timing
    deployed = edgeseg.load(out)
    assert deployed.edgeseg.fused and deployed.edgeseg.arch == "fastvit_t8"
    with pytest.raises(SystemExit) as exc:  # an existing output is kept unless --overwrite
        main(["reparam", str(ckpt), "-o", str(out), "--json"])
    assert exc.value.code == 1 and "already exists" in capsys.readouterr().err
