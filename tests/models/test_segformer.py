"""SegFormer B0-B5: both published checkpoint formats, their numerics, fusion, and a cross-check
against the independent transformers implementation."""

from __future__ import annotations

import copy
import json
import shutil
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

import edgeseg
from edgeseg.api import verification_sizes
from edgeseg.checkpoint.detect import detect
from edgeseg.checkpoint.layouts import LayoutMismatch, find_layout
from edgeseg.errors import CheckpointError, DetectionError
from edgeseg.models.segformer import VARIANTS as VARIANT_SPECS
from edgeseg.registry import get_entry
from edgeseg.reparam.verify import check_equivalence
from edgeseg.testing import convert_shape_only, make_checkpoint

VARIANTS = ["b0", "b1", "b2", "b3", "b4", "b5"]
FAST = ["b0", "b1"]
SLOW = ["b2", "b3", "b4", "b5"]
# Published parameter counts (150 classes); they leave out mmseg's unused conv_seg.
PUBLISHED_PARAMS_M = {"b0": 3.753, "b1": 13.716, "b2": 27.462, "b3": 47.338, "b4": 64.108, "b5": 84.709}
CONV_SEG_PARAMS = 150 * 128 + 150
HF_EPS, NVLABS_EPS = 1e-5, 1e-6
# fp32 relative error (max |diff| / max |reference|) between two implementations of one function.
REL_TOL = 1e-5


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def run(model, x):
    with torch.no_grad():
        return model(x)


def layer_norm_eps(model) -> dict[str, float]:
    return {n: m.eps for n, m in model.named_modules() if isinstance(m, torch.nn.LayerNorm)}


def marked(variants, slow):
    return [pytest.param(v, marks=pytest.mark.slow) if v in slow else v for v in variants]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """ckpt(variant, layout) -> (path, reference model), built once per module.

    The Hugging Face reference is built with HF numerics (eps 1e-5, no conv_seg). Tests that
    edit a checkpoint copy it first.
    """
    root = tmp_path_factory.mktemp("segformer")
    cache: dict = {}

    def get(variant: str, layout: str = "mmseg"):
        if (variant, layout) not in cache:
            if layout == "mmseg":
                path = root / f"segformer_{variant}.pth"
                ref = make_checkpoint(f"segformer_{variant}", path, seed=3)
            else:
                path = root / f"segformer-{variant}-hf"
                ref = make_checkpoint(f"segformer_{variant}", path, layout="huggingface", seed=4, norm_eps=HF_EPS,
                                      conv_seg_channels=None)
            cache[variant, layout] = (path, ref)
        return cache[variant, layout]

    return get


def copy_of(path, tmp_path):
    dst = tmp_path / path.name
    (shutil.copytree if path.is_dir() else shutil.copy)(path, dst)
    return dst


# ------------------------------------------------------------------ registry and structure


def test_registered_variants():
    for v in VARIANTS:
        e = get_entry(f"segformer_{v}")
        assert (e.family, e.task, e.input_size, e.size_divisor, e.labels) == ("segformer", "segmentation", (512, 512), 32, "ade20k")
        assert e.large == (v not in FAST)
        assert [l.name for l in e.layouts] == ["mmseg", "huggingface", "mmseg1"]
        assert (e.canonical_layout.container, e.layouts[1].container) == ("mmseg", "hf")


@pytest.mark.parametrize("variant", VARIANTS)
def test_param_counts_on_meta(variant):
    with torch.device("meta"):  # factories must build without real tensors
        mmseg = edgeseg.create(f"segformer_{variant}")
        hf = edgeseg.create(f"segformer_{variant}", conv_seg_channels=None, norm_eps=HF_EPS)
    n_hf = sum(p.numel() for p in hf.parameters())
    n_mmseg = sum(p.numel() for p in mmseg.parameters())
    assert round(n_hf / 1e6, 3) == PUBLISHED_PARAMS_M[variant]
    assert n_mmseg == n_hf + CONV_SEG_PARAMS
    assert mmseg.decode_head.conv_seg.weight.shape == (150, 128, 1, 1)


def test_forward_returns_quarter_resolution_logits(ckpt):
    out = run(ckpt("b0")[1], torch.randn(2, 3, 256, 160))
    assert out.shape == (2, 150, 64, 40) and torch.isfinite(out).all()
    out = run(edgeseg.create("segformer_b0", num_classes=19), torch.randn(1, 3, 96, 64))
    assert out.shape == (1, 19, 24, 16)


def test_conv_seg_is_unused(ckpt):
    model = copy.deepcopy(ckpt("b0")[1])
    x = torch.randn(1, 3, 128, 96)
    before = run(model, x)
    with torch.no_grad():
        model.decode_head.conv_seg.weight.normal_()
    assert torch.equal(run(model, x), before)


def test_norm_eps_per_module():
    eps = layer_norm_eps(edgeseg.create("segformer_b0"))
    # NVlabs: block and stage norms 1e-6; patch-embed and sr norms keep torch's 1e-5.
    assert eps["backbone.block1.0.norm1"] == eps["backbone.block4.1.norm2"] == eps["backbone.norm3"] == NVLABS_EPS
    assert eps["backbone.patch_embed1.norm"] == eps["backbone.block1.0.attn.norm"] == HF_EPS
    hf = layer_norm_eps(edgeseg.create("segformer_b0", norm_eps=HF_EPS))
    assert set(hf.values()) == {HF_EPS}


# ------------------------------------------------------------------ mmseg round trip


@pytest.mark.parametrize("variant", marked(VARIANTS, SLOW))
def test_mmseg_round_trip(ckpt, variant):
    path, ref = ckpt(variant)
    obj = torch.load(path, weights_only=True)
    assert set(obj) == {"meta", "state_dict"} and "decode_head.conv_seg.weight" in obj["state_dict"]
    assert "backbone.block1.0.attn.kv.weight" in obj["state_dict"]
    model = edgeseg.load(path)
    assert (model.edgeseg.arch, model.edgeseg.layout) == (f"segformer_{variant}", "mmseg")
    assert model.edgeseg.cfg["norm_eps"] == NVLABS_EPS
    x = torch.randn(2, 3, 128, 96)
    assert rel_err(run(model, x), run(ref, x)) <= 1e-6


# ------------------------------------------------------------------ Hugging Face round trip


@pytest.mark.parametrize("variant", marked(VARIANTS, SLOW))
def test_hf_round_trip(ckpt, variant):
    path, ref = ckpt(variant, "huggingface")
    config = json.loads((path / "config.json").read_text())
    spec = VARIANT_SPECS[variant]
    assert config["model_type"] == "segformer" and config["architectures"] == ["SegformerForSemanticSegmentation"]
    assert (config["hidden_sizes"], config["depths"], config["decoder_hidden_size"]) == (list(spec.dims), list(spec.depths), spec.decoder_dim)
    assert len(config["id2label"]) == 150
    sd = load_file(str(path / "model.safetensors"))
    assert not any("conv_seg" in k for k in sd)
    kv = ref.backbone.block2[0].attn.kv.weight
    c = kv.shape[1]
    assert torch.equal(sd["segformer.encoder.block.1.0.attention.self.key.weight"], kv[:c])
    assert torch.equal(sd["segformer.encoder.block.1.0.attention.self.value.weight"], kv[c:])
    assert torch.equal(sd["decode_head.batch_norm.running_var"], ref.decode_head.linear_fuse.bn.running_var)

    model = edgeseg.load(path)
    assert (model.edgeseg.arch, model.edgeseg.layout) == (f"segformer_{variant}", "huggingface")
    assert model.edgeseg.cfg == {"norm_eps": HF_EPS, "conv_seg_channels": None, "num_classes": 150}
    assert not hasattr(model.decode_head, "conv_seg")
    x = torch.randn(2, 3, 128, 96)
    assert rel_err(run(model, x), run(ref, x)) <= 1e-6


def test_hf_pytorch_model_bin(ckpt, tmp_path):
    src, ref = ckpt("b0", "huggingface")
    path = copy_of(src, tmp_path)
    torch.save(load_file(str(path / "model.safetensors")), path / "pytorch_model.bin")
    (path / "model.safetensors").unlink()
    model = edgeseg.load(path)
    assert model.edgeseg.source_format == "hf-dir" and model.edgeseg.layout == "huggingface"
    x = torch.randn(1, 3, 96, 128)
    assert rel_err(run(model, x), run(ref, x)) <= 1e-6


# ------------------------------------------------------------------ cross-check with transformers


def _transformers_model(path, monkeypatch):
    transformers = pytest.importorskip("transformers", reason="transformers is not installed: no independent SegFormer to compare with")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hf, info = transformers.SegformerForSemanticSegmentation.from_pretrained(str(path), output_loading_info=True)
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]), info
    return hf.eval()


def _hf_logits(hf, x):
    with torch.no_grad():
        return hf(pixel_values=x).logits


@pytest.mark.parametrize("variant", marked(VARIANTS, SLOW))
def test_matches_transformers(ckpt, monkeypatch, variant):
    path, _ = ckpt(variant, "huggingface")
    hf = _transformers_model(path, monkeypatch)
    ours = edgeseg.load(path)
    for size in ((128, 128), (96, 160)):
        x = torch.randn(2, 3, *size)
        assert rel_err(run(ours, x), _hf_logits(hf, x)) <= REL_TOL, size
    # transformers >= 5 renames its modules; its in-memory state dict converts too.
    from edgeseg.models.segformer_layouts import _hf_to_canonical

    canonical = _hf_to_canonical(hf.state_dict())
    assert set(canonical) == set(ours.state_dict())


def test_eps_of_origin_matters(ckpt, tmp_path, monkeypatch):
    """Same weights, two origins: each reproduces its own implementation, and they differ.

    Shrinking the patch-embed LayerNorm affine makes the block norms' input variance ~1e-6,
    where eps 1e-5 vs 1e-6 changes the result by far more than rounding.
    """
    ref = copy.deepcopy(ckpt("b0")[1])
    with torch.no_grad():
        for s in range(1, 5):
            norm = getattr(ref.backbone, f"patch_embed{s}").norm
            norm.weight.mul_(1e-3)
            norm.bias.mul_(1e-3)
    entry = get_entry("segformer_b0")
    hf_dir, mm_path = tmp_path / "hf", tmp_path / "mm.pth"
    find_layout(entry, "huggingface").save(ref.state_dict(), hf_dir, entry=entry, cfg=ref.edgeseg.cfg)
    find_layout(entry, "mmseg").save(ref.state_dict(), mm_path)
    from_hf, from_mmseg = edgeseg.load(hf_dir), edgeseg.load(mm_path)
    hf = _transformers_model(hf_dir, monkeypatch)
    x = torch.randn(2, 3, 128, 128)
    expected = _hf_logits(hf, x)
    assert rel_err(run(from_hf, x), expected) <= REL_TOL
    assert rel_err(run(from_mmseg, x), expected) > 1e-2  # the NVlabs numerics really differ
    assert rel_err(run(from_mmseg, x), run(ref, x)) <= 1e-6


# ------------------------------------------------------------------ detection and strict errors


@pytest.mark.parametrize("variant", VARIANTS)
def test_detection_is_unambiguous(variant):
    entry = get_entry(f"segformer_{variant}")
    with torch.device("meta"):
        sd = edgeseg.create(entry.name).state_dict()
    det = detect(sd)
    assert (det.entry.name, det.layout.name, det.fused) == (entry.name, "mmseg", False)
    hf = find_layout(entry, "huggingface")
    hf_sd = hf.from_canonical(sd)
    det = detect(hf_sd, hf_config=hf.hf_config(entry, {"num_classes": 150}))
    assert (det.entry.name, det.layout.name) == (entry.name, "huggingface")


def test_layouts_reject_foreign_keys_fast():
    entry = get_entry("segformer_b0")
    mm, hf, mm1 = entry.layouts
    with torch.device("meta"):
        canonical = edgeseg.create("segformer_b0").state_dict()
    foreign = {f"stage{i}.{j}.rbr_conv.0.conv.weight": torch.zeros(1) for i in range(200) for j in range(50)}
    for layout, sd in ((mm, foreign), (hf, foreign), (mm1, foreign), (hf, canonical), (mm, hf.from_canonical(canonical))):
        t = time.perf_counter()
        with pytest.raises(LayoutMismatch):
            layout.to_canonical(sd)
        assert time.perf_counter() - t < 0.05


def test_strict_errors_mmseg(ckpt, tmp_path):
    sd = ckpt("b0")[1].state_dict()
    missing = {k: v for k, v in sd.items() if k != "backbone.block2.1.attn.kv.weight"}
    torch.save({"meta": {}, "state_dict": missing}, tmp_path / "missing.pth")
    with pytest.raises(DetectionError, match=r"segformer_b0 \[mmseg\].*missing.*backbone\.block2\.1\.attn\.kv\.weight"):
        edgeseg.load(tmp_path / "missing.pth")
    no_conv_seg = {k: v for k, v in sd.items() if not k.startswith("decode_head.conv_seg")}
    torch.save({"meta": {}, "state_dict": no_conv_seg}, tmp_path / "no_conv_seg.pth")
    with pytest.raises(DetectionError, match="conv_seg"):
        edgeseg.load(tmp_path / "no_conv_seg.pth", arch="segformer_b0")
    torch.save({"meta": {}, "state_dict": {**sd, "decode_head.extra.weight": torch.zeros(3)}}, tmp_path / "extra.pth")
    with pytest.raises(DetectionError, match="unexpected.*decode_head.extra.weight"):
        edgeseg.load(tmp_path / "extra.pth", arch="segformer")
    with pytest.raises(DetectionError, match="shape mismatch"):
        edgeseg.load(ckpt("b1")[0], arch="segformer_b0")


def test_strict_errors_hf(ckpt, tmp_path):
    path = copy_of(ckpt("b0", "huggingface")[0], tmp_path)
    weights = path / "model.safetensors"
    sd = load_file(str(weights))
    half = {k: v for k, v in sd.items() if k != "segformer.encoder.block.0.1.attention.self.value.weight"}
    save_file(half, str(weights))
    with pytest.raises(DetectionError, match=r"segformer_b0 \[huggingface\].*block1\.1\.attn\.kv\.weight"):
        edgeseg.load(path)
    save_file(sd, str(weights))
    config = json.loads((path / "config.json").read_text())
    b1 = {**config, "hidden_sizes": [64, 128, 320, 512]}  # config (B1) disagrees with the weights (B0)
    (path / "config.json").write_text(json.dumps(b1))
    with pytest.raises(DetectionError):
        edgeseg.load(path)
    with pytest.raises(DetectionError, match=r"segformer_b1 \[huggingface\].*shape mismatch"):
        edgeseg.load(path, arch="segformer_b1")
    (path / "config.json").write_text(json.dumps({**config, "depths": [2, 2, 2, 3]}))
    with pytest.raises(CheckpointError, match=r"none of b0, .*depths=\[2, 2, 2, 3\]"):
        edgeseg.load(path)
    (path / "config.json").write_text(json.dumps({**config, "hidden_act": "relu"}))
    with pytest.raises(DetectionError):  # not a SegFormer any more (BoostFormer configs may say relu6)
        edgeseg.load(path)


# ------------------------------------------------------------------ reparameterization and deploy


def _convs_at_quarter(model, size=(512, 512)) -> list[tuple[int, int]]:
    """(in, out) channels of every conv the decode head runs at 1/4 resolution."""
    seen = []
    hooks = [m.register_forward_hook(lambda mod, i, o: seen.append((mod.in_channels, mod.out_channels)) if o.shape[-1] == size[1] // 4 else None)
             for m in model.decode_head.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(torch.randn(1, 3, *size))
    for h in hooks:
        h.remove()
    return seen


def test_reparam_splits_the_fuse_conv_per_stage_at_512_and_non_square(ckpt):
    model = ckpt("b0")[1]
    fused, result = edgeseg.reparameterize(model, verify=False)
    # The gate's check at the deploy size and its non-square second size, one image each.
    sizes = verification_sizes(model.edgeseg)
    assert sizes == [(512, 512), (480, 544)]
    report = check_equivalence(model, fused, sizes, batch=1, seed=11)
    assert report.passed and report.max_rel <= 1e-5, report.as_dict()
    assert result.report.as_dict() == {"SegFormerHead": 1}
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    keys = [k for k in fused.state_dict() if k.startswith("decode_head.")]
    assert keys == [f"decode_head.branches.{s}.{leaf}" for s in range(4) for leaf in ("weight", "bias")] + \
        ["decode_head.linear_pred.weight", "decode_head.linear_pred.bias"]
    # the 4x256 -> 256 fuse conv at 1/4 (4.3 of B0's 8.4 GMACs) is gone: stage 1's 32 -> 256
    # projection and the classifier are all that run there
    assert sorted(_convs_at_quarter(model)) == [(256, 150), (1024, 256)]
    assert sorted(_convs_at_quarter(fused)) == [(32, 256), (256, 150)]
    assert layer_norm_eps(fused) == layer_norm_eps(model)


def test_mmseg_head_reparam_moves_the_fusion_conv_before_upsampling():
    model = edgeseg.create("segformer_b0", pretrained_like=3, head="mmseg", conv_seg_channels=None, num_classes=19)
    fused, result = edgeseg.reparameterize(model, input_size=(256, 320), sizes=[(256, 320), (224, 224)])
    assert result.equivalence.passed and result.equivalence.max_rel <= 1e-5, result.equivalence.as_dict()
    assert result.report.as_dict()["MMSegSegformerHead"] == 1
    assert sorted(_convs_at_quarter(fused, (256, 320))) == [(32, 256), (256, 19), (256, 256)]
    # the deploy head's keys tell detection which head it is
    from edgeseg.models.segformer_layouts import infer_cfg

    assert infer_cfg(fused.state_dict()) == {"num_classes": 19, "decoder_dim": 256}


@pytest.mark.parametrize("variant", SLOW)
@pytest.mark.slow
def test_reparam_large_variants(ckpt, variant):
    model = ckpt(variant)[1]
    _, result = edgeseg.reparameterize(model, input_size=(256, 256), sizes=[(256, 256), (224, 288)])
    assert result.equivalence.passed and result.equivalence.max_rel <= 1e-5


def test_deploy_round_trip_keeps_mmseg_eps(ckpt, tmp_path):
    model = edgeseg.load(ckpt("b0")[0])
    fused, _ = edgeseg.reparameterize(model, input_size=(256, 192))
    edgeseg.save_deploy(fused, tmp_path / "b0.deploy.safetensors")
    deployed = edgeseg.load(tmp_path / "b0.deploy.safetensors")
    assert deployed.edgeseg.fused and deployed.edgeseg.cfg["norm_eps"] == NVLABS_EPS
    assert layer_norm_eps(deployed) == layer_norm_eps(fused)
    x = torch.randn(1, 3, 256, 192)
    assert rel_err(run(deployed, x), run(model, x)) <= 1e-5


def test_deploy_round_trip_keeps_hf_eps(ckpt, tmp_path):
    model = edgeseg.load(ckpt("b0", "huggingface")[0])
    fused, _ = edgeseg.reparameterize(model, input_size=(256, 192))
    edgeseg.save_deploy(fused, tmp_path / "b0.deploy.safetensors")
    deployed = edgeseg.load(tmp_path / "b0.deploy.safetensors")
    assert deployed.edgeseg.cfg["norm_eps"] == HF_EPS and set(layer_norm_eps(deployed).values()) == {HF_EPS}
    x = torch.randn(1, 3, 256, 192)
    assert rel_err(run(deployed, x), run(model, x)) <= 1e-5


# ------------------------------------------------------------------ shape-only checkpoints (`edgeseg info`)






@pytest.mark.parametrize("layout", ["mmseg", "huggingface", "mmseg1"])
def test_layouts_convert_shape_only_state_dicts(layout):
    """`info` hands converters TensorMeta instead of tensors: same canonical keys, shapes and cfg."""
    entry = get_entry("segformer_b0")
    lay = find_layout(entry, layout)
    model = edgeseg.create(entry.name, num_classes=19, **lay.cfg_overrides)
    _, from_meta = convert_shape_only(lay, lay.from_canonical(model.state_dict()), entry.infer_cfg)
    assert entry.infer_cfg(from_meta)["num_classes"] == 19
