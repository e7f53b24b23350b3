"""TopFormer: mmseg checkpoints, detection, reference sizes, folding and resolution baking."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F

import edgeseg
from edgeseg.analysis import count_macs, count_params
from edgeseg.checkpoint.detect import build_structure, detect
from edgeseg.checkpoint.layouts import LayoutMismatch, find_layout
from edgeseg.errors import DetectionError, EdgesegError
from edgeseg.models.layers.static_pool import StaticAvgPool2d, adaptive_windows
from edgeseg.models.topformer import MMSEG
from edgeseg.registry import get_entry
from edgeseg.reparam.verify import check_equivalence
from edgeseg.reparam.walker import reparameterize_model
from edgeseg.synthetic import randomize_weights_
from edgeseg.testing import convert_shape_only, make_checkpoint

VARIANTS = ("topformer_tiny", "topformer_small", "topformer_base")
# hustvl/TopFormer (models.md): params of the published models, GMACs at 512x512.
REFERENCE = {"topformer_tiny": (1.390e6, 0.534e9), "topformer_small": (3.035e6, 1.112e9), "topformer_base": (5.063e6, 1.752e9)}
FP32_REL = 1e-4  # fused vs unfused, relative to max |logit|


@pytest.fixture(scope="module")
def tiny():
    return edgeseg.create("topformer_tiny", pretrained_like=3)


def _baked(model, size):
    fused = copy.deepcopy(model)
    reparameterize_model(fused, input_size=size)
    return fused


def _meta_state_dict(name, fused=False):
    return build_structure(get_entry(name), {}, fused, device="meta").state_dict()


def test_mmseg_round_trip(tmp_path, tiny):
    path = tmp_path / "topformer_tiny.pth"
    ref = make_checkpoint("topformer_tiny", path, seed=5, num_classes=19)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"meta", "state_dict"}
    sd = raw["state_dict"]
    for key in ("backbone.tpm.stem.0.c.weight", "backbone.tpm.layer2.conv.4.bn.running_var",
                "backbone.trans.transformer_blocks.3.attn.proj.1.c.weight", "backbone.trans.transformer_blocks.0.mlp.dwconv.bias",
                "backbone.SIM.3.global_act.bn.weight", "decode_head.linear_fuse.conv.weight", "decode_head.conv_seg.bias"):
        assert key in sd, key
    assert not any(k.startswith("backbone.SIM.0.") for k in sd)  # level 1/4 gets no injection
    assert sd["decode_head.linear_fuse.conv.weight"].shape == (128, 1, 1, 1)  # tiny's depthwise fuse conv
    model = edgeseg.load(path)
    assert model.edgeseg.arch == "topformer_tiny" and not model.edgeseg.fused
    assert model.edgeseg.cfg["num_classes"] == 19 and model.edgeseg.layout == "mmseg-topformer"
    x = torch.randn(1, 3, 256, 320)
    with torch.no_grad():
        out = model(x)
        assert torch.equal(out, ref(x))
    assert out.shape == (1, 19, 32, 40)  # logits at 1/8


@pytest.mark.parametrize("name", VARIANTS)
def test_detects_each_variant_unfused_and_fused(name):
    for fused in (False, True):
        det = detect(_meta_state_dict(name, fused))
        assert (det.entry.name, det.fused, det.layout.name) == (name, fused, "mmseg-topformer")
        assert det.cfg["num_classes"] == 150


def test_strict_errors():
    sd = _meta_state_dict("topformer_tiny")
    missing = dict(sd)
    del missing["backbone.SIM.2.local_embedding.bn.running_mean"]
    with pytest.raises(DetectionError, match="closest is topformer_tiny.*SIM.2.local_embedding.bn.running_mean"):
        detect(missing)
    extra = {**sd, "decode_head.conv_seg2.weight": sd["decode_head.conv_seg.weight"]}
    with pytest.raises(DetectionError, match="unexpected.*conv_seg2"):
        detect(extra)
    with pytest.raises(DetectionError, match="topformer_small"):
        detect(sd, arch="topformer_small")
    with pytest.raises(LayoutMismatch):
        MMSEG.to_canonical({"stage0.rbr_conv.0.conv.weight": torch.zeros(1), "linear.weight": torch.zeros(1)})
    with pytest.raises(LayoutMismatch):  # a backbone-only (ImageNet pretraining) dict is not a segmentation model
        MMSEG.to_canonical({k: v for k, v in sd.items() if k.startswith("backbone.")})


def test_factories_build_on_meta():
    with torch.device("meta"):
        for name in VARIANTS:
            model = get_entry(name).build()
            assert all(p.is_meta for p in model.parameters())
            reparameterize_model(model, input_size=(512, 512))
            assert model.baked_input_size == (512, 512)


@pytest.mark.parametrize("name", VARIANTS)
def test_params_and_macs_match_reference(name):
    params_ref, macs_ref = REFERENCE[name]
    with torch.device("meta"):  # shapes are all that counting needs
        model = get_entry(name).build()
        unfused = count_params(model)
        reparameterize_model(model, input_size=(512, 512))
        fused_params, macs = count_params(model), count_macs(model, (512, 512))
    assert abs(unfused - params_ref) / params_ref < 5e-4, unfused  # the published count, unfused
    # tiny 1.381M / 0.5341G, small 3.020M / 1.1123G, base 5.043M / 1.7522G (folding drops the BN affine params)
    assert abs(fused_params - params_ref) / params_ref < 0.01, fused_params
    assert abs(macs - macs_ref) / macs_ref < 0.01, macs


def test_forward_is_one_eighth(tiny):
    with torch.no_grad():
        assert tiny(torch.randn(2, 3, 256, 256)).shape == (2, 150, 32, 32)
        assert tiny(torch.randn(1, 3, 192, 320)).shape == (1, 150, 24, 40)


@pytest.mark.parametrize("size", [(512, 512), (448, 576), (224, 288)])
def test_fused_and_baked_equivalent(tiny, size):
    """Default size, a second valid size (walker given that size) and a non-multiple of 64."""
    fused = _baked(tiny, size)
    assert fused.baked_input_size == size
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    report = check_equivalence(tiny, fused, [size], batch=1, seed=11, tolerance=FP32_REL)
    assert report.passed, report.as_dict()


def test_small_fused_equivalent():
    model = randomize_weights_(edgeseg.create("topformer_small"), 4, calib_size=(128, 128))
    report = check_equivalence(model, _baked(model, (256, 320)), [(256, 320)], batch=1, seed=2, tolerance=FP32_REL)
    assert report.passed, report.as_dict()


def test_baking_alone_is_exact(tiny):
    """Without folding, only the pool changes: errors at rounding level, divisible or not."""
    for size in ((256, 256), (224, 288)):
        baked = copy.deepcopy(tiny)
        baked.reparameterize(input_size=size)
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            ref, out = tiny(x), baked(x)
        assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_static_pool_equals_adaptive():
    gen = torch.Generator().manual_seed(0)
    for (ih, iw), (oh, ow) in [((128, 96), (8, 6)), ((60, 30), (8, 4)), ((15, 7), (8, 4)), ((7, 9), (4, 9)), ((3, 5), (4, 2))]:
        pool = StaticAvgPool2d((ih, iw), (oh, ow))
        assert pool.divisible == (ih % oh == 0 and iw % ow == 0)
        x = torch.randn(2, 5, ih, iw, generator=gen)
        assert (pool(x) - F.adaptive_avg_pool2d(x, (oh, ow))).abs().max() < 1e-6
    assert adaptive_windows(60, 8)[:3] == [(0, 8), (7, 15), (15, 23)]  # equal widths, uneven strides
    assert StaticAvgPool2d((128, 128), (8, 8)).kernel == (16, 16)
    assert not StaticAvgPool2d((60, 60), (8, 8)).state_dict()  # nothing size-specific in checkpoints


def test_baked_model_refuses_other_sizes(tiny):
    fused = _baked(tiny, (256, 256))
    with pytest.raises(EdgesegError, match="baked for 256x256 input, got 256x320"):
        fused(torch.randn(1, 3, 256, 320))


def test_reparam_is_idempotent(tiny):
    fused = _baked(tiny, (256, 256))
    before = {k: v.clone() for k, v in fused.state_dict().items()}
    assert fused.is_reparameterized
    assert reparameterize_model(fused, input_size=(512, 512)).total == 0
    assert fused.baked_input_size == (256, 256)
    after = fused.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert "backbone.tpm.layer3.conv.2.c.bias" in after and "decode_head.linear_fuse.conv.bias" in after


def test_deploy_round_trip(tmp_path, tiny):
    size = (192, 256)
    fused, result = edgeseg.reparameterize(tiny, input_size=size, sizes=[size], seed=0)
    assert result.equivalence.passed and fused.edgeseg.fixed_input_size == size
    path = edgeseg.save_deploy(fused, tmp_path / "tiny.deploy.safetensors")
    loaded = edgeseg.load(path)
    assert loaded.edgeseg.fused and loaded.edgeseg.arch == "topformer_tiny"
    assert loaded.baked_input_size == size and loaded.edgeseg.fixed_input_size == size
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        assert torch.equal(loaded(x), fused(x))
    with pytest.raises(EdgesegError, match="baked for 192x256"):
        loaded(torch.randn(1, 3, 512, 512))


def test_baked_export_graph_is_static(tiny):
    """Core ML rejects aten::Int shape casts; ONNX must not see adaptive pooling."""
    import io

    import numpy as np
    import onnx
    import onnxruntime as ort

    size = (160, 160)  # 1/8 level 20 -> 3 tokens: non-divisible, baked as averaging matmuls
    fused = _baked(tiny, size)
    x = torch.randn(1, 3, *size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(fused, x)
        kinds = {n.kind() for n in traced.inlined_graph.nodes()}
        buf = io.BytesIO()
        torch.onnx.export(traced, (x,), buf, dynamo=False, opset_version=13)
    assert not kinds & {"aten::Int", "aten::size", "aten::adaptive_avg_pool2d"}, kinds
    proto = onnx.load_from_string(buf.getvalue())
    ops = {n.op_type for n in proto.graph.node}
    assert not ops & {"GlobalAveragePool", "AdaptiveAvgPool2d"} and "MatMul" in ops
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        ref = tiny(x).numpy()
    assert np.abs(out - ref).max() <= FP32_REL * np.abs(ref).max()


@pytest.mark.parametrize("layout", [layout.name for layout in get_entry("topformer_tiny").layouts])
def test_layouts_convert_shape_only_state_dicts(layout):
    """`info` hands converters TensorMeta instead of tensors: same canonical keys, shapes and cfg."""
    entry = get_entry("topformer_tiny")
    lay = find_layout(entry, layout)
    _, from_meta = convert_shape_only(lay, lay.from_canonical(edgeseg.create(entry.name, num_classes=19).state_dict()), entry.infer_cfg)
    assert entry.infer_cfg(from_meta) == {"num_classes": 19}
