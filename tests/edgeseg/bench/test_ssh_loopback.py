"""The SSH device path for real: an OpenSSH server on 127.0.0.1 acting as an ARM board
(ONNX Runtime runner with this machine's Python), a Jetson (a trtexec stand-in) and a Mac
(a coremltools stand-in). Every failure must be one clear line and leave no remote debris."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeseg.remote.ssh import RemoteError, SSHSession, Timeouts
from edgeseg.errors import EdgesegError

pytestmark = pytest.mark.ssh

FAKES = Path(__file__).parent / "fakes"

ARM = """\
    name: loopback-arm
    description: this machine over SSH on loopback, acting as an ARM board
    runtime: onnxruntime
    precisions: [fp32]
    default_precision: fp32
    threads: 1
    ceilings: {fp32: {gflops: 10, gbps: 5}}
    access: {kind: ssh, python: "{PYTHON}", workdir: /tmp, connect_timeout_s: 10, transfer_timeout_s: 60, run_timeout_s: 120}
    """


def _empty(d: Path) -> bool:
    return d.is_dir() and not any(d.iterdir())


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text, text
    return text


def _processes_mentioning(fragment: str) -> list[str]:
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if fragment in cmd and "pytest" not in cmd:
                found.append(cmd)
    return found


def test_onnx_runtime_runner_end_to_end(sshd, write_profile, remote_workdir, tiny_onnx, tmp_path):
    import onnxruntime

    from edgeseg.bench.harness import bench_artifact
    from edgeseg.bench.store import ResultStore

    write_profile("loopback-arm", ARM)
    path, _ = tiny_onnx
    db = ResultStore(tmp_path / "runs.sqlite")
    out = bench_artifact(path, "loopback-arm", host=sshd.host, identity=sshd.identity, known_hosts=sshd.known_hosts,
                         remote_workdir=str(remote_workdir), iterations=7, warmup=2, store=db)
    (r,) = out.results
    assert r.backend == "onnxruntime" and not r.predicted
    assert r.iterations == 7 and len(r.times_ms) == 7 and r.stats.median_ms > 0
    assert r.warmup_iterations == 2 and r.load_ms > 0 and r.first_ms > 0
    assert r.runtime_version == onnxruntime.__version__
    assert r.host == f"{sshd.user}@127.0.0.1:{sshd.port}"
    assert r.input_size == (32, 32) and r.threads == 1
    assert r.environment["device_python_modules"]["onnxruntime"] == onnxruntime.__version__
    assert r.parity["status"] == "passed" and "onnxruntime" in r.parity["reference"]
    assert _empty(remote_workdir)
    stored = db.get(r.id)
    assert stored.times_ms == r.times_ms and stored.host == r.host


def test_checkpoint_target_is_exported_and_checked_against_pytorch(sshd, write_profile, remote_workdir):
    from edgeseg.bench.harness import bench_artifact

    write_profile("loopback-arm", ARM)
    out = bench_artifact("mobileone_s0", "loopback-arm", host=sshd.host, identity=sshd.identity, known_hosts=sshd.known_hosts,
                         remote_workdir=str(remote_workdir), iterations=3, warmup=1, input_size=(64, 64), store=False)
    (r,) = out.results
    assert r.parity["status"] == "passed", r.parity
    assert r.parity["reference"].startswith("pytorch")
    assert r.settings["onnx"].startswith("edgeseg export") or r.settings["onnx"].startswith("torch.onnx")
    assert _empty(remote_workdir)


def test_unreachable_host_is_one_clear_line(sshd, write_profile, tiny_onnx, remote_workdir):
    from edgeseg.bench.harness import bench_artifact

    write_profile("loopback-arm", ARM)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens once the socket is closed
    with pytest.raises(EdgesegError) as ei:
        bench_artifact(tiny_onnx[0], "loopback-arm", host=f"{sshd.user}@127.0.0.1:{closed}", identity=sshd.identity,
                       known_hosts=sshd.known_hosts, remote_workdir=str(remote_workdir), iterations=2, store=False)
    msg = _one_line(ei.value)
    assert "cannot reach" in msg and "connection refused" in msg
    assert _empty(remote_workdir)


def test_wrong_key_is_rejected(sshd):
    with pytest.raises(RemoteError) as ei:
        with SSHSession(sshd.host, identity=sshd.wrong_identity, known_hosts=sshd.known_hosts, timeouts=Timeouts(connect=10)):
            pass
    assert "key authentication" in _one_line(ei.value)


def test_unknown_host_key_is_rejected_never_added(sshd):
    before = sshd.empty_known_hosts.read_text()
    with pytest.raises(RemoteError) as ei:
        with SSHSession(sshd.host, identity=sshd.identity, known_hosts=sshd.empty_known_hosts, timeouts=Timeouts(connect=10)):
            pass
    msg = _one_line(ei.value)
    assert "is not in" in msg and "ssh-keyscan" in msg
    assert sshd.empty_known_hosts.read_text() == before  # RejectPolicy: nothing was added


def test_changed_host_key_is_rejected(sshd):
    with pytest.raises(RemoteError) as ei:
        with SSHSession(sshd.host, identity=sshd.identity, known_hosts=sshd.wrong_known_hosts, timeouts=Timeouts(connect=10)):
            pass
    assert "does not match" in _one_line(ei.value)


def test_missing_known_hosts_file(sshd, tmp_path):
    with pytest.raises(RemoteError) as ei:
        SSHSession(sshd.host, identity=sshd.identity, known_hosts=tmp_path / "nope").connect()
    assert "does not exist" in _one_line(ei.value)


def test_remote_timeout_kills_the_runner_and_cleans_up(sshd, write_profile, remote_workdir, tiny_onnx):
    from edgeseg.bench.harness import bench_artifact

    write_profile("loopback-arm", ARM)
    with pytest.raises(EdgesegError) as ei:
        bench_artifact(tiny_onnx[0], "loopback-arm", host=sshd.host, identity=sshd.identity, known_hosts=sshd.known_hosts,
                       remote_workdir=str(remote_workdir), iterations=10**8, warmup=0, timeout_s=4, parity=False, store=False)
    msg = _one_line(ei.value)
    assert "timed out after 4 s" in msg
    assert _empty(remote_workdir)
    assert not _processes_mentioning(str(remote_workdir))


def test_runner_crash_is_reported_and_cleaned_up(sshd, write_profile, remote_workdir, tmp_path):
    from edgeseg.exporters.onnx.remote import run_ort_remote

    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"this is not an ONNX model")
    with SSHSession(sshd.host, identity=sshd.identity, known_hosts=sshd.known_hosts) as session:
        with pytest.raises(RemoteError) as ei:
            run_ort_remote(session, bad, python=sys.executable, workdir=str(remote_workdir), iterations=2, shape=[1, 3, 8, 8])
    msg = _one_line(ei.value)
    assert "failed" in msg and "onnxruntime cannot load the model" in msg
    assert _empty(remote_workdir)


def test_device_without_onnxruntime_is_explained(sshd, remote_workdir, tiny_onnx):
    from edgeseg.exporters.onnx.remote import run_ort_remote

    system_python = "/usr/bin/python3"
    if not os.path.exists(system_python):
        pytest.skip("no system python3 without numpy to play a bare device")
    with SSHSession(sshd.host, identity=sshd.identity, known_hosts=sshd.known_hosts) as session:
        probe = session.run([system_python, "-c", "import numpy, onnxruntime"], step="probe", check=False)
        if probe.returncode == 0:
            pytest.skip("the system python has numpy and onnxruntime")
        with pytest.raises(RemoteError) as ei:
            run_ort_remote(session, tiny_onnx[0], python=system_python, workdir=str(remote_workdir), iterations=2)
    msg = _one_line(ei.value)
    assert "cannot import numpy, onnxruntime" in msg and "pip install" in msg
    assert _empty(remote_workdir)


def test_quoting_and_tempdir_cleanup_on_error(sshd, remote_workdir):
    tricky = "it's $HOME; `echo pwned` && \"quoted\""
    with SSHSession(sshd.host, identity=sshd.identity, known_hosts=sshd.known_hosts) as session:
        done = session.run(["printf", "%s", tricky], step="echo")
        assert done.stdout == tricky  # passed as one argument, never interpreted by the remote shell
        with pytest.raises(ValueError):
            with session.tempdir(str(remote_workdir)) as d:
                session.run(["touch", d + "/file with spaces"], step="touch")
                assert (Path(d) / "file with spaces").exists()
                raise ValueError("boom")
    assert _empty(remote_workdir)


# ---------------------------------------------------------------- Jetson (trtexec stand-in)

JETSON = """\
    name: loopback-jetson
    description: this machine over SSH, playing a Jetson Nano with a trtexec stand-in
    runtime: tensorrt
    precisions: [fp32, fp16]
    default_precision: fp16
    export: {opset_max: 13, opset_default: 13, avoid_ops: [LayerNormalization], static_shapes: true}
    software: {tensorrt: "8.2.1", trtexec: "{TRTEXEC}"}
    ceilings: {fp16: {gflops: 472, gbps: 25.6, layer_overhead_us: 25}, fp32: {gflops: 236, gbps: 25.6}}
    access: {kind: ssh, python: python3, workdir: /tmp, connect_timeout_s: 10, run_timeout_s: 120}
    """


def _fake_trtexec(tmp_path: Path) -> Path:
    exe = tmp_path / "trtexec"
    exe.write_text(f"#!{sys.executable}\n" + (FAKES / "fake_trtexec.py").read_text())
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def test_trtexec_path_end_to_end_with_parity(sshd, write_profile, remote_workdir, tiny_onnx, tmp_path):
    from edgeseg.bench.harness import bench_artifact

    write_profile("loopback-jetson", JETSON.replace("{TRTEXEC}", str(_fake_trtexec(tmp_path))))
    out = bench_artifact(tiny_onnx[0], "loopback-jetson", host=sshd.host, identity=sshd.identity, known_hosts=sshd.known_hosts,
                         remote_workdir=str(remote_workdir), iterations=20, store=False)
    (r,) = out.results
    assert r.backend == "tensorrt" and r.precision == "fp16"
    # statistics come from the raw --exportTimes trace (warm-ups dropped), not from the printed summary (99 ms)
    expected = [0.30 + 2.0 + 0.01 * i for i in range(3, 23)]
    assert r.times_ms == pytest.approx(expected)
    assert r.stats.median_ms == pytest.approx(float(np.median(expected)))
    assert r.warmup_iterations == 3 and r.runtime_version == "8.2.1"
    assert r.compile_ms == pytest.approx(8250.0) and r.load_ms == pytest.approx(57.9)
    assert r.extra["gpu"] == "NVIDIA Tegra X1" and r.extra["compute_capability"] == "5.3"
    assert "--buildOnly" in r.extra["commands"][0] and "--fp16" in r.extra["commands"][0]
    assert "--loadInputs=input:" in r.extra["commands"][1]
    assert r.parity["status"] == "passed", r.parity
    assert _empty(remote_workdir)


def test_trtexec_failure_is_reported(sshd, write_profile, remote_workdir, tiny_onnx, tmp_path):
    from edgeseg.bench.harness import bench_artifact

    write_profile("loopback-jetson", JETSON.replace("{TRTEXEC}", str(_fake_trtexec(tmp_path))))
    import onnx

    m = onnx.load(str(tiny_onnx[0]))
    m.doc_string = "FAIL_ME"  # the stand-in fails to parse this one, as TRT 8.2 fails on unsupported ops
    bad = tmp_path / "unparsable.onnx"
    onnx.save(m, str(bad))
    with pytest.raises(EdgesegError) as ei:
        bench_artifact(bad, "loopback-jetson", host=sshd.host, identity=sshd.identity, known_hosts=sshd.known_hosts,
                       remote_workdir=str(remote_workdir), iterations=5, store=False)
    msg = _one_line(ei.value)
    assert "engine build failed" in msg and "LayerNormalization" in msg
    assert _empty(remote_workdir)


def test_remote_engine_build_fetches_the_engine(sshd, write_profile, remote_workdir, tiny_onnx, tmp_path):
    from edgeseg.exporters.tensorrt.remote import build_engine_remote
    from edgeseg.devices import get_profile

    write_profile("loopback-jetson", JETSON.replace("{TRTEXEC}", str(_fake_trtexec(tmp_path))))
    profile = get_profile("loopback-jetson")
    out = tmp_path / "tiny.engine"
    with SSHSession(sshd.host, identity=sshd.identity, known_hosts=sshd.known_hosts) as session:
        manifest = build_engine_remote(session, tiny_onnx[0], profile, "fp16", output=out, workdir=str(remote_workdir))
        with pytest.raises(EdgesegError):  # an existing engine is never clobbered without overwrite
            build_engine_remote(session, tiny_onnx[0], profile, "fp16", output=out, workdir=str(remote_workdir))
    assert out.read_bytes() == tiny_onnx[0].read_bytes()  # the stand-in's "engine" is the ONNX copy
    assert manifest["tensorrt"] == "8.2.1" and manifest["compute_capability"] == "5.3" and manifest["build_s"] == 8.25
    assert "--buildOnly" in manifest["command"]
    assert _empty(remote_workdir)


# ---------------------------------------------------------------- Mac (coremltools stand-in)

def _fake_mac_python(tmp_path: Path) -> str:
    site = tmp_path / "fake-site"
    shutil.copytree(FAKES / "coremltools", site / "coremltools")
    wrapper = tmp_path / "mac-python"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={site} exec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    return str(wrapper)


def _fake_mlpackage(tmp_path: Path, broken: bool = False) -> Path:
    import json

    pkg = tmp_path / "tiny.mlpackage"
    (pkg / "Data" / "com.apple.CoreML").mkdir(parents=True)
    (pkg / "Data" / "com.apple.CoreML" / "model.mlmodel").write_bytes(b"\0" * 64)
    (pkg / "fake_spec.json").write_text(json.dumps({"input": "image", "shape": [1, 3, 16, 16], "broken": broken}))
    return pkg


def test_coreml_runner_over_ssh(sshd, remote_workdir, tmp_path):
    from edgeseg.exporters.coreml.remote import run_coreml_remote

    python = _fake_mac_python(tmp_path)
    with SSHSession(sshd.host, identity=sshd.identity, known_hosts=sshd.known_hosts) as session:
        m = run_coreml_remote(session, _fake_mlpackage(tmp_path), python=python, workdir=str(remote_workdir), warmup=2,
                              iterations=6, require_macos=False)
        assert len(m.times_ms) == 6 and m.first_ms is not None and m.load_ms is not None
        assert m.extra["runtime_version"] == "9.0-fake" and m.extra["compute_units"] == "ALL"
        with pytest.raises(RemoteError) as ei:
            run_coreml_remote(session, _fake_mlpackage(tmp_path / "b", broken=True), python=python,
                              workdir=str(remote_workdir), iterations=2, require_macos=False)
    assert "Core ML cannot load the model" in _one_line(ei.value)
    assert _empty(remote_workdir)


def test_coreml_refuses_a_host_that_is_not_macos(sshd, remote_workdir, tmp_path):
    from edgeseg.exporters.coreml.remote import run_coreml_remote

    with SSHSession(sshd.host, identity=sshd.identity, known_hosts=sshd.known_hosts) as session:
        with pytest.raises(RemoteError) as ei:
            run_coreml_remote(session, _fake_mlpackage(tmp_path), workdir=str(remote_workdir), iterations=2)
    assert "not macOS" in _one_line(ei.value)
    assert _empty(remote_workdir)


def test_iphone_bench_through_a_host_that_is_not_a_mac(sshd, remote_workdir, tmp_path):
    from edgeseg.bench.harness import bench_artifact

    with pytest.raises(EdgesegError) as ei:
        bench_artifact(_fake_mlpackage(tmp_path), "iphone-12-pro", host=sshd.host, identity=sshd.identity,
                       known_hosts=sshd.known_hosts, remote_workdir=str(remote_workdir), input_size=(16, 16), store=False)
    assert "not macOS" in _one_line(ei.value) and "--host user@your-mac" in str(ei.value)
    assert _empty(remote_workdir)
