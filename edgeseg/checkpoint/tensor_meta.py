"""The shape and dtype of a tensor whose bytes were not read.

`edgeseg info` and checkpoint detection need only keys, shapes and dtypes; reading those
without torch keeps the CLI fast. TensorMeta mirrors the small part of the torch.Tensor API
that layout converters use on shapes, and fails loudly on everything else: a converter that
needs values must never get a plausible but wrong answer from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def _check_dims(shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"a shape is a tuple of ints, not {type(shape).__name__}")
    # bool is an int subclass, but True as a dimension is always a bug
    if not all(type(d) is int and d >= 0 for d in shape):
        raise ValueError(f"a shape holds non-negative ints, not {shape!r}")
    return tuple(shape)


def _prod(dims: tuple[int, ...]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


@dataclass(frozen=True)
class TensorMeta:
    shape: tuple[int, ...]
    dtype: str  # torch's name without the "torch." prefix: "float32", "bfloat16", "int64", ...

    @classmethod
    def like(cls, tensor: Any) -> "TensorMeta":
        """The shape record of a tensor (torch's dtype name without its "torch." prefix)."""
        return cls(tuple(tensor.shape), str(tensor.dtype).removeprefix("torch."))

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", _check_dims(self.shape))
        if not isinstance(self.dtype, str) or not self.dtype:
            raise TypeError(f"dtype is a name such as 'float32', not {self.dtype!r}")

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def dim(self) -> int:
        return len(self.shape)

    def numel(self) -> int:
        return _prod(self.shape)

    def size(self, dim: int | None = None) -> Any:
        if dim is None:
            return self.shape
        if type(dim) is not int:
            raise TypeError(f"size() takes an int dimension, not {type(dim).__name__}")
        if not -self.ndim <= dim < self.ndim:
            raise IndexError(f"dimension {dim} is out of range for a {self.ndim}-d tensor")
        return self.shape[dim]

    def reshape(self, *shape: Any) -> TensorMeta:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        if not all(type(d) is int for d in shape):
            raise TypeError(f"reshape() takes ints, not {shape!r}")
        if shape.count(-1) > 1 or any(d < -1 for d in shape):
            raise ValueError(f"invalid shape {shape!r}: at most one -1 and no other negative size")
        known = _prod(tuple(d for d in shape if d != -1))
        if -1 in shape:
            if known == 0:  # torch refuses too: -1 could be any size
                raise ValueError(f"cannot infer -1 in {shape!r} for {self.numel()} elements")
            shape = tuple(self.numel() // known if d == -1 else d for d in shape)
        if _prod(shape) != self.numel():
            raise ValueError(f"shape {shape!r} is invalid for a tensor of {self.numel()} elements {self.shape!r}")
        return TensorMeta(shape, self.dtype)

    def __getitem__(self, key: Any) -> TensorMeta:
        # Only row slices are supported: their result shape is known without values.
        rest: tuple = ()
        if isinstance(key, tuple) and key and isinstance(key[0], slice):
            key, rest = key[0], key[1:]
        if not isinstance(key, slice) or not all(isinstance(r, slice) and r == slice(None) for r in rest):
            raise TypeError(f"TensorMeta supports only a slice of the first dimension, not {key!r}")
        if not self.shape or len(rest) >= len(self.shape):
            raise IndexError(f"too many indices for a {self.ndim}-d tensor")
        if key.step is not None and (type(key.step) is not int or key.step <= 0):
            raise ValueError("slice step must be a positive int")
        rows = len(range(*key.indices(self.shape[0])))
        return TensorMeta((rows, *self.shape[1:]), self.dtype)

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __bool__(self) -> bool:
        raise TypeError("the truth value of a TensorMeta is unknown: its values were not read")

    def __iter__(self):
        raise TypeError("cannot iterate a TensorMeta: its values were not read")

    def __array__(self, *args: Any, **kwargs: Any):
        raise TypeError("a TensorMeta has no values to convert to an array")

    def __setstate__(self, state: Any) -> None:
        # An untrusted pickle could BUILD on one to change its fields; it is never unpickled by state.
        raise TypeError("TensorMeta cannot be restored from pickled state")

    def __reduce__(self):
        return (TensorMeta, (self.shape, self.dtype))


def is_meta(x: Any) -> bool:
    return isinstance(x, TensorMeta)


def cat_rows(parts: list) -> Any:
    """Concatenate along dim 0: torch tensors with torch.cat, TensorMeta by shape."""
    parts = list(parts)
    if not parts:
        raise ValueError("cat_rows needs at least one part")
    metas = [is_meta(p) for p in parts]
    if any(metas) and not all(metas):
        raise ValueError("cat_rows cannot mix tensors with TensorMeta")
    if not all(metas):
        import torch  # lazy: the TensorMeta path stays torch-free

        return torch.cat(parts, dim=0)
    first = parts[0]
    for p in parts:
        if not p.shape:
            raise ValueError("cat_rows cannot concatenate 0-d tensors")
        if p.shape[1:] != first.shape[1:] or p.dtype != first.dtype:
            raise ValueError(f"cat_rows needs equal trailing dims and dtypes: {p.shape} {p.dtype} vs {first.shape} {first.dtype}")
    return TensorMeta((sum(p.shape[0] for p in parts), *first.shape[1:]), first.dtype)
