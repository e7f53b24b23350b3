"""SSH pieces that need no server: target parsing, runner protocol validation."""

from __future__ import annotations

import json

import pytest

from edgeseg.remote.common import measurement_from_runner
from edgeseg.remote.ssh import Completed, RemoteError, SSHTarget
from edgeseg.errors import EdgesegError


@pytest.mark.parametrize("spec,host,user,port", [
    ("pi@10.0.0.7", "10.0.0.7", "pi", 22),
    ("pi@10.0.0.7:2222", "10.0.0.7", "pi", 2222),
    ("jetson.local", "jetson.local", None, 22),
    ("me@[::1]:2200", "::1", "me", 2200),
    ("me@[fe80::1]", "fe80::1", "me", 22),
])
def test_target_parse(spec, host, user, port):
    t = SSHTarget.parse(spec)
    assert (t.host, t.user, t.port) == (host, user, port)
    assert SSHTarget.parse(str(t)) == t


def test_target_port_option_and_errors():
    assert SSHTarget.parse("pi@host", port=2022).port == 2022
    for bad in ("", "pi@", "@host", "pi@host:abc", "pi@ho st"):
        with pytest.raises(EdgesegError):
            SSHTarget.parse(bad)


def test_runner_error_line_is_picked():
    c = Completed(["x"], 2, "", "Traceback...\nedgeseg-runner-error: onnxruntime cannot load the model: bad\n", 0.1)
    assert c.last_error_line() == "onnxruntime cannot load the model: bad"
    assert Completed(["x"], 1, "", "plain failure\n", 0.1).last_error_line() == "plain failure"
    assert "no output" in Completed(["x"], 9, "", "", 0.1).last_error_line()


def test_runner_result_validation():
    good = json.dumps({"runner": "onnxruntime", "times_ms": [1.0, 2.0], "load_ms": 3.0, "first_ms": 4.0, "warmup_iterations": 1})
    m = measurement_from_runner(good, 2, "r")
    assert m.times_ms == [1.0, 2.0] and m.load_ms == 3.0 and m.first_ms == 4.0 and m.extra["runner"] == "onnxruntime"
    for bad in ("{", json.dumps({"times_ms": [1.0]}), json.dumps({"times_ms": [1.0, -1.0]}), json.dumps({"times_ms": [1.0, "x"]})):
        with pytest.raises(RemoteError):
            measurement_from_runner(bad, 2, "r")


def test_ort_runner_runs_locally(tmp_path, tiny_onnx):
    """The device script itself, run with this Python: JSON result and outputs."""
    import subprocess
    import sys

    import numpy as np

    from edgeseg.exporters.onnx.remote import DEVICE_RUNNER

    path, _ = tiny_onnx
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "in.npy", x)
    out = tmp_path / "res.json"
    r = subprocess.run([sys.executable, str(DEVICE_RUNNER), "--model", str(path), "--out", str(out),
                        "--warmup", "50ms", "--iterations", "4", "--threads", "1", "--input", str(tmp_path / "in.npy"),
                        "--save-outputs", str(tmp_path / "o.npz")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert len(data["times_ms"]) == 4 and data["input_shape"] == [1, 3, 32, 32] and data["warmup_iterations"] >= 1
    import onnxruntime as ort

    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    with np.load(tmp_path / "o.npz") as z:
        np.testing.assert_allclose(z["out0"], ref, rtol=1e-5, atol=1e-6)
    bad = subprocess.run([sys.executable, str(DEVICE_RUNNER), "--model", str(tmp_path / "none.onnx"), "--out",
                          str(out)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("edgeseg-runner-error: model file")
