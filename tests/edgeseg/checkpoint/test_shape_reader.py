"""Shapes without torch: read_checkpoint(values=False) agrees with the full read on every published
layout, never runs pickled code, refuses damaged files, and keeps torch out of the process."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch

from edgeseg.checkpoint.pickle_shapes import CorruptCheckpoint, UnsupportedPickle, read_torch_shapes
from edgeseg.checkpoint.reader import read_checkpoint
from edgeseg.checkpoint.tensor_meta import TensorMeta, cat_rows, is_meta
from edgeseg.errors import CheckpointError

# mmseg (0.x and 1.x) keep best scores as numpy scalars, sometimes arrays, in `meta`
NUMPY_META = {"CLASSES": ("sky", "road"), "PALETTE": [[1, 2, 3], [4, 5, 6]], "seed": 0,
              "hook_msgs": {"best_score": np.float64(0.41), "best_ckpt": "iter_160000.pth"},
              "scores": np.arange(4, dtype=np.float32), "iou": np.float32(0.5)}


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def assert_same_shapes(path) -> None:
    """values=False reports exactly what the full read does, with TensorMeta for tensors."""
    full, shapes = read_checkpoint(path), read_checkpoint(path, values=False)
    assert list(shapes.state_dict) == list(full.state_dict), path
    for k, t in full.state_dict.items():
        m = shapes.state_dict[k]
        assert is_meta(m) and m.shape == tuple(t.shape) and m.dtype == _dtype(t), (path, k, m, t.shape, t.dtype)
    for field in ("format", "wrapper", "config", "metadata", "sha256"):
        assert getattr(shapes, field) == getattr(full, field), (path, field)
    assert list(shapes.extra) == list(full.extra), path
    assert (full.values, shapes.values) == (True, False)


# ---- every published layout of a few small families ------------------------------------------

@pytest.mark.parametrize("name", ["fastvit_t8", "mobileone_s0", "segformer_b0", "topformer_tiny", "edgeformer_xs"])
def test_every_layout_reads_the_same_shapes(tmp_path, name):
    from edgeseg.api import create
    from edgeseg.registry import get_entry

    entry = get_entry(name)
    model = create(name)  # shapes are all that matter: plain init is much faster than pretrained_like
    assert entry.layouts
    for lay in entry.layouts:
        path = tmp_path / (lay.name if lay.container == "hf" else f"{lay.name}.pth")
        meta = NUMPY_META if lay.container == "mmseg" else None  # covers the numpy globals
        lay.save(model.state_dict(), path, entry=entry, cfg=model.edgeseg.cfg, meta=meta)
        assert_same_shapes(path)
        if lay.container == "mmseg":
            shapes = read_checkpoint(path, values=False)
            assert repr(shapes.extra["meta"]["hook_msgs"]["best_score"]) == "<numpy object>"
            assert shapes.extra["meta"]["CLASSES"] == ("sky", "road")


def test_deploy_file(tmp_path):
    from edgeseg.api import create, save_deploy

    # unfused: the file is the same safetensors-with-edgeseg-metadata either way, and fusing costs seconds
    deploy = save_deploy(create("mobileone_s0"), tmp_path / "m.deploy.safetensors")
    assert_same_shapes(deploy)
    assert read_checkpoint(deploy, values=False).metadata["edgeseg.arch"] == "mobileone_s0"


def _odd_tensors() -> dict:
    base = torch.arange(24, dtype=torch.float32).reshape(6, 4)
    param = torch.nn.Parameter(torch.randn(3, 2))
    with_state = torch.nn.Parameter(torch.randn(5))
    with_state.tag = "kept by _rebuild_parameter_with_state"
    return {
        "half": torch.randn(2, 3).half(), "bf16": torch.randn(4).bfloat16(), "f64": torch.randn(2, dtype=torch.float64),
        "i64": torch.arange(3), "i32": torch.arange(3, dtype=torch.int32), "i16": torch.arange(2, dtype=torch.int16),
        "i8": torch.arange(2, dtype=torch.int8), "u8": torch.ones(2, dtype=torch.uint8), "bool": torch.ones(2, dtype=torch.bool),
        "scalar": torch.tensor(3.5), "empty": torch.zeros(0, 3),
        "base": base, "rows": base[2:5], "column": base[:, 1], "transposed": base.t(), "every_other": base[::2],
        "param": param, "param_state": with_state,
    }


def test_dtypes_parameters_views_and_scalars(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"state_dict": _odd_tensors(), "epoch": 3}, path)
    assert_same_shapes(path)
    sd = read_checkpoint(path, values=False).state_dict
    assert sd["scalar"] == TensorMeta((), "float32") and sd["column"] == TensorMeta((6,), "float32")
    assert sd["bf16"].dtype == "bfloat16" and sd["param_state"] == TensorMeta((5,), "float32")


def test_hf_directory_with_torch_bin_and_sharded_safetensors(tmp_path):
    from safetensors.torch import save_file

    sd = {"a.weight": torch.randn(3, 2).half(), "b.bias": torch.randn(3)}
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "config.json").write_text('{"model_type": "x"}')
    torch.save(sd, bin_dir / "pytorch_model.bin")
    assert_same_shapes(bin_dir)
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "config.json").write_text('{"model_type": "x"}')
    save_file({"a.weight": sd["a.weight"]}, str(sharded / "m-1.safetensors"))
    save_file({"b.bias": sd["b.bias"]}, str(sharded / "m-2.safetensors"))
    index = {"weight_map": {"a.weight": "m-1.safetensors", "b.bias": "m-2.safetensors"}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    assert_same_shapes(sharded)


def test_files_the_shape_reader_does_not_handle_go_through_torch(tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save({"model": {"w": torch.randn(2, 3)}}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsupportedPickle, match="legacy format"):
        read_torch_shapes(path)
    assert_same_shapes(path)
    tagged = torch.randn(4)
    tagged.note = "a tensor with Python attributes pickles through _rebuild_from_type_v2"
    path = tmp_path / "tagged.pth"
    torch.save({"w": tagged}, path)
    with pytest.raises(UnsupportedPickle) as info:
        read_torch_shapes(path)
    assert info.value.name == "torch._tensor._rebuild_from_type_v2"
    assert_same_shapes(path)


def test_storage_bytes_are_never_read(tmp_path):
    """Corrupt a storage record's bytes (its CRC no longer matches): shapes still read."""
    path = tmp_path / "w.pth"
    torch.save({"w": torch.zeros(64, 64)}, path)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("w/data/0")
    data = bytearray(path.read_bytes())
    local = info.header_offset  # the local header's own name and extra lengths (torch pads the extra field)
    start = local + 30 + int.from_bytes(data[local + 26:local + 28], "little") + int.from_bytes(data[local + 28:local + 30], "little")
    data[start:start + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))
    with zipfile.ZipFile(path) as zf, pytest.raises(zipfile.BadZipFile, match="CRC"):
        zf.read("w/data/0")  # reading the record would have been noticed
    assert read_torch_shapes(path) == {"w": TensorMeta((64, 64), "float32")}


# ---- hand-made torch zips: malicious and damaged ----------------------------------------------

class _Storage:
    def __init__(self, stype, key="0", numel=4):
        self.stype, self.key, self.numel = stype, key, numel


class _Tensor:
    """Pickles as torch's tensor record, with whatever fields a test wants."""

    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride, False, OrderedDict())

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        return ("storage", obj.stype, obj.key, "cpu", obj.numel) if isinstance(obj, _Storage) else None


def _write_torch_zip(path, data_pkl: bytes, records: dict[str, bytes], byteorder: str = "little"):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/byteorder", byteorder)
        zf.writestr("archive/version", "3\n")
        for key, data in records.items():
            zf.writestr(f"archive/data/{key}", data)
    return path


def _craft(path, obj, records: dict[str, bytes], **kw):
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(obj)
    return _write_torch_zip(path, buf.getvalue(), records, **kw)


class _Payload:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


def _evil_pickles(marker) -> dict[str, tuple[bytes, str]]:
    """data.pkl payloads that would create `marker`, and the global each names."""
    cmd = f"touch {marker}"
    by_hand = b"\x80\x02cos\nsystem\nX" + len(cmd).to_bytes(4, "little") + cmd.encode() + b"\x85R."
    # STACK_GLOBAL (a protocol 4 opcode) in a stream that declares protocol 2: the unpickler runs it anyway
    stack_global = (b"\x80\x02X\x02\x00\x00\x00osX\x06\x00\x00\x00system\x93X" + len(cmd).to_bytes(4, "little")
                    + cmd.encode() + b"\x85R.")
    code = f"open({str(marker)!r}, 'w').close()"
    return {
        "global_os_system": (by_hand, "os.system"),
        "stack_global": (stack_global, "os.system"),
        "builtins_eval": (pickle.dumps(_Payload(eval, code), protocol=2, fix_imports=False), "builtins.eval"),
    }


@pytest.mark.parametrize("case", ["global_os_system", "stack_global", "builtins_eval", "storage_type_is_os_system"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, case):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pth"
    if case == "storage_type_is_os_system":
        _craft(path, {"w": _Tensor(_Storage(os.system), 0, (2, 2), (2, 1))}, {"0": b"\0" * 16})
        name = f"{os.system.__module__}.system"
    else:
        data, name = _evil_pickles(marker)[case]
        _write_torch_zip(path, data, {})
    with pytest.raises(UnsupportedPickle) as info:
        read_torch_shapes(path)
    assert info.value.name == name and name in str(info.value)
    with pytest.raises(CheckpointError) as shaped:
        read_checkpoint(path, values=False)
    with pytest.raises(CheckpointError) as full:
        read_checkpoint(path)
    assert str(shaped.value) == str(full.value)  # the torch path's verdict, word for word
    if case != "stack_global":  # torch's unpickler lacks STACK_GLOBAL and calls that file "not a PyTorch checkpoint"
        assert "edgeseg never unpickles them" in str(shaped.value) and name.rsplit(".")[-1] in str(shaped.value)
    assert not marker.exists(), "the payload ran"


@pytest.mark.parametrize("opcodes", [
    b"\x80\x02ctorch\nFloatStorage\n)R.",  # REDUCE on a storage type token: not callable
    b"\x80\x02ctorch\nFloatStorage\n)\x81.",  # NEWOBJ on it: not a type
    b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n)\x81.",  # NEWOBJ on a rebuild function
    b"\x80\x02cnumpy\ndtype\n)\x81.",  # numpy stand-ins are functions too
    b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R.",  # codecs are looked up by name
    b"\x80\x02(X\x03\x00\x00\x00abcX\x01\x00\x00\x00xtQ.",  # a persistent id that is not a storage
])
def test_stand_ins_cannot_be_abused(tmp_path, opcodes):
    path = _write_torch_zip(tmp_path / "odd.pth", opcodes, {})
    with pytest.raises(UnsupportedPickle):
        read_torch_shapes(path)


def test_build_cannot_rewrite_a_tensor_shape(tmp_path):
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(_Tensor(_Storage(torch.FloatStorage), 0, (2, 2), (2, 1)))
    data = buf.getvalue()[:-1] + b"}X\x05\x00\x00\x00shapeX\x01\x00\x00\x00xsb."  # BUILD {'shape': 'x'}
    path = _write_torch_zip(tmp_path / "b.pth", data, {"0": b"\0" * 16})
    with pytest.raises(UnsupportedPickle):
        read_torch_shapes(path)


F32 = torch.FloatStorage


@pytest.mark.parametrize("obj,records", [
    ({"w": _Tensor(_Storage(F32), 0, (2, 2), (2, 1))}, {}),  # storage record missing
    ({"w": _Tensor(_Storage(F32), 0, (2, 2), (2, 1))}, {"0": b"\0" * 8}),  # record shorter than its storage
    ({"w": _Tensor(_Storage(F32), 1, (2, 2), (2, 1))}, {"0": b"\0" * 16}),  # view past the storage's end
    ({"w": _Tensor(_Storage(F32, numel=2**40), 0, (2**20, 2**20), (2**20, 1))}, {"0": b"\0" * 16}),
    ({"w": _Tensor(_Storage(F32), 0, (-2, 2), (2, 1))}, {"0": b"\0" * 16}),  # negative size
    ({"w": _Tensor(_Storage(F32), 0, (2, 2), (-2, 1))}, {"0": b"\0" * 16}),  # negative stride
    ({"w": _Tensor(_Storage(F32), 0, "ab", (2, 1))}, {"0": b"\0" * 16}),  # size is not a tuple
    ({"w": _Tensor(_Storage(F32), 0, (2, 2), (1,))}, {"0": b"\0" * 16}),  # size and stride lengths differ
    ({"w": _Tensor(_Storage(F32), -1, (2,), (1,))}, {"0": b"\0" * 16}),  # negative offset
    ({"w": _Tensor("not a storage", 0, (2,), (1,))}, {}),
], ids=["missing", "short-record", "view-past-end", "huge", "neg-size", "neg-stride", "str-size", "len-mismatch",
        "neg-offset", "no-storage"])
def test_damaged_records_are_corrupt(tmp_path, obj, records):
    path = _craft(tmp_path / "bad.pth", obj, records)
    with pytest.raises(CorruptCheckpoint):
        read_torch_shapes(path)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(path, values=False)


def test_truncated_zip(tmp_path):
    path = tmp_path / "t.pth"
    torch.save({"state_dict": {"w": torch.randn(256, 256)}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpoint):
        read_torch_shapes(path)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(path, values=False)


def test_crafted_valid_zip_and_its_limits(tmp_path, monkeypatch):
    import edgeseg.checkpoint.pickle_shapes as ps

    shared = _Storage(F32, numel=6)
    obj = {"w": _Tensor(shared, 0, (2, 3), (3, 1)), "row": _Tensor(shared, 3, (3,), (1,)), "e": _Tensor(shared, 99, (0,), (1,))}
    path = _craft(tmp_path / "ok.pth", obj, {"0": b"\0" * 24})
    assert read_torch_shapes(path) == {"w": TensorMeta((2, 3), "float32"), "row": TensorMeta((3,), "float32"),
                                       "e": TensorMeta((0,), "float32")}
    assert_same_shapes(path)
    big_endian = _craft(tmp_path / "be.pth", obj, {"0": b"\0" * 24}, byteorder="big")
    with pytest.raises(UnsupportedPickle, match="byteorder"):
        read_torch_shapes(big_endian)
    monkeypatch.setattr(ps, "MAX_PICKLE_BYTES", 64)
    with pytest.raises(CorruptCheckpoint, match="pickle is far smaller"):
        read_torch_shapes(path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_non_tensor_values_and_not_checkpoints_match_the_full_read(tmp_path):
    torch.save({"state_dict": {"a": 1}}, tmp_path / "n.pth")
    (tmp_path / "x.pth").write_bytes(b"hello, not a checkpoint\n" * 10)
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    torch.save({"w": torch.zeros(2)}, tmp_path / "p4.pth", pickle_protocol=4)  # torch's weights_only refuses protocol 4
    for name in ("n.pth", "x.pth", "bad.safetensors", "p4.pth"):
        with pytest.raises(CheckpointError) as full:
            read_checkpoint(tmp_path / name)
        with pytest.raises(CheckpointError) as shaped:
            read_checkpoint(tmp_path / name, values=False)
        assert str(shaped.value) == str(full.value)


# ---- no torch in the process -----------------------------------------------------------------

def test_shape_read_never_imports_torch(tmp_path):
    from safetensors.torch import save_file

    pth = tmp_path / "m.pth"
    torch.save({"meta": NUMPY_META, "state_dict": _odd_tensors()}, pth)
    st = tmp_path / "m.safetensors"
    save_file({"w": torch.zeros(2, 3).bfloat16(), "s": torch.zeros(())}, str(st), metadata={"k": "v"})
    code = (
        "import sys\n"
        "from edgeseg.checkpoint.reader import read_checkpoint\n"
        f"a = read_checkpoint({str(pth)!r}, values=False)\n"
        f"b = read_checkpoint({str(st)!r}, values=False)\n"
        "assert a.state_dict['rows'].shape == (3, 4) and b.state_dict['w'].dtype == 'bfloat16', (a, b)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


# ---- TensorMeta and cat_rows -----------------------------------------------------------------

def test_tensor_meta_api():
    m = TensorMeta((6, 4), "float32")
    assert (m.dim(), m.ndim, m.numel(), m.size(), m.size(0), m.size(-1), len(m)) == (2, 2, 24, (6, 4), 6, 4, 6)
    assert m[1:4] == TensorMeta((3, 4), "float32") and m[::2] == TensorMeta((3, 4), "float32")
    assert m[-2:, :] == TensorMeta((2, 4), "float32") and m[10:] == TensorMeta((0, 4), "float32")
    assert m.reshape(-1) == TensorMeta((24,), "float32") and m.reshape((2, -1, 3)) == TensorMeta((2, 4, 3), "float32")
    assert m.reshape(4, 6).shape == (4, 6) and TensorMeta((), "float16").numel() == 1
    for bad in (lambda: m.reshape(5, -1), lambda: m.reshape(-1, -1), lambda: m.reshape(7),
                lambda: TensorMeta((0, 3), "float32").reshape(0, -1), lambda: m[::-1]):
        with pytest.raises(ValueError):
            bad()
    for bad in (lambda: m[0], lambda: m[1:, 0], lambda: m[..., 1:], lambda: bool(m), lambda: list(m),
                lambda: len(TensorMeta((), "float32")), lambda: m + 1, lambda: np.asarray(m), lambda: m.reshape(2.0, 12)):
        with pytest.raises(TypeError):
            bad()
    with pytest.raises(IndexError):
        m[1:, :, :]
    with pytest.raises(IndexError):
        m.size(2)
    with pytest.raises(AttributeError):
        m.float()
    with pytest.raises(ValueError):
        TensorMeta((2, -1), "float32")
    assert pickle.loads(pickle.dumps(m)) == m and is_meta(m) and not is_meta(torch.zeros(1))


def test_cat_rows():
    a, b = TensorMeta((2, 3), "float16"), TensorMeta((5, 3), "float16")
    assert cat_rows([a, b]) == TensorMeta((7, 3), "float16")
    t = cat_rows([torch.ones(2, 3), torch.zeros(1, 3)])
    assert isinstance(t, torch.Tensor) and t.shape == (3, 3)
    for parts in ([a, TensorMeta((1, 4), "float16")], [a, TensorMeta((1, 3), "float32")], [a, torch.ones(1, 3)],
                  [], [TensorMeta((), "float16")]):
        with pytest.raises(ValueError):
            cat_rows(parts)
