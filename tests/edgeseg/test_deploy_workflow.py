"""The deploy workflow as a user lives it: device-driven export and names, one SSH option group,
Core ML findings, honest timings, CLI conventions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeseg.testing import make_checkpoint, run_cli

run = run_cli


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    p = tmp_path_factory.mktemp("wf") / "mobileone_s0.pth"
    make_checkpoint("mobileone_s0", p, seed=3)
    return p


# --- item 1: the device profile picks the target, names never collide ---------------------------------

def test_default_names_carry_device_target_precision_postprocess():
    from edgeseg.export_job import default_output

    c = Path("/x/fastvit_sa12.pth")
    names = {
        default_output(c, "a", "onnx", "fp16", device="jetson-nano").name,
        default_output(c, "a", "onnx", "fp16").name,
        default_output(c, "a", "onnx", "fp32").name,
        default_output(c, "a", "onnx", "fp32", postprocess="argmax").name,
        default_output(c, "a", "tensorrt", "fp16", device="jetson-nano").name,
        default_output(c, "a", "coreml", "fp16", device="iphone-12-pro").name,
    }
    assert names == {"fastvit_sa12.jetson-nano.fp16.onnx", "fastvit_sa12.onnx.fp16.onnx", "fastvit_sa12.onnx.fp32.onnx",
                     "fastvit_sa12.onnx.fp32.argmax.onnx", "fastvit_sa12.jetson-nano.fp16.engine",
                     "fastvit_sa12.iphone-12-pro.fp16.mlpackage"}
    assert default_output(Path("/x/m.deploy.safetensors"), "a", "onnx", "fp32").name == "m.onnx.fp32.onnx"


def test_profile_chooses_target_unless_overridden():
    from edgeseg.devices import get_profile
    from edgeseg.export_job import resolve_target

    assert resolve_target(None, None, get_profile("iphone-12-pro")) == "coreml"
    assert resolve_target(None, None, get_profile("jetson-nano")) == "tensorrt"
    assert resolve_target(None, None, get_profile("raspberry-pi-5")) == "onnx"
    assert resolve_target(None, "x.onnx", get_profile("jetson-nano")) == "onnx"  # -o's suffix says what to write
    assert resolve_target("onnx", None, get_profile("iphone-12-pro")) == "onnx"
    assert resolve_target("trt", None, None) == resolve_target("engine", None, None) == "tensorrt"


def test_refusals_that_need_no_model_come_before_loading(ckpt, tmp_path, capsys):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    code, _, err = run(["export", str(garbage), "--postprocess", "argmx"], capsys)
    assert code == 1 and "unknown --postprocess 'argmx'" in err
    code, _, err = run(["export", str(garbage), "--target", "engine"], capsys)
    assert code == 1 and "TensorRT is not installed here" in err and '.[trt]' in err
    code, _, err = run(["export", str(garbage), "--target", "coreml", "--precision", "int8"], capsys)
    assert code == 1 and "--precision int8 is not built for --target coreml" in err
    existing = tmp_path / "taken.onnx"
    existing.write_text("keep me")
    code, _, err = run(["export", str(garbage), "-o", str(existing)], capsys)
    assert code == 1 and "already exists" in err and existing.read_text() == "keep me"
    code, _, err = run(["export", str(ckpt), "--target", "tflite"], capsys)
    assert code == 1 and "unknown export target 'tflite'" in err


def test_several_devices_export_each_with_a_summary(ckpt, tmp_path, capsys):
    src = tmp_path / ckpt.name
    src.write_bytes(ckpt.read_bytes())
    code, out, err = run(["export", str(src), "--device", "raspberry-pi-5,rk3588", "-d", "raspberry-pi-5", "--no-parity"], capsys)
    assert code == 0, err
    assert (tmp_path / "mobileone_s0.raspberry-pi-5.fp32.onnx").is_file() and (tmp_path / "mobileone_s0.rk3588.fp32.onnx").is_file()
    assert "exports" in out and "raspberry-pi-5" in out and "rk3588" in out
    code, out, err = run(["export", str(src), "--device", "raspberry-pi-5", "--device", "rk3588", "--no-parity", "--json"], capsys)
    assert code == 1 and "2 of 2 exports failed" in err and "already exists" in err  # nothing replaced without --overwrite
    rows = json.loads(out)["exports"]
    assert [r["device_profile"] for r in rows] == ["raspberry-pi-5", "rk3588"]
    code, _, err = run(["export", str(src), "-d", "raspberry-pi-5", "-d", "rk3588", "-o", str(tmp_path / "one.onnx")], capsys)
    assert code == 1 and "several --device values" in err


# --- item 2: one SSH option group ------------------------------------------------------------------------

def _params(*path):
    import typer

    from edgeseg.cli import app

    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return {p.opts[0]: p for p in cmd.params}


def test_ssh_options_identical_on_every_command_reaching_a_device():
    export, bench = _params("export"), _params("bench")
    for opt in ("--host", "--identity", "--known-hosts", "--port"):
        assert opt in export and opt in bench
        assert export[opt].opts == bench[opt].opts and export[opt].help == bench[opt].help


def test_tensorrt_hints_match_the_readme():
    from edgeseg.exporters.tensorrt.build import INSTALL_HINT

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert '.[trt]' in INSTALL_HINT and 'pip install -c constraints.txt -e ".[trt]"' in readme
    assert "cuda-python" not in INSTALL_HINT.split("(")[0]


# --- item 5: Core ML findings are shown ------------------------------------------------------------------

def test_coreml_findings_printed_after_conversion():
    from rich.console import Console

    from edgeseg.cli.export import render_coreml_findings

    con = Console(record=True, width=200)
    s = {"target": "coreml", "spec": {"ane": [{"what": "tensors of rank > 4", "count": 10, "severity": "risk", "source": "ane-tr"},
                                              {"what": "gather op", "count": 2, "severity": "off-ane", "source": "x"}]},
         "fp16_preflight": {"predicted_gate": "fail: max_rel 3.1e-02 > 0.02", "max_rel": 0.031, "min_cosine": 0.9991,
                            "nonfinite": False, "overflow_modules": [{"module": "stages.3.mixer", "max_abs": 81234.0}]}}
    render_coreml_findings(con, s)
    text = con.export_text()
    assert "tensors of rank > 4: 10" in text and "off the ANE" in text and "gather op: 2" in text
    assert "fp16 preflight" in text and "fail: max_rel" in text and "stages.3.mixer" in text


# --- item 6: noise is flagged, incomparable runs are not gated ------------------------------------------

def _run(times, device="host-cpu", predicted=False, rid=None):
    from edgeseg.bench.result import BenchResult
    from edgeseg.stats import LatencyStats

    if predicted:
        return BenchResult(model="m", device=device, backend="predicted", input_size=(224, 224), precision="fp16", stats=None,
                           predicted=True, predicted_ms=times, id=rid)
    return BenchResult(model="m", device=device, backend="onnxruntime", input_size=(224, 224), precision="fp32",
                       stats=LatencyStats.from_times(times), times_ms=list(times), iterations=len(times), id=rid)


def test_noise_flags():
    from edgeseg.noise import noise_flags
    from edgeseg.stats import LatencyStats

    steady = LatencyStats.from_times([10.0 + 0.01 * (i % 5) for i in range(50)])
    assert noise_flags(steady) == []
    (one,) = noise_flags(LatencyStats.from_times([104.0]))
    assert "too few iterations (n=1" in one
    wild = LatencyStats.from_times([71.0] * 30 + [104.0] * 10 + [847.0] * 10)  # median ~ 71-104, std >> median
    flags = noise_flags(wild)
    assert any("coefficient of variation" in f for f in flags) and any("x the median" in f for f in flags)


def test_gate_refuses_measured_vs_predicted_and_across_devices():
    from edgeseg.bench.store import compare_results, regression_gate
    from edgeseg.errors import EdgesegError

    host = _run([10.0] * 20, rid=3)
    with pytest.raises(EdgesegError, match="run 4 is predicted by the latency model and run 3 is measured"):
        regression_gate(compare_results(host, _run(9.0, device="jetson-nano", predicted=True, rid=4)), 5)
    with pytest.raises(EdgesegError, match="different devices"):
        regression_gate(compare_results(host, _run([10.0] * 20, device="raspberry-pi-5", rid=5)), 5)
    comp = compare_results(host, _run([10.0] * 3, rid=6))
    assert any("run 6 (B) is noisy: too few iterations" in n for n in comp.notes)
    regression_gate(comp, 5)  # same device, both measured: gated (noise is noted, not hidden)


def test_predictions_carry_the_error_band():
    from edgeseg.bench.predict import error_band
    from edgeseg.devices import get_profile

    band = error_band(get_profile("iphone-12-pro"))
    assert band["error_pct"] == 53 and "published" in band["error_source"]
    assert error_band(get_profile("raspberry-pi-5"))["error_pct"] is None


def test_size_plot_only_from_comparable_runs(tmp_path):
    from edgeseg.bench.report import write_report

    a, b = _run([5.0] * 20, rid=1), _run([9.0] * 20, rid=2)
    b.input_size, b.threads = (448, 448), 4  # another size, but another thread count: not one series
    a.threads = 1
    skipped: dict = {}
    written = write_report([a, b], tmp_path, formats=["png"], skipped=skipped)
    assert "latency_vs_size" not in written and "same runtime, precision, threads" in skipped["latency_vs_size"]


# --- item 7: CLI conventions -----------------------------------------------------------------------------

def test_every_option_has_help_and_every_command_an_example():
    import typer

    from edgeseg.cli import app

    def walk(c, path):
        if hasattr(c, "commands"):
            for name, sub in c.commands.items():
                yield from walk(sub, path + [name])
        else:
            yield " ".join(path), c

    for name, cmd in walk(typer.main.get_command(app), []):
        undocumented = [p.opts[0] for p in cmd.params if type(p).__name__.endswith("Option") and not p.help]
        assert not undocumented, f"{name}: {undocumented}"
        assert cmd.epilog or "Example" in (cmd.help or ""), f"{name} has no example"


def test_same_concept_same_name_and_default():
    export, parity, bench, reparam = _params("export"), _params("parity"), _params("bench"), _params("reparam")
    assert export["--samples"].default == parity["--samples"].default == 2
    assert "-d" in export["--device"].opts and "-d" in bench["--device"].opts
    assert "--iterations" in reparam["--iterations"].opts and "--iterations" in bench["--iterations"].opts


def test_version_and_devices_json_list(capsys):
    from edgeseg import __version__

    code, out, _ = run(["--version"], capsys)
    assert code == 0 and out.strip() == f"edgeseg {__version__}"
    code, out, err = run(["devices", "--json", "list"], capsys)
    assert code == 0, err
    assert "jetson-nano" in [p["name"] for p in json.loads(out)["profiles"]]


def test_info_hint_on_a_missing_key_leads_somewhere(tmp_path, capsys):
    import torch

    p = tmp_path / "m.pth"
    make_checkpoint("mobileone_s0", p, seed=1)
    sd = torch.load(p, weights_only=True)
    sd = sd.get("state_dict", sd)
    del sd["stage0.rbr_conv.0.bn.running_var"]
    torch.save(sd, p)
    code, _, err = run(["info", str(p)], capsys)
    assert code == 1 and "1 missing" in err and "pass --arch to load it" not in err and "re-save the complete state_dict" in err
