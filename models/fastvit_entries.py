"""Registry entries of FastViT (classification, and Semantic FPN segmentation).

Kept apart from the network modules (`fastvit.py`, `fastvit_seg.py`) so that registering and
detecting models needs no torch: the factories import their network module when they build.
"""

from __future__ import annotations

from edgeseg.models.fastvit_layouts import APPLE, LARGE, MMSEG_FPN, SEG_VARIANTS, TIMM, VARIANTS
from edgeseg.registry import register_model


def _infer_cfg(sd: dict) -> dict:
    return {"num_classes": int(sd["head.weight"].shape[0]) if "head.weight" in sd else 0}


def _register(variant: str) -> None:
    layers, dims, mlp, attention, _ = VARIANTS[variant]
    mixers = "RepMixer x3 + attention" if attention else "RepMixer"

    @register_model(f"fastvit_{variant}", family="fastvit", task="classification", input_size=(256, 256), layouts=(APPLE, TIMM),
                    infer_cfg=_infer_cfg, labels="imagenet", large=variant in LARGE,
                    description=f"FastViT-{variant.upper()} (ImageNet, 256; {mixers}, dims {'/'.join(map(str, dims))})")
    def factory(num_classes: int = 1000, **kw):
        from edgeseg.models.fastvit import build_fastvit  # lazy: registering and detecting need no torch

        return build_fastvit(variant, num_classes=num_classes, **kw)


for _v in VARIANTS:
    _register(_v)


def _infer_seg_cfg(sd: dict) -> dict:
    seg = sd["decode_head.conv_seg.weight"]
    return {"num_classes": int(seg.shape[0]), "head_channels": int(seg.shape[1]),
            "fpn_channels": int(sd["neck.lateral_convs.0.conv.weight"].shape[0])}


def _register_seg(variant: str) -> None:
    dims = VARIANTS[variant][1]

    @register_model(f"fastvit_{variant}_seg", family="fastvit", task="segmentation", input_size=(512, 512), layouts=(MMSEG_FPN,),
                    infer_cfg=_infer_seg_cfg, labels="ade20k", large=variant in LARGE,
                    description=f"FastViT-{variant.upper()} + Semantic FPN (ADE20K, 512; dims {'/'.join(map(str, dims))})")
    def factory(num_classes: int = 150, **kw):
        from edgeseg.models.fastvit_seg import FastViTSeg  # lazy: registering and detecting need no torch

        return FastViTSeg(variant, num_classes=num_classes, **kw)


for _v in SEG_VARIANTS:
    _register_seg(_v)
