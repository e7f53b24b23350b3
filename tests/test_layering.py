"""The import contracts in pyproject.toml ([tool.importlinter]) hold for the package as installed.

import-linter reads a package from one folder, so the test lays the installed layout out in a
temporary folder (models/ -> edgeseg/models, exporters/ -> edgeseg/exporters, as setuptools'
package-dir does) and runs the linter there in a fresh interpreter.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {"models": "models", "exporters": "exporters", "device_profiles": "device_profiles"}


def _lay_out(dest: Path) -> Path:
    pkg = dest / "edgeseg"
    shutil.copytree(ROOT / "edgeseg", pkg, ignore=shutil.ignore_patterns("__pycache__", "data"))
    for inside, folder in MAPPED.items():
        shutil.copytree(ROOT / folder, pkg / inside, ignore=shutil.ignore_patterns("__pycache__", "*.yaml"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def test_import_contracts_hold(tmp_path):
    pytest.importorskip("importlinter", reason="import-linter is in the test extra: pip install -e '.[test]'")
    where = _lay_out(tmp_path)
    code = ("import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))")
    done = subprocess.run([sys.executable, "-c", code], cwd=where, env={"PYTHONPATH": str(where), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    analysed = re.search(r"Analyzed (\d+) files", done.stdout)
    assert analysed and int(analysed.group(1)) == len(list((where / "edgeseg").rglob("*.py")))  # models/ and exporters/ too
