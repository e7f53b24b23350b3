"""Packages that are also functions: `edgeseg.bench(...)`, `edgeseg.parity(...)`, `edgeseg.predict(...)`.

Python sets a package as its parent's attribute once it is imported, shadowing any function of
the same name, so the package itself is made callable; the call imports `edgeseg.workflows` by
name, which keeps the packages free of an import of the workflow layer above them.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module("edgeseg.workflows"), self.__edgeseg_call__)(*args, **kwargs)


def callable_module(module_name: str, function: str) -> None:
    """Calling the module `module_name` calls `edgeseg.workflows.<function>`."""
    module = sys.modules[module_name]
    module.__class__ = _CallableModule
    module.__edgeseg_call__ = function  # type: ignore[attr-defined]
