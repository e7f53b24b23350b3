"""CLI behaviour of the foundation commands: outputs, JSON, one-line errors, no clobbering."""

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from edgeseg.testing import make_checkpoint, run_cli


run = run_cli  # (exit code, stdout, stderr)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    p = tmp_path_factory.mktemp("ck") / "mobileone_s0.pth"
    make_checkpoint("mobileone_s0", p, seed=5)
    return p


def test_help_is_fast_and_imports_no_torch():
    code = "import sys, edgeseg.cli; sys.exit(int(any(m in sys.modules for m in ('torch', 'onnx', 'coremltools'))))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    r = subprocess.run([sys.executable, "-m", "edgeseg", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "reparam" in r.stdout


def test_reparam_writes_verified_deploy_file(ckpt, tmp_path, capsys):
    out = tmp_path / "d.safetensors"
    code, stdout, err = run(["reparam", str(ckpt), "-o", str(out), "--json", "--latency-iterations", "2"], capsys)
    assert code == 0, err
    s = json.loads(stdout)
    assert s["arch"] == "mobileone_s0" and s["fused_blocks"] == {"MobileOneBlock": 43}
    assert s["equivalence"]["passed"] and s["equivalence"]["max_rel"] < 1e-4
    assert [r["input_size"] for r in s["equivalence"]["sizes"]] == [[224, 224], [192, 256]]
    assert s["params"]["after"] < s["params"]["before"]
    assert out.is_file() and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    code, stdout, _ = run(["info", str(out), "--json"], capsys)
    info = json.loads(stdout)
    assert code == 0 and info["reparameterized"] and info["arch"] == "mobileone_s0" and info["format"] == "safetensors"


def test_existing_output_is_not_clobbered(ckpt, tmp_path, capsys):
    out = tmp_path / "keep.safetensors"
    out.write_bytes(b"precious")
    code, _, err = run(["reparam", str(ckpt), "-o", str(out)], capsys)
    assert code == 1 and err.count("\n") == 1 and "already exists" in err and "--overwrite" in err
    assert out.read_bytes() == b"precious"


def test_missing_output_directory(ckpt, tmp_path, capsys):
    code, _, err = run(["reparam", str(ckpt), "-o", str(tmp_path / "no" / "x.safetensors")], capsys)
    assert code == 1 and "does not exist" in err and "Traceback" not in err
    assert not (tmp_path / "no").exists()


def test_bad_inputs_give_one_line(tmp_path, capsys):
    bad = tmp_path / "notes.pth"
    bad.write_text("not a checkpoint")
    for args, needle in [
        (["info", str(bad)], "not a PyTorch checkpoint"),
        (["info", str(tmp_path / "missing.pth")], "does not exist"),
        (["reparam", str(bad), "--arch", "fastvit_zz"], ""),
        (["reparam", str(bad), "--input-size", "12xq"], "invalid input size"),
    ]:
        code, _, err = run(args, capsys)
        assert code != 0 and err.strip().count("\n") == 0 and err.startswith("error:") and needle in err, err
        assert "Traceback" not in err


def test_debug_shows_the_traceback(tmp_path):
    bad = tmp_path / "x.pth"
    bad.write_text("nope")
    r = subprocess.run([sys.executable, "-m", "edgeseg", "--debug", "info", str(bad)], capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" in r.stderr


class _WrongFusion(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return self.a(x) + (self.b(x) if isinstance(self.b, nn.Conv2d) else 0)

    def switch_to_deploy(self):
        self.b = nn.Identity()  # forgets to merge the branch: must be caught


def wrong_factory():
    return nn.Sequential(nn.Conv2d(3, 3, 1), _WrongFusion(), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def test_failed_equivalence_exits_3_and_writes_nothing(tmp_path, capsys):
    torch.save(wrong_factory().state_dict(), tmp_path / "w.pth")
    out = tmp_path / "w.safetensors"
    spec = f"{__name__}:wrong_factory"
    code, _, err = run(["reparam", str(tmp_path / "w.pth"), "--arch", spec, "--input-size", "32", "-o", str(out)], capsys)
    assert code == 3 and "differs from the original" in err and "seed" in err
    assert not out.exists()


def test_models_table_json(capsys):
    code, stdout, _ = run(["models", "--family", "mobileone", "--json"], capsys)
    rows = {r["name"]: r for r in json.loads(stdout)["models"]}
    assert code == 0 and set(rows) == {f"mobileone_s{i}" for i in range(5)}
    s0 = rows["mobileone_s0"]
    # MobileOne paper: S0 2.1M params and 275M MACs after fusion
    assert abs(s0["params_fused"] - 2.1e6) / 2.1e6 < 0.02 and abs(s0["macs_fused"] - 275e6) / 275e6 < 0.02
    assert s0["reparam_blocks"] == {"MobileOneBlock": 43}


def test_demo_runs_end_to_end(tmp_path, capsys):
    code, stdout, err = run(["demo", "--model", "mobileone_s0", "--workdir", str(tmp_path / "demo"), "--iterations", "2", "--json"], capsys)
    assert code == 0, err
    res = json.loads(stdout)
    assert res["reparam"]["equivalence"]["passed"]
    assert os.path.exists(res["reparam"]["output"])
    assert os.path.exists(res["export"]["output"]) and res["export"]["parity"]["status"] == "passed"
    backends = {r["backend"] for r in res["bench"]["results"]}
    assert backends == {"pytorch-unfused", "pytorch", "onnxruntime"}
    for device in ("jetson-nano", "iphone-12-pro"):
        (pred,) = res["predicted"][device]["results"]
        assert pred["median_ms"] > 0 and pred["device"] == device
