"""Registry entries of MobileOne.

Kept apart from the network module (`mobileone.py`) so that registering and detecting models
needs no torch: the factories import the network module when they build.
"""

from __future__ import annotations

from edgeseg.models.mobileone_layouts import LAYOUTS, VARIANTS, infer_cfg
from edgeseg.registry import register_model


def _register(variant: str) -> None:
    widths, branches, se = VARIANTS[variant]

    @register_model(f"mobileone_{variant}", family="mobileone", task="classification", input_size=(224, 224), layouts=LAYOUTS,
                    infer_cfg=infer_cfg, labels="imagenet", large=variant in ("s3", "s4"),
                    description=f"MobileOne-{variant.upper()} (ImageNet, 224)")
    def factory(num_classes: int = 1000, **kw):
        from edgeseg.models.mobileone import MobileOne  # lazy: registering and detecting need no torch

        return MobileOne(widths, branches, se, num_classes=num_classes, **kw)


for _v in VARIANTS:
    _register(_v)
