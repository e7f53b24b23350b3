"""The architecture registry: `@register_model` adds a factory that the CLI lists and the loader searches."""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from edgeseg.errors import EdgesegError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelEntry:
    """Everything the pipeline needs to know about one registered variant."""

    name: str
    factory: Callable[..., Any]
    family: str
    task: str  # "classification" | "segmentation"
    input_size: tuple[int, int]
    default_cfg: Mapping[str, Any] = field(default_factory=dict)
    # Key layouts of the checkpoints the original projects publish; the first is canonical
    # (the names our modules use), the others convert to it.
    layouts: tuple[Any, ...] = ()
    # Reads config that the checkpoint determines (num_classes, ...) from canonical keys.
    infer_cfg: Callable[[Mapping[str, Any]], dict] | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = "rgb"  # "bgr" for models trained on OpenCV-decoded images (ml-cvnets)
    # A second valid input size for equivalence checks (non-square where the model allows).
    alt_input_size: tuple[int, int] | None = None
    # Input sizes must be multiples of this.
    size_divisor: int = 32
    large: bool = False  # slow in tests: default runs skip it
    labels: str | None = None  # name of a label set ("imagenet", "ade20k", ...)
    description: str = ""

    def build(self, **overrides: Any):
        cfg = {**self.default_cfg, **overrides}
        model = self.factory(**cfg)
        model.eval()
        return model

    @property
    def canonical_layout(self):
        return self.layouts[0] if self.layouts else None


_REGISTRY: dict[str, ModelEntry] = {}
# Every module that registers models, listed explicitly (nothing is discovered from files or
# entry points): one per family, plus the segmentation variants that live in their own module.
FAMILY_MODULES = (
    "edgeseg.models.fastvit_entries",
    "edgeseg.models.mobileone_entries",
    "edgeseg.models.segformer_entries",
    "edgeseg.models.topformer_entries",
    "edgeseg.models.edgeformer_entries",
    "edgeseg.models.boostformer_entries",
)
_populated = False


def register_model(
    name: str | None = None,
    *,
    family: str,
    task: str,
    input_size: tuple[int, int],
    layouts: tuple[Any, ...] = (),
    **kwargs: Any,
):
    """Register a factory; `kwargs` are ModelEntry fields (default_cfg, infer_cfg, large, ...)."""

    def deco(fn):
        key = name or fn.__name__
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} registered twice")
        _REGISTRY[key] = ModelEntry(
            name=key, factory=fn, family=family, task=task, input_size=tuple(input_size), layouts=tuple(layouts), **kwargs
        )
        return fn

    return deco


def _populate() -> None:
    """Import every family module once; a module that fails to import is an error, never a
    silently smaller registry (a missing family would turn into "unrecognised layout")."""
    global _populated
    if _populated:
        return
    for mod in FAMILY_MODULES:
        try:
            importlib.import_module(mod)
        except Exception as exc:
            raise EdgesegError(f"model family module {mod} failed to import ({type(exc).__name__}: {exc})",
                               "reinstall edgeseg (pip install -e .) or run with --debug for the traceback") from exc
    _populated = True


def list_models(family: str | None = None) -> list[ModelEntry]:
    _populate()
    return [e for e in _REGISTRY.values() if family is None or e.family == family]


def families() -> list[str]:
    return sorted({e.family for e in list_models()})


def get_entry(name: str) -> ModelEntry:
    _populate()
    key = name.replace("-", "_").lower()
    if key in _REGISTRY:
        return _REGISTRY[key]
    close = difflib.get_close_matches(key, list(_REGISTRY), n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "run `edgeseg models` to list them"
    raise EdgesegError(f"unknown architecture {name!r}", hint)


def resolve_arch(arch: str) -> list[ModelEntry]:
    """An --arch value names a variant (fastvit_t8) or a whole family (fastvit)."""
    _populate()
    key = arch.replace("-", "_").lower()
    if key in _REGISTRY:
        return [_REGISTRY[key]]
    fam = [e for e in _REGISTRY.values() if e.family == key]
    if fam:
        return fam
    get_entry(arch)  # raises with suggestions
    return []


def create(name: str, **cfg: Any):
    """Build a registered model (random init, eval mode). `cfg` overrides its defaults."""
    return get_entry(name).build(**cfg)
