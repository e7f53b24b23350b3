"""EdgeFormer (ParC-Net) classification and DeepLabV3 segmentation: the global circular conv
against its formula, checkpoints in the ml-cvnets layout, resolution-baked deployment."""

import pytest
import torch
import torch.nn.functional as F

import edgeseg
from edgeseg.analysis import count_macs, count_params
from edgeseg.checkpoint.detect import detect
from edgeseg.checkpoint.layouts import LayoutMismatch, find_layout
from edgeseg.checkpoint.tensor_meta import TensorMeta
from edgeseg.errors import DetectionError, EdgesegError
from edgeseg.models.layers.circular_conv import H_AXIS, W_AXIS, circular_conv
from edgeseg.models.layers.edgeformer_blocks import GCCBlock
from edgeseg.registry import get_entry
from edgeseg.reparam.verify import check_equivalence
from edgeseg.reparam.walker import reparameterize_model
from edgeseg.synthetic import randomize_weights_
from edgeseg.testing import convert_shape_only, make_checkpoint

FP32_REL = 1e-5  # fused vs unfused (and vs the reference formula), fp32, relative to max |reference|
# whole models: the synthetic segmentation weights give logits of scale ~3e4, and folding convs
# reorders fp32 sums; a fresh random input measured up to 4.4e-5 (seed 1870430210), so whole
# models are held to the equivalence gate's own 1e-4
FP32_MODEL_REL = 1e-4
SEG = "edgeformer_s_deeplabv3"


def rel_err(ref: torch.Tensor, out: torch.Tensor) -> float:
    return float((ref.double() - out.double()).abs().max() / ref.double().abs().max())


# ---- the global circular convolution --------------------------------------------------------

def roll_circular_conv(x, kernel, axis):
    """y[i] = sum_k K[k] * x[(i + k) mod S], one shifted copy of x per tap."""
    k = kernel.flatten(1)  # (C, S)
    out = torch.zeros_like(x)
    for j in range(k.shape[1]):
        out = out + k[:, j].reshape(1, -1, 1, 1) * torch.roll(x, shifts=-j, dims=axis)
    return out


@pytest.mark.parametrize("axis", [H_AXIS, W_AXIS])
def test_circular_conv_matches_the_shift_and_sum_formula(axis):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 7, 11, generator=gen)
    length = x.shape[axis]
    kernel = torch.randn((5, 1, length, 1) if axis == H_AXIS else (5, 1, 1, length), generator=gen)
    out = circular_conv(x, kernel, None, axis, groups=5)
    assert out.shape == x.shape
    assert rel_err(roll_circular_conv(x, kernel, axis), out) < FP32_REL


def _block(use_pe=True, dim=8, meta=6, seed=0):
    blk = GCCBlock(dim, meta, ffn_dim=24, use_pe=use_pe, downsample=3)
    randomize_weights_(blk, seed, calib_size=None)  # perturbed BN statistics, random kernels
    return blk.eval()


def original_gcc_ca_block(blk, x):
    """gcc_ca_mf_block.forward of the original, written from its formula for a square input:
    every kernel and embedding resized to the height, embeddings broadcast to S x S."""
    d, s = blk.dim, x.shape[2]
    resize = lambda t, shape: F.interpolate(t, shape, mode="bilinear", align_corners=True)  # noqa: E731
    pe = lambda t, shape: resize(t, shape).expand(1, d, s, s)  # noqa: E731
    x_1, x_2 = torch.chunk(x, 2, 1)
    a_1 = blk.pre_Norm_1(x_1 + pe(blk.meta_pe_1_H, [s, 1]))
    a_2 = blk.pre_Norm_2(x_2 + pe(blk.meta_pe_1_W, [1, s]))
    b_1 = roll_circular_conv(a_1, resize(blk.meta_kernel_1_H, [s, 1]), H_AXIS) + pe(blk.meta_pe_2_W, [1, s])
    b_2 = roll_circular_conv(a_2, resize(blk.meta_kernel_1_W, [1, s]), W_AXIS) + pe(blk.meta_pe_2_H, [s, 1])
    y_1 = x_1 + roll_circular_conv(b_1, resize(blk.meta_kernel_2_W, [1, s]), W_AXIS)
    y_2 = x_2 + roll_circular_conv(b_2, resize(blk.meta_kernel_2_H, [s, 1]), H_AXIS)
    y = torch.cat((y_1, y_2), dim=1)
    f = blk.ffn(y)
    fc = blk.ca.fc
    att = F.hardsigmoid(fc[4](fc[3](F.hardswish(fc[1](fc[0](f.mean((2, 3), keepdim=True)))))))
    return y + f * att


@torch.no_grad()
def test_unfused_block_matches_the_original_formula():
    blk = _block()
    x = torch.randn(2, 16, 10, 10)  # meta kernel 6 resized to 10
    assert rel_err(original_gcc_ca_block(blk, x), blk(x)) < FP32_REL


@torch.no_grad()
@pytest.mark.parametrize("use_pe", [True, False])
@pytest.mark.parametrize("feat", [(8, 8), (6, 10)])
def test_baked_block_equals_unfused(use_pe, feat):
    blk = _block(use_pe=use_pe, seed=2)
    x = torch.randn(2, 16, *feat)
    ref = blk(x)
    blk.reparameterize(input_size=(feat[0] * 8, feat[1] * 8))  # downsample=3: the block sees 1/8
    names = dict(blk.named_parameters())
    assert not any(n.startswith(("meta_", "pre_Norm")) for n in names)
    assert names["gcc_1_H.weight"].shape == (8, 1, feat[0], 1) and names["gcc_1_W.weight"].shape == (8, 1, 1, feat[1])
    assert ("pe_bias_1_h" in names) == use_pe
    assert rel_err(ref, blk(x)) < FP32_REL


@torch.no_grad()
@pytest.mark.parametrize("opset", [13, 17])
def test_baked_block_exports_to_onnx_with_static_conv_weights(tmp_path, opset):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    blk = _block(seed=4)
    blk.reparameterize(input_size=(64, 96))
    x = torch.randn(1, 16, 8, 12)
    path = tmp_path / "gcc.onnx"
    torch.onnx.export(blk, (x,), str(path), opset_version=opset, dynamo=False, input_names=["x"])
    graph = onnx.load(str(path)).graph
    inits = {i.name for i in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert convs and all(n.input[1] in inits for n in convs)  # no conv weight computed at run time
    assert not {"Shape", "Resize"} & {n.op_type for n in graph.node}
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    assert rel_err(blk(x), torch.from_numpy(out)) < FP32_REL


# ---- architecture facts ---------------------------------------------------------------------

def test_param_counts_and_macs_match_the_paper():
    with torch.device("meta"):
        s, seg = edgeseg.create("edgeformer_s"), edgeseg.create(SEG)
    # EdgeFormer-S: 5.037M params, 1.657 GMACs at 256 (reference); DeepLabV3: 5.8M.
    assert count_params(s) == 5_037_088
    assert abs(count_params(seg) / 5.8e6 - 1) < 0.01
    macs = count_macs(edgeseg.create("edgeformer_s"), (256, 256))
    assert abs(macs / 1.657e9 - 1) < 0.001, macs


@torch.no_grad()
def test_factories_build_on_the_meta_device_and_bake_there():
    for name in ("edgeformer_s", "edgeformer_xs", SEG):
        entry = get_entry(name)
        with torch.device("meta"):
            model = edgeseg.create(name)
            reparameterize_model(model, input_size=(192, 320))
        assert all(p.is_meta for p in model.parameters())
        assert model.baked_input_size == (192, 320)
        assert entry.factory.infer_deploy_input_size(model.state_dict()) == (192, 320)
        with torch.device("meta"):
            assert entry.factory.infer_deploy_input_size(edgeseg.create(name).state_dict()) is None


def test_bake_size_errors():
    model = edgeseg.create("edgeformer_xs")
    with pytest.raises(EdgesegError, match="input size"):
        reparameterize_model(model)
    with pytest.raises(EdgesegError, match="multiples of 32"):
        model.reparameterize(input_size=(250, 256))


# ---- checkpoints: classification ------------------------------------------------------------

@pytest.fixture(scope="module")
def cls_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("edgeformer") / "checkpoint_ema_avg.pt"
    ref = make_checkpoint("edgeformer_s", path, seed=0)
    return path, ref, edgeseg.load(path)


def test_checkpoint_round_trip_and_detection(cls_ckpt):
    path, ref, model = cls_ckpt
    info = model.edgeseg
    assert (info.arch, info.layout, info.fused, info.cfg["num_classes"]) == ("edgeformer_s", "cvnets", False, 1000)
    assert info.mean == (0.0, 0.0, 0.0) and info.std == (1.0, 1.0, 1.0)
    raw = torch.load(path, weights_only=True)  # plain state dict, with the original's residual.* duplicate
    assert "residual.block.exp_1x1.block.conv.weight" in raw and "layer_3.1.spatial_global_rep.0.meta_pe_1_H" in raw
    assert "layer_3.1.spatial_global_rep.1.meta_pe_1_H" not in raw  # embeddings only in a stage's first block
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (1, 1000) and torch.equal(out, ref(x))
    no_alias = {k: v for k, v in raw.items() if not k.startswith("residual.")}
    det = detect(no_alias)
    assert (det.entry.name, det.fused) == ("edgeformer_s", False)
    small_head = dict(raw, **{"classifier.fc.weight": raw["classifier.fc.weight"][:10], "classifier.fc.bias": raw["classifier.fc.bias"][:10]})
    assert detect(small_head).cfg["num_classes"] == 10


def test_strict_errors(cls_ckpt):
    path, _, _ = cls_ckpt
    raw = torch.load(path, weights_only=True)
    missing = {k: v for k, v in raw.items() if k != "layer_4.1.spatial_global_rep.2.meta_kernel_2_W"}
    with pytest.raises(DetectionError, match=r"missing \(layer_4\.1\.spatial_global_rep\.2\.meta_kernel_2_W\)"):
        detect(missing, arch="edgeformer_s")
    bad = dict(raw, **{"layer_5.1.spatial_global_rep.0.meta_kernel_1_H": torch.zeros(160, 1, 9, 1)})
    with pytest.raises(DetectionError, match="meta_kernel_1_H expected"):
        detect(bad, arch="edgeformer")
    with pytest.raises(DetectionError, match="unrecognised checkpoint layout"):
        detect(raw, arch=SEG)  # a classification checkpoint is not in the segmentation layout
    with pytest.raises(LayoutMismatch):
        get_entry("edgeformer_s").canonical_layout.to_canonical({"stage0.rbr_conv.0.conv.weight": torch.zeros(1)})


@pytest.fixture(scope="module")
def baked_256(cls_ckpt):
    _, _, model = cls_ckpt
    return edgeseg.reparameterize(model, input_size=(256, 256), verify=False)[0]


def test_reparam_is_equivalent_at_two_sizes_and_refuses_others(cls_ckpt, baked_256):
    _, _, model = cls_ckpt
    second = edgeseg.reparameterize(model, input_size=(128, 192), verify=False)[0]  # baked separately, non-square
    for size, fused in (((256, 256), baked_256), ((128, 192), second)):
        rep = check_equivalence(model, fused, [size], batch=1)
        assert rep.passed and rep.max_rel < FP32_MODEL_REL, rep.as_dict()
        assert fused.baked_input_size == size and fused.edgeseg.fixed_input_size == size and fused.edgeseg.fused
        with pytest.raises(EdgesegError, match=f"baked for {size[0]}x{size[1]}"):
            fused(torch.rand(1, 3, size[0] + 32, size[1]))
    with torch.no_grad():  # the unfused model itself runs at any size, square or not
        assert model(torch.rand(1, 3, 160, 224)).shape == (1, 1000)


def test_deploy_round_trip_of_the_baked_model(baked_256, tmp_path):
    from safetensors.torch import load_file

    fused = baked_256
    out = edgeseg.save_deploy(fused, tmp_path / "edgeformer_s.deploy.safetensors")
    again = edgeseg.load(out)
    assert again.edgeseg.fused and again.baked_input_size == (256, 256) and again.edgeseg.fixed_input_size == (256, 256)
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        assert torch.equal(again(x), fused(x))
    det = detect(load_file(str(out)))  # without the metadata: size read from the baked kernels
    assert (det.entry.name, det.fused, det.input_size) == ("edgeformer_s", True, (256, 256))


# ---- checkpoints: segmentation --------------------------------------------------------------

@torch.no_grad()
def test_segmentation_checkpoint_reparam_and_detection(tmp_path):
    entry = get_entry(SEG)
    ref = edgeseg.create(SEG)
    randomize_weights_(ref, 5, calib_size=(64, 64))
    path = tmp_path / "deeplabv3_edgeformer_s.pt"
    entry.canonical_layout.save(ref.state_dict(), path)
    raw = torch.load(path, weights_only=True)
    assert "encoder.residual.block.red_1x1.block.norm.running_var" in raw and "seg_head.classifier.classifier.block.conv.bias" in raw
    assert not any(k.startswith(("encoder.classifier", "encoder.conv_1x1_exp")) for k in raw)
    model = edgeseg.load(path)
    assert (model.edgeseg.arch, model.edgeseg.task, model.edgeseg.cfg["num_classes"]) == (SEG, "segmentation", 21)
    x = torch.rand(1, 3, 128, 192)
    out = model(x)
    assert out.shape == (1, 21, 128, 192) and torch.equal(out, ref(x))  # logits upsampled to the input inside
    for size in ((256, 256), (128, 192)):
        fused = edgeseg.reparameterize(model, input_size=size, verify=False)[0]
        rep = check_equivalence(model, fused, [size], batch=1)
        assert rep.passed and rep.max_rel < FP32_MODEL_REL, rep.as_dict()
        with pytest.raises(EdgesegError, match=f"baked for {size[0]}x{size[1]}"):
            fused(torch.rand(1, 3, 320, 320))
    det = detect(fused.state_dict())
    assert (det.entry.name, det.fused, det.input_size) == (SEG, True, (128, 192))


# ---- shape-only checkpoints (`edgeseg info`) ------------------------------------------------

def _as_meta(sd):
    return {k: TensorMeta.like(v) for k, v in sd.items()}




@pytest.mark.parametrize("name, layout", [(n, layout.name) for n in ("edgeformer_xs", SEG) for layout in get_entry(n).layouts])
@pytest.mark.parametrize("drop_alias", [False, True])
def test_layouts_convert_shape_only_state_dicts(name, layout, drop_alias):
    """`info` hands converters TensorMeta instead of tensors: same canonical keys, shapes and cfg,
    also when the `residual.*` duplicate has to be re-added."""
    entry = get_entry(name)
    lay = find_layout(entry, layout)
    with torch.device("meta"):  # shapes are all the converters read
        published = lay.from_canonical(edgeseg.create(name, num_classes=7).state_dict())
    if drop_alias:
        published = {k: v for k, v in published.items() if ".residual." not in f".{k}"}
    _, from_meta = convert_shape_only(lay, published, entry.infer_cfg)
    assert any(".residual." in f".{k}" for k in from_meta)
    assert entry.infer_cfg(from_meta) == {"num_classes": 7}


@torch.no_grad()
def test_deploy_size_probe_reads_shape_only_state_dicts():
    for name in ("edgeformer_xs", SEG):
        probe = get_entry(name).factory.infer_deploy_input_size
        with torch.device("meta"):
            model = edgeseg.create(name)
            unfused = _as_meta(model.state_dict())
            reparameterize_model(model, input_size=(192, 320))
        assert probe(_as_meta(model.state_dict())) == (192, 320)
        assert probe(unfused) is None
