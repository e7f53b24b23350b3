"""The workflow pages in docs/ stay true: every `edgeseg` command they show parses against the
CLI as it is (default suite), and the blocks marked `bash` run, in order, in a fresh directory
(slow: they export real models). Blocks marked `bash device` need hardware and are only parsed."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
BLOCK = re.compile(r"^```(bash(?: device)?)\n(.*?)^```", re.S | re.M)


def blocks(page: Path) -> list[tuple[str, list[str]]]:
    out = []
    for kind, body in BLOCK.findall(page.read_text()):
        lines = [line.strip() for line in body.splitlines() if line.strip() and not line.strip().startswith("#")]
        out.append((kind, lines))
    return out


def edgeseg_commands(page: Path) -> list[list[str]]:
    return [shlex.split(line, comments=True)[1:] for _, lines in blocks(page) for line in lines if line.startswith("edgeseg ")]


def test_every_workflow_has_a_page():
    assert {p.stem for p in DOCS} >= {"jetson", "iphone", "raspberry-pi", "ci"}
    for page in DOCS:
        kinds = [k for k, _ in blocks(page)]
        assert "bash" in kinds, f"{page.name} has no runnable block"


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.stem)
def test_doc_commands_parse(page):
    """Each command resolves to a real subcommand with real options (no model is run)."""
    import typer

    from edgeseg.cli import app

    root = typer.main.get_command(app)
    for args in edgeseg_commands(page):
        ctx = root.make_context("edgeseg", list(args), resilient_parsing=False)
        cmd, sub = root, list(args)
        while hasattr(cmd, "commands"):
            name, cmd, sub = cmd.resolve_command(ctx, sub)
            ctx = cmd.make_context(name, sub, parent=ctx)  # raises on unknown options or bad values


@pytest.mark.slow
@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.stem)
def test_doc_commands_run(page, tmp_path):
    """The `bash` blocks, run as written (the bundled images are reachable as in a clone)."""
    os.symlink(ROOT / "edgeseg", tmp_path / "edgeseg")
    env = {**os.environ, "EDGESEG_DB": str(tmp_path / "results.sqlite"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for kind, lines in blocks(page):
        if kind != "bash":
            continue
        for line in lines:
            proc = subprocess.run(line, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
            assert proc.returncode == 0, f"{page.name}: `{line}` exited {proc.returncode}:\n{proc.stderr[-2000:]}"
