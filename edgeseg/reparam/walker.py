"""One walker applies every block's reparameterization.

Blocks follow the protocol `reparameterize(self[, input_size=...])`: idempotent, it replaces
the block's branches by one conv. timm's `fuse()` / `switch_to_deploy()` conventions are
honoured too, so user models that follow them need no adapter; a hook that returns a module
replaces the block in its parent. A final pass folds BatchNorm into a preceding conv inside
any nn.Sequential (the usual Conv-BN-Act container).
"""

from __future__ import annotations

import inspect
from collections import Counter
from dataclasses import dataclass, field

from torch import nn

from edgeseg.reparam.fusion import fuse_conv_bn

HOOKS = ("reparameterize", "switch_to_deploy", "fuse")


@dataclass
class FuseReport:
    fused: Counter = field(default_factory=Counter)  # block type -> count

    @property
    def total(self) -> int:
        return sum(self.fused.values())

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.fused.items()))


def _hook_of(module: nn.Module):
    for name in HOOKS:
        fn = getattr(module, name, None)
        if callable(fn) and not isinstance(fn, nn.Module):
            return fn
    return None


def _call(fn, ctx: dict):
    params = inspect.signature(fn).parameters
    accepts_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in ctx.items() if accepts_all or k in params}
    return fn(**kwargs)


_MARK = "_edgeseg_reparameterized"


def _is_deployed(module: nn.Module) -> bool:
    # The mark keeps the walker idempotent even for user hooks that are not.
    return bool(getattr(module, "is_reparameterized", False) or getattr(module, _MARK, False))


def _apply_hooks(parent: nn.Module, ctx: dict, report: FuseReport) -> None:
    for name, child in list(parent.named_children()):
        hook = _hook_of(child)
        if hook is not None and not _is_deployed(child):
            result = _call(hook, ctx)
            setattr(child, _MARK, True)
            if isinstance(result, nn.Module) and result is not child:
                setattr(parent, name, result)
                child = result
            report.fused[type(hook.__self__).__name__] += 1
        _apply_hooks(child, ctx, report)


def _fold_sequential_bn(module: nn.Module, report: FuseReport) -> None:
    for child in module.children():
        _fold_sequential_bn(child, report)
    if not isinstance(module, nn.Sequential):
        return
    names = list(module._modules)
    for a, b in zip(names, names[1:]):
        conv, bn = module._modules[a], module._modules[b]
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats and conv.out_channels == bn.num_features:
            module._modules[a] = fuse_conv_bn(conv, bn)
            module._modules[b] = nn.Identity()
            report.fused["Conv2d+BatchNorm2d"] += 1


def reparameterize_model(model: nn.Module, **ctx) -> FuseReport:
    """Fuse `model` in place (eval mode). `ctx` (e.g. input_size) reaches hooks that ask for it."""
    model.eval()
    report = FuseReport()
    root_hook = _hook_of(model)
    if root_hook is not None and not _is_deployed(model):
        _call(root_hook, ctx)
        setattr(model, _MARK, True)
        report.fused[type(model).__name__] += 1
    _apply_hooks(model, ctx, report)
    _fold_sequential_bn(model, report)
    return report
