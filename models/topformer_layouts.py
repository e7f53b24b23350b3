"""TopFormer configs and checkpoint layout: the variant table and hustvl/TopFormer's mmseg keys.

Torch-free, so that registering the variants (topformer_entries.py) and detecting a checkpoint
need no torch; topformer.py (the network) imports the table from here.
"""

from __future__ import annotations

from edgeseg.checkpoint.layouts import KeyLayout, LayoutMismatch

# name: (channels c1..c4, extra last row, heads, injection/head dim, depthwise head conv)
VARIANTS = {
    "tiny": ((16, 32, 64, 96), False, 4, 128, True),
    "small": ((24, 48, 96, 128), True, 6, 192, False),
    "base": ((32, 64, 128, 160), True, 8, 256, False),
}
DESCRIPTIONS = {"tiny": "TopFormer-T", "small": "TopFormer-S", "base": "TopFormer-B"}


def _mmseg_to_canonical(sd: dict) -> dict:
    if "backbone.tpm.stem.0.c.weight" not in sd or "decode_head.conv_seg.weight" not in sd:
        raise LayoutMismatch("not a TopFormer mmseg state dict")
    return dict(sd)


MMSEG = KeyLayout("mmseg-topformer", "hustvl/TopFormer (mmseg): {'meta', 'state_dict'}, backbone.{tpm,trans,SIM}.*, decode_head.*",
                  to_canonical=_mmseg_to_canonical, container="mmseg")
