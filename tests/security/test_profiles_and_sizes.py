"""Issue 9, case 7: device profiles are validated data (ranges, not just types); one malformed
user profile is a warning, not a broken tool; input sizes are bounded before allocation."""

import pytest

from edgeseg.testing import run_cli

BASE = """\
name: {name}
description: test board
runtime: onnxruntime
precisions: [fp32]
default_precision: fp32
ceilings:
  fp32: {{gflops: 10, gbps: 5, layer_overhead_us: 10{overhead}}}
{extra}
"""


@pytest.fixture()
def profiles(tmp_path, monkeypatch):
    d = tmp_path / "profiles"
    d.mkdir()
    monkeypatch.setenv("EDGESEG_PROFILES", str(d))
    return d


@pytest.mark.parametrize("extra, overhead, field", [
    ("export: {input_size: [0, -1]}", "", "export.input_size"),
    ("export: {opset_max: -5}", "", "export.opset_max"),
    ("export: {size_divisor: 0}", "", "export.size_divisor"),
    ("", ", runtime_overhead_us: {onnxruntime: -100}", "runtime_overhead_us"),
    ("", ", gflops: .nan", "fp32"),
])
def test_profile_ranges_are_validated(profiles, extra, overhead, field, capsys):
    f = profiles / "bad-board.yaml"
    f.write_text(BASE.format(name="bad-board", extra=extra, overhead=overhead))
    code, out, err = run_cli(["devices", "validate", str(f)], capsys)
    assert code == 1 and field in err, err


def test_malformed_user_profile_is_skipped_with_one_warning(profiles, capsys):
    (profiles / "broken.yaml").write_text("name: broken\n  bad: [indent\n")
    (profiles / "good-board.yaml").write_text(BASE.format(name="good-board", extra="", overhead=""))
    code, out, err = run_cli(["devices", "list", "--json"], capsys)
    assert code == 0, err
    assert "good-board" in out and "raspberry-pi-4" in out
    assert err.count("warning: skipped") == 1 and "broken.yaml" in err
    # the broken profile asked for by name: its own error, non-zero
    code, out, err = run_cli(["bench", "mobileone_s0", "--device", "broken", "--predict", "--no-store"], capsys)
    assert code == 1 and "broken.yaml" in err and "not valid YAML" in err, err


def test_host_bench_unaffected_by_a_broken_profile(profiles, capsys):
    (profiles / "broken.yaml").write_bytes(b"\xff\xfe not yaml")
    code, out, err = run_cli(["bench", "mobileone_s0", "--device", "raspberry-pi-4", "--predict", "--no-store",
                              "--input-size", "64"], capsys)
    assert code == 0, err
    assert "PREDICTED" in out or "predicted" in out


@pytest.mark.parametrize("cmd", [["export", "CKPT", "--no-parity", "-o", "OUT.onnx"],
                                 ["bench", "mobileone_s0", "--no-store", "-n", "1"]])
def test_huge_input_size_refused_before_allocating(cmd, tmp_path, capsys):
    from edgeseg.testing import make_checkpoint

    ck = tmp_path / "s0.pth"
    if "CKPT" in cmd:
        make_checkpoint("mobileone_s0", ck, seed=1)
    args = [str(ck) if a == "CKPT" else str(tmp_path / a) if a == "OUT.onnx" else a for a in cmd]
    code, out, err = run_cli([*args, "--input-size", "99999x99999"], capsys)
    assert code in (1, 2) and "--input-size" in err and "RuntimeError" not in err and "allocate" not in err, err
    assert "memory" in err
