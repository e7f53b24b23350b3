"""FastViT checkpoint layouts (classification and Semantic FPN).

- `apple-ml-fastvit` (canonical): apple/ml-fastvit `models/fastvit.py` names, saved as
  `{'state_dict': sd}`; fused files (`*_reparam.pth.tar`, written by its
  `models/modules/mobileone.py` `reparameterize_model`) carry `reparam_conv` / `lkb_reparam`.
- `timm`: huggingface/pytorch-image-models `timm/models/fastvit.py`, a renamed port (its
  `checkpoint_filter_fn` maps the Apple names one-to-one; the renames are in `_COMPONENTS` and
  `_apple_key_to_timm`), saved as a plain state dict (hub: `model.safetensors`).
- `mmseg-fastvit-fpn`: mmsegmentation's Semantic FPN on a FastViT backbone, `{'meta', 'state_dict'}`.

Fused checkpoints of Apple and timm keep ConvFFN's BN and the attention block's BN, which
edgeseg's fused models fold too; `fold_leftover_bns` folds them on load, exactly (float64).

The variant tables live here too: registering and detecting models read them, without torch.
"""

from __future__ import annotations

import bisect
import contextlib
import re

from edgeseg.checkpoint.layouts import KeyLayout, LayoutMismatch
from edgeseg.checkpoint.tensor_meta import TensorMeta, is_meta

# name: (layers, embed dims, mlp ratio, has attention stage (+RepCPE), layer-scale init)
VARIANTS = {
    "t8": ((2, 2, 4, 2), (48, 96, 192, 384), 3.0, False, 1e-5),
    "t12": ((2, 2, 6, 2), (64, 128, 256, 512), 3.0, False, 1e-5),
    "s12": ((2, 2, 6, 2), (64, 128, 256, 512), 4.0, False, 1e-5),
    "sa12": ((2, 2, 6, 2), (64, 128, 256, 512), 4.0, True, 1e-5),
    "sa24": ((4, 4, 12, 4), (64, 128, 256, 512), 4.0, True, 1e-5),
    "sa36": ((6, 6, 18, 6), (64, 128, 256, 512), 4.0, True, 1e-6),
    "ma36": ((6, 6, 18, 6), (76, 152, 304, 608), 4.0, True, 1e-6),
}
LARGE = ("sa24", "sa36", "ma36")
SEG_VARIANTS = ("sa12", "sa24", "sa36", "ma36")  # the paper's Semantic FPN models

_FUSED_MARKERS = (".reparam_conv.weight", ".lkb_reparam.weight")


def _bn_params(sd: dict, prefix: str):
    return (sd[f"{prefix}weight"], sd[f"{prefix}bias"], sd[f"{prefix}running_mean"], sd[f"{prefix}running_var"])


def _pop_bn(sd: dict, prefix: str) -> None:
    for leaf in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        sd.pop(f"{prefix}{leaf}", None)


def fold_leftover_bns(sd: dict, prefix: str = "") -> dict:
    """Bring a fused checkpoint of the original (or timm) to our fully fused form: fold each
    ConvFFN BN into its conv and each attention BN into its qkv projection (in float64).
    Unfused dicts are returned unchanged. Shape-only values (TensorMeta, read without torch)
    get the same keys and shapes, nothing computed."""
    if not any(k.endswith(_FUSED_MARKERS) for k in sd):
        return sd
    shapes_only = any(is_meta(v) for v in sd.values())
    if shapes_only:
        no_grad = contextlib.nullcontext()
    else:
        # Lazy: registering and detecting models import this module, and need no torch.
        import torch

        from edgeseg.models.layers.norm_fold import fold_bn_into_linear
        no_grad = torch.no_grad()
    sd = dict(sd)
    with no_grad:
        for key in [k for k in sd if k.startswith(prefix) and k.endswith(".convffn.conv.bn.running_var")]:
            base = key[: -len("bn.running_var")]
            conv_w = sd[f"{base}conv.weight"]
            if shapes_only:  # the folded bias: one per output channel, in the conv's dtype
                sd[f"{base}conv.bias"] = TensorMeta((conv_w.shape[0],), conv_w.dtype)
            else:
                gamma, beta, mean, var = (t.double() for t in _bn_params(sd, f"{base}bn."))
                scale = gamma / torch.sqrt(var + 1e-5)
                sd[f"{base}conv.weight"] = (conv_w.double() * scale.reshape(-1, 1, 1, 1)).to(conv_w.dtype)
                sd[f"{base}conv.bias"] = (beta - mean * scale).to(conv_w.dtype)
            _pop_bn(sd, f"{base}bn.")
        for key in [k for k in sd if k.startswith(prefix) and k.endswith(".norm.running_var")]:
            base = key[: -len("norm.running_var")]
            qkv = f"{base}token_mixer.qkv."
            if f"{qkv}weight" not in sd:
                continue
            w = sd[f"{qkv}weight"]
            b = sd.get(f"{qkv}bias")
            if shapes_only:  # the projection gains (or keeps) a bias, one per output feature
                sd[f"{qkv}bias"] = TensorMeta((w.shape[0],), w.dtype)
            else:
                params = [t.double() for t in _bn_params(sd, f"{base}norm.")]
                fw, fb = fold_bn_into_linear(w.double(), None if b is None else b.double(), *params)
                sd[f"{qkv}weight"], sd[f"{qkv}bias"] = fw.to(w.dtype), fb.to(w.dtype)
            _pop_bn(sd, f"{base}norm.")
    return sd


def _apple_to_canonical(sd: dict) -> dict:
    if "patch_embed.0.reparam_conv.weight" not in sd and not any(k.startswith("patch_embed.0.rbr_") for k in sd):
        raise LayoutMismatch("not an ml-fastvit state dict (no patch_embed.0)")
    if any(k.startswith(("stages.", "stem.", "backbone.")) for k in sd):
        raise LayoutMismatch("not an ml-fastvit classification state dict")
    return fold_leftover_bns(sd)


# Component renames between Apple's and timm's names, applied to whole dotted components.
_COMPONENTS = {
    "rbr_conv": "conv_kxk",
    "rbr_scale": "conv_scale",
    "rbr_skip": "identity",
    "lkb_origin": "large_conv",
    "convffn": "mlp",
}
_COMPONENTS_INV = {v: k for k, v in _COMPONENTS.items()}


def _rename_components(key: str, table: dict) -> str:
    return ".".join(table.get(p, p) for p in key.split("."))


def _apple_key_to_timm(key: str, stage_of: dict[int, int]) -> str:
    m = re.match(r"network\.(\d+)\.(.*)$", key)
    if m:
        n, rest = int(m.group(1)), m.group(2)
        s = stage_of[n]
        if rest.startswith("proj."):
            key = f"stages.{s}.downsample.{rest}"
            key = key.replace(".proj.0.lkb_reparam.", ".proj.0.reparam_conv.")
        elif rest.startswith("pe."):
            key = f"stages.{s}.pos_emb.pos_enc.{rest[3:]}"
        elif rest.startswith("reparam_conv."):
            key = f"stages.{s}.pos_emb.{rest}"
        else:
            key = f"stages.{s}.blocks.{rest}"
    elif key.startswith("patch_embed."):
        key = "stem." + key[len("patch_embed."):]
    elif key.startswith("conv_exp."):
        key = "final_conv." + key[len("conv_exp."):]
    elif key.startswith("head."):
        key = "head.fc." + key[len("head."):]
    key = _rename_components(key, _COMPONENTS)
    key = key.replace(".se.reduce.", ".se.fc1.").replace(".se.expand.", ".se.fc2.")
    return re.sub(r"(^|\.)(layer_scale(_\d)?)$", r"\1\2.gamma", key)


def _apple_to_timm(sd: dict) -> dict:
    kinds: dict[int, str] = {}
    for k in sd:
        m = re.match(r"network\.(\d+)\.([^.]+)", k)
        if m:
            kinds[int(m.group(1))] = "proj" if m.group(2) == "proj" else ("blocks" if m.group(2).isdigit() else "pe")
    downs = sorted(n for n, kind in kinds.items() if kind == "proj")
    stage_of = {n: bisect.bisect_right(downs, n) for n in kinds}
    return {_apple_key_to_timm(k, stage_of): v for k, v in sd.items()}


def _timm_to_apple(sd: dict) -> dict:
    if not any(k.startswith("stem.0.") for k in sd) or not any(k.startswith("stages.") for k in sd):
        raise LayoutMismatch("not a timm fastvit state dict (no stem.0 / stages)")
    if any(k.startswith(("network.", "patch_embed.", "backbone.")) for k in sd):
        raise LayoutMismatch("not a timm fastvit state dict")
    order = {"downsample": 0, "pos_emb": 1, "blocks": 2}
    parts = set()
    for k in sd:
        m = re.match(r"stages\.(\d+)\.(downsample|pos_emb|blocks)\.", k)
        if m:
            parts.add((int(m.group(1)), order[m.group(2)]))
    index = {p: n for n, p in enumerate(sorted(parts))}
    out = {}
    for key, v in sd.items():
        m = re.match(r"stages\.(\d+)\.(downsample|pos_emb|blocks)\.(.*)$", key)
        if m:
            n = index[(int(m.group(1)), order[m.group(2)])]
            kind, rest = m.group(2), m.group(3)
            if kind == "downsample":
                key = f"network.{n}.{rest}".replace(".proj.0.reparam_conv.", ".proj.0.lkb_reparam.")
            elif kind == "pos_emb":
                key = f"network.{n}.pe.{rest[len('pos_enc.'):]}" if rest.startswith("pos_enc.") else f"network.{n}.{rest}"
            else:
                key = f"network.{n}.{rest}"
        elif key.startswith("stem."):
            key = "patch_embed." + key[len("stem."):]
        elif key.startswith("final_conv."):
            key = "conv_exp." + key[len("final_conv."):]
        elif key.startswith("head.fc."):
            key = "head." + key[len("head.fc."):]
        key = _rename_components(key, _COMPONENTS_INV)
        key = key.replace(".se.fc1.", ".se.reduce.").replace(".se.fc2.", ".se.expand.")
        key = re.sub(r"(^|\.)(layer_scale(_\d)?)\.gamma$", r"\1\2", key)
        out[key] = v
    return fold_leftover_bns(out)


APPLE = KeyLayout(
    "apple-ml-fastvit",
    "apple/ml-fastvit: {'state_dict': sd}; patch_embed, network.{i}, conv_exp, head; fused: reparam_conv, lkb_reparam",
    to_canonical=_apple_to_canonical,
    container="state_dict",
)
TIMM = KeyLayout(
    "timm",
    "timm fastvit: plain state dict; stem, stages.{s}.{downsample,pos_emb,blocks}, final_conv, head.fc",
    to_canonical=_timm_to_apple,
    from_canonical=_apple_to_timm,
    container="plain",
)


def _mmseg_fpn_to_canonical(sd: dict) -> dict:
    if not any(k.startswith("backbone.patch_embed.0.") for k in sd) or "decode_head.conv_seg.weight" not in sd:
        raise LayoutMismatch("not an mmseg FastViT checkpoint (no backbone.patch_embed.0 / decode_head.conv_seg)")
    if not any(k.startswith("decode_head.scale_heads.") for k in sd) or not any(k.startswith("neck.lateral_convs.") for k in sd):
        raise LayoutMismatch("not a Semantic FPN checkpoint (no neck.lateral_convs / decode_head.scale_heads)")
    return fold_leftover_bns(sd, prefix="backbone.")


MMSEG_FPN = KeyLayout(
    "mmseg-fastvit-fpn",
    "mmsegmentation Semantic FPN on FastViT: {'meta', 'state_dict'}; backbone.* (ml-fastvit names), neck.*, decode_head.*",
    to_canonical=_mmseg_fpn_to_canonical,
    container="mmseg",
)
