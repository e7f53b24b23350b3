"""The typed config fields an architecture declares, and validation of a cfg read from a file.

A deploy file's metadata carries the cfg it was built with. The file is untrusted, so its cfg
may only hold fields that the architecture's factory declares, with values of the declared
types; anything else is refused before the factory is called.

The fields come from the factory's signature. Factories that forward `**kw` to a model class
(or to a builder that does) also accept that callee's keyword parameters; the callee is found
among the names the factory's code calls, restricted to objects defined in edgeseg's model
package (or, for a user's `module:factory`, in the factory's own module), so that no per-model
list has to be kept in step with the constructors. Built-in factories import their network
inside the body (registering models must not import torch); those in-body imports of edgeseg's
model package are followed only when a cfg names a field the factory itself does not declare.
"""

from __future__ import annotations

import dis
import functools
import importlib
import inspect
import typing
from typing import Any, Callable, Mapping

from edgeseg.errors import CheckpointError

_MAX_DEPTH = 3


def _callees(fn: Callable, follow_imports: bool) -> list[Callable]:
    code = getattr(fn, "__code__", None)
    if code is None:
        return []
    scope = dict(getattr(fn, "__globals__", {}))
    for name, cell in zip(code.co_freevars, getattr(fn, "__closure__", None) or ()):
        try:
            scope[name] = cell.cell_contents
        except ValueError:
            continue
    home = fn.__module__ or ""
    out = []
    for name in code.co_names:
        obj = scope.get(name)
        mod = getattr(obj, "__module__", "") or ""
        if callable(obj) and (mod.startswith("edgeseg.models") or mod == home):
            out.append(obj)
    return out + (_imported_callees(code) if follow_imports else [])


def _imported_callees(code) -> list[Callable]:
    """Callables a function imports in its body (`from edgeseg.models.x import Y`), restricted to
    edgeseg's model package: the module names are the function's own code, never a file's."""
    out: list[Callable] = []
    module = None
    for ins in dis.get_instructions(code):
        if ins.opname == "IMPORT_NAME":
            module = ins.argval if str(ins.argval).startswith("edgeseg.models.") else None
        elif ins.opname == "IMPORT_FROM" and module:
            obj = getattr(importlib.import_module(module), ins.argval, None)
            if callable(obj):
                out.append(obj)
    return out


def _signature_fields(fn: Callable, follow_imports: bool, depth: int = 0) -> dict[str, Any]:
    target = fn.__init__ if inspect.isclass(fn) else fn
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return {}
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # an annotation that does not evaluate: fall back to the default's type
        hints = {}
    fields: dict[str, Any] = {}
    forwards = False
    for p in sig.parameters.values():
        if p.name == "self" or p.kind in (p.VAR_POSITIONAL,):
            continue
        if p.kind is p.VAR_KEYWORD:
            forwards = True
            continue
        if p.name in hints:
            fields[p.name] = hints[p.name]
        elif p.default is not inspect.Parameter.empty and p.default is not None:
            fields[p.name] = type(p.default)
        else:
            fields[p.name] = int | float | bool | str | None | list
    if forwards and depth < _MAX_DEPTH:
        for callee in _callees(target, follow_imports):
            for k, v in _signature_fields(callee, follow_imports, depth + 1).items():
                fields.setdefault(k, v)
    return fields


@functools.lru_cache(maxsize=None)
def _fields_cached(factory: Callable, follow_imports: bool) -> tuple[tuple[str, Any], ...]:
    return tuple(_signature_fields(factory, follow_imports).items())


def cfg_fields(factory: Callable, keys: Any = None) -> dict[str, Any]:
    """Declared cfg field -> type for a model factory. With `keys`, the networks a factory
    imports in its body are looked at only if the factory's own fields lack one of them."""
    fields = dict(_fields_cached(factory, False))
    if keys is None or any(k not in fields for k in keys):
        fields = dict(_fields_cached(factory, True))
    return fields


def validate_cfg(arch: str, factory: Callable, cfg: Any, source: str) -> dict[str, Any]:
    """`cfg` from an untrusted file, checked against `factory`'s declared typed fields."""
    from pydantic import TypeAdapter, ValidationError

    if not isinstance(cfg, Mapping):
        raise CheckpointError(f"{source}: edgeseg.cfg must be a JSON object, not {type(cfg).__name__}",
                              "re-create the deploy file with `edgeseg reparam`")
    fields = cfg_fields(factory, keys=list(cfg))
    unknown = sorted(str(k) for k in cfg if k not in fields)
    if unknown:
        raise CheckpointError(f"{source}: edgeseg.cfg has fields {arch} does not declare ({', '.join(unknown[:5])})",
                              f"{arch} accepts: {', '.join(sorted(fields)) or 'none'}; re-create the file from a trusted checkpoint")
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        try:
            out[key] = TypeAdapter(fields[key]).validate_python(value)
        except ValidationError as exc:
            msg = exc.errors()[0].get("msg", "wrong type")
            raise CheckpointError(f"{source}: edgeseg.cfg field {key!r} of {arch} has an invalid value {value!r} ({msg})",
                                  "re-create the file from a trusted checkpoint") from None
        except Exception:  # a declared type pydantic cannot check (a class, a module): never filled from a file
            raise CheckpointError(f"{source}: edgeseg.cfg field {key!r} of {arch} cannot be set from a file",
                                  "set it in code, not in the checkpoint's metadata") from None
        if isinstance(out[key], tuple):
            out[key] = list(out[key])  # JSON's form: the cfg is recorded back into manifests as read
    return out
