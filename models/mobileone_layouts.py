"""MobileOne checkpoint layouts.

- `apple-ml-mobileone` (canonical): apple/ml-mobileone `mobileone.py` names, `{'state_dict': sd}`;
  fused files (its `reparameterize_model`) hold `*.reparam_conv.*`.
- `timm`: huggingface/pytorch-image-models builds MobileOne with its ByobNet code
  (`timm/models/byobnet.py`: `mobileone_s0`..`s4` configs, `_mobileone_bcfg`, `MobileOneBlock`,
  stem type "one"). The stem is one MobileOneBlock (`stem`), each stage a flat Sequential of
  alternating depthwise and pointwise blocks (`stages.{s}.{b}` for Apple's `stage{s+1}.{b}`),
  branches `conv_kxk.{k}.{conv,bn}` / `conv_scale.{conv,bn}` / `identity` for Apple's
  `rbr_conv` / `rbr_scale` / `rbr_skip`, squeeze-excite `attn.fc1/fc2` for `se.reduce/expand`,
  classifier `head.fc`; MobileOne configs have no `final_conv`. timm's `reparameterize_model`
  output holds `*.reparam_conv.*`, like Apple's. Saved as a plain state dict (hub: model.safetensors).
The mapping is one-to-one on every key, fused or not.
"""

from __future__ import annotations

import re

from edgeseg.checkpoint.layouts import KeyLayout, LayoutMismatch

# The variant table: registering and detecting models read it, without torch.
VARIANTS = {
    # name: (width multipliers, conv branches, SE)
    "s0": ((0.75, 1.0, 1.0, 2.0), 4, False),
    "s1": ((1.5, 1.5, 2.0, 2.5), 1, False),
    "s2": ((1.5, 2.0, 2.5, 4.0), 1, False),
    "s3": ((2.0, 2.5, 3.0, 4.0), 1, False),
    "s4": ((3.0, 3.5, 3.5, 4.0), 1, True),
}


def _apple_to_canonical(sd: dict) -> dict:
    if "linear.weight" not in sd or not any(k.startswith("stage0.") for k in sd):
        raise LayoutMismatch("not an ml-mobileone state dict")
    return dict(sd)


APPLE = KeyLayout("apple-ml-mobileone", "apple/ml-mobileone: {'state_dict': sd}, stage{n}.{j}.rbr_*", to_canonical=_apple_to_canonical,
                  container="state_dict")

# Whole dotted components, Apple -> timm.
_COMPONENTS = {"rbr_conv": "conv_kxk", "rbr_scale": "conv_scale", "rbr_skip": "identity"}
_COMPONENTS_INV = {v: k for k, v in _COMPONENTS.items()}


def _rename(key: str, table: dict) -> str:
    return ".".join(table.get(p, p) for p in key.split("."))


def _timm_to_apple(sd: dict) -> dict:
    if "head.fc.weight" not in sd or not any(k.startswith(("stem.conv_kxk.", "stem.reparam_conv.")) for k in sd):
        raise LayoutMismatch("not a timm ByobNet MobileOne state dict (no stem.conv_kxk / stem.reparam_conv / head.fc)")
    out = {}
    for key, v in sd.items():
        if key.startswith("stem."):
            key = "stage0." + key[len("stem."):]
        elif m := re.match(r"stages\.(\d+)\.(\d+)\.(.*)$", key):
            key = f"stage{int(m.group(1)) + 1}.{m.group(2)}.{m.group(3)}"
        elif key.startswith("head.fc."):
            key = "linear." + key[len("head.fc."):]
        else:
            out[key] = v  # left as is: detection reports it as unexpected (final_conv of other ByobNets, ...)
            continue
        key = _rename(key, _COMPONENTS_INV).replace(".attn.fc1.", ".se.reduce.").replace(".attn.fc2.", ".se.expand.")
        out[key] = v
    return out


def _apple_to_timm(sd: dict) -> dict:
    out = {}
    for key, v in sd.items():
        if key.startswith("stage0."):
            key = "stem." + key[len("stage0."):]
        elif m := re.match(r"stage(\d)\.(\d+)\.(.*)$", key):
            key = f"stages.{int(m.group(1)) - 1}.{m.group(2)}.{m.group(3)}"
        elif key.startswith("linear."):
            key = "head.fc." + key[len("linear."):]
        key = _rename(key, _COMPONENTS).replace(".se.reduce.", ".attn.fc1.").replace(".se.expand.", ".attn.fc2.")
        out[key] = v
    return out


TIMM = KeyLayout(
    "timm",
    "timm ByobNet mobileone_s*: plain state dict; stem, stages.{s}.{b}.{conv_kxk,conv_scale,identity,attn}, head.fc; fused: reparam_conv",
    to_canonical=_timm_to_apple,
    from_canonical=_apple_to_timm,
    container="plain",
)
LAYOUTS = (APPLE, TIMM)


def infer_cfg(sd: dict) -> dict:
    return {"num_classes": int(sd["linear.weight"].shape[0])}
