"""Issue 9, cases 1, 2 and 7: a checkpoint (file, HF directory, its JSON) never names code to run,
never makes edgeseg read outside its folder, and bad forms are one clear line."""

import json
import os

import pytest
import torch
from safetensors.torch import save_file

import edgeseg
from edgeseg.errors import CheckpointError, EdgesegError
from edgeseg.testing import make_checkpoint, run_cli


@pytest.fixture()
def evil(tmp_path):
    """The attack as reported: metadata naming `os:system` with a shell command as cfg."""
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.safetensors"
    save_file({"w": torch.zeros(2)}, str(path),
              metadata={"edgeseg.arch": "os:system", "edgeseg.cfg": json.dumps({"command": f"touch {marker}"})})
    return path, marker


@pytest.mark.parametrize("cmd", [["info"], ["reparam", "--latency-iterations", "0"], ["export", "--no-parity"],
                                 ["bench", "-n", "1", "--no-store"], ["parity", "SELF"]])
def test_metadata_cannot_name_code_to_run(evil, cmd, capsys, tmp_path):
    path, marker = evil
    args = [cmd[0], str(path), *[str(path) if a == "SELF" else a for a in cmd[1:]]]
    if cmd[0] in ("reparam", "export"):
        args += ["-o", str(tmp_path / ("o.safetensors" if cmd[0] == "reparam" else "o.onnx"))]
    code, out, err = run_cli(args, capsys)
    assert not marker.exists(), "a file's metadata ran a command"
    assert code != 0
    assert "names code to import" in err and "--arch module:factory" in err, err
    assert "Error:" not in err and "Traceback" not in err


def test_api_load_refuses_code_named_by_metadata(evil):
    path, marker = evil
    with pytest.raises(CheckpointError, match="names code to import"):
        edgeseg.load(path)
    assert not marker.exists()


def test_metadata_cfg_only_declared_typed_fields(tmp_path):
    src = tmp_path / "m.pth"
    model = make_checkpoint("mobileone_s0", src, seed=1)
    fused, _ = edgeseg.reparameterize(model, verify=False)
    deploy = tmp_path / "m.deploy.safetensors"
    edgeseg.save_deploy(fused, deploy)
    assert edgeseg.load(deploy).edgeseg.arch == "mobileone_s0"  # the honest file loads
    from safetensors import safe_open

    with safe_open(str(deploy), "pt") as f:
        meta, sd = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    for cfg, message in (({"num_classes": 1000, "command": "touch x"}, "does not declare"),
                         ({"num_classes": "many"}, "invalid value"),
                         ([1, 2], "must be a JSON object")):
        bad = tmp_path / "bad.safetensors"
        save_file(sd, str(bad), metadata={**meta, "edgeseg.cfg": json.dumps(cfg)})
        with pytest.raises(CheckpointError, match=message):
            edgeseg.load(bad)
    save_file(sd, str(bad), metadata={**meta, "edgeseg.arch": "not_a_model"})
    with pytest.raises(EdgesegError, match="unknown architecture"):
        edgeseg.load(bad)


def test_user_module_factory_is_still_allowed(tmp_path, monkeypatch):
    """`module:factory` from the caller's own argument imports that module (documented)."""
    (tmp_path / "mymodels_i9.py").write_text(
        "import torch\nfrom torch import nn\n"
        "def tiny(width: int = 4):\n    return nn.Sequential(nn.Conv2d(3, width, 3), nn.ReLU())\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ck = tmp_path / "tiny.pth"
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).state_dict(), ck)
    m = edgeseg.load(ck, arch="mymodels_i9:tiny", input_size=(32, 32))
    assert m.edgeseg.family == "custom"


# ---------------------------------------------------------------- case 2: HF index paths

def _hf_dir(tmp_path):
    d = tmp_path / "hf"
    make_checkpoint("segformer_b0", d, layout="huggingface", seed=2)
    return d


@pytest.mark.parametrize("target", ["../other/model.safetensors", "/etc/passwd", "link.safetensors"])
def test_hf_index_paths_stay_inside_the_directory(tmp_path, target):
    d = _hf_dir(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    os.replace(d / "model.safetensors", other / "model.safetensors")
    (d / "link.safetensors").symlink_to(other / "model.safetensors")
    from safetensors import safe_open

    with safe_open(str(other / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {k: target for k in keys}}))
    with pytest.raises(CheckpointError, match="outside"):
        edgeseg.load(d)


def test_hf_sha256_covers_every_loaded_byte(tmp_path):
    d = _hf_dir(tmp_path)
    before = edgeseg.load(d).edgeseg.source_sha256
    (d / "README.md").write_text("not loaded")  # a file edgeseg does not read leaves the hash alone
    assert edgeseg.load(d).edgeseg.source_sha256 == before
    cfg = json.loads((d / "config.json").read_text())
    cfg["id2label"] = {str(i): f"c{i}" for i in range(150)}  # loaded bytes change the hash
    (d / "config.json").write_text(json.dumps(cfg))
    assert edgeseg.load(d).edgeseg.source_sha256 != before


# ---------------------------------------------------------------- case 7: malformed config.json

@pytest.mark.parametrize("content", [b"[1, 2]", b'"a string"', b"\xff\xfe\x00garbage", b"[" * 100000 + b"]" * 100000,
                                     b"{not json"])
def test_malformed_config_json_is_one_line(tmp_path, content, capsys):
    d = _hf_dir(tmp_path)
    (d / "config.json").write_bytes(content)
    code, out, err = run_cli(["info", str(d)], capsys)
    assert code == 1
    lines = [l for l in err.strip().splitlines() if not l.startswith(">> ")]  # progress lines are not errors
    assert len(lines) == 1 and lines[0].startswith("error: ") and "config.json" in lines[0], err
    for raw in ("AttributeError", "UnicodeDecodeError", "RecursionError", "JSONDecodeError"):
        assert raw not in err


def test_legacy_pickle_with_code_names_what_was_refused(tmp_path):
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "PWNED"),))

    p = tmp_path / "legacy.pth"
    with open(p, "wb") as f:
        pickle.dump({"state_dict": Payload()}, f, protocol=2)
    with pytest.raises(CheckpointError) as info:
        edgeseg.load(p)
    assert "system" in str(info.value) and "never unpickles" in str(info.value)
    assert not (tmp_path / "PWNED").exists()


def test_nan_weights_named_before_fusion(tmp_path, capsys):
    sd = edgeseg.create("mobileone_s0", pretrained_like=3).state_dict()
    key = next(k for k in sd if k.endswith("rbr_conv.0.bn.weight"))
    sd[key][0] = float("nan")
    inf_key = "linear.bias"
    sd[inf_key][1] = float("inf")
    p = tmp_path / "nan.pth"
    torch.save({"state_dict": sd}, p)
    code, out, err = run_cli(["reparam", str(p), "-o", str(tmp_path / "o.safetensors"), "--latency-iterations", "0"], capsys)
    assert code == 1
    assert "NaN" in err and key in err and inf_key in err and "fused model differs" not in err, err


def test_manifest_cannot_name_code_to_run(tmp_path, capsys):
    """The same attack through an artifact's manifest: `bench --predict` rebuilds the model from it."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 32, 32])])
    art = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(art))
    marker = tmp_path / "PWNED"
    (tmp_path / "m.onnx.manifest.json").write_text(json.dumps(
        {"arch": "os:system", "cfg": {"command": f"touch {marker}"}, "input_size": [32, 32]}))
    code, out, err = run_cli(["bench", str(art), "--device", "raspberry-pi-4", "--predict", "--no-store"], capsys)
    assert not marker.exists()
    assert code == 1 and "names code to import" in err, err
