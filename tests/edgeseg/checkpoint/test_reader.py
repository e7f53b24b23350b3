"""Safe checkpoint reading: formats, wrappers and every way a file can be bad."""

import os

import numpy as np
import pytest
import torch

from edgeseg.checkpoint.reader import read_checkpoint
from edgeseg.errors import CheckpointError

SD = {"a.weight": torch.randn(3, 2), "b.bias": torch.randn(3)}


def _same(sd):
    assert set(sd) == set(SD)
    for k in SD:
        assert torch.equal(sd[k], SD[k])


@pytest.mark.parametrize(
    "obj,wrapper",
    [
        (SD, None),
        ({"state_dict": SD, "epoch": 3}, "state_dict"),
        ({"model": SD}, "model"),
        ({"state_dict": {f"module.{k}": v for k, v in SD.items()}}, "state_dict+module."),
        ({f"module.{k}": v for k, v in SD.items()}, "module."),
    ],
)
def test_wrappers_are_unwrapped(tmp_path, obj, wrapper):
    p = tmp_path / "ckpt.pth"
    torch.save(obj, p)
    raw = read_checkpoint(p)
    _same(raw.state_dict)
    assert raw.wrapper == wrapper and raw.format == "torch" and len(raw.sha256) == 64


def test_safetensors_with_metadata(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "w.safetensors"
    save_file(SD, str(p), metadata={"x": "1"})
    raw = read_checkpoint(p)
    _same(raw.state_dict)
    assert raw.metadata["x"] == "1"


def test_numpy_scalars_in_mmseg_meta_are_data(tmp_path):
    p = tmp_path / "mm.pth"
    torch.save({"meta": {"best_score": np.float64(0.41), "CLASSES": ("a", "b")}, "state_dict": SD}, p)
    raw = read_checkpoint(p)
    _same(raw.state_dict)
    assert float(raw.extra["meta"]["best_score"]) == pytest.approx(0.41)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    p = tmp_path / "evil.pth"
    torch.save({"state_dict": SD, "extra": _Payload(marker)}, p)
    with pytest.raises(CheckpointError, match=r"arbitrary Python objects.*system"):
        read_checkpoint(p)
    assert not marker.exists(), "the payload ran"


def test_truncated_file(tmp_path):
    p = tmp_path / "t.pth"
    torch.save({"state_dict": {"w": torch.randn(256, 256)}}, p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(p)


@pytest.mark.parametrize("content", [b"hello, not a checkpoint\n" * 10, b"\x80\x02}q\x00."])
def test_not_a_checkpoint(tmp_path, content):
    p = tmp_path / "x.pth"
    p.write_bytes(content)
    with pytest.raises(CheckpointError):
        read_checkpoint(p)


def test_empty_missing_and_non_tensor_files(tmp_path):
    (tmp_path / "e.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        read_checkpoint(tmp_path / "e.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pth")
    torch.save({"state_dict": {"a": 1}}, tmp_path / "n.pth")
    with pytest.raises(CheckpointError, match="not of tensors"):
        read_checkpoint(tmp_path / "n.pth")


def test_corrupt_safetensors(tmp_path):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    with pytest.raises(CheckpointError, match="safetensors"):
        read_checkpoint(p)


def test_hf_directory(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(CheckpointError, match="config.json"):
        read_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "x"}')
    with pytest.raises(CheckpointError, match="no weights"):
        read_checkpoint(tmp_path)
    save_file(SD, str(tmp_path / "model.safetensors"))
    raw = read_checkpoint(tmp_path)
    _same(raw.state_dict)
    assert raw.format == "hf-dir" and raw.config == {"model_type": "x"}
