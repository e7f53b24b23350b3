"""The ARM device path on a real aarch64 userland: `edgeseg bench` through the CLI against the
qemu-user arm64 stand-in (its own sshd, aarch64 onnxruntime). Outputs computed on aarch64 must pass
the parity thresholds of their precision, against PyTorch and against the host's x86 onnxruntime;
failures on the device must be one clear line and leave nothing behind on it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edgeseg.testing import make_checkpoint, run_cli

pytestmark = pytest.mark.arm

SEED = 14
STANDIN = Path(__file__).with_name("standin.py")


def _debris(dev) -> list[str]:
    """What runs left in this session's work area on the device (there must be nothing after any run)."""
    return sorted(p.name for p in dev.host_path(dev.workdir).iterdir())


def _bench(capsys, dev, target, device: str, *extra: str) -> tuple[int, dict | None, str]:
    args = ["bench", str(target), "-d", device, "--host", dev.host, "-i", str(dev.identity), "--known-hosts",
            str(dev.known_hosts), "--remote-workdir", dev.workdir, "--warmup", "1", "-n", "2", "--threads", "1", "--json", *extra]
    code, out, err = run_cli(args, capsys)
    data = json.loads(out) if code == 0 else None
    return code, data, err


def _no_new_debris(dev, before: list[str]) -> bool:
    """Nothing this test's runs created is left in the session's work area on the device."""
    left = set(_debris(dev)) - set(before)
    assert not left, f"left on the device: {sorted(left)}"
    return True


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def _max_err(parity: dict) -> str:
    """Largest error over the outputs: relative to the output's scale, and absolute."""
    rel = max(o["metrics"]["max_rel"] for o in parity["outputs"])
    abs_ = max(o["metrics"]["max_abs"] for o in parity["outputs"])
    return f"{rel:.1e} (abs {abs_:.1e})"


def _check_device_run(r: dict, build, precision: str) -> None:
    assert r["label"] == "emulated" and r["environment"]["emulated"].startswith("qemu-user aarch64")
    assert r["environment"]["machine"] == "aarch64"
    assert r["runtime_version"] == build.recipe.onnxruntime
    assert r["environment"]["device_python_modules"]["onnxruntime"] == build.recipe.onnxruntime
    assert r["precision"] == precision and r["iterations"] == 2
    assert r["parity"]["status"] == "passed", r["parity"]


def _model_on_arm(name: str, device: str, size: str, tmp_path, capsys, dev, build, findings) -> None:
    before = _debris(dev)
    ckpt = tmp_path / f"{name}.pth"
    make_checkpoint(name, ckpt, seed=SEED)
    onnx = tmp_path / f"{name}.onnx"
    code, out, err = run_cli(["export", str(ckpt), "-o", str(onnx), "--input-size", size, "--seed", "1"], capsys)
    assert code == 0, err
    db = tmp_path / "runs.sqlite"

    t0 = time.monotonic()
    code, data, err = _bench(capsys, dev, ckpt, device, "--input-size", size, "--db", str(db))
    assert code == 0, err
    (vs_torch,) = data["results"]
    _check_device_run(vs_torch, build, "fp32")
    assert vs_torch["parity"]["reference"] == "pytorch (fused, host)"
    t1 = time.monotonic()
    code, data, err = _bench(capsys, dev, onnx, device, "--db", str(db))
    assert code == 0, err
    (vs_x86,) = data["results"]
    _check_device_run(vs_x86, build, "fp32")
    assert vs_x86["parity"]["reference"] == "onnxruntime (same ONNX, host)"
    findings.append(f"{name} fp32 {size} on {device}: aarch64 vs PyTorch max err/scale {_max_err(vs_torch['parity'])}, "
                    f"vs x86 onnxruntime {_max_err(vs_x86['parity'])} (benches {t1 - t0:.0f} s + {time.monotonic() - t1:.0f} s)")
    assert _no_new_debris(dev, before)

    # stored as emulated: never compared with a board's timings
    code, out, err = run_cli(["results", "compare", str(vs_torch["id"]), str(vs_x86["id"]), "--db", str(db)], capsys)
    assert code != 0 and "emulated device" in _one_error_line(err)


def test_classifier_on_aarch64(arm_device, arm_build, arm_findings, tmp_path, capsys):
    _model_on_arm("mobileone_s0", "raspberry-pi-4", "32x32", tmp_path, capsys, arm_device, arm_build, arm_findings)


def test_segmenter_on_aarch64(arm_device, arm_build, arm_findings, tmp_path, capsys):
    _model_on_arm("segformer_b0", "rk3588", "32x32", tmp_path, capsys, arm_device, arm_build, arm_findings)


def test_int8_artifact_on_aarch64(arm_device, arm_build, arm_findings, tmp_path, capsys):
    """ARM's int8 kernels are not x86's: the int8 thresholds must hold on aarch64 too. FastViT-T8,
    whose int8 export passes the int8 parity gate on x86 (MobileOne's reparameterized convs do not
    with synthetic weights: see test_onnx_int8), exported for the Pi's profile (QDQ, 8-bit
    weights); --force because the host's int8 speed at 64x64 says nothing about the board."""
    ckpt = tmp_path / "fastvit_t8.pth"
    make_checkpoint("fastvit_t8", ckpt, seed=SEED)
    onnx = tmp_path / "fastvit_t8.int8.onnx"
    code, out, err = run_cli(["export", str(ckpt), "-d", "raspberry-pi-4", "--precision", "int8", "-o", str(onnx),
                              "--input-size", "64x64", "--seed", "1", "--calib-samples", "4", "--force"], capsys)
    assert code == 0, err
    manifest = json.loads(Path(str(onnx) + ".manifest.json").read_text())
    assert manifest["precision"] == "int8" and manifest["int8"]["format"] == "QDQ" and manifest["int8"]["reduce_range"] is False
    before = _debris(arm_device)
    code, data, err = _bench(capsys, arm_device, onnx, "raspberry-pi-4", "--no-store")
    assert code == 0, err
    (r,) = data["results"]
    _check_device_run(r, arm_build, "int8")
    assert r["parity"]["reference"] == "onnxruntime (same ONNX, host)"
    host_parity = manifest.get("parity") or {}
    arm_findings.append(f"fastvit_t8 int8 64x64: aarch64 vs x86 onnxruntime max err/scale {_max_err(r['parity'])}; "
                        f"x86 int8 vs PyTorch at export: {json.dumps(host_parity)[:160]}")
    assert _no_new_debris(arm_device, before)


def test_runner_crash_on_the_device(arm_device, tmp_path, capsys):
    """A model the device's onnxruntime cannot run: one line naming the cause, nothing left behind."""
    bad = _one_node_onnx(tmp_path / "boom.onnx", "Boom", "com.edgeseg.test")
    before = _debris(arm_device)
    procs = _standin_processes(arm_device)
    code, _, err = _bench(capsys, arm_device, bad, "raspberry-pi-4", "--no-store", "--no-parity")
    assert code not in (0, None)
    line = _one_error_line(err)
    assert "onnxruntime cannot load the model" in line and str(arm_device.port) in line
    assert _no_new_debris(arm_device, before)
    # the closed connection's sshd processes exit on their own, slowly under emulation; processes
    # of an earlier test's sessions may still be exiting too, so only new ones count
    deadline = time.monotonic() + 60
    while set(_standin_processes(arm_device)) - set(procs) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not set(_standin_processes(arm_device)) - set(procs)  # the runner did not outlive its failure


def test_device_without_onnxruntime(arm_device, tmp_path, capsys, monkeypatch):
    """The device's system Python has neither numpy nor onnxruntime: the error says what to install."""
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "bare-arm.yaml").write_text(textwrap.dedent("""\
        name: bare-arm
        description: the arm64 stand-in's system Python, without onnxruntime
        runtime: onnxruntime
        precisions: [fp32]
        default_precision: fp32
        threads: 4
        ceilings: {fp32: {gflops: 48, gbps: 5.5}}
        access: {kind: ssh, python: /usr/bin/python3, workdir: /tmp}
        """))
    monkeypatch.setenv("EDGESEG_PROFILES", str(profiles))
    before = _debris(arm_device)
    model = _one_node_onnx(tmp_path / "relu.onnx", "Relu")
    code, _, err = _bench(capsys, arm_device, model, "bare-arm", "--no-store")
    assert code not in (0, None)
    line = _one_error_line(err)
    assert "cannot import numpy, onnxruntime" in line and "pip install" in line
    assert _no_new_debris(arm_device, before)


def _one_node_onnx(path: Path, op: str, domain: str = "") -> Path:
    """A 1x3x8x8 -> 1x3x8x8 graph of one node (an unknown op in a custom domain makes onnxruntime refuse it)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 8, 8])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    graph = helper.make_graph([helper.make_node(op, ["input"], ["out"], domain=domain)], op.lower(), [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))
    return path


def _standin_processes(dev) -> list[int]:
    from edgeseg_arm_standin import processes_in

    return sorted(processes_in(dev.pid_namespace))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_stand_in_goes_away_when_its_owner_stops(arm_build, sig):
    """Ctrl-C (SIGINT) or a hard kill of the process that started the stand-in: no sshd, no mounts, no
    processes in its namespace remain (the namespace dies with its first process)."""
    from edgeseg_arm_standin import processes_in

    env = {**os.environ, "EDGESEG_ARM_CACHE": str(arm_build.root.parent)}
    proc = subprocess.Popen([sys.executable, str(STANDIN), "serve"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    port = None
    try:
        deadline = time.monotonic() + 180
        for line in proc.stdout:
            if "sshd up on 127.0.0.1:" in line:
                port = int(line.split("127.0.0.1:")[1].split()[0])
            if "Ctrl-C stops" in line or time.monotonic() > deadline:
                break
        assert port, "the stand-in did not come up"
        namespaces = _descendant_namespaces(proc.pid)  # other stand-ins may share the rootfs
        assert namespaces, "no process runs in the stand-in"
        proc.send_signal(sig)
        proc.wait(timeout=60)
        if sig == signal.SIGINT:
            assert proc.returncode == 130  # Ctrl-C's exit status, after the teardown
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(processes_in(ns) for ns in namespaces):
            time.sleep(0.2)
        assert not any(processes_in(ns) for ns in namespaces)
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0
        if sig == signal.SIGINT:
            assert not [p for p in (arm_build.rootfs / "run").iterdir() if p.name.startswith(f"edgeseg-standin-{proc.pid}-")]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def _descendant_namespaces(pid: int) -> set[str]:
    """PID namespaces, other than ours, of the processes below `pid`."""
    own, found, todo = os.readlink("/proc/self/ns/pid"), set(), [pid]
    while todo:
        p = todo.pop()
        try:
            ns = os.readlink(f"/proc/{p}/ns/pid")
            todo += [int(c) for t in Path(f"/proc/{p}/task").iterdir() for c in (t / "children").read_text().split()]
        except OSError:
            continue
        if ns != own:
            found.add(ns)
    return found
