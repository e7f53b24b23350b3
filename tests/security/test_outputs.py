"""Issue 9, cases 6 and 7: --overwrite replaces only an artifact of the same kind, the manifest
path is safe, reparam's suffix, artifacts honour the umask, output FS errors are one line."""

import os
import stat

import pytest

from edgeseg.atomic import atomic_output
from edgeseg.errors import OutputError
from edgeseg.testing import make_checkpoint, run_cli


@pytest.fixture(scope="module")
def s0(tmp_path_factory):
    p = tmp_path_factory.mktemp("ck") / "s0.pth"
    make_checkpoint("mobileone_s0", p, seed=6)
    return p


def test_overwrite_never_deletes_a_directory(s0, tmp_path, capsys):
    victim = tmp_path / "victim.onnx"
    (victim / "sub").mkdir(parents=True)
    (victim / "sub" / "data.txt").write_text("important")
    code, out, err = run_cli(["export", str(s0), "-o", str(victim), "--overwrite", "--no-parity"], capsys)
    assert code == 1 and "same kind" in err, err
    assert (victim / "sub" / "data.txt").read_text() == "important"


def test_directory_named_like_the_manifest_survives(s0, tmp_path, capsys):
    manifest_dir = tmp_path / "fresh.onnx.manifest.json"
    manifest_dir.mkdir()
    (manifest_dir / "keep.txt").write_text("mine")
    code, out, err = run_cli(["export", str(s0), "-o", str(tmp_path / "fresh.onnx"), "--no-parity"], capsys)
    assert code == 1 and "fresh.onnx.manifest.json" in err, err
    assert (manifest_dir / "keep.txt").read_text() == "mine"
    assert not (tmp_path / "fresh.onnx").exists()


def test_overwrite_rules_per_kind(tmp_path):
    f = tmp_path / "a.onnx"
    f.write_text("old")
    with atomic_output(f, overwrite=True) as tmp:  # a file replaces a file
        tmp.write_text("new")
    assert f.read_text() == "new"
    pkg = tmp_path / "m.mlpackage"
    (pkg / "Data").mkdir(parents=True)
    with pytest.raises(OutputError, match="without edgeseg's manifest"):
        with atomic_output(pkg, overwrite=True, directory=True) as tmp:
            (tmp / "x").write_text("1")
    assert (pkg / "Data").is_dir()
    (tmp_path / "m.mlpackage.manifest.json").write_text("{}")  # edgeseg wrote it: replaceable
    with atomic_output(pkg, overwrite=True, directory=True) as tmp:
        (tmp / "x").write_text("1")
    assert (pkg / "x").is_file() and not (pkg / "Data").exists()
    with pytest.raises(OutputError, match="not a directory artifact"):
        with atomic_output(f, overwrite=True, directory=True):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "m.mlpackage", "m.mlpackage.manifest.json"]


def test_reparam_to_pth_is_refused_up_front(s0, tmp_path, capsys):
    code, out, err = run_cli(["reparam", str(s0), "-o", str(tmp_path / "X.pth"), "--latency-iterations", "0"], capsys)
    assert code == 1 and "X.safetensors" in err and "tmp" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_artifacts_honour_the_umask(s0, tmp_path, capsys):
    old = os.umask(0o022)
    try:
        deploy = tmp_path / "d.safetensors"
        code, out, err = run_cli(["reparam", str(s0), "-o", str(deploy), "--latency-iterations", "0"], capsys)
        assert code == 0, err
        assert stat.S_IMODE(deploy.stat().st_mode) == 0o644
        pkg = tmp_path / "p.mlpackage"
        with atomic_output(pkg, directory=True) as tmp:
            (tmp / "Data").mkdir(mode=0o700)
            (tmp / "Data" / "w.bin").write_bytes(b"1")
            os.chmod(tmp / "Data" / "w.bin", 0o600)
        assert stat.S_IMODE(pkg.stat().st_mode) == 0o755
        assert stat.S_IMODE((pkg / "Data").stat().st_mode) == 0o755
        assert stat.S_IMODE((pkg / "Data" / "w.bin").stat().st_mode) == 0o644
    finally:
        os.umask(old)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through read-only permissions")
def test_read_only_output_dir_is_one_line(s0, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    code, out, err = run_cli(["reparam", str(s0), "-o", str(ro / "d.safetensors"), "--latency-iterations", "0"], capsys)
    assert code == 1 and "OSError" not in err and "d.safetensors" in err, err


@pytest.mark.parametrize("errno_name", ["EROFS", "ENOSPC"])
def test_output_filesystem_errors_are_one_line(s0, tmp_path, capsys, monkeypatch, errno_name):
    """A read-only or full filesystem, as the OS reports it while writing."""
    import errno

    import safetensors.torch

    def failing_save(*a, **k):
        raise OSError(getattr(errno, errno_name), os.strerror(getattr(errno, errno_name)))

    monkeypatch.setattr(safetensors.torch, "save_file", failing_save)
    out_path = tmp_path / "d.safetensors"
    code, out, err = run_cli(["reparam", str(s0), "-o", str(out_path), "--latency-iterations", "0"], capsys)
    lines = [l for l in err.strip().splitlines() if not l.startswith(">> ")]  # progress lines are not errors
    assert code == 1 and len(lines) == 1 and "OSError" not in err and "[Errno" not in err, err
    assert str(out_path) in err or out_path.name in err
    assert list(tmp_path.iterdir()) == []
