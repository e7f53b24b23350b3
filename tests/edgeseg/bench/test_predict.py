"""The per-layer roofline latency model: exact FLOPs/bytes per layer, fusion, the roofline
arithmetic, and sanity on real architectures (MobileOne, FastViT)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeseg.bench.predict import estimate, trace_layers
from edgeseg.bench.predict import predict_model_latency as predict_latency
from edgeseg.devices import Ceiling, get_profile


class ConvReluConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.c2 = nn.Conv2d(8, 16, 1)

    def forward(self, x):
        return self.c2(self.act(self.c1(x)))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)

    def forward(self, x):
        return x + self.conv(x)


C1_FLOPS = 2 * 8 * 16 * 16 * 3 * 3 * 3
C1_ELEMS = 3 * 256 + 8 * 3 * 9 + 8 + 8 * 256
C2_FLOPS = 2 * 16 * 256 * 8
C2_ELEMS = 8 * 256 + 16 * 8 + 16 + 16 * 256


def test_trace_counts_flops_and_traffic_exactly_with_fusion():
    layers = trace_layers(ConvReluConv().eval(), (16, 16), fuse_pointwise=True)
    assert [(l.kind, l.name) for l in layers] == [("conv", "c1"), ("conv", "c2")]
    assert layers[0].fused == ["relu"]
    assert layers[0].flops == C1_FLOPS + 8 * 256  # the fused ReLU's one op per element
    assert layers[0].float_elems == C1_ELEMS  # fused: the activation costs no extra traffic
    assert layers[1].flops == C2_FLOPS and layers[1].float_elems == C2_ELEMS


def test_trace_without_fusion_runs_every_op_as_a_layer():
    layers = trace_layers(ConvReluConv().eval(), (16, 16), fuse_pointwise=False)
    assert [l.kind for l in layers] == ["conv", "pointwise", "conv"]
    assert layers[1].float_elems == 2 * 8 * 256 and layers[1].name == "act"


def test_residual_add_reads_its_second_operand():
    layers = trace_layers(Residual().eval(), (16, 16), channels=8, fuse_pointwise=True)
    assert len(layers) == 1 and layers[0].fused == ["add"]
    assert layers[0].float_elems == (8 * 256 + 8 * 8 * 9 + 8 * 256) + 8 * 256  # conv traffic + the skip input


def test_roofline_arithmetic():
    layers = trace_layers(ConvReluConv().eval(), (16, 16), fuse_pointwise=True)
    ceiling = Ceiling(gflops=1.0, gbps=0.1, layer_overhead_us=10.0)
    est = estimate(layers, ceiling, "fp32")
    c1 = est[0]
    assert c1.compute_ms == pytest.approx((C1_FLOPS + 2048) / 1e9 * 1e3)
    assert c1.memory_ms == pytest.approx(C1_ELEMS * 4 / 0.1e9 * 1e3)
    assert c1.ms == pytest.approx(max(c1.compute_ms, c1.memory_ms) + 0.01)
    assert c1.bound == "memory"  # 12 KB at 0.1 GB/s beats 0.11 MFLOP at 1 GFLOP/s
    fp16 = estimate(layers, ceiling, "fp16")
    assert fp16[0].memory_ms == pytest.approx(c1.memory_ms / 2)
    fast = estimate(layers, Ceiling(gflops=1.0, gbps=1000.0, layer_overhead_us=0.0), "fp32")
    assert fast[0].bound == "compute" and fast[0].ms == pytest.approx(fast[0].compute_ms)
    tiny = estimate(layers, Ceiling(gflops=1e6, gbps=1e6, layer_overhead_us=50.0), "fp32")
    assert all(e.bound == "overhead" for e in tiny)


def test_runtime_overhead_and_pytorch_is_unfused():
    from edgeseg.devices import DeviceProfile

    prof = DeviceProfile(name="t", description="t", runtime="onnxruntime", precisions=["fp32"], default_precision="fp32",
                         ceilings={"fp32": Ceiling(gflops=10, gbps=10, layer_overhead_us=1.0, runtime_overhead_us={"pytorch": 20.0})})
    m = ConvReluConv().eval()
    ort = predict_latency(m, prof, input_size=(16, 16))
    eager = predict_latency(m, prof, input_size=(16, 16), runtime="pytorch")
    assert ort.fuse_pointwise and not eager.fuse_pointwise
    assert ort.n_layers == 2 and eager.n_layers == 3
    assert ort.overhead_ms == pytest.approx(2 * 0.001) and eager.overhead_ms == pytest.approx(3 * 0.020)
    assert ort.label == "predicted"


def test_mobileone_fused_is_predicted_faster_than_unfused():
    import edgeseg

    model = edgeseg.create("mobileone_s0", pretrained_like=0)
    fused, _ = edgeseg.reparameterize(model, verify=False)
    nano = get_profile("jetson-nano")
    pf = predict_latency(fused, nano, input_size=(128, 128))
    pu = predict_latency(model, nano, input_size=(128, 128), fuse_pointwise=False)
    assert pf.n_layers < pu.n_layers and pf.total_ms < pu.total_ms
    # FLOPs of the fused trace match the model's own MAC count (2 FLOPs per MAC, + elementwise work)
    from edgeseg.analysis import count_macs

    assert pf.flops == pytest.approx(2 * count_macs(fused, (128, 128)), rel=0.02)
    # fp32 on the same device cannot be faster than fp16 (half the compute ceiling, same bandwidth)
    assert predict_latency(fused, nano, input_size=(128, 128), precision="fp32").total_ms > pf.total_ms


def _registered(name: str) -> bool:
    from edgeseg.registry import list_models

    return name in {e.name for e in list_models()}


@pytest.mark.skipif(not _registered("fastvit_t8"), reason="FastViT is not registered in this checkout")
def test_fastvit_variants_on_iphone_follow_their_cost():
    import edgeseg

    iphone = get_profile("iphone-12-pro")
    preds = {}
    for name in ("fastvit_t8", "fastvit_t12", "fastvit_sa12"):
        fused, _ = edgeseg.reparameterize(edgeseg.create(name), verify=False)
        p = predict_latency(fused, iphone, input_size=(128, 128))
        assert p.total_ms > 0 and p.n_layers > 10
        assert p.as_dict()["label"] == "predicted"
        preds[name] = p
    assert preds["fastvit_t8"].total_ms < preds["fastvit_t12"].total_ms < preds["fastvit_sa12"].total_ms
    assert preds["fastvit_t8"].flops < preds["fastvit_t12"].flops < preds["fastvit_sa12"].flops
    kinds = {l.kind for l in preds["fastvit_sa12"].layers}
    assert {"conv", "matmul"} <= kinds  # attention blocks are traced as matmuls


def test_predict_cpu_fallback_for_ops_without_meta_kernels(monkeypatch):
    calls = []

    class Odd(nn.Module):
        def forward(self, x):
            if x.device.type == "meta":
                raise NotImplementedError("no meta kernel")
            calls.append(x.device.type)
            return torch.relu(x) * 2

    layers = trace_layers(Odd(), (8, 8), fuse_pointwise=False)
    assert calls == ["cpu"] and [l.op for l in layers] == ["relu", "mul"]


def test_fit_ceiling_recovers_known_ceilings():
    from edgeseg.bench.predict import fit_ceiling

    models = [ConvReluConv().eval(), Residual().eval()]
    sizes = [(16, 16), (32, 32), (64, 64)]
    truth = Ceiling(gflops=5.0, gbps=2.0, layer_overhead_us=30.0)
    traces, measured = [], []
    for m, c in ((models[0], 3), (models[1], 8)):
        for s in sizes:
            layers = trace_layers(m, s, channels=c)
            traces.append(layers)
            measured.append(sum(e.ms for e in estimate(layers, truth, "fp32")))
    fit = fit_ceiling(traces, measured, "fp32", start=Ceiling(gflops=50.0, gbps=20.0, layer_overhead_us=3.0))
    fitted = [sum(e.ms for e in estimate(t, fit.ceiling, "fp32")) for t in traces]
    assert max(abs(a - b) / b for a, b in zip(fitted, measured)) < 0.05
    assert fit.mean_abs_rel_error < 0.05
