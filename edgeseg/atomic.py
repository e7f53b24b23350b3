"""Write outputs so that a failed run never leaves a partial file or clobbers a good one."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from edgeseg.errors import OutputError


def check_output_path(path: str | os.PathLike, overwrite: bool = False) -> Path:
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"output directory {parent} does not exist", "create it first or pass another -o")
    if path.exists() and not overwrite:
        raise OutputError(f"output {path} already exists", "pass --overwrite to replace it, or another -o")
    return path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = False, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto `path` only if the block succeeds.

    The block is expected to write *and validate* the temporary file; any exception
    removes it and leaves an existing `path` untouched.
    """
    path = check_output_path(path, overwrite)
    parent = path.parent if str(path.parent) else Path(".")
    prefix = f".{path.name}."
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp" + path.suffix, dir=parent)
        os.close(fd)
        tmp = Path(name)
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)  # mkstemp's 0600 would make published outputs private
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise
