"""EdgeFormer configs and checkpoint layouts: the variant table, the ml-cvnets keys of the
classification and DeepLabV3 checkpoints, and the probe that reads a baked model's input size.

Torch-free, so that registering the variants (edgeformer_entries.py) and detecting a checkpoint
need no torch; edgeformer.py and edgeformer_seg.py (the networks) import from here.
"""

from __future__ import annotations

from typing import Any, Mapping

from edgeseg.checkpoint.layouts import KeyLayout, LayoutMismatch

# (cf_s_channels, ffn_channels, gcc_blocks) of layers 3-5, and the fusion of outer_frame_v1,
# from cvnets/models/classification/config/edgeformer.py and config/classification/edgeformer/*.yaml.
VARIANTS = {
    "s": (((192, 384, 2), (256, 512, 4), (320, 640, 3)), "concat"),
    "xs": (((96, 192, 2), (128, 256, 3), (160, 320, 2)), "add"),
}
NO_NORMALIZATION = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
_PROBE = "layer_3.1.spatial_global_rep.0"


def with_residual_alias(sd: dict, prefix: str = "") -> dict:
    """Add `residual.*` from `layer_5.0.*` if a re-saved checkpoint dropped the duplicate."""
    out = dict(sd)
    alias, source = f"{prefix}residual.", f"{prefix}layer_5.0."
    if not any(k.startswith(alias) for k in out):
        out.update({alias + k[len(source):]: v for k, v in sd.items() if k.startswith(source)})
    return out


def _cvnets_to_canonical(sd: dict) -> dict:
    if not all(k in sd for k in ("conv_1.block.conv.weight", "classifier.fc.weight", "layer_3.1.local_global_fusion.block.conv.weight")):
        raise LayoutMismatch("not an EdgeFormer (ml-cvnets) classification state dict")
    return with_residual_alias(sd)


CVNETS = KeyLayout("cvnets", "hkzhang91/EdgeFormer (ml-cvnets v0.1): plain state dict, conv_1.block.conv / layer_{n} / classifier.fc",
                   to_canonical=_cvnets_to_canonical, container="plain")


def deploy_size_from_kernels(sd: Mapping[str, Any], prefix: str = "") -> tuple[int, int] | None:
    """Input size of a baked checkpoint: layer 3 runs at 1/8 and its first GCC block holds a
    kernel as long as each axis there. None for anything else (detection calls this on every
    candidate state dict)."""
    kh, kw = sd.get(f"{prefix}{_PROBE}.gcc_1_H.weight"), sd.get(f"{prefix}{_PROBE}.gcc_1_W.weight")
    if kh is None or kw is None or len(getattr(kh, "shape", ())) != 4 or len(getattr(kw, "shape", ())) != 4:
        return None
    return int(kh.shape[2]) * 8, int(kw.shape[3]) * 8


# ---------------------------------------------------------------- DeepLabV3 (edgeformer_seg.py)

_SEG_PROBES = ("encoder.conv_1.block.conv.weight", "encoder.layer_3.1.local_global_fusion.block.conv.weight",
               "seg_head.aspp.aspp_layer.project.block.conv.weight")
_SEG_CLASSIFIER = "seg_head.classifier.classifier.block.conv.weight"


def _cvnets_seg_to_canonical(sd: dict) -> dict:
    if not all(k in sd for k in _SEG_PROBES + (_SEG_CLASSIFIER,)):
        raise LayoutMismatch("not an EdgeFormer DeepLabV3 (ml-cvnets) state dict")
    return with_residual_alias(sd, prefix="encoder.")


CVNETS_SEG = KeyLayout("cvnets", "hkzhang91/EdgeFormer (ml-cvnets v0.1) encoder_decoder: plain state dict, encoder.* / seg_head.*",
                       to_canonical=_cvnets_seg_to_canonical, container="plain")
