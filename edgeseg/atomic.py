"""Write outputs so that a failed run never leaves a partial file or clobbers a good one."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from edgeseg import interrupt
from edgeseg.errors import OutputError


MANIFEST_SUFFIX = ".manifest.json"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def apply_umask(path: Path) -> None:
    """Give a staged output the modes a plain `open()`/`mkdir` would: temp files and dirs are
    created private (0600/0700), published artifacts must honour the user's umask."""
    mask = _umask()
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            os.chmod(root, 0o777 & ~mask)
            for f in files:
                fp = Path(root) / f
                if not fp.is_symlink():
                    os.chmod(fp, 0o666 & ~mask)
    elif path.is_file() and not path.is_symlink():
        os.chmod(path, 0o666 & ~mask)


def _replaceable(path: Path, directory: bool) -> str | None:
    """Why `--overwrite` may not replace `path` with an output of this kind (None: it may).

    A file output replaces only a file; a directory output (.mlpackage) replaces only a
    directory that edgeseg wrote, i.e. one with edgeseg's manifest beside it. Anything else
    may be data the user did not ask to lose.
    """
    if path.is_symlink() or not path.exists():
        return None
    if not directory:
        return None if path.is_file() else "is a directory, not a file artifact"
    if not path.is_dir():
        return "is a file, not a directory artifact"
    manifest = path.with_name(path.name + MANIFEST_SUFFIX)
    if not manifest.is_file():
        return f"is a directory without edgeseg's manifest ({manifest.name})"
    return None


def check_output_path(path: str | os.PathLike, overwrite: bool = False, directory: bool = False) -> Path:
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"output directory {parent} does not exist", "create it first or pass another -o")
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise OutputError(f"output {path} already exists", "pass --overwrite to replace it, or another -o")
        why = _replaceable(path, directory)
        if why:
            raise OutputError(f"output {path} {why}; --overwrite replaces only an artifact of the same kind",
                              "move it away or pass another -o")
    return path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = False, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto `path` only if the block succeeds.

    The block is expected to write *and validate* the temporary file; any exception
    removes it and leaves an existing `path` untouched.
    """
    path = check_output_path(path, overwrite, directory)
    parent = path.parent if str(path.parent) else Path(".")
    prefix = f".{path.name}."
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp" + path.suffix, dir=parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        apply_umask(tmp)
        check_output_path(path, overwrite, directory)  # the path may have changed while we worked
        interrupt.raise_if_requested()  # a Ctrl-C that native code swallowed still stops the publish
        if path.is_dir() and not path.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=prefix, suffix=".old", dir=parent))
            os.replace(path, old / path.name)  # an edgeseg directory artifact (checked above)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException as exc:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        if isinstance(exc, OSError) or type(exc).__name__ == "SafetensorError":
            raise write_error(path, exc) from exc
        raise


_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def write_error(path: Path, exc: BaseException) -> OutputError:
    """One line for a failed write: the path, what the OS said, what to do about it."""
    code = getattr(exc, "errno", None)
    text = getattr(exc, "strerror", None) or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if code in _FULL or "No space left" in str(exc):
        fix = "free some space there or pass -o on another filesystem"
    elif code in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = "pass -o in a directory you can write"
    else:
        fix = "check the output path and the filesystem"
    return OutputError(f"cannot write {path} ({text})", fix)
