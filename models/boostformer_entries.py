"""Registry entry of BoostFormer.

Kept apart from the network module (`boostformer.py`) so that registering and detecting models
needs no torch: the factory imports the network module when it builds.
"""

from __future__ import annotations

from typing import Sequence

from edgeseg.models.boostformer_layouts import LAYOUTS, infer_cfg
from edgeseg.registry import register_model


# No return annotation (it was BoostFormer): cfg_schema resolves this signature's annotations
# with typing.get_type_hints, and the class is not importable here without torch.
@register_model("boostformer", family="boostformer", task="segmentation", input_size=(512, 512), layouts=LAYOUTS,
                infer_cfg=infer_cfg, labels="ade20k", size_divisor=32, alt_input_size=(480, 544),
                default_cfg={"num_classes": 150},
                description="BoostFormer (boostcamp SegFormer-B2 derivative, ADE20K, 512; logits at 1/4)")
def boostformer(num_classes: int = 150, hidden_act: str = "gelu", keep_block_norms: Sequence[str] = ()):
    from edgeseg.models.boostformer import BoostFormer  # lazy: registering and detecting need no torch

    return BoostFormer(num_classes=num_classes, hidden_act=hidden_act, keep_block_norms=keep_block_norms)
