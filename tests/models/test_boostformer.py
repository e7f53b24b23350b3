"""BoostFormer: checkpoint layouts and detection, deploy folding, resolution baking, export-friendliness."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch

import edgeseg
from edgeseg.checkpoint.detect import build_structure, detect
from edgeseg.checkpoint.layouts import LayoutMismatch, find_layout
from edgeseg.errors import CheckpointError, DetectionError, EdgesegError
from edgeseg.models import boostformer as bf
from edgeseg.models import boostformer_layouts as bfl
from edgeseg.registry import get_entry, list_models
from edgeseg.reparam.walker import reparameterize_model
from edgeseg.testing import convert_shape_only, make_checkpoint

FP32_REL = 1e-5  # fused vs unfused: rounding only (measured ~1.3e-6)
SIZES = [(256, 256), (160, 224)]  # stage-3 maps 16x16 and 10x14: not both multiples of 7 (matmul pooling)


@pytest.fixture(scope="module")
def hf_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("bf") / "boostformer-ade"
    ref = make_checkpoint("boostformer", path, seed=7, num_classes=21)
    return path, ref


@pytest.fixture(scope="module")
def loaded(hf_ckpt):
    return edgeseg.load(hf_ckpt[0])


@pytest.fixture(scope="module")
def plain_loaded(tmp_path_factory, hf_ckpt):
    path = tmp_path_factory.mktemp("bf-plain") / "pytorch_model.bin"
    find_layout(get_entry("boostformer"), "boostformer-pth").save(hf_ckpt[1].state_dict(), path)
    return edgeseg.load(path)


@pytest.fixture(scope="module")
def fused(plain_loaded):
    """Reparameterized (and baked) once per size; the equivalence gate checks that size.

    From the bare-state-dict layout (same weights as the directory): a model loaded from the
    directory cannot be reloaded from its deploy file until detection stops filtering deploy
    files by the source layout's container (see the report).
    """
    return {size: edgeseg.reparameterize(plain_loaded, input_size=size, sizes=[size], seed=3) for size in SIZES}


def test_registered_entry():
    e = get_entry("boostformer")
    assert (e.family, e.task, e.input_size, e.size_divisor, e.labels) == ("boostformer", "segmentation", (512, 512), 32, "ade20k")
    assert e.default_cfg["num_classes"] == 150
    assert [l.name for l in e.layouts] == ["boostformer-hf", "boostformer-pth", "boostformer-dev-hf", "boostformer-dev-pth"]
    assert e.canonical_layout.container == "hf"


def test_builds_on_meta_with_expected_params():
    with torch.device("meta"):
        model = get_entry("boostformer").build()
    assert all(p.is_meta for p in model.parameters())
    # The original's 17.575M (thop-style: leaf modules that run); all parameters incl. the
    # unused linear_fuse (3072*768) and the layer scales / head scalars (1,408 + 4).
    assert bf.executed_param_count(model) == 17_575_190
    assert sum(p.numel() for p in model.parameters()) == 17_575_190 + 3072 * 768 + 1408 + 4
    sd = model.state_dict()
    assert sd["segformer.encoder.patch_embeddings.0.conv.weight"].shape == (64, 3, 1, 1)
    assert sd["segformer.encoder.block.2.0.attention.self.key.weight"].shape == (320, 320)
    assert sd["segformer.encoder.block.0.0.mlp.dwconv.mixconv.conv_5.weight"].shape == (128, 1, 5, 5)
    assert sd["segformer.encoder.block.3.0.mlp.conv_1.weight"].shape == (2048, 512, 1, 1)
    assert sd["decode_head.linear_fuse.weight"].shape == (768, 3072, 1, 1)
    assert sd["decode_head.weights"].shape == (4, 1)
    assert not any(".output.dense" in k or "encoder.layer_norm" in k for k in sd)


def test_stage_sizes_follow_the_pooling_embeddings():
    assert bf.stage_sizes((512, 512)) == [(128, 128), (64, 64), (32, 32), (16, 16)]
    assert bf.stage_sizes((100, 250)) == [(25, 63), (13, 32), (7, 16), (4, 8)]


def test_hf_directory_round_trip(hf_ckpt, loaded):
    path, ref = hf_ckpt
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "segformer" and len(config["id2label"]) == 21
    info = loaded.edgeseg
    assert (info.arch, info.layout, info.fused) == ("boostformer", "boostformer-hf", False)
    assert info.cfg["num_classes"] == 21 and info.cfg["hidden_act"] == "gelu"
    x = torch.randn(1, 3, 256, 192)
    with torch.no_grad():
        out, want = loaded(x), ref(x)
    assert out.shape == (1, 21, 64, 48)  # logits at 1/4, as the original returns them
    assert torch.equal(out, want)
    assert want.std() > 0.1 * want.abs().max()  # non-degenerate weights


def test_plain_state_dict_round_trip(hf_ckpt, plain_loaded):
    assert (plain_loaded.edgeseg.layout, plain_loaded.edgeseg.cfg["num_classes"]) == ("boostformer-pth", 21)
    x = torch.randn(1, 3, 160, 224)
    with torch.no_grad():
        assert torch.equal(plain_loaded(x), hf_ckpt[1](x))



def _shapes(sd: dict) -> dict:
    """key -> (shape, dtype name), for tensors and TensorMeta alike."""
    return {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in sd.items()}


@pytest.fixture(scope="module")
def fused_keeping_a_norm():
    """A fused model whose block 0.1 keeps its block-end BN (as a deploy file may)."""
    model = get_entry("boostformer").factory(num_classes=21, keep_block_norms=["0.1"]).eval()
    reparameterize_model(model, input_size=(64, 64))
    return model


@pytest.mark.parametrize("state", ["unfused", "fused", "fused_keeping_a_norm"])
@pytest.mark.parametrize("layout", [layout.name for layout in bfl.LAYOUTS])
def test_layouts_convert_shape_only_values_like_tensors(request, layout, state):
    """`info` reads checkpoints without torch and converts TensorMeta values: the same keys,
    shapes, dtypes and cfg as from real tensors."""
    entry = get_entry("boostformer")
    lay = find_layout(entry, layout)
    if state == "unfused":
        model = request.getfixturevalue("plain_loaded")
    elif state == "fused":
        model = request.getfixturevalue("fused")[SIZES[0]][0]
    else:
        model = request.getfixturevalue("fused_keeping_a_norm")
    _, meta = convert_shape_only(lay, lay.from_canonical(model.state_dict()), entry.infer_cfg)
    want = {"num_classes": 21, **({"keep_block_norms": ["0.1"]} if state == "fused_keeping_a_norm" else {})}
    assert entry.infer_cfg(meta) == want

def test_hidden_act_comes_from_config(tmp_path, hf_ckpt):
    path, ref = hf_ckpt
    other = tmp_path / "relu6"
    shutil.copytree(path, other)
    config = json.loads((other / "config.json").read_text())
    config["hidden_act"] = "relu6"
    (other / "config.json").write_text(json.dumps(config))
    model = edgeseg.load(other)  # detected: SegFormer's layout steps aside for non-GELU configs
    assert model.edgeseg.cfg["hidden_act"] == "relu6"
    assert isinstance(model.segformer.encoder.block[0][0].mlp.intermediate_act_fn, torch.nn.ReLU6)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert not torch.allclose(model(x), ref(x))
    with pytest.raises(CheckpointError, match="hidden_act='swish'"):
        bfl.cfg_from_hf_config({**config, "hidden_act": "swish"})


def _segformer_hf_state_dict() -> dict:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.SegformerConfig(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 6, 3], decoder_hidden_size=768, num_labels=150)
    with torch.device("meta"):
        return transformers.SegformerForSemanticSegmentation(cfg).state_dict()


def test_layouts_reject_other_state_dicts(hf_ckpt):
    segformer_b2 = _segformer_hf_state_dict()  # same key prefixes and config, other keys and shapes
    mobileone = {"stage0.rbr_conv.0.conv.weight": torch.zeros(1), "linear.weight": torch.zeros(1)}
    for sd in (segformer_b2, mobileone, {}):
        with pytest.raises(LayoutMismatch):
            bfl.final_to_canonical(sd)
    ours = hf_ckpt[1].state_dict()
    assert bfl.final_to_canonical(ours).keys() == ours.keys()
    with pytest.raises(LayoutMismatch):
        bfl.cfg_from_hf_config({"model_type": "poolformer"})


def test_not_confused_with_segformer(tmp_path, hf_ckpt):
    sd = hf_ckpt[1].state_dict()
    det = detect(sd)  # every registered family's non-directory layouts
    assert (det.entry.name, det.layout.name) == ("boostformer", "boostformer-pth")
    if "segformer_b2" not in {e.name for e in list_models()}:
        pytest.skip("segformer_b2 is not registered")
    with pytest.raises(DetectionError):
        detect(sd, arch="segformer_b2")
    entry = get_entry("segformer_b2")
    for layout in entry.layouts:  # each published SegFormer layout: detected as SegFormer only
        # a layout with its own numerics or head (mmsegmentation's) is built with them
        cfg = {**entry.default_cfg, **layout.cfg_overrides}
        with torch.device("meta"):
            shapes = entry.build(**layout.cfg_overrides).state_dict()
        canonical = {k: torch.empty(v.shape, dtype=v.dtype) for k, v in shapes.items()}  # only shapes matter
        config = layout.hf_config(entry, cfg) if layout.container == "hf" else None
        sd = layout.from_canonical(canonical)
        assert detect(sd, hf_config=config).entry.name == "segformer_b2"
        with pytest.raises(DetectionError):
            detect(sd, arch="boostformer", hf_config=config)


def test_strict_errors(tmp_path, hf_ckpt):
    sd = dict(hf_ckpt[1].state_dict())
    missing = {k: v for k, v in sd.items() if k != "decode_head.linear_fuse.weight"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(DetectionError, match=r"boostformer.*missing \(decode_head\.linear_fuse\.weight\)"):
        edgeseg.load(tmp_path / "missing.pth")
    extra = {**sd, "decode_head.extra.weight": torch.zeros(3)}
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(DetectionError, match=r"unexpected \(decode_head\.extra\.weight\)"):
        edgeseg.load(tmp_path / "extra.pth", arch="boostformer")
    bad = {**sd, "segformer.encoder.block.2.0.attention.self.key.weight": torch.zeros(320, 64)}
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(DetectionError, match=r"attention\.self\.key\.weight expected \[320, 320\] got \[320, 64\]"):
        edgeseg.load(tmp_path / "bad.pth", arch="boostformer")


@pytest.mark.parametrize("size", SIZES)
def test_reparameterize_is_equivalent_per_baked_size(fused, size):
    model, result = fused[size]
    assert result.equivalence.passed and result.equivalence.max_rel < FP32_REL
    assert result.report.as_dict() == {"BoostFormer": 1, "MixCFN": 9, "PoolFormerLayer": 7, "WeightedSumDecodeHead": 1}
    assert model.baked_input_size == size and model.edgeseg.fixed_input_size == size
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # block-end BNs carried away too
    assert model.kept_block_norms == ()
    assert not any(isinstance(m, torch.nn.AdaptiveAvgPool2d) for m in model.modules())
    keys = model.state_dict().keys()
    assert not any(k.startswith(("decode_head.linear_fuse", "decode_head.weights", "decode_head.batch_norm")) for k in keys)
    assert not any(k.endswith("layer_scale_2") for k in keys)


def test_baked_model_refuses_other_sizes(fused):
    model, _ = fused[(160, 224)]
    with pytest.raises(EdgesegError, match="baked for 160x224 input, got 256x224"):
        model(torch.randn(1, 3, 256, 224))


def test_reparameterize_is_idempotent(fused):
    model, _ = fused[(256, 256)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = reparameterize_model(model, input_size=(256, 256))
    assert report.total == 0 and model.baked_input_size == (256, 256)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_deploy_round_trip(tmp_path, fused):
    model, _ = fused[(256, 256)]
    path = edgeseg.save_deploy(model, tmp_path / "bf.deploy.safetensors")
    again = edgeseg.load(path)
    assert again.edgeseg.fused and again.baked_input_size == (256, 256) and again.edgeseg.fixed_input_size == (256, 256)
    assert again.state_dict().keys() == model.state_dict().keys()
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    with pytest.raises(EdgesegError, match="baked for 256x256"):
        again(torch.randn(1, 3, 224, 224))


def test_baked_trace_has_no_shape_casts(fused):
    """Core ML rejects aten::Int; ONNX cannot export adaptive pooling on uneven windows."""
    model, _ = fused[(160, 224)]
    with torch.no_grad():
        graph = torch.jit.trace(model, torch.randn(1, 3, 160, 224), check_trace=False).inlined_graph
    kinds = [n.kind() for n in graph.nodes()]
    assert "aten::Int" not in kinds and "aten::size" not in kinds
    assert not any("adaptive" in k for k in kinds)


def test_bake_rejects_tiny_sizes():
    with torch.device("meta"):
        model = get_entry("boostformer").factory()
    with pytest.raises(EdgesegError, match="cannot bake BoostFormer"):
        model.reparameterize(input_size=(16, 512))


@pytest.mark.slow
def test_default_size_equivalence_macs_and_onnx(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from edgeseg.analysis import count_macs

    model = edgeseg.create("boostformer", pretrained_like=0)
    macs = count_macs(model, (512, 512))
    assert abs(macs / 15.826e9 - 1) < 0.03  # the original reports 15.826 GFLOPs (thop MACs)
    fused, result = edgeseg.reparameterize(model, input_size=(512, 512), sizes=[(512, 512)], seed=0)
    assert result.equivalence.max_rel < FP32_REL
    x = torch.randn(1, 3, 512, 512)
    with torch.no_grad():
        want = model(x).numpy()
    for opset in (13, 17):
        path = tmp_path / f"bf{opset}.onnx"
        torch.onnx.export(fused, (x,), str(path), opset_version=opset, dynamo=False)
        onnx.checker.check_model(onnx.load(str(path)))
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        assert abs(got - want).max() / abs(want).max() < 1e-5


# ---------------------------------------------------------------- block-end BN carrying

SMALL = [(128, 128), (96, 160)]


def _bns(model) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]


def _check(model, fused, sizes=SMALL, seed=11):
    from edgeseg.reparam.verify import check_equivalence

    report = check_equivalence(model, fused, sizes, seed=seed)
    assert report.passed and report.max_rel < FP32_REL, report.as_dict()


def test_structure_on_meta_matches_the_real_transform(fused):
    model, _ = fused[(256, 256)]
    cfg = bfl.infer_cfg(model.state_dict())
    assert cfg == {"num_classes": 21}
    meta = build_structure(get_entry("boostformer"), cfg, True, (256, 256), device="meta")
    assert {k: v.shape for k, v in meta.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert not _bns(meta)


def test_zero_gamma_keeps_that_bn_and_stays_exact(tmp_path):
    model = edgeseg.create("boostformer", pretrained_like=5, num_classes=7)
    enc = model.segformer.encoder
    with torch.no_grad():
        enc.block[0][1].norm_2.weight[3] = 0.0  # would be divided by in block 0.2: refused
        enc.block[1][0].norm_2.weight[9] = 1e-8  # tiny too
        enc.block[1][3].norm_2.weight[0] = 0.0  # stage end: only multiplied, still carried
    fused, result = edgeseg.reparameterize(model, input_size=SMALL[0], sizes=SMALL[:1], seed=2)
    assert result.equivalence.passed and result.equivalence.max_rel < FP32_REL
    assert fused.kept_block_norms == ("0.1", "1.0")
    assert _bns(fused) == ["segformer.encoder.block.0.1.norm_2", "segformer.encoder.block.1.0.norm_2"]
    # 0.1's BN is kept composed with the 0.0 BN it carries (a composed BN has a zero mean)
    assert torch.count_nonzero(fused.state_dict()["segformer.encoder.block.0.1.norm_2.running_mean"]) == 0
    path = edgeseg.save_deploy(fused, tmp_path / "bf.deploy.safetensors")  # the strict reload inside must pass
    again = edgeseg.load(path)
    assert again.kept_block_norms == ("0.1", "1.0") and again.edgeseg.cfg["keep_block_norms"] == ["0.1", "1.0"]
    x = torch.randn(1, 3, *SMALL[0])
    with torch.no_grad():
        assert torch.equal(again(x), fused(x))


def test_non_mean_pooling_refuses_the_stage():
    """A pooling that counts padding does not commute with a shift: that stage keeps its BNs."""
    model = edgeseg.create("boostformer", pretrained_like=6, num_classes=5)
    embed = model.segformer.encoder.patch_embeddings[1]
    embed.pool = torch.nn.AvgPool2d(embed.pool.kernel_size, embed.pool.stride, embed.pool.padding, count_include_pad=True)
    fused, _ = edgeseg.reparameterize(model, input_size=SMALL[1], sizes=SMALL[1:], seed=4)
    assert fused.kept_block_norms == ("0.0", "0.1", "0.2")
    assert _bns(fused) == [f"segformer.encoder.block.0.{j}.norm_2" for j in range(3)]
    _check(model, fused, SMALL[1:])


def test_carrying_works_on_already_folded_blocks():
    """Order-free: blocks fused by their own hook first still take the carried affine."""
    model = edgeseg.create("boostformer", pretrained_like=8, num_classes=5)
    fused = copy.deepcopy(model)
    for stage in fused.segformer.encoder.block[:bf.POOL_STAGES]:
        for blk in stage:
            blk.reparameterize()
    reparameterize_model(fused, input_size=SMALL[0])
    assert not _bns(fused) and fused.kept_block_norms == ()
    _check(model, fused, SMALL[:1])


def _fused_shapes(keep) -> dict:
    from edgeseg.checkpoint.detect import expected_shapes

    return expected_shapes(get_entry("boostformer"), {"num_classes": 150, "keep_block_norms": list(keep)}, True, (512, 512))


def test_deploy_files_with_every_block_norm_still_load():
    """Deploy files written before the block-end BNs were carried keep all seven."""
    every = [f"{i}.{j}" for i in range(bf.POOL_STAGES) for j in range(bf.DEPTHS[i])]
    sd = {k: torch.empty(shape, device="meta") for k, shape in _fused_shapes(every).items()}
    cfg = bfl.infer_cfg(sd)
    assert len(cfg["keep_block_norms"]) == 7
    with torch.device("meta"):
        model = get_entry("boostformer").factory(**cfg)
    reparameterize_model(model, input_size=(512, 512))
    assert len(_bns(model)) == 7 and model.kept_block_norms == tuple(cfg["keep_block_norms"])
