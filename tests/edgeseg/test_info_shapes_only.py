"""`edgeseg info` reads keys and shapes only, without torch (issue 12: info within 2 s, of which
`import torch` alone is 1.3 s), and says exactly what a full load would say."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

import edgeseg
from edgeseg.api import inspect_raw
from edgeseg.checkpoint.reader import read_checkpoint
from edgeseg.checkpoint.tensor_meta import is_meta
from edgeseg.checkpoint.layouts import find_layout
from edgeseg.registry import get_entry

CASES = [
    ("fastvit_t8", "apple-ml-fastvit", {}),
    ("fastvit_t8", "timm", {"num_classes": 10}),
    ("mobileone_s0", "timm", {}),
    ("segformer_b0", "huggingface", {"num_classes": 19}),
    ("segformer_b0", "mmseg1", {}),
    ("topformer_tiny", "mmseg-topformer", {}),
    ("edgeformer_xs", "cvnets", {}),
]


def _write(tmp_path, name: str, layout: str, cfg: dict):
    entry = get_entry(name)
    lay = find_layout(entry, layout)
    model = edgeseg.create(name, **{**lay.cfg_overrides, **cfg})
    path = tmp_path / f"{name}.{layout}" if lay.container == "hf" else tmp_path / f"{name}.{layout}.pth"
    lay.save(model.state_dict(), path, entry=entry, cfg={**lay.cfg_overrides, **cfg})
    return path


def _same_as_full_load(path):
    shapes = read_checkpoint(path, values=False)
    assert shapes.state_dict and all(is_meta(v) for v in shapes.state_dict.values())
    full = read_checkpoint(path)
    got, want = inspect_raw(shapes), inspect_raw(full)
    assert dataclasses.asdict(got[0]) == dataclasses.asdict(want[0]) and got[1] == want[1]
    return got


@pytest.mark.parametrize("name,layout,cfg", CASES, ids=[f"{n}-{l}" for n, l, _ in CASES])
def test_info_from_shapes_equals_info_from_tensors(tmp_path, name, layout, cfg):
    info, params = _same_as_full_load(_write(tmp_path, name, layout, cfg))
    assert (info.arch, info.layout, info.fused) == (name, layout, False)
    assert params > 0 and info.cfg.get("num_classes") == cfg.get("num_classes", info.cfg.get("num_classes"))


@pytest.mark.parametrize("name,size", [("segformer_b0", (256, 320)), ("edgeformer_xs", (192, 320))])
def test_info_of_a_deploy_file_from_shapes(tmp_path, name, size):
    """Deploy files: cfg from metadata (typed fields), fused structure, baked input sizes."""
    fused, _ = edgeseg.reparameterize(edgeseg.create(name, num_classes=7), input_size=size, verify=False)
    path = edgeseg.save_deploy(fused, tmp_path / f"{name}.deploy.safetensors")
    info, _ = _same_as_full_load(path)
    assert info.fused and info.cfg["num_classes"] == 7
    if name == "edgeformer_xs":  # baked for one size (SegFormer stays any-size)
        assert tuple(info.fixed_input_size) == size


def test_info_command_does_not_import_torch(tmp_path):
    path = _write(tmp_path, "mobileone_s0", "apple-ml-mobileone", {})
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    code = ("import sys\n"
            "from edgeseg.cli.app import main\n"
            "try:\n"
            f"    main(['info', {str(path)!r}, '--json'])\n"
            "finally:\n"
            "    print('TORCH', sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))[:3], file=sys.stderr)\n")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["arch"] == "mobileone_s0"
    # the first run builds the signatures (torch, cached on disk); the second reads them
    assert "TORCH []" in runs[1].stderr.splitlines()[-1], runs[1].stderr
