"""Checkpoints in the forms the public projects publish today (issue 11): timm MobileOne
(ByobNet names, unfused and fused), timm hub folders, BoostFormer's final release, and
SegFormer trained with MMSegmentation. Each is written in exactly its on-disk form with
non-trivial weights and checked against an independent reference."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import edgeseg
from edgeseg.checkpoint.layouts import find_layout
from edgeseg.errors import CheckpointError, DetectionError
from edgeseg.registry import get_entry
from edgeseg.testing import make_checkpoint, run_cli

FP32_REL = 1e-5  # same weights, different module structure: float32 rounding only
FUSED_REL = 1e-4  # fused vs unfused, as in test_mobileone (measured ~8e-6 for S0)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _timm_names(name: str, sd: dict) -> dict:
    return find_layout(get_entry(name), "timm").from_canonical(sd)


def _timm_forward_or_skip(name: str, timm_sd: dict, x: torch.Tensor, num_classes: int) -> torch.Tensor:
    timm = pytest.importorskip("timm", reason="timm is not importable next to this torch (it is no edgeseg dependency)")
    model = timm.create_model(name, pretrained=False, num_classes=num_classes).eval()
    if any(k.endswith("reparam_conv.weight") for k in timm_sd):
        from timm.utils.model import reparameterize_model

        model = reparameterize_model(model)
    model.load_state_dict(timm_sd, strict=True)
    with torch.no_grad():
        return model(x)


# ---------------------------------------------------------------- timm MobileOne


@pytest.fixture(scope="module")
def mobileone_s0(tmp_path_factory):
    """The same weights as timm saves them (plain dict, ByobNet names) and as Apple does."""
    root = tmp_path_factory.mktemp("mo")
    model = edgeseg.create("mobileone_s0", pretrained_like=5, num_classes=17)
    timm_sd = _timm_names("mobileone_s0", model.state_dict())
    torch.save(timm_sd, root / "mobileone_s0.timm.pth")
    find_layout(get_entry("mobileone_s0"), "apple-ml-mobileone").save(model.state_dict(), root / "mobileone_s0.apple.pth")
    fused, _ = edgeseg.reparameterize(model, verify=False)
    timm_fused = _timm_names("mobileone_s0", fused.state_dict())
    save_file({k: v.contiguous() for k, v in timm_fused.items()}, str(root / "mobileone_s0.reparam.safetensors"))
    return root, timm_sd, timm_fused


def test_timm_mobileone_keys_are_byobnet_names(mobileone_s0):
    _, timm_sd, timm_fused = mobileone_s0
    assert len(timm_sd) == 1323  # timm's mobileone_s0 state dict, num_batches_tracked included
    for key in ("stem.conv_kxk.0.conv.weight", "stem.conv_kxk.0.bn.running_var", "stem.conv_scale.conv.weight",
                "stages.0.0.conv_kxk.3.bn.bias", "stages.0.1.identity.running_mean", "stages.3.1.conv_kxk.0.conv.weight",
                "head.fc.weight"):
        assert key in timm_sd, key
    assert not any(k.startswith(("stage0.", "linear.")) or ".rbr_" in k or k.startswith("final_conv.") for k in timm_sd)
    assert "stem.reparam_conv.weight" in timm_fused and "stages.2.19.reparam_conv.bias" in timm_fused
    assert not any(".conv_kxk." in k or ".identity." in k for k in timm_fused)


def test_timm_mobileone_matches_the_apple_layout_model(mobileone_s0):
    root, timm_sd, _ = mobileone_s0
    model = edgeseg.load(root / "mobileone_s0.timm.pth")
    assert (model.edgeseg.arch, model.edgeseg.layout, model.edgeseg.fused, model.edgeseg.cfg["num_classes"]) == \
        ("mobileone_s0", "timm", False, 17)
    apple = edgeseg.load(root / "mobileone_s0.apple.pth")
    assert apple.edgeseg.layout == "apple-ml-mobileone"
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        out, want = model(x), apple(x)
    assert torch.equal(out, want)  # same modules, same weights: bit-identical
    assert want.std() > 0.05 * want.abs().max()


def test_timm_mobileone_fused_loads_fused_and_matches(mobileone_s0):
    root, _, timm_fused = mobileone_s0
    fused = edgeseg.load(root / "mobileone_s0.reparam.safetensors")
    assert (fused.edgeseg.layout, fused.edgeseg.fused) == ("timm", True)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    unfused = edgeseg.load(root / "mobileone_s0.apple.pth")
    x = torch.randn(2, 3, 160, 224)
    with torch.no_grad():
        assert _rel(fused(x), unfused(x)) < FUSED_REL


def test_timm_mobileone_against_timm_itself(mobileone_s0):
    root, timm_sd, timm_fused = mobileone_s0
    x = torch.randn(1, 3, 224, 224)
    model = edgeseg.load(root / "mobileone_s0.timm.pth")
    with torch.no_grad():
        assert _rel(model(x), _timm_forward_or_skip("mobileone_s0", timm_sd, x, 17)) < FP32_REL
        fused = edgeseg.load(root / "mobileone_s0.reparam.safetensors")
        assert _rel(fused(x), _timm_forward_or_skip("mobileone_s0", timm_fused, x, 17)) < FP32_REL


@pytest.mark.parametrize("variant", ["s0", "s1", "s2", "s3", "s4"])
def test_every_timm_mobileone_variant_is_detected_unfused_and_fused(variant):
    name = f"mobileone_{variant}"
    with torch.device("meta"):
        model = edgeseg.create(name)
    det = edgeseg.checkpoint.detect.detect(_timm_names(name, model.state_dict()))
    assert (det.entry.name, det.layout.name, det.fused) == (name, "timm", False)
    fused, _ = edgeseg.reparameterize(model, verify=False)
    det = edgeseg.checkpoint.detect.detect(_timm_names(name, fused.state_dict()))
    assert (det.entry.name, det.layout.name, det.fused) == (name, "timm", True)


# ---------------------------------------------------------------- timm hub folders

# pretrained_cfg as timm writes it for timm/mobileone_s0.apple_in1k and timm/fastvit_t8.apple_in1k.
HUB_CFG = {
    "mobileone_s0": {"tag": "apple_in1k", "custom_load": False, "input_size": [3, 224, 224], "fixed_input_size": False,
                     "interpolation": "bilinear", "crop_pct": 0.875, "crop_mode": "center", "mean": [0.485, 0.456, 0.406],
                     "std": [0.229, 0.224, 0.225], "num_classes": 1000, "pool_size": [7, 7], "first_conv": "stem.conv_kxk.0.conv",
                     "classifier": "head.fc"},
    "fastvit_t8": {"tag": "apple_in1k", "custom_load": False, "input_size": [3, 256, 256], "fixed_input_size": False,
                   "interpolation": "bicubic", "crop_pct": 0.9, "crop_mode": "center", "mean": [0.485, 0.456, 0.406],
                   "std": [0.229, 0.224, 0.225], "num_classes": 1000, "pool_size": [8, 8], "first_conv": "stem.0.conv_kxk.0.conv",
                   "classifier": "head.fc"},
}


def _hub_folder(path, name: str, num_classes: int, pretrained_cfg: dict, seed: int = 2):
    """A snapshot_download of a timm model: config.json + model.safetensors (timm names)."""
    model = edgeseg.create(name, pretrained_like=seed, num_classes=num_classes)
    path.mkdir(parents=True)
    sd = _timm_names(name, model.state_dict())
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path / "model.safetensors"), metadata={"format": "pt"})
    config = {"architecture": name, "num_classes": num_classes, "num_features": 0, "pretrained_cfg": pretrained_cfg}
    (path / "config.json").write_text(json.dumps(config, indent=2))
    return model, sd


@pytest.mark.parametrize("name", ["mobileone_s0", "fastvit_t8"])
def test_timm_hub_folder_loads_with_its_preprocessing(tmp_path, name):
    cfg = dict(HUB_CFG[name], mean=[0.5, 0.5, 0.5], std=[0.5, 0.25, 0.125])  # not the registry defaults: read, not assumed
    model_ref, sd = _hub_folder(tmp_path / name, name, 12, cfg)
    apple = tmp_path / f"{name}.apple.pth"
    get_entry(name).canonical_layout.save(model_ref.state_dict(), apple)
    model = edgeseg.load(tmp_path / name)
    info = model.edgeseg
    assert (info.arch, info.layout, info.source_format, info.cfg["num_classes"]) == (name, "timm", "timm-hub", 12)
    assert info.mean == (0.5, 0.5, 0.5) and info.std == (0.5, 0.25, 0.125)
    assert info.input_size == tuple(cfg["input_size"][1:])
    prep = info.extra["preprocessing"]
    assert (prep["crop_pct"], prep["crop_mode"], prep["interpolation"]) == (cfg["crop_pct"], "center", cfg["interpolation"])
    x = torch.randn(1, 3, *info.input_size)
    reference = edgeseg.load(apple)
    with torch.no_grad():
        out = model(x)
        assert torch.equal(out, reference(x))
        assert _rel(out, _timm_forward_or_skip(name, sd, x, 12)) < FP32_REL


def test_timm_hub_preprocessing_survives_the_deploy_file(tmp_path):
    _hub_folder(tmp_path / "hub", "mobileone_s0", 5, dict(HUB_CFG["mobileone_s0"], mean=[0.1, 0.2, 0.3]))
    model = edgeseg.load(tmp_path / "hub")
    fused, _ = edgeseg.reparameterize(model)
    again = edgeseg.load(edgeseg.save_deploy(fused, tmp_path / "m.deploy.safetensors"))
    assert again.edgeseg.mean == (0.1, 0.2, 0.3) and again.edgeseg.extra["preprocessing"]["crop_pct"] == 0.875


def test_timm_hub_folder_errors(tmp_path):
    _hub_folder(tmp_path / "wrong_classes", "mobileone_s0", 5, HUB_CFG["mobileone_s0"])
    config = json.loads((tmp_path / "wrong_classes" / "config.json").read_text())
    (tmp_path / "wrong_classes" / "config.json").write_text(json.dumps({**config, "num_classes": 1000}))
    with pytest.raises(CheckpointError, match="num_classes=1000 but the classifier has 5"):
        edgeseg.load(tmp_path / "wrong_classes")
    for arch, message in (("resnet50", "timm 'resnet50' model, which edgeseg does not implement"),
                          ("os:system", "not a valid timm hub config")):  # a name is looked up, never imported
        folder = tmp_path / arch.replace(":", "_")
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({**config, "architecture": arch}))
        (folder / "model.safetensors").write_bytes((tmp_path / "wrong_classes" / "model.safetensors").read_bytes())
        with pytest.raises(CheckpointError, match=message):
            edgeseg.load(folder)
    # weights of another variant than the config names: the variant's diff, not a guess
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**config, "architecture": "mobileone_s1", "num_classes": 5}))
    (folder / "model.safetensors").write_bytes((tmp_path / "wrong_classes" / "model.safetensors").read_bytes())
    with pytest.raises(DetectionError, match=r"does not match mobileone_s1 \[timm"):
        edgeseg.load(folder)


# ---------------------------------------------------------------- BoostFormer final release


def _transformers_426_config(num_labels: int) -> dict:
    """config.json of the final release as transformers 4.26 `save_pretrained` writes it."""
    id2label = {str(i): f"class_{i}" for i in range(num_labels)}
    return {"_name_or_path": "nvidia/mit-b2", "architectures": ["SegformerForSemanticSegmentation"],
            "attention_probs_dropout_prob": 0.0, "classifier_dropout_prob": 0.1, "decoder_hidden_size": 768,
            "depths": [3, 4, 6, 3], "downsampling_rates": [1, 4, 8, 16], "drop_path_rate": 0.1, "hidden_act": "gelu",
            "hidden_dropout_prob": 0.0, "hidden_sizes": [64, 128, 320, 512], "id2label": id2label, "image_size": 224,
            "initializer_range": 0.02, "label2id": {v: int(k) for k, v in id2label.items()}, "layer_norm_eps": 1e-06,
            "mlp_ratios": [4, 4, 4, 4], "model_type": "segformer", "num_attention_heads": [1, 2, 5, 8], "num_channels": 3,
            "num_encoder_blocks": 4, "patch_sizes": [7, 3, 3, 3], "reshape_last_stage": True, "semantic_loss_ignore_index": 255,
            "sr_ratios": [8, 4, 2, 1], "strides": [4, 2, 2, 2], "torch_dtype": "float32", "transformers_version": "4.26.0"}


@pytest.fixture(scope="module")
def boostformer_releases(tmp_path_factory):
    root = tmp_path_factory.mktemp("bf")
    model = edgeseg.create("boostformer", pretrained_like=9)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    final = root / "final"
    final.mkdir()
    (final / "config.json").write_text(json.dumps(_transformers_426_config(150), indent=2))
    torch.save(sd, final / "pytorch_model.bin")  # torch.save of a plain dict, as save_pretrained did then
    # The development repository's names, written by hand (not by edgeseg's converter).
    dev_sd = {k.replace(".conv.", ".proj.") if ".patch_embeddings." in k else k: v for k, v in sd.items()}
    dev = root / "dev"
    dev.mkdir()
    (dev / "config.json").write_text(json.dumps(_transformers_426_config(150) | {"transformers_version": "4.25.1"}))
    torch.save(dev_sd, dev / "pytorch_model.bin")
    return root, sd, dev_sd


def test_boostformer_final_release_names(boostformer_releases):
    _, sd, dev_sd = boostformer_releases
    assert len(sd) == 513
    assert [tuple(sd[f"segformer.encoder.patch_embeddings.{i}.conv.weight"].shape) for i in range(4)] == \
        [(64, 3, 1, 1), (128, 64, 1, 1), (320, 128, 1, 1), (512, 320, 1, 1)]
    assert "segformer.encoder.patch_embeddings.3.layer_norm.bias" in sd and "decode_head.linear_fuse.weight" in sd
    assert len(set(sd) & set(dev_sd)) == 505  # only the eight patch-embedding conv keys differ


def test_boostformer_final_release_matches_the_development_names(boostformer_releases):
    root, sd, _ = boostformer_releases
    final = edgeseg.load(root / "final")
    dev = edgeseg.load(root / "dev")
    assert (final.edgeseg.layout, dev.edgeseg.layout) == ("boostformer-hf", "boostformer-dev-hf")
    assert final.edgeseg.cfg["num_classes"] == dev.edgeseg.cfg["num_classes"] == 150
    plain = root / "final.bin"
    torch.save(sd, plain)
    assert edgeseg.load(plain).edgeseg.layout == "boostformer-pth"
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        out, want = final(x), dev(x)
    assert out.shape == (1, 150, 32, 40) and torch.equal(out, want)
    assert want.std() > 0.05 * want.abs().max()


def test_boostformer_final_release_is_not_a_segformer(boostformer_releases):
    root, sd, _ = boostformer_releases
    with pytest.raises(DetectionError):
        edgeseg.load(root / "final", arch="segformer_b2")


# ---------------------------------------------------------------- MMSegmentation SegFormer

MM_CFG = {"head": "mmseg", "norm_eps": 1e-6, "embed_norm_eps": 1e-6, "conv_seg_channels": None, "decoder_dim": 256}


@pytest.fixture(scope="module")
def mmseg1_b0(tmp_path_factory):
    path = tmp_path_factory.mktemp("mm1") / "segformer_mit-b0_8xb2-160k_ade20k-512x512.pth"
    make_checkpoint("segformer_b0", path, layout="mmseg1", seed=6, num_classes=150, **MM_CFG)
    raw = torch.load(path, weights_only=True)
    return path, raw["state_dict"]


def test_mmseg1_keys(mmseg1_b0):
    path, sd = mmseg1_b0
    assert set(torch.load(path, weights_only=True)) == {"meta", "state_dict"}
    for key in ("backbone.layers.0.0.projection.weight", "backbone.layers.0.0.norm.bias",
                "backbone.layers.1.1.1.attn.attn.in_proj_weight", "backbone.layers.1.1.1.attn.attn.out_proj.bias",
                "backbone.layers.0.1.0.attn.sr.weight", "backbone.layers.3.1.1.ffn.layers.4.weight", "backbone.layers.2.2.weight",
                "decode_head.convs.3.conv.weight", "decode_head.convs.0.bn.running_var", "decode_head.fusion_conv.conv.weight",
                "decode_head.conv_seg.bias"):
        assert key in sd, key
    assert sd["backbone.layers.1.1.1.attn.attn.in_proj_weight"].shape == (192, 64)
    assert sd["backbone.layers.3.1.1.ffn.layers.0.weight"].shape == (1024, 256, 1, 1)
    assert "backbone.layers.3.1.0.attn.sr.weight" not in sd  # sr_ratio 1 in the last stage


def _to_mmseg0_names(sd: dict) -> dict:
    """The same backbone weights under NVlabs/mmseg 0.x names, converted here by hand."""
    out = {}
    for k, v in sd.items():
        parts = k.split(".")
        if not k.startswith("backbone.layers."):
            continue
        s = int(parts[2]) + 1
        if parts[3] == "0":
            out[f"backbone.patch_embed{s}.{'proj' if parts[4] == 'projection' else 'norm'}.{parts[5]}"] = v
        elif parts[3] == "2":
            out[f"backbone.norm{s}.{parts[4]}"] = v
        else:
            j, rest = parts[4], ".".join(parts[5:])
            base = f"backbone.block{s}.{j}"
            if rest.startswith("attn.attn.in_proj_"):
                leaf = rest.rsplit("_", 1)[1]
                c = v.shape[0] // 3
                out[f"{base}.attn.q.{leaf}"], out[f"{base}.attn.kv.{leaf}"] = v[:c], v[c:]
            else:
                name = {"attn.attn.out_proj": "attn.proj", "ffn.layers.0": "mlp.fc1", "ffn.layers.1": "mlp.dwconv.dwconv",
                        "ffn.layers.4": "mlp.fc2"}.get(rest.rsplit(".", 1)[0], rest.rsplit(".", 1)[0])
                out[f"{base}.{name}.{rest.rsplit('.', 1)[1]}"] = v.flatten(1) if name in ("mlp.fc1", "mlp.fc2") and v.dim() == 4 else v
    return out


def test_mmseg1_backbone_matches_the_mmseg0_names(tmp_path, mmseg1_b0):
    path, sd = mmseg1_b0
    model = edgeseg.load(path)
    assert model.edgeseg.layout == "mmseg1"
    assert {k: model.edgeseg.cfg[k] for k in MM_CFG} == MM_CFG
    # an NVlabs (mmseg 0.x) checkpoint: same backbone weights, its own all-MLP head
    ref = edgeseg.create("segformer_b0", pretrained_like=1)
    ref_sd = {**ref.state_dict(), **_to_mmseg0_names(sd)}
    torch.save({"meta": {}, "state_dict": ref_sd}, tmp_path / "mmseg0.pth")
    old = edgeseg.load(tmp_path / "mmseg0.pth")
    assert old.edgeseg.layout == "mmseg"
    for m in old.modules():  # mmseg builds every LayerNorm with eps 1e-6, NVlabs two of them with 1e-5
        if isinstance(m, torch.nn.LayerNorm):
            m.eps = 1e-6
    x = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        for got, want in zip(model.backbone(x), old.backbone(x)):
            assert _rel(got, want) < FP32_REL


def _mmseg_reference(sd: dict, x: torch.Tensor) -> torch.Tensor:
    """mmseg's forward written from its source on the raw checkpoint tensors, attention through
    torch's own nn.MultiheadAttention (what mmseg's EfficientMultiheadAttention runs)."""
    dims, heads, srs, patches, strides = (32, 64, 160, 256), (1, 2, 5, 8), (8, 4, 2, 1), (7, 3, 3, 3), (4, 2, 2, 2)
    feats = []
    for s in range(4):
        p = f"backbone.layers.{s}"
        x = F.conv2d(x, sd[f"{p}.0.projection.weight"], sd[f"{p}.0.projection.bias"], strides[s], patches[s] // 2)
        h, w = x.shape[2:]
        t = F.layer_norm(x.flatten(2).transpose(1, 2), (dims[s],), sd[f"{p}.0.norm.weight"], sd[f"{p}.0.norm.bias"], 1e-6)
        j = 0
        while f"{p}.1.{j}.norm1.weight" in sd:
            b = f"{p}.1.{j}"
            ln = lambda y, n: F.layer_norm(y, (dims[s],), sd[f"{b}.{n}.weight"], sd[f"{b}.{n}.bias"], 1e-6)  # noqa: E731
            q = ln(t, "norm1")
            kv = q
            if srs[s] > 1:
                img = q.transpose(1, 2).reshape(1, dims[s], h, w)
                kv = F.conv2d(img, sd[f"{b}.attn.sr.weight"], sd[f"{b}.attn.sr.bias"], srs[s]).flatten(2).transpose(1, 2)
                kv = F.layer_norm(kv, (dims[s],), sd[f"{b}.attn.norm.weight"], sd[f"{b}.attn.norm.bias"], 1e-6)
            mha = torch.nn.MultiheadAttention(dims[s], heads[s], batch_first=True)
            mha.load_state_dict({k[len(f"{b}.attn.attn."):]: v for k, v in sd.items() if k.startswith(f"{b}.attn.attn.")})
            t = t + mha.eval()(q, kv, kv, need_weights=False)[0]
            y = ln(t, "norm2").transpose(1, 2).reshape(1, dims[s], h, w)
            y = F.conv2d(y, sd[f"{b}.ffn.layers.0.weight"], sd[f"{b}.ffn.layers.0.bias"])
            y = F.conv2d(y, sd[f"{b}.ffn.layers.1.weight"], sd[f"{b}.ffn.layers.1.bias"], padding=1, groups=y.shape[1])
            y = F.conv2d(F.gelu(y), sd[f"{b}.ffn.layers.4.weight"], sd[f"{b}.ffn.layers.4.bias"])
            t = t + y.flatten(2).transpose(1, 2)
            j += 1
        t = F.layer_norm(t, (dims[s],), sd[f"{p}.2.weight"], sd[f"{p}.2.bias"], 1e-6)
        x = t.transpose(1, 2).reshape(1, dims[s], h, w)
        feats.append(x)

    def conv_module(y, name):
        y = F.conv2d(y, sd[f"{name}.conv.weight"])
        y = F.batch_norm(y, sd[f"{name}.bn.running_mean"], sd[f"{name}.bn.running_var"], sd[f"{name}.bn.weight"],
                         sd[f"{name}.bn.bias"], False, 0.0, 1e-5)
        return F.relu(y)

    outs = [F.interpolate(conv_module(f, f"decode_head.convs.{i}"), size=feats[0].shape[2:], mode="bilinear", align_corners=False)
            for i, f in enumerate(feats)]
    y = conv_module(torch.cat(outs, dim=1), "decode_head.fusion_conv")
    return F.conv2d(y, sd["decode_head.conv_seg.weight"], sd["decode_head.conv_seg.bias"])


def test_mmseg1_matches_mmseg_forward_written_from_its_source(mmseg1_b0):
    path, sd = mmseg1_b0
    model = edgeseg.load(path)
    x = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        out, want = model(x), _mmseg_reference(sd, x)
    assert out.shape == want.shape == (1, 150, 32, 24)
    assert _rel(out, want) < FP32_REL
    assert want.std() > 0.05 * want.abs().max()
    fused, result = edgeseg.reparameterize(model, input_size=(128, 96), sizes=[(128, 96)])
    assert result.equivalence.max_rel < FP32_REL
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())


# ---------------------------------------------------------------- detection stays unambiguous


def test_every_registered_layout_is_detected_as_itself():
    """Each registered variant, in each of its published layouts (unfused), matches exactly one candidate."""
    from edgeseg.checkpoint.detect import detect
    from edgeseg.registry import list_models

    for entry in list_models():
        if entry.large:
            continue
        with torch.device("meta"):
            canonical = entry.build().state_dict()
        for layout in entry.layouts:
            cfg = dict(entry.default_cfg, **layout.cfg_overrides)
            if layout.name == "mmseg1":
                cfg["decoder_dim"] = 256
            with torch.device("meta"):
                sd = layout.from_canonical(entry.build(**cfg).state_dict() if layout.cfg_overrides else canonical)
            config = layout.hf_config(entry, cfg) if layout.container == "hf" and layout.hf_config else None
            det = detect(sd, hf_config=config)
            assert (det.entry.name, det.layout.name, det.fused) == (entry.name, layout.name, False)


def test_unknown_layout_names_the_closest_candidate(mobileone_s0):
    _, timm_sd, _ = mobileone_s0
    sd = dict(timm_sd)
    sd.pop("stages.1.4.conv_kxk.0.bn.weight")
    with pytest.raises(DetectionError, match=r"closest is mobileone_s0 \[timm\].*stage2\.4\.rbr_conv\.0\.bn\.weight"):
        edgeseg.checkpoint.detect.detect(sd)


# ---------------------------------------------------------------- the CLI, without --arch


def _cli_round_trip(src, tmp_path, capsys, size: str):
    tmp_path.mkdir(parents=True)
    code, out, err = run_cli(["info", str(src), "--json"], capsys)
    assert code == 0, err
    info = json.loads(out)
    deploy = tmp_path / "m.deploy.safetensors"
    code, _, err = run_cli(["reparam", str(src), "-o", str(deploy), "--input-size", size, "--latency-iterations", "0", "--json"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["export", str(src), "-o", str(tmp_path / "m.onnx"), "--input-size", size, "--samples", "0", "--json"], capsys)
    assert code == 0, err
    manifest = json.loads((tmp_path / "m.onnx.manifest.json").read_text())
    assert manifest["arch"] == info["arch"]
    return info, manifest


def test_cli_timm_mobileone_and_hub_folder(mobileone_s0, tmp_path, capsys):
    root, _, _ = mobileone_s0
    info, _ = _cli_round_trip(root / "mobileone_s0.timm.pth", tmp_path / "file", capsys, "160x160")
    assert (info["arch"], info["layout"]) == ("mobileone_s0", "timm")
    _hub_folder(tmp_path / "hub", "fastvit_t8", 4, dict(HUB_CFG["fastvit_t8"], mean=[0.4, 0.4, 0.4]))
    info, manifest = _cli_round_trip(tmp_path / "hub", tmp_path / "hubout", capsys, "128x128")
    assert (info["arch"], info["format"], info["preprocessing"]["crop_pct"]) == ("fastvit_t8", "timm-hub", 0.9)
    assert manifest["mean"] == [0.4, 0.4, 0.4]  # the hub's normalisation reaches the exported artifact


@pytest.mark.slow
def test_cli_boostformer_final_and_mmseg1(boostformer_releases, mmseg1_b0, tmp_path, capsys):
    root, _, _ = boostformer_releases
    info, _ = _cli_round_trip(root / "final", tmp_path / "bf", capsys, "128x128")
    assert (info["arch"], info["layout"]) == ("boostformer", "boostformer-hf")
    info, _ = _cli_round_trip(mmseg1_b0[0], tmp_path / "mm", capsys, "128x128")
    assert (info["arch"], info["layout"]) == ("segformer_b0", "mmseg1")
