"""TensorRT export. TensorRT cannot be installed on the development machines, so what needs
it (building, running an engine) is marked `tensorrt` and skips with the reason; everything
else is tested here: ONNX preparation per device profile, the fp16-overflow analysis, the
build plan and its trtexec spelling, the calibration pipeline and cache, manifests and the
mismatch refusal, and the remote (Jetson) build orchestration against a fake device."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import edgeseg
from edgeseg.devices import get_profile
from edgeseg.errors import EdgesegError
from edgeseg.exporters import ExportRequest, get_exporter
from edgeseg.exporters.calibration import (CacheKey, CalibrationCache, CalibrationData, Preprocess, list_images,
                                           parse_cache_header, trt_version_code)
from edgeseg.exporters.tensorrt.plan import (CalibrationPlan, builder_flags, make_plan, parse_shape, shape_ranges, trtexec_flags,
                                             workspace_bytes)
from edgeseg.exporters.tensorrt.manifest import (EngineMismatch, Platform, check_compatible, check_platform_supported, engine_section,
                                            read_engine_section, write_manifest)
from edgeseg.parity import BackendUnavailable

SEED = 3
SIZE = (64, 64)


def _has_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------ ONNX preparation per profile

@pytest.fixture(scope="module")
def segformer():
    model = edgeseg.create("segformer_b0", pretrained_like=SEED)
    fused, _ = edgeseg.reparameterize(model, verify=False, input_size=SIZE)
    return fused


def _prepare(model, profile, tmp_path, **kw):
    from edgeseg.exporters.tensorrt.prepare import prepare_onnx

    req = ExportRequest(model=model, output=tmp_path / "m.engine", input_size=SIZE, precision="fp16",
                        profile=get_profile(profile) if profile else None, **kw)
    return prepare_onnx(req, tmp_path)


def test_onnx_for_jetson_nano(segformer, tmp_path):
    """TensorRT 8.2: opset <= 13, no LayerNormalization op (decomposed), static shapes."""
    p = _prepare(segformer, "jetson-nano", tmp_path)
    assert p.opset == 13
    assert "LayerNormalization" not in p.op_counts
    n_ln = sum(isinstance(m, nn.LayerNorm) for m in segformer.modules())
    assert p.op_counts["Pow"] == n_ln and p.op_counts["ReduceMean"] == 2 * n_ln
    assert [(i.name, i.shape, i.dynamic) for i in p.inputs] == [("input", (1, 3, *SIZE), False)]
    assert len(p.sha256) == 64 and p.path.is_file()
    dyn = tmp_path / "dyn"
    dyn.mkdir()
    with pytest.raises(EdgesegError, match="static shapes"):
        _prepare(segformer, "jetson-nano", dyn, dynamic=True)


def test_onnx_for_orin_keeps_layernorm_and_allows_dynamic(segformer, tmp_path):
    p = _prepare(segformer, "jetson-orin-nano", tmp_path, dynamic=True, options={"dynamic_axes": ["batch"]})
    assert p.opset == 17 and p.op_counts["LayerNormalization"] == sum(isinstance(m, nn.LayerNorm) for m in segformer.modules())
    (inp,) = p.inputs
    assert inp.dynamic and isinstance(inp.shape[0], str) and inp.shape[1:] == (3, *SIZE)
    ranges = shape_ranges(p.inputs, batch=2, input_size=SIZE)
    assert ranges[0].as_dict() == {"name": "input", "min": [1, 3, 64, 64], "opt": [2, 3, 64, 64], "max": [4, 3, 64, 64]}


def test_describe_refuses_what_the_parser_cannot_take(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from edgeseg.exporters.tensorrt.prepare import describe

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    scale = helper.make_tensor("s", TensorProto.FLOAT, [4], [1.0] * 4)
    node = helper.make_node("LayerNormalization", ["input", "s"], ["y"], name="ln")
    model = helper.make_model(helper.make_graph([node], "g", [x], [y], [scale]), opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "ln.onnx"
    onnx.save(model, str(path))
    with pytest.raises(EdgesegError, match="opset 17; jetson-nano's TensorRT parses <= 13"):
        describe(path, get_profile("jetson-nano"))
    assert describe(path, get_profile("jetson-orin-nano")).op_counts == {"LayerNormalization": 1}


# ------------------------------------------------------------------ fp16 overflow analysis

def test_regions_found_decomposed_and_fused(segformer, tmp_path):
    import onnx

    from edgeseg.exporters.tensorrt.precision import find_regions

    n_ln = sum(isinstance(m, nn.LayerNorm) for m in segformer.modules())
    n_sm = sum(1 for name, m in segformer.named_modules() if name.endswith(".attn"))
    for profile, nodes_per_ln in (("jetson-nano", 9), ("jetson-orin-nano", 1)):
        (tmp_path / profile).mkdir()
        p = _prepare(segformer, profile, tmp_path / profile)
        regions = find_regions(onnx.load(str(p.path)))
        lns = [r for r in regions if r.kind == "layernorm"]
        assert len(lns) == n_ln and len(regions) - len(lns) == n_sm
        assert all(len(r.nodes) == nodes_per_ln for r in lns), {len(r.nodes) for r in lns}


class _LoudNorm(nn.Module):
    """A LayerNorm fed by a large activation (deviation ~ 1e3: variance ~ 1e6 > fp16 max)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(3, 8, 1)
        self.norm = nn.LayerNorm(8)
        self.quiet = nn.LayerNorm(8)
        with torch.no_grad():
            self.proj.weight.mul_(2e3)

    def forward(self, x):
        y = self.proj(x).flatten(2).transpose(1, 2)
        z = self.norm(y)
        return self.quiet(z).softmax(-1)


@pytest.mark.parametrize("opset", [13, 17])
def test_overflow_analysis_keeps_only_the_loud_layernorm(tmp_path, opset):
    import onnx

    from edgeseg.exporters.tensorrt.precision import plan_precision

    path = tmp_path / "loud.onnx"
    torch.onnx.export(_LoudNorm().eval(), (torch.randn(1, 3, 8, 8),), str(path), dynamo=False, opset_version=opset,
                      input_names=["input"], output_names=["y"])
    model = onnx.load(str(path))
    feed = {"input": np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    auto = plan_precision(model, feed, policy="auto")
    assert len(auto.regions) == 3  # two LayerNorms, one Softmax
    kept = auto.fp32_regions
    assert len(kept) == 1 and kept[0].kind == "layernorm" and "/norm/" in kept[0].nodes[0] and kept[0].peak > 32752
    assert all(r.peak < 100 for r in auto.regions if not r.keep_fp32)
    assert "variance" in kept[0].reason
    assert len(plan_precision(model, feed, policy="all").fp32_regions) == 3
    assert plan_precision(model, feed, policy="none").fp32_regions == []
    with pytest.raises(EdgesegError, match="unknown fp32-layer policy"):
        plan_precision(model, feed, policy="some")


# ------------------------------------------------------------------ build plan

def test_builder_flags():
    assert builder_flags("fp32", True) == ([], ["TF32"])  # fp32 means fp32: TF32 off
    assert builder_flags("fp16", False) == (["FP16"], [])
    assert builder_flags("fp16", True) == (["FP16", "OBEY_PRECISION_CONSTRAINTS"], [])
    assert builder_flags("int8", False) == (["INT8", "FP16"], [])
    with pytest.raises(EdgesegError):
        builder_flags("bf16", False)


def test_shape_ranges_and_workspace():
    from edgeseg.exporters.tensorrt.prepare import OnnxInput

    static = shape_ranges([OnnxInput("input", (1, 3, 224, 224))], batch=1, input_size=(224, 224))
    assert static[0].static and static[0].max == (1, 3, 224, 224)
    dyn = shape_ranges([OnnxInput("input", ("batch", 3, "height", "width"))], batch=2, input_size=(224, 320), size_divisor=32)
    assert (dyn[0].min, dyn[0].opt, dyn[0].max) == ((1, 3, 128, 160), (2, 3, 224, 320), (4, 3, 448, 640))
    over = shape_ranges([OnnxInput("input", ("b", 3, 64, 64))], batch=1, input_size=(64, 64), options={"max_batch": 16})
    assert over[0].max == (16, 3, 64, 64)
    with pytest.raises(EdgesegError, match="min <= opt <= max"):
        shape_ranges([OnnxInput("input", ("b", 3, 64, 64))], batch=4, input_size=(64, 64), options={"shape_max": "2x3x64x64"})
    with pytest.raises(EdgesegError, match="static"):
        shape_ranges([OnnxInput("input", ("b", 3, 64, 64))], batch=1, input_size=(64, 64), options={"shape_max": "2x3x96x64"})
    assert parse_shape("1x3x8x8") == (1, 3, 8, 8)
    with pytest.raises(EdgesegError):
        parse_shape("1xthree")
    assert workspace_bytes({}) == 1024 << 20 and workspace_bytes({"workspace": 256}) == 256 << 20
    assert workspace_bytes({"workspace_mib": 2048}) == 2048 << 20
    with pytest.raises(EdgesegError, match="too small"):
        workspace_bytes({"workspace": 4})


def _onnx_stub(shape=(1, 3, 64, 64)):
    from edgeseg.exporters.tensorrt.prepare import OnnxInput, PreparedOnnx

    return PreparedOnnx(path=Path("m.onnx"), sha256="ab" * 32, opset=13, inputs=[OnnxInput("input", shape)], outputs=[], op_counts={})


def _fp32_stub(nodes):
    from edgeseg.exporters.tensorrt.precision import PrecisionPlan, Region

    regions = [Region("layernorm", [n], [n + "_out"], [n + "_in"], peak=1e6, keep_fp32=True, reason="variance") for n in nodes]
    return PrecisionPlan("auto", 0.5, regions)


def test_make_plan():
    info = types.SimpleNamespace(size_divisor=32)
    plan = make_plan(precision="fp16", onnx=_onnx_stub(), info=info, batch=1, input_size=(64, 64), options={"workspace": 512},
                     fp32=_fp32_stub(["ln1", "ln2"]), timing_cache="/tmp/t.cache")
    d = plan.as_dict()
    assert d["flags"] == ["FP16", "OBEY_PRECISION_CONSTRAINTS"] and d["workspace_mib"] == 512 and not plan.dynamic
    assert d["fp32_nodes"] == ["ln1", "ln2"] and d["fp32_tensors"] == ["ln1_out", "ln2_out"]
    assert d["shapes"] == [{"name": "input", "min": [1, 3, 64, 64], "opt": [1, 3, 64, 64], "max": [1, 3, 64, 64]}]
    fp32 = make_plan(precision="fp32", onnx=_onnx_stub(), info=info, batch=1, input_size=(64, 64), options={}, fp32=_fp32_stub(["ln"]))
    assert fp32.fp32_nodes == [] and fp32.clear_flags == ["TF32"]  # per-layer fp32 is moot in an fp32 engine
    with pytest.raises(EdgesegError, match="calibration"):
        make_plan(precision="int8", onnx=_onnx_stub(), info=info, batch=1, input_size=(64, 64), options={})


def test_trtexec_flags_per_tensorrt_version():
    from edgeseg.exporters.tensorrt.trtexec import build_command

    info = types.SimpleNamespace(size_divisor=32)
    loud = make_plan(precision="fp16", onnx=_onnx_stub(), info=info, batch=1, input_size=(64, 64), options={}, fp32=_fp32_stub(["/a/ln"]))
    with pytest.raises(EdgesegError, match="cannot keep single layers in fp32 .*8.4"):
        trtexec_flags(loud, (8, 2, 1))
    flags = trtexec_flags(loud, (8, 6, 1))
    assert flags == ["--precisionConstraints=obey", "--layerPrecisions=/a/ln:fp32", "--layerOutputTypes=/a/ln:fp32"]
    quiet = make_plan(precision="fp16", onnx=_onnx_stub(), info=info, batch=1, input_size=(64, 64), options={}, fp32=_fp32_stub([]))
    assert trtexec_flags(quiet, (8, 2, 1)) == []
    argv = build_command("/tmp/m.onnx", get_profile("jetson-nano"), "fp16", engine_path="/tmp/m.engine", build_only=True,
                         workspace_mib=quiet.workspace_bytes >> 20, extra=trtexec_flags(quiet, (8, 2, 1)))
    assert "--fp16" in argv and "--workspace=1024" in argv and "--buildOnly" in argv
    dyn = make_plan(precision="fp32", onnx=_onnx_stub(("b", 3, 64, 64)), info=info, batch=2, input_size=(64, 64), options={})
    assert trtexec_flags(dyn, (10, 3)) == ["--minShapes=input:1x3x64x64", "--optShapes=input:2x3x64x64",
                                           "--maxShapes=input:4x3x64x64", "--noTF32"]
    calib = CalibrationPlan(images=[], batch=1, cache="c.cache", preprocess={}, reuse_only=True)
    int8 = make_plan(precision="int8", onnx=_onnx_stub(), info=info, batch=1, input_size=(64, 64), options={}, calibration=calib)
    with pytest.raises(EdgesegError, match="calibration cache"):
        trtexec_flags(int8, (10, 3))
    assert trtexec_flags(int8, (10, 3), calib_path="/tmp/x/calib.cache") == ["--calib=/tmp/x/calib.cache"]
    bad = make_plan(precision="fp16", onnx=_onnx_stub(), info=info, batch=1, input_size=(64, 64), options={}, fp32=_fp32_stub(["a,b"]))
    with pytest.raises(EdgesegError, match="cannot be passed to trtexec"):
        trtexec_flags(bad, (10, 3))


# ------------------------------------------------------------------ calibration data and cache

def _images(root: Path, n: int, size=(40, 60), seed=0) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = root / f"img{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def test_list_images(tmp_path):
    made = _images(tmp_path / "a", 3) + _images(tmp_path / "a" / "sub", 2, seed=1)
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    assert list_images(tmp_path / "a") == sorted(made)
    assert len(list_images(tmp_path / "a", limit=2)) == 2
    with pytest.raises(EdgesegError, match="does not exist"):
        list_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgesegError, match="no images"):
        list_images(tmp_path / "empty")


def test_preprocess_matches_manual_normalization(tmp_path):
    from PIL import Image

    (p,) = _images(tmp_path, 1, size=(40, 60))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    crop = Preprocess((32, 32), mean, std)
    stretch = Preprocess((32, 48), mean, std, resize="stretch")
    px = crop.to_pixels(p)
    assert px.shape == (32, 32, 3) and px.dtype == np.uint8
    assert stretch.to_pixels(p).shape == (32, 48, 3)
    # crop: shorter side (40) -> 32, i.e. 48x32, then the centre 32x32
    ref_im = Image.open(p).convert("RGB").resize((48, 32), Image.BILINEAR).crop((8, 0, 40, 32))
    assert np.array_equal(px, np.asarray(ref_im))
    x = crop.load(p)
    manual = (np.asarray(ref_im, np.float32) / 255.0 - np.array(mean, np.float32)) / np.array(std, np.float32)
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    assert np.allclose(x, manual.transpose(2, 0, 1), atol=1e-6)
    with pytest.raises(EdgesegError, match="resize"):
        Preprocess((32, 32), mean, std, resize="pad")
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(EdgesegError, match="cannot read image"):
        crop.load(bad)


def test_calibration_batches_and_fingerprint(tmp_path):
    paths = _images(tmp_path / "cal", 7)
    pre = Preprocess((16, 16), (0.5,) * 3, (0.25,) * 3)
    data = CalibrationData(paths, pre, batch=3)
    batches = list(data)
    assert len(data) == 2 and len(batches) == 2 and data.used == paths[:6]  # the 7th image is dropped
    assert all(b.shape == (3, 3, 16, 16) and b.dtype == np.float32 and b.flags.c_contiguous for b in batches)
    assert np.allclose(batches[1][0], pre.load(paths[3]))
    fp = data.fingerprint()
    assert fp == CalibrationData(paths, pre, batch=3).fingerprint()
    assert fp != CalibrationData(paths, Preprocess((16, 16), (0.5,) * 3, (0.3,) * 3), batch=3).fingerprint()
    _images(tmp_path / "cal", 1, seed=9)  # overwrites img00.png with other pixels
    assert fp != CalibrationData(paths, pre, batch=3).fingerprint()
    with pytest.raises(EdgesegError, match="7 calibration images for a batch of 8"):
        CalibrationData(paths, pre, batch=8)


def test_calibration_cache_reuse_rules(tmp_path):
    key = CacheKey(onnx_sha256="a" * 64, input_shape=(1, 3, 16, 16), data="d" * 64)
    blob = b"TRT-8601-EntropyCalibration2\ninput: 3c010a14\n"
    cache = CalibrationCache(tmp_path / "c.cache", key)
    assert cache.load() is None and cache.reason == "no cache yet"
    cache.save(blob)
    assert cache.load() == blob and cache.reason == "reused"
    assert json.loads((tmp_path / "c.cache.json").read_text())["onnx_sha256"] == "a" * 64
    other = CalibrationCache(tmp_path / "c.cache", CacheKey("b" * 64, (1, 3, 16, 16), "d" * 64))
    assert other.load() is None and "onnx_sha256" in other.reason
    resized = CalibrationCache(tmp_path / "c.cache", CacheKey("a" * 64, (2, 3, 16, 16), "e" * 64))
    assert resized.load() is None and "input_shape" in resized.reason and "data" in resized.reason
    minmax = CalibrationCache(tmp_path / "c.cache", CacheKey("a" * 64, (1, 3, 16, 16), "d" * 64, algorithm="MinMaxCalibration"))
    assert minmax.load() is None and "algorithm" in minmax.reason
    (tmp_path / "c.cache.json").unlink()
    assert cache.load() is None and "origin unknown" in cache.reason
    with pytest.raises(EdgesegError, match="no TensorRT header"):
        cache.save(b"garbage")
    assert parse_cache_header(b"TRT-100300-EntropyCalibration2\n") == {"trt_version_code": 100300, "algorithm": "EntropyCalibration2"}
    assert trt_version_code("8.6.1") == 8601 and trt_version_code("10.3.0") == 100300 and trt_version_code("8.2.1.8") == 8201


# ------------------------------------------------------------------ TensorRT glue against fakes

class _FakeCuda:
    def __init__(self):
        self.mem: dict[int, np.ndarray] = {}
        self.freed: list[int] = []

    def malloc(self, nbytes):
        ptr = 0x1000 + len(self.mem) * 0x1000
        self.mem[ptr] = np.zeros(nbytes // 4, np.float32)
        return ptr

    def free(self, ptr):
        self.freed.append(ptr)

    def stream(self):
        return "stream"

    def destroy(self, stream):
        pass

    def htod(self, ptr, array, stream):
        self.mem[ptr][: array.size] = array.ravel()

    def sync(self, stream):
        pass


def test_entropy_calibrator_serves_batches_and_the_cache(tmp_path):
    from edgeseg.exporters.tensorrt.build import make_calibrator

    fake_trt = types.SimpleNamespace(IInt8EntropyCalibrator2=type("Base", (), {"__init__": lambda self: None}))
    paths = _images(tmp_path / "cal", 5)
    pre = Preprocess((8, 8), (0.5,) * 3, (0.25,) * 3)
    data = CalibrationData(paths, pre, batch=2)
    cache = CalibrationCache(tmp_path / "c.cache", CacheKey("a" * 64, (2, 3, 8, 8), data.fingerprint()))
    cuda = _FakeCuda()
    cal = make_calibrator(fake_trt, data, cache, cuda)
    assert cal.get_batch_size() == 2 and cal.read_calibration_cache() is None and not cal.cache_reused
    first = cal.get_batch(["input"])
    assert first == [cal.device] and np.allclose(cuda.mem[cal.device].reshape(2, 3, 8, 8), next(iter(data)))
    assert cal.get_batch(["input"]) is not None and cal.get_batch(["input"]) is None and cal.served == 2
    cal.write_calibration_cache(memoryview(b"TRT-8601-EntropyCalibration2\nx: 1\n"))
    again = make_calibrator(fake_trt, data, cache, cuda)
    assert again.read_calibration_cache().startswith(b"TRT-8601") and again.cache_reused
    cal.release()
    assert cal.device in cuda.freed


def test_fp32_layers_pinned_by_name_or_output():
    from edgeseg.exporters.tensorrt.build import apply_fp32_layers

    f32, f16, i32 = "float32", "float16", "int32"
    trt = types.SimpleNamespace(float32=f32, float16=f16)

    class Tensor:
        def __init__(self, name, dtype):
            self.name, self.dtype = name, dtype

    class Layer:
        def __init__(self, name, outs):
            self.name, self._outs, self.precision, self.out_types = name, outs, None, {}

        @property
        def num_outputs(self):
            return len(self._outs)

        def get_output(self, j):
            return self._outs[j]

        def set_output_type(self, j, t):
            self.out_types[j] = t

    layers = [Layer("/a/ln", [Tensor("a", f32)]), Layer("trt_internal_7", [Tensor("/b/sm_out", f32)]),
              Layer("/c/shape", [Tensor("c", i32)]), Layer("/d/conv", [Tensor("d", f32)])]
    network = types.SimpleNamespace(num_layers=len(layers), get_layer=lambda i: layers[i])
    pinned, missing = apply_fp32_layers(trt, network, ["/a/ln", "/b/sm", "/c/shape", "/gone"], ["/b/sm_out", "c"])
    assert pinned == ["/a/ln", "trt_internal_7"]
    assert layers[0].precision == f32 and layers[0].out_types == {0: f32} and layers[1].precision == f32
    assert layers[2].precision is None and layers[3].precision is None  # int outputs and unrelated layers untouched
    assert missing == ["/b/sm", "/c/shape", "/gone"]


# ------------------------------------------------------------------ manifests and mismatches

HERE = Platform("8.6.1", "NVIDIA GeForce RTX 3060", "8.6")


def _section(platform=HERE, sha="e" * 64):
    return engine_section(platform=platform, precision="fp16", flags=["FP16"], inputs=[], outputs=[], onnx_sha256="o" * 64,
                          engine_sha256=sha, builder="test")


def test_manifest_round_trip_and_compatibility(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine")
    with pytest.raises(EngineMismatch, match="has no manifest"):
        read_engine_section(engine)
    write_manifest(engine, {"format": "tensorrt-engine", "tensorrt": _section()})
    section = read_engine_section(engine)
    check_compatible(section, HERE, engine_sha256="e" * 64)
    check_compatible(section, Platform("8.6.1.6", "nvidia geforce rtx  3060", "8.6"))  # build number and spelling do not matter
    cases = [
        (Platform("10.3.0", HERE.gpu, "8.6"), "built with TensorRT 8.6.1, this machine has 10.3.0"),
        (Platform("8.6.1", "NVIDIA Jetson Orin Nano", "8.7"), "compute capability 8.6"),
        (Platform("8.6.1", "NVIDIA RTX A2000", "8.6"), "built on NVIDIA GeForce RTX 3060, this GPU is NVIDIA RTX A2000"),
    ]
    for platform, message in cases:
        with pytest.raises(EngineMismatch, match=message) as exc:
            check_compatible(section, platform)
        assert isinstance(exc.value, BackendUnavailable) and exc.value.fix
    with pytest.raises(EngineMismatch, match="does not match the sha256"):
        check_compatible(section, HERE, engine_sha256="f" * 64)
    (tmp_path / "m.engine.manifest.json").write_text("{not json")
    with pytest.raises(EngineMismatch, match="not valid JSON"):
        read_engine_section(engine)
    (tmp_path / "m.engine.manifest.json").write_text(json.dumps({"format": "onnx"}))
    with pytest.raises(EngineMismatch, match="does not describe a TensorRT engine"):
        read_engine_section(engine)


def test_supported_tensorrt_versions():
    for ok in ("8.5.3", "8.6.1.6", "10.3.0"):
        check_platform_supported(ok)
    for bad in ("8.2.1", "11.0.0"):
        with pytest.raises(EdgesegError, match="not supported for local builds"):
            check_platform_supported(bad)


# ------------------------------------------------------------------ exporter entry points

_TINY: list = []


def _fused_mobileone():
    """MobileOne-S0 widths with one block per stage: the exporter's checks, not the model, are under test."""
    if not _TINY:
        model = edgeseg.create("mobileone_s0", pretrained_like=SEED, num_classes=10, num_blocks=(1, 1, 1, 1))
        _TINY.append(edgeseg.reparameterize(model, verify=False, input_size=SIZE)[0])
    return _TINY[0]


def _request(tmp_path, model, **kw):
    return ExportRequest(model=model, output=tmp_path / "m.engine", input_size=SIZE, **kw)


@pytest.mark.parametrize("kw, match", [
    ({"profile": "jetson-nano"}, "must be built on the device"),
    ({"options": {"host": "me@jetson"}}, "--host needs --device"),
    ({"profile": "iphone-12-pro"}, "runs coreml, not TensorRT"),
    ({"profile": "jetson-nano", "precision": "int8", "options": {"host": "me@jetson"}}, "does not run int8"),
    ({"precision": "bf16"}, "does not produce bf16"),
])
def test_refusals(tmp_path, kw, match):
    if "profile" in kw:
        kw["profile"] = get_profile(kw["profile"])
    with pytest.raises(EdgesegError, match=match):
        get_exporter("trt").export(_request(tmp_path, _fused_mobileone(), **kw))
    assert not (tmp_path / "m.engine").exists()


@pytest.mark.skipif(_has_tensorrt(), reason="TensorRT is installed here")
def test_local_build_without_tensorrt_says_so(tmp_path):
    with pytest.raises(BackendUnavailable, match="TensorRT is not installed"):
        get_exporter("trt").export(_request(tmp_path, _fused_mobileone(), precision="fp16"))
    assert not (tmp_path / "m.engine").exists()


@pytest.mark.skipif(_has_tensorrt(), reason="TensorRT is installed here")
def test_parity_skips_without_tensorrt(tmp_path):
    from edgeseg.parity import open_runner
    from edgeseg.parity.job import parity_for_model

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0" * 16)
    with pytest.raises(BackendUnavailable, match="TensorRT is not installed"):
        open_runner(engine)
    summary = parity_for_model(_fused_mobileone(), [engine], samples=1, seed=0, bundled_images=False)
    entry = summary["artifacts"][0]
    assert entry["status"] == "skipped" and entry["reason"] == "TensorRT is not installed"


class _FakeSession:
    """Stands in for an SSH connection to a Jetson (the harness's SSHSession)."""

    instances: list = []

    def __init__(self, target, **kw):
        self.target, self.kw, self.puts = target, kw, []
        _FakeSession.instances.append(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def tempdir(self, base, prefix="x"):
        import contextlib

        return contextlib.nullcontext(f"{base}/{prefix}.XYZ")

    def put(self, local, remote):
        self.puts.append((str(local), remote))


def test_remote_jetson_build_orchestration(tmp_path, monkeypatch, segformer):
    """--device jetson-nano --host: opset 13 ONNX, fp16 plan, the harness's trtexec build;
    the engine lands with a manifest naming the device's TensorRT and GPU, and this machine
    refuses to run it."""
    import edgeseg.remote.ssh as ssh
    import edgeseg.exporters.tensorrt.remote as remote_trt

    calls = {}

    def fake_build(session, onnx_path, profile, precision, *, output, workspace_mib, timing_cache, extra_flags, overwrite, **kw):
        import onnx

        calls.update(opset=onnx.load(str(onnx_path)).opset_import[0].version, precision=precision, workspace=workspace_mib,
                     timing_cache=timing_cache, extra=extra_flags, profile=profile.name)
        Path(output).write_bytes(b"serialized-engine")
        return {"engine": str(output), "tensorrt": "8.2.1", "gpu": "NVIDIA Tegra X1", "compute_capability": "5.3",
                "build_s": 42.0, "command": "trtexec --onnx=... --fp16", "environment": {"nvpmodel": "MAXN"}}

    monkeypatch.setattr(ssh, "SSHSession", _FakeSession)
    monkeypatch.setattr(remote_trt, "build_engine_remote", fake_build)
    req = ExportRequest(model=segformer, output=tmp_path / "seg.engine", input_size=SIZE, precision="fp16",
                        profile=get_profile("jetson-nano"), options={"host": "nvidia@jetson:2222", "workspace": 512})
    res = get_exporter("trt").export(req)
    assert res.path.read_bytes() == b"serialized-engine" and res.manifest_path == tmp_path / "seg.engine.manifest.json"
    assert calls["opset"] == 13 and calls["precision"] == "fp16" and calls["workspace"] == 512 and calls["profile"] == "jetson-nano"
    assert calls["timing_cache"].endswith("timing-jetson-nano-trt8.2.1.cache")
    assert calls["extra"] == []  # no region overflows on these inputs, and TF32 is moot for fp16
    assert str(_FakeSession.instances[-1].target) == "nvidia@jetson:2222"
    section = json.loads(res.manifest_path.read_text())["tensorrt"]
    assert (section["tensorrt"], section["gpu"], section["compute_capability"]) == ("8.2.1", "NVIDIA Tegra X1", "5.3")
    assert section["flags"] == ["FP16"] and section["builder"] == "trtexec on nvidia@jetson:2222"
    assert section["inputs"][0]["opt"] == [1, 3, *SIZE]
    m = res.manifest
    assert m["opset"] == 13 and m["fp32_analysis"]["regions"] == 38 and m["fp32_analysis"]["fp32_regions"] == []
    with pytest.raises(EngineMismatch, match="compute capability 5.3"):
        check_compatible(read_engine_section(res.path), HERE, engine_sha256=section["engine_sha256"])


def test_remote_int8_needs_a_cache_made_for_this_graph(tmp_path, monkeypatch):
    import edgeseg.remote.ssh as ssh

    monkeypatch.setattr(ssh, "SSHSession", _FakeSession)
    model = _fused_mobileone()
    req = lambda **o: ExportRequest(model=model, output=tmp_path / "q.engine", input_size=SIZE, precision="int8",  # noqa: E731
                                    profile=get_profile("jetson-orin-nano"), options={"host": "me@orin", **o})
    with pytest.raises(EdgesegError, match="needs a calibration cache made here"):
        get_exporter("trt").export(req())
    stale = tmp_path / "old.cache"
    stale.write_bytes(b"TRT-100300-EntropyCalibration2\n")
    (tmp_path / "old.cache.json").write_text(json.dumps({"onnx_sha256": "0" * 64}))
    with pytest.raises(EdgesegError, match="not made for this ONNX graph"):
        get_exporter("trt").export(req(calib_cache=str(stale)))
    assert not (tmp_path / "q.engine").exists()


# ------------------------------------------------------------------ with TensorRT (skipped here)

@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_local_build_and_parity(tmp_path, precision):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (its wheels come from NVIDIA's index)")
    from edgeseg.parity.job import parity_for_model

    model = _fused_mobileone()
    cache = tmp_path / "timing.cache"
    res = get_exporter("trt").export(_request(tmp_path, model, precision=precision, options={"timing_cache": str(cache)}))
    section = res.manifest["tensorrt"]
    assert section["precision"] == precision and cache.is_file() and section["timing_cache"]["saved_bytes"] > 0
    summary = parity_for_model(model, [res.path], samples=2, seed=0)
    assert summary["artifacts"][0]["status"] == "passed", summary["artifacts"][0]["report"]


@pytest.mark.tensorrt
def test_local_int8_build_calibrates_then_reuses_the_cache(tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (its wheels come from NVIDIA's index)")
    model = _fused_mobileone()
    _images(tmp_path / "cal", 8, size=(80, 80))
    opts = {"calib_images": str(tmp_path / "cal"), "calib_cache": str(tmp_path / "c.cache")}
    first = get_exporter("trt").export(_request(tmp_path, model, precision="int8", options=opts))
    assert first.manifest["tensorrt"]["calibration"]["batches"] == 8 and not first.manifest["tensorrt"]["calibration"]["cache_reused"]
    second = get_exporter("trt").export(ExportRequest(model=model, output=tmp_path / "again.engine", input_size=SIZE,
                                                      precision="int8", options=opts))
    assert second.manifest["tensorrt"]["calibration"]["cache_reused"]
