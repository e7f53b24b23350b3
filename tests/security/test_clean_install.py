"""Issue 9, case 3 (packaging): the wheel installed into a fresh venv *without extras* runs.

Every import the package makes must be a declared dependency; `click`, for one, came only
through the test extra's transformers and broke every command of a plain `pip install .`.
The venv is isolated (no --system-site-packages); torch comes from pip's cache via constraints.txt.
"""

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow  # builds a wheel and installs torch & co. into a new venv (minutes)


def _run(cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=1500, **kw)
    assert r.returncode == 0, f"{cmd}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def test_wheel_without_extras_runs_help_and_models(tmp_path):
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, ROOT])
    (wheel,) = dist.glob("edgeseg-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True, system_site_packages=False)
    py = env_dir / "bin" / "python"
    _run([py, "-m", "pip", "install", "-q", "-c", ROOT / "constraints.txt", wheel])
    listed = _run([py, "-m", "pip", "list", "--format=freeze"]).stdout.lower()
    assert "transformers" not in listed and "pytest" not in listed  # no extras came along
    exe = env_dir / "bin" / "edgeseg"
    out = _run([exe, "--help"], cwd=tmp_path)
    assert "export" in out.stdout
    out = _run([exe, "models"], cwd=tmp_path)
    assert "mobileone_s0" in out.stdout and "fastvit_t8" in out.stdout
    _run([py, "-m", "pip", "check"])  # the declared bounds resolve consistently
