"""Issue 9, case 3 (remote half): Ctrl-C during a remote bench exits 130 and kills what it
started on the device; a dropped connection kills the remote process group too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgeseg.remote.ssh import SSHSession

pytestmark = pytest.mark.ssh

from .test_ssh_loopback import ARM, _empty  # noqa: E402


def _processes_mentioning(fragment: str) -> list[str]:
    """Command lines (other than this test process's) that contain `fragment`. Unlike the loopback
    tests' helper this does not skip lines containing "pytest": pytest's temp paths contain it."""
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and int(p.name) != os.getpid():
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if fragment in cmd:
                found.append(cmd)
    return found


def _wait_for(cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


def test_ctrl_c_during_remote_bench_kills_the_runner(sshd, write_profile, remote_workdir, tiny_onnx):
    write_profile("loopback-arm", ARM)
    cmd = [sys.executable, "-m", "edgeseg", "bench", str(tiny_onnx[0]), "--device", "loopback-arm", "--host", sshd.host,
           "-i", str(sshd.identity), "--known-hosts", str(sshd.known_hosts), "--remote-workdir", str(remote_workdir),
           "-n", "100000000", "--warmup", "0", "--no-parity", "--no-store"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        runner = lambda: [c for c in _processes_mentioning(str(remote_workdir)) if "ort_runner.py --model" in c and "sh -c" not in c]  # noqa: E731
        started = _wait_for(lambda: proc.poll() is not None or runner(), 150)
        assert started and proc.poll() is None, ("the remote runner never started", proc.communicate(timeout=5) if proc.poll() is not None else "")
        time.sleep(1.0)  # the runner is timing now
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted", err
    assert _wait_for(lambda: not _processes_mentioning(str(remote_workdir)), 10), _processes_mentioning(str(remote_workdir))
    assert _empty(remote_workdir)


def test_dropped_connection_kills_the_remote_process_group(sshd):
    tag = f"{317 + os.getpid() % 1000}.{int(time.time() * 1000) % 100000}"
    session = SSHSession(sshd.host, identity=sshd.identity, known_hosts=sshd.known_hosts)
    session.connect()
    errors: list[BaseException] = []

    def run():
        try:  # a parent with a child in the background, as a runner that spawns workers
            session.run(["sh", "-c", f"sleep {tag} & sleep {tag}"], step="long", timeout=600)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert _wait_for(lambda: len(_processes_mentioning(f"sleep {tag}")) >= 2, 30)
    session.client.get_transport().close()  # the link drops: no clean-up command can be sent
    t.join(30)
    assert errors, "run() returned although the connection dropped"
    assert _wait_for(lambda: not _processes_mentioning(f"sleep {tag}"), 30), _processes_mentioning(f"sleep {tag}")
