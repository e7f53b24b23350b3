"""Keys, shapes and dtypes of a torch.save zip file, without torch and without running pickled code.

`import torch` alone costs more than `edgeseg info` may take, and shapes need none of the
tensor bytes. The pickle in `<archive>/data.pkl` is read with the stdlib unpickler restricted to
an explicit allow-list (the "restricting globals" pattern of the pickle docs): every global it
names maps to a stand-in defined here, so nothing in the file chooses code to import or run.
Storages stay unread; their sizes come from the zip's central directory.

Anything this reader does not understand raises UnsupportedPickle: the caller then lets
torch's own weights_only loader decide, so a valid file is never rejected here. A file that is
provably damaged (a record missing or shorter than its tensors) raises CorruptCheckpoint.
"""

from __future__ import annotations

import io
import pickle
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

from edgeseg.checkpoint.tensor_meta import TensorMeta

# data.pkl holds only structure (a few hundred bytes per tensor); a bigger one is not a checkpoint
MAX_PICKLE_BYTES = 256 << 20
_ZIP_MAGIC = b"PK\x03\x04"


class UnsupportedPickle(Exception):
    """The file needs something this reader does not handle (a global outside the allow-list,
    the legacy format, ...). `name` is the offending global's dotted name, where there is one."""

    def __init__(self, message: str, name: str | None = None):
        super().__init__(message)
        self.name = name


class CorruptCheckpoint(Exception):
    """The zip is damaged: records missing, or shorter than the tensors they hold."""


class _StorageType:
    """A torch.*Storage class named by the pickle. Only a dtype token: not callable and not a
    type, so REDUCE and NEWOBJ on it fail instead of constructing anything."""

    __slots__ = ("dtype", "itemsize")

    def __init__(self, dtype: str, itemsize: int):
        self.dtype = dtype
        self.itemsize = itemsize

    def __setstate__(self, state: Any) -> None:
        raise UnsupportedPickle("BUILD on a storage type")

    def __repr__(self) -> str:
        return f"<storage type {self.dtype}>"


class _Storage:
    """A storage record that was found in the zip but not read."""

    __slots__ = ("dtype", "itemsize", "numel", "record", "record_bytes")

    def __init__(self, dtype: str, itemsize: int, numel: int, record: str, record_bytes: int):
        self.dtype, self.itemsize, self.numel = dtype, itemsize, numel
        self.record, self.record_bytes = record, record_bytes

    def __setstate__(self, state: Any) -> None:
        raise UnsupportedPickle("BUILD on a storage")


class Opaque:
    """A numpy object from a checkpoint's metadata (best scores, ...). Shapes never need its
    value, so numpy is neither imported nor asked to rebuild it."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        pass  # the state is the value, which is deliberately dropped

    def __repr__(self) -> str:
        return "<numpy object>"


_STORAGE_TYPES = {
    "FloatStorage": ("float32", 4),
    "DoubleStorage": ("float64", 8),
    "HalfStorage": ("float16", 2),
    "BFloat16Storage": ("bfloat16", 2),
    "LongStorage": ("int64", 8),
    "IntStorage": ("int32", 4),
    "ShortStorage": ("int16", 2),
    "CharStorage": ("int8", 1),
    "ByteStorage": ("uint8", 1),
    "BoolStorage": ("bool", 1),
}


def _dims(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(type(d) is int and d >= 0 for d in value):
        raise CorruptCheckpoint(f"{what} must be a tuple of non-negative ints, not {value!r:.80}")
    return value


def _size(dims: Any = ()) -> tuple[int, ...]:
    """torch.Size(...) as a plain tuple."""
    return _dims(tuple(dims) if isinstance(dims, list) else dims, "torch.Size")


def _latin1_bytes(text: Any, encoding: Any = None) -> bytes:
    """_codecs.encode: how protocol-2 pickles spell bytes (numpy scalars' raw data). Other codecs
    are refused: a codec name is looked up (and imported) by name."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsupportedPickle(f"_codecs.encode with encoding {encoding!r}", name="_codecs.encode")
    return text.encode("latin-1")


def _numpy_object(*args: Any) -> Opaque:
    return Opaque()


def _extent(offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> int:
    """Elements of storage a strided view needs (torch's computeStorageNbytes, in elements)."""
    if any(d == 0 for d in size):
        return 0  # an empty tensor may sit on any storage
    return offset + 1 + sum((d - 1) * s for d, s in zip(size, stride))


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any,
                       requires_grad: Any = False, backward_hooks: Any = None, metadata: Any = None) -> TensorMeta:
    if not isinstance(storage, _Storage):
        raise CorruptCheckpoint(f"a tensor without a storage record ({type(storage).__name__})")
    size, stride = _dims(size, "a tensor's size"), _dims(stride, "a tensor's stride")
    if len(size) != len(stride):
        raise CorruptCheckpoint(f"a tensor's size {size} and stride {stride} differ in length")
    if type(storage_offset) is not int or storage_offset < 0:
        raise CorruptCheckpoint(f"a tensor's storage offset must be a non-negative int, not {storage_offset!r:.80}")
    needed = _extent(storage_offset, size, stride)
    if needed > storage.numel or needed * storage.itemsize > storage.record_bytes:
        raise CorruptCheckpoint(f"record {storage.record} holds {storage.record_bytes} bytes; "
                                f"a tensor of size {size} needs {needed * storage.itemsize}")
    return TensorMeta(size, storage.dtype)


def _rebuild_parameter(data: Any, requires_grad: Any = None, backward_hooks: Any = None, state: Any = None) -> TensorMeta:
    # A Parameter is its tensor for shapes; its requires_grad, hooks and Python state are not.
    if not isinstance(data, TensorMeta):
        raise UnsupportedPickle(f"a Parameter holding {type(data).__name__}")
    return data


def _allowed() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch", "Size"): _size,
        ("_codecs", "encode"): _latin1_bytes,
        ("numpy", "dtype"): _numpy_object,
        ("numpy", "ndarray"): _numpy_object,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):  # numpy 1 and 2 spell it differently
        allowed[(mod, "scalar")] = _numpy_object
        allowed[(mod, "_reconstruct")] = _numpy_object
    for name, (dtype, itemsize) in _STORAGE_TYPES.items():
        allowed[("torch", name)] = _StorageType(dtype, itemsize)
    return allowed


_ALLOWED = _allowed()


class _ShapeUnpickler(pickle.Unpickler):
    """Unpickles data.pkl of one archive; `records` maps `<archive>/data/<key>` to its size."""

    def __init__(self, data: bytes, prefix: str, records: dict[str, int]):
        super().__init__(io.BytesIO(data))
        self._prefix, self._records = prefix, records
        self._storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is None:
            raise UnsupportedPickle(f"global {module}.{name} is not allowed", name=f"{module}.{name}")
        return found

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage")):
            raise UnsupportedPickle(f"persistent id {pid!r:.80}")
        _, stype, key, _location, numel = pid
        if not isinstance(stype, _StorageType):
            raise UnsupportedPickle(f"storage type {stype!r:.80}")
        if not isinstance(key, str) or type(numel) is not int or numel < 0:
            raise CorruptCheckpoint(f"storage record {key!r:.80} of {numel!r:.80} elements")
        if key in self._storages:  # torch, too, keeps the first load of a shared storage
            return self._storages[key]
        record = f"{self._prefix}data/{key}"
        if record not in self._records:
            raise CorruptCheckpoint(f"storage record {record} is missing")
        if self._records[record] < numel * stype.itemsize:
            raise CorruptCheckpoint(f"record {record} holds {self._records[record]} bytes, "
                                    f"not {numel} {stype.dtype} elements")
        storage = _Storage(stype.dtype, stype.itemsize, numel, record, self._records[record])
        self._storages[key] = storage
        return storage


def _archive_prefix(zf: zipfile.ZipFile) -> str:
    """The folder holding data.pkl: torch names it after the file's stem (or `archive/`)."""
    found = [n[: -len("data.pkl")] for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if not found:
        raise CorruptCheckpoint("no <archive>/data.pkl in the zip")
    if len(found) > 1:
        raise UnsupportedPickle(f"several data.pkl records ({', '.join(found)})")
    return found[0]


def _record_sizes(zf: zipfile.ZipFile, archive_bytes: int) -> dict[str, int]:
    """Uncompressed record sizes from the central directory, checked against the file's length
    (no record's bytes can extend past the end of the file)."""
    sizes: dict[str, int] = {}
    for info in zf.infolist():
        if info.header_offset + info.compress_size > archive_bytes:
            raise CorruptCheckpoint(f"record {info.filename} extends past the end of the file")
        sizes[info.filename] = info.file_size
    return sizes


def _read_bounded(zf: zipfile.ZipFile, name: str) -> bytes:
    info = zf.getinfo(name)
    if info.file_size > MAX_PICKLE_BYTES:
        raise CorruptCheckpoint(f"{name} is {info.file_size} bytes; a checkpoint's pickle is far smaller")
    with zf.open(info) as fh:
        data = fh.read(MAX_PICKLE_BYTES + 1)  # bounded even if the directory's size lies
    if len(data) > MAX_PICKLE_BYTES:
        raise CorruptCheckpoint(f"{name} is larger than {MAX_PICKLE_BYTES} bytes")
    return data


def _check_byteorder(zf: zipfile.ZipFile, prefix: str) -> None:
    name = f"{prefix}byteorder"
    if name in zf.namelist():
        with zf.open(name) as fh:
            order = fh.read(16)  # a few bytes at most: the record could be a zip bomb
        if order != b"little":  # big-endian storages need torch's byte swapping
            raise UnsupportedPickle(f"byteorder {order!r}")


def _unpickle(data: bytes, prefix: str, records: dict[str, int]) -> Any:
    # torch.save writes protocol 2 and torch's weights_only loader reads only 2 and 3: anything
    # else is left to torch, so files of another protocol get the verdict a full load gives
    if data[:2] not in (b"\x80\x02", b"\x80\x03"):
        raise UnsupportedPickle(f"pickle protocol other than 2 or 3 (starts {data[:2]!r})")
    try:
        return _ShapeUnpickler(data, prefix, records).load()
    except (UnsupportedPickle, CorruptCheckpoint):
        raise
    except Exception as exc:  # a malformed or unusual stream: torch's loader gives the verdict
        raise UnsupportedPickle(f"data.pkl does not unpickle here ({type(exc).__name__}: {exc!s:.120})") from exc


def read_torch_shapes(path: str | Path) -> Any:
    """The object a torch.save zip file holds, with a TensorMeta in place of every tensor.

    Raises UnsupportedPickle (legacy format, globals outside the allow-list, ...),
    CorruptCheckpoint (a damaged zip) and OSError (the file cannot be read).
    """
    path = Path(path)
    with open(path, "rb") as fh:
        if fh.read(4) != _ZIP_MAGIC:  # torch's pre-1.6 format is pickles back to back
            raise UnsupportedPickle("legacy format")
        archive_bytes = fh.seek(0, io.SEEK_END)
        try:
            with zipfile.ZipFile(fh) as zf:
                prefix = _archive_prefix(zf)
                records = _record_sizes(zf, archive_bytes)
                _check_byteorder(zf, prefix)
                data = _read_bounded(zf, f"{prefix}data.pkl")
        except NotImplementedError as exc:  # a compression method zipfile lacks
            raise UnsupportedPickle(f"zip record compression ({exc})") from exc
        except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, ValueError) as exc:
            raise CorruptCheckpoint(f"not a readable zip ({exc})") from exc
    return _unpickle(data, prefix, records)
