"""Detection from keys and shapes, strict loading and its errors (MobileOne as the example family)."""

import pytest
import torch

import edgeseg
from edgeseg.checkpoint.detect import detect
from edgeseg.errors import CheckpointError, DetectionError
from edgeseg.testing import make_checkpoint


@pytest.mark.parametrize("variant", ["s0", "s1", "s2", "s3", "s4"])
def test_every_mobileone_variant_is_detected_unfused_and_fused(variant):
    name = f"mobileone_{variant}"
    with torch.device("meta"):
        model = edgeseg.create(name)
    det = detect(model.state_dict())
    assert (det.entry.name, det.fused, det.layout.name) == (name, False, "apple-ml-mobileone")
    fused, _ = edgeseg.reparameterize(model, verify=False)
    det = detect(fused.state_dict())
    assert (det.entry.name, det.fused) == (name, True)


def test_num_classes_is_read_from_the_head(tmp_path):
    ref = make_checkpoint("mobileone_s0", tmp_path / "m.pth", num_classes=10)
    model = edgeseg.load(tmp_path / "m.pth")
    assert model.edgeseg.cfg["num_classes"] == 10
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))


def test_load_matches_the_in_memory_model_and_deploy_round_trip(tmp_path):
    ref = make_checkpoint("mobileone_s1", tmp_path / "m.pth", seed=3)
    model = edgeseg.load(tmp_path / "m.pth")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))
    fused, result = edgeseg.reparameterize(model)
    assert result.equivalence.passed and result.equivalence.max_rel < 1e-4
    out = tmp_path / "m.deploy.safetensors"
    edgeseg.save_deploy(fused, out)
    again = edgeseg.load(out)
    assert again.edgeseg.fused and again.edgeseg.arch == "mobileone_s1"
    assert again.edgeseg.source_sha256 == model.edgeseg.source_sha256
    assert all(k.endswith(("reparam_conv.weight", "reparam_conv.bias")) or k.startswith("linear.") or ".se." in k for k in again.state_dict())
    with torch.no_grad():
        assert torch.equal(again(x), fused(x))


def test_missing_key_is_named_with_arch(tmp_path):
    with torch.device("meta"):
        sd = edgeseg.create("mobileone_s0").state_dict()
    sd.pop("stage2.3.rbr_conv.0.bn.weight")
    with pytest.raises(DetectionError, match=r"missing \(stage2\.3\.rbr_conv\.0\.bn\.weight\)"):
        detect(sd, arch="mobileone_s0")
    # without --arch the closest candidate is named with the same diff
    with pytest.raises(DetectionError, match=r"closest is mobileone_s0.*stage2\.3\.rbr_conv\.0\.bn\.weight"):
        detect(sd)


def test_shape_mismatch_is_named(tmp_path):
    with torch.device("meta"):
        sd = edgeseg.create("mobileone_s0").state_dict()
    sd["stage1.0.rbr_conv.0.conv.weight"] = torch.empty(48, 1, 5, 5, device="meta")
    with pytest.raises(DetectionError, match=r"stage1\.0\.rbr_conv\.0\.conv\.weight expected \[48, 1, 3, 3\] got \[48, 1, 5, 5\]"):
        detect(sd, arch="mobileone")


def test_unknown_layout_and_unknown_arch():
    with pytest.raises(DetectionError, match="unrecognised checkpoint layout.*known families"):
        detect({"encoder.layer.0.weight": torch.zeros(2, 2)})
    with pytest.raises(edgeseg.EdgesegError, match="unknown architecture 'mobileone_s9'.*did you mean"):
        detect({"x": torch.zeros(1)}, arch="mobileone_s9")


def custom_factory():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4))


def test_user_model_spec_goes_through_the_pipeline(tmp_path):
    from edgeseg.synthetic import randomize_weights_

    spec = f"{__name__}:custom_factory"
    ref = randomize_weights_(custom_factory().eval(), 1)
    torch.save(ref.state_dict(), tmp_path / "c.pth")
    model = edgeseg.load(tmp_path / "c.pth", arch=spec, input_size=(64, 64))
    fused, result = edgeseg.reparameterize(model)
    assert result.report.as_dict() == {"Conv2d+BatchNorm2d": 1}
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    edgeseg.save_deploy(fused, tmp_path / "c.safetensors")
    with pytest.raises(CheckpointError, match="names code to import"):  # the file may not choose code to run
        edgeseg.load(tmp_path / "c.safetensors")
    again = edgeseg.load(tmp_path / "c.safetensors", arch=spec)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again(x), ref(x), rtol=1e-5, atol=1e-5)
