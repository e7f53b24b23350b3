"""Fixtures for the bench tests: a real OpenSSH server on loopback acting as an ARM-style
device, small ONNX models, and a device profile dir for test-only profiles."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"


def _install_sshd() -> str | None:
    """Install openssh-server when missing (root, apt); the reason it failed otherwise."""
    if os.path.exists(SSHD):
        return None
    if shutil.which("apt-get") is None:
        return "openssh-server is not installed and apt-get is not available"
    if os.geteuid() != 0:
        return "openssh-server is not installed and installing it needs root"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "install", "-y", "-q", "openssh-server"], ["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "openssh-server"]):
        try:
            subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"installing openssh-server failed ({exc})"
        if os.path.exists(SSHD):
            return None
    return "apt-get install openssh-server did not provide /usr/sbin/sshd"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path, kind: str = "ed25519") -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "edgeseg-test", "-f", str(path)], check=True, timeout=60)
    return Path(str(path) + ".pub").read_text().strip()


@dataclass
class Sshd:
    port: int
    user: str
    identity: Path
    wrong_identity: Path
    known_hosts: Path
    wrong_known_hosts: Path
    empty_known_hosts: Path
    root: Path

    @property
    def host(self) -> str:
        return f"{self.user}@127.0.0.1:{self.port}"


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    reason = _install_sshd()
    if reason:
        pytest.skip(f"no OpenSSH server for the loopback device: {reason}")
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen (openssh-client) is missing")
    d = tmp_path_factory.mktemp("sshd")
    host_key = d / "host_ed25519"
    host_pub = _keygen(host_key)
    other_host_pub = _keygen(d / "other_host_ed25519")
    client_pub = _keygen(d / "client_ed25519")
    _keygen(d / "stranger_ed25519")
    (d / "authorized_keys").write_text(client_pub + "\n")
    port = _free_port()
    cfg = d / "sshd_config"
    cfg.write_text(textwrap.dedent(f"""\
        Port {port}
        ListenAddress 127.0.0.1
        HostKey {host_key}
        PidFile {d / 'sshd.pid'}
        AuthorizedKeysFile {d / 'authorized_keys'}
        PubkeyAuthentication yes
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        PermitRootLogin prohibit-password
        UsePAM no
        StrictModes no
        MaxStartups 100
        MaxSessions 50
        LogLevel ERROR
        Subsystem sftp internal-sftp
        """))
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir, normally made by the service
    check = subprocess.run([SSHD, "-t", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        pytest.skip(f"sshd rejects the test config: {check.stderr.strip()}")
    proc = subprocess.Popen([SSHD, "-D", "-f", str(cfg), "-e"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 20
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.skip(f"sshd exited: {proc.stderr.read().decode(errors='replace').strip()}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    else:
        proc.terminate()
        pytest.skip("sshd did not start listening within 20 s")
    kind, blob = host_pub.split()[:2]
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {kind} {blob}\n")
    okind, oblob = other_host_pub.split()[:2]
    (d / "wrong_known_hosts").write_text(f"[127.0.0.1]:{port} {okind} {oblob}\n")
    (d / "empty_known_hosts").write_text("")
    try:
        yield Sshd(port=port, user=getpass.getuser(), identity=d / "client_ed25519", wrong_identity=d / "stranger_ed25519",
                   known_hosts=d / "known_hosts", wrong_known_hosts=d / "wrong_known_hosts",
                   empty_known_hosts=d / "empty_known_hosts", root=d)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def remote_workdir(tmp_path):
    """The loopback device's work area: empty after every run, whatever happened."""
    d = tmp_path / "device-tmp"
    d.mkdir()
    return d


@pytest.fixture
def profile_dir(tmp_path, monkeypatch):
    """A directory in $EDGESEG_PROFILES for test-only device profiles."""
    d = tmp_path / "profiles"
    d.mkdir()
    monkeypatch.setenv("EDGESEG_PROFILES", str(d))
    return d


@pytest.fixture
def write_profile(profile_dir):
    """write_profile(name, yaml_text): a test-only device profile ({PYTHON} = this interpreter)."""

    def write(name: str, body: str) -> Path:
        p = profile_dir / f"{name}.yaml"
        p.write_text(textwrap.dedent(body).replace("{PYTHON}", sys.executable))
        return p

    return write


@pytest.fixture
def tiny_onnx(tmp_path):
    """A small conv classifier exported with torch.onnx (independent of the ONNX exporter's progress)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()
    path = tmp_path / "tiny.onnx"
    torch.onnx.export(model, (torch.randn(1, 3, 32, 32),), str(path), input_names=["input"], output_names=["logits"],
                      opset_version=13, dynamo=False)
    return path, model
