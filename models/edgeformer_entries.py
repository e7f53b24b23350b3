"""EdgeFormer registrations (classification S/XS and DeepLabV3 on EdgeFormer-S): names,
metadata, key layouts, infer_cfg and deploy-size probes, without torch.

Kept apart from edgeformer.py and edgeformer_seg.py (the networks, which need torch) so that
listing models and detecting a checkpoint (`edgeseg info`) never import torch; each factory
imports its network when it builds.
"""

from __future__ import annotations

from typing import Any, Mapping

from edgeseg.models.edgeformer_layouts import _SEG_CLASSIFIER, CVNETS, CVNETS_SEG, NO_NORMALIZATION, VARIANTS, deploy_size_from_kernels
from edgeseg.registry import register_model

# ---------------------------------------------------------------- classification (edgeformer.py)


def _infer_cfg(sd: Mapping[str, Any]) -> dict:
    return {"num_classes": int(sd["classifier.fc.weight"].shape[0])}


def _register(variant: str) -> None:
    mean, std = NO_NORMALIZATION

    @register_model(f"edgeformer_{variant}", family="edgeformer", task="classification", input_size=(256, 256), layouts=(CVNETS,),
                    infer_cfg=_infer_cfg, labels="imagenet", mean=mean, std=std, channel_order="bgr", alt_input_size=(224, 288),
                    description=f"EdgeFormer-{variant.upper()} / ParC-Net (ImageNet, 256, BGR in [0, 1])")
    def factory(num_classes: int = 1000, **kw):
        from edgeseg.models.edgeformer import EdgeFormer  # lazy: registering and detecting need no torch

        return EdgeFormer(variant, num_classes=num_classes, **kw)

    factory.infer_deploy_input_size = deploy_size_from_kernels


for _v in VARIANTS:
    _register(_v)

# ---------------------------------------------------------------- DeepLabV3 (edgeformer_seg.py)


def _infer_seg_cfg(sd: Mapping[str, Any]) -> dict:
    return {"num_classes": int(sd[_SEG_CLASSIFIER].shape[0])}


def _deploy_size(sd: Mapping[str, Any]) -> tuple[int, int] | None:
    return deploy_size_from_kernels(sd, prefix="encoder.")


_mean, _std = NO_NORMALIZATION


@register_model("edgeformer_s_deeplabv3", family="edgeformer", task="segmentation", input_size=(512, 512), layouts=(CVNETS_SEG,),
                infer_cfg=_infer_seg_cfg, labels="pascal_voc", mean=_mean, std=_std, channel_order="bgr", alt_input_size=(480, 544),
                description="DeepLabV3 + EdgeFormer-S, output stride 16 (Pascal VOC, 512, BGR in [0, 1])")
def edgeformer_s_deeplabv3(num_classes: int = 21, **kw):
    from edgeseg.models.edgeformer_seg import EdgeFormerDeepLabV3  # lazy: registering and detecting need no torch

    return EdgeFormerDeepLabV3(num_classes=num_classes, **kw)


edgeformer_s_deeplabv3.infer_deploy_input_size = _deploy_size
