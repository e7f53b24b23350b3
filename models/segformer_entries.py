"""SegFormer B0-B5 registrations: names, metadata, key layouts and infer_cfg, without torch.

Kept apart from segformer.py (the network, which needs torch) so that listing models and
detecting a checkpoint (`edgeseg info`) never import torch; each factory imports the network
when it builds.
"""

from __future__ import annotations

from edgeseg.models.segformer_layouts import (ADE_MIOU, EMBED_NORM_EPS, MMSEG, MMSEG1, NVLABS_NORM_EPS, VARIANTS, SegFormerSpec,
                                              infer_cfg, make_hf_layout)
from edgeseg.registry import register_model


def _register(variant: str, spec: SegFormerSpec) -> None:
    @register_model(f"segformer_{variant}", family="segformer", task="segmentation", input_size=(512, 512),
                    layouts=(MMSEG, make_hf_layout(spec, VARIANTS), MMSEG1), infer_cfg=infer_cfg, size_divisor=32, labels="ade20k",
                    large=variant not in ("b0", "b1"),
                    description=f"SegFormer-{variant.upper()} (ADE20K 150 classes, 512; {ADE_MIOU[variant]} mIoU)")
    def factory(num_classes: int = 150, norm_eps: float = NVLABS_NORM_EPS, conv_seg_channels: int | None = 128,
                drop_path_rate: float = 0.1, embed_norm_eps: float = EMBED_NORM_EPS, head: str = "mlp", decoder_dim: int | None = None):
        from edgeseg.models.segformer import SegFormer  # lazy: registering and detecting need no torch

        return SegFormer(spec, num_classes=num_classes, norm_eps=norm_eps, conv_seg_channels=conv_seg_channels,
                         drop_path_rate=drop_path_rate, embed_norm_eps=embed_norm_eps, head=head, decoder_dim=decoder_dim)


for _v, _spec in VARIANTS.items():
    _register(_v, _spec)
