"""TopFormer Tiny/Small/Base registrations: names, metadata, key layout and infer_cfg, without torch.

Kept apart from topformer.py (the network, which needs torch) so that listing models and
detecting a checkpoint (`edgeseg info`) never import torch; each factory imports the network
when it builds.
"""

from __future__ import annotations

from edgeseg.models.topformer_layouts import DESCRIPTIONS, MMSEG, VARIANTS
from edgeseg.registry import register_model


def _infer_cfg(sd: dict) -> dict:
    return {"num_classes": int(sd["decode_head.conv_seg.weight"].shape[0])}


def _register(variant: str) -> None:
    channels, extra_row, heads, out_dim, dw = VARIANTS[variant]

    @register_model(f"topformer_{variant}", family="topformer", task="segmentation", input_size=(512, 512), layouts=(MMSEG,),
                    infer_cfg=_infer_cfg, labels="ade20k", size_divisor=64, default_cfg={"num_classes": 150},
                    description=f"{DESCRIPTIONS[variant]} (ADE20K, 512; logits at 1/8)")
    def factory(num_classes: int = 150):
        from edgeseg.models.topformer import TopFormer  # lazy: registering and detecting need no torch

        return TopFormer(channels, extra_row, heads, out_dim, dw, num_classes=num_classes)


for _v in VARIANTS:
    _register(_v)
