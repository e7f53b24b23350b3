"""SegFormer checkpoint layouts: NVlabs/mmseg (canonical), Hugging Face transformers, and
open-mmlab/mmsegmentation's own SegFormer (`mmseg1`, see the section below).

The two origins compute different numerics from the same weights: NVlabs builds its block
and stage LayerNorms with eps 1e-6, transformers builds every LayerNorm with torch's default
1e-5 (its config carries `layer_norm_eps`, 1e-6 on the hub, but the modeling code never reads
it). Each layout therefore sets `norm_eps`, so a model keeps its origin's numerics, and the
deploy file (which stores cfg) keeps them too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from edgeseg.checkpoint.layouts import KeyLayout, LayoutMismatch
from edgeseg.checkpoint.tensor_meta import cat_rows
from edgeseg.errors import CheckpointError

NVLABS_NORM_EPS = 1e-6  # mit_b*: norm_layer=partial(nn.LayerNorm, eps=1e-6)
HF_NORM_EPS = 1e-5  # transformers: nn.LayerNorm(hidden_size), default eps
# Patch-embedding and attention-reduction LayerNorms: nn.LayerNorm(dim) (1e-5) in NVlabs and
# transformers; mmsegmentation builds them from the backbone's norm_cfg (eps 1e-6).
EMBED_NORM_EPS = 1e-5
MMSEG1_NORM_EPS = 1e-6


@dataclass(frozen=True)
class SegFormerSpec:
    """One published variant (mit_bX backbone + all-MLP head)."""

    dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    decoder_dim: int
    heads: tuple[int, int, int, int] = (1, 2, 5, 8)
    sr_ratios: tuple[int, int, int, int] = (8, 4, 2, 1)
    mlp_ratios: tuple[int, int, int, int] = (4, 4, 4, 4)
    patch_sizes: tuple[int, int, int, int] = (7, 3, 3, 3)
    strides: tuple[int, int, int, int] = (4, 2, 2, 2)


VARIANTS = {
    "b0": SegFormerSpec(dims=(32, 64, 160, 256), depths=(2, 2, 2, 2), decoder_dim=256),
    "b1": SegFormerSpec(dims=(64, 128, 320, 512), depths=(2, 2, 2, 2), decoder_dim=256),
    "b2": SegFormerSpec(dims=(64, 128, 320, 512), depths=(3, 4, 6, 3), decoder_dim=768),
    "b3": SegFormerSpec(dims=(64, 128, 320, 512), depths=(3, 4, 18, 3), decoder_dim=768),
    "b4": SegFormerSpec(dims=(64, 128, 320, 512), depths=(3, 8, 27, 3), decoder_dim=768),
    "b5": SegFormerSpec(dims=(64, 128, 320, 512), depths=(3, 6, 40, 3), decoder_dim=768),
}
ADE_MIOU = {"b0": 37.4, "b1": 42.2, "b2": 46.5, "b3": 49.4, "b4": 50.3, "b5": 51.0}


# ---------------------------------------------------------------- NVlabs / mmseg


def _mmseg_to_canonical(sd: dict) -> dict:
    # edgeseg deploy files of mmseg-trained models hold these backbone names with mmseg's head
    # (`fusion_conv`); their cfg (head="mmseg") tells them apart.
    head = "decode_head.linear_pred.weight" in sd or "decode_head.fusion_conv.conv.weight" in sd
    if not head or "backbone.patch_embed1.proj.weight" not in sd:
        raise LayoutMismatch("not an NVlabs SegFormer state dict")
    return dict(sd)


MMSEG = KeyLayout(
    "mmseg",
    "NVlabs/SegFormer (mmseg 0.x): {'meta', 'state_dict'}, backbone.block{s}.{j}.attn.kv, decode_head.linear_c{s}",
    to_canonical=_mmseg_to_canonical,
    container="mmseg",
    cfg_overrides={"norm_eps": NVLABS_NORM_EPS},
)

# ---------------------------------------------------------------- Hugging Face

_HF = "segformer.encoder."
_BLOCK_HF_TO_CANON = {  # inside one block; kv is handled separately (split row-wise)
    "layer_norm_1": "norm1",
    "attention.self.query": "attn.q",
    "attention.self.sr": "attn.sr",
    "attention.self.layer_norm": "attn.norm",
    "attention.output.dense": "attn.proj",
    "layer_norm_2": "norm2",
    "mlp.dense1": "mlp.fc1",
    "mlp.dwconv.dwconv": "mlp.dwconv.dwconv",
    "mlp.dense2": "mlp.fc2",
}
_BLOCK_CANON_TO_HF = {v: k for k, v in _BLOCK_HF_TO_CANON.items()}
# transformers splits mmcv's ConvModule (conv, bn) into two sibling modules.
_HEAD_HF_TO_CANON = {"linear_fuse": "linear_fuse.conv", "batch_norm": "linear_fuse.bn", "classifier": "linear_pred"}
# transformers >= 5 names its modules differently (and maps hub names on load); accept
# state dicts taken from such a model too, by mapping them to the hub names first.
_HF5_TO_HUB = [
    (r"^segformer\.stages\.(\d+)\.patch_embeddings\.", r"segformer.encoder.patch_embeddings.\1."),
    (r"^segformer\.stages\.(\d+)\.blocks\.", r"segformer.encoder.block.\1."),
    (r"^segformer\.stages\.(\d+)\.layer_norm\.", r"segformer.encoder.layer_norm.\1."),
    (r"\.attention\.q_proj\.", ".attention.self.query."),
    (r"\.attention\.k_proj\.", ".attention.self.key."),
    (r"\.attention\.v_proj\.", ".attention.self.value."),
    (r"\.attention\.sequence_reduction\.sequence_reduction\.", ".attention.self.sr."),
    (r"\.attention\.sequence_reduction\.layer_norm\.", ".attention.self.layer_norm."),
    (r"\.attention\.o_proj\.", ".attention.output.dense."),
    (r"\.layernorm_before\.", ".layer_norm_1."),
    (r"\.layernorm_after\.", ".layer_norm_2."),
    (r"\.mlp\.fc1\.", ".mlp.dense1."),
    (r"\.mlp\.fc2\.", ".mlp.dense2."),
    (r"^decode_head\.linear_projections\.", "decode_head.linear_c."),
]


def _from_transformers5(sd: dict) -> dict:
    out = {}
    for k, v in sd.items():
        for pat, rep in _HF5_TO_HUB:
            k = re.sub(pat, rep, k)
        out[k] = v
    return out


def _hf_to_canonical(sd: dict) -> dict:
    if "segformer.stages.0.patch_embeddings.proj.weight" in sd:
        sd = _from_transformers5(sd)
    if f"{_HF}patch_embeddings.0.proj.weight" not in sd or "decode_head.classifier.weight" not in sd:
        raise LayoutMismatch("not a Hugging Face SegformerForSemanticSegmentation state dict")
    out: dict[str, Any] = {}
    pending_kv: dict[str, dict[str, Any]] = {}  # canonical kv prefix -> {"key.weight": t, ...}
    for k, v in sd.items():
        if m := re.fullmatch(rf"{re.escape(_HF)}patch_embeddings\.(\d+)\.(proj|layer_norm)\.(\w+)", k):
            s, mod, leaf = m.groups()
            out[f"backbone.patch_embed{int(s) + 1}.{'proj' if mod == 'proj' else 'norm'}.{leaf}"] = v
        elif m := re.fullmatch(rf"{re.escape(_HF)}block\.(\d+)\.(\d+)\.attention\.self\.(key|value)\.(weight|bias)", k):
            s, j, which, leaf = m.groups()
            pending_kv.setdefault(f"backbone.block{int(s) + 1}.{j}.attn.kv", {})[f"{which}.{leaf}"] = (k, v)
        elif m := re.fullmatch(rf"{re.escape(_HF)}block\.(\d+)\.(\d+)\.(.+)\.(\w+)", k):
            s, j, mod, leaf = m.groups()
            canon = _BLOCK_HF_TO_CANON.get(mod)
            out[f"backbone.block{int(s) + 1}.{j}.{canon}.{leaf}" if canon else k] = v
        elif m := re.fullmatch(rf"{re.escape(_HF)}layer_norm\.(\d+)\.(\w+)", k):
            s, leaf = m.groups()
            out[f"backbone.norm{int(s) + 1}.{leaf}"] = v
        elif m := re.fullmatch(r"decode_head\.linear_c\.(\d+)\.proj\.(\w+)", k):
            s, leaf = m.groups()
            out[f"decode_head.linear_c{int(s) + 1}.proj.{leaf}"] = v
        elif m := re.fullmatch(r"decode_head\.(linear_fuse|batch_norm|classifier)\.(\w+)", k):
            mod, leaf = m.groups()
            out[f"decode_head.{_HEAD_HF_TO_CANON[mod]}.{leaf}"] = v
        else:
            out[k] = v  # left as is: detection reports it as unexpected
    for prefix, parts in pending_kv.items():
        for leaf in ("weight", "bias"):
            key, value = parts.pop(f"key.{leaf}", None), parts.pop(f"value.{leaf}", None)
            if key is not None and value is not None:
                # NVlabs' kv projection stacks K rows then V rows (reshape(..., 2, heads, d)).
                out[f"{prefix}.{leaf}"] = cat_rows([key[1], value[1]])  # tensors or TensorMeta (info)
            else:  # half a pair: keep the HF name so the error names it
                for kv in (key, value):
                    if kv is not None:
                        out[kv[0]] = kv[1]
    return out


def _canonical_to_hf(sd: dict) -> dict:
    out: dict[str, Any] = {}
    for k, v in sd.items():
        if m := re.fullmatch(r"backbone\.patch_embed(\d)\.(proj|norm)\.(\w+)", k):
            s, mod, leaf = m.groups()
            out[f"{_HF}patch_embeddings.{int(s) - 1}.{'proj' if mod == 'proj' else 'layer_norm'}.{leaf}"] = v
        elif m := re.fullmatch(r"backbone\.block(\d)\.(\d+)\.attn\.kv\.(weight|bias)", k):
            s, j, leaf = m.groups()
            half = v.shape[0] // 2
            base = f"{_HF}block.{int(s) - 1}.{j}.attention.self"
            out[f"{base}.key.{leaf}"], out[f"{base}.value.{leaf}"] = v[:half], v[half:]
        elif m := re.fullmatch(r"backbone\.block(\d)\.(\d+)\.(.+)\.(\w+)", k):
            s, j, mod, leaf = m.groups()
            out[f"{_HF}block.{int(s) - 1}.{j}.{_BLOCK_CANON_TO_HF[mod]}.{leaf}"] = v
        elif m := re.fullmatch(r"backbone\.norm(\d)\.(\w+)", k):
            s, leaf = m.groups()
            out[f"{_HF}layer_norm.{int(s) - 1}.{leaf}"] = v
        elif m := re.fullmatch(r"decode_head\.linear_c(\d)\.proj\.(\w+)", k):
            s, leaf = m.groups()
            out[f"decode_head.linear_c.{int(s) - 1}.proj.{leaf}"] = v
        elif k.startswith("decode_head.conv_seg."):
            continue  # mmseg's unused classifier; transformers has no such module
        else:
            for hf, canon in _HEAD_HF_TO_CANON.items():
                if k.startswith(f"decode_head.{canon}."):
                    out[f"decode_head.{hf}.{k.rsplit('.', 1)[1]}"] = v
                    break
            else:
                raise KeyError(f"no Hugging Face name for {k}")
    return out


def _listed(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


# SegformerConfig's defaults: a config.json may omit any field that equals them.
_HF_DEFAULTS = {"num_channels": 3, "num_encoder_blocks": 4, "hidden_act": "gelu", "reshape_last_stage": True}


def _num_labels(config: dict) -> int | None:
    if isinstance(config.get("id2label"), dict) and config["id2label"]:
        return len(config["id2label"])
    n = config.get("num_labels")
    return int(n) if n is not None else None


def _hf_arch(spec: SegFormerSpec) -> dict[str, Any]:
    return {
        "hidden_sizes": list(spec.dims),
        "depths": list(spec.depths),
        "num_attention_heads": list(spec.heads),
        "sr_ratios": list(spec.sr_ratios),
        "mlp_ratios": list(spec.mlp_ratios),
        "patch_sizes": list(spec.patch_sizes),
        "strides": list(spec.strides),
        "decoder_hidden_size": spec.decoder_dim,
    }


# SegformerConfig's defaults for the architecture fields (those of B0).
_HF_ARCH_DEFAULTS = {"hidden_sizes": [32, 64, 160, 256], "depths": [2, 2, 2, 2], "num_attention_heads": [1, 2, 5, 8],
                     "sr_ratios": [8, 4, 2, 1], "mlp_ratios": [4, 4, 4, 4], "patch_sizes": [7, 3, 3, 3],
                     "strides": [4, 2, 2, 2], "decoder_hidden_size": 256}


def make_hf_layout(spec: SegFormerSpec, known: Mapping[str, SegFormerSpec]) -> KeyLayout:
    """The Hugging Face layout of one variant: its config.json must describe that variant.

    A config of another known variant is that variant's business (LayoutMismatch); one that
    describes none of `known` is refused with what it says.
    """
    arch = _hf_arch(spec)

    def hf_config(entry: Any, cfg: dict) -> dict:
        n = int(cfg.get("num_classes", 150))
        id2label = {str(i): f"LABEL_{i}" for i in range(n)}
        return {
            "architectures": ["SegformerForSemanticSegmentation"],
            "model_type": "segformer",
            "num_channels": 3,
            "num_encoder_blocks": 4,
            **arch,
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
            "classifier_dropout_prob": 0.1,
            "drop_path_rate": 0.1,
            "initializer_range": 0.02,
            # What the hub configs say; transformers' modeling code ignores it (see module doc).
            "layer_norm_eps": 1e-06,
            "semantic_loss_ignore_index": 255,
            "reshape_last_stage": True,
            "image_size": 224,
            "downsampling_rates": [1, 4, 8, 16],
            "id2label": id2label,
            "label2id": {v: int(k) for k, v in id2label.items()},
            "torch_dtype": "float32",
        }

    def cfg_from_hf_config(config: dict) -> dict:
        if config.get("model_type") != "segformer":
            raise LayoutMismatch("config.json is not a SegFormer config")
        for key, default in _HF_DEFAULTS.items():
            if config.get(key, default) != default:
                # other SegformerConfig users (BoostFormer with relu6) must still get their turn
                raise LayoutMismatch(f"config.json sets {key}={config[key]!r}; SegFormer supports only {key}={default!r}")
        described = {key: _listed(config.get(key, default)) for key, default in _HF_ARCH_DEFAULTS.items()}
        if described != arch:
            if any(described == _hf_arch(other) for other in known.values()):
                raise LayoutMismatch("config.json describes another SegFormer variant")
            summary = ", ".join(f"{k}={described[k]}" for k in ("hidden_sizes", "depths", "decoder_hidden_size"))
            raise CheckpointError(f"config.json describes a SegFormer that is none of {', '.join(known)} ({summary})",
                                  "edgeseg supports the published B0-B5 architectures")
        cfg: dict[str, Any] = {"norm_eps": HF_NORM_EPS, "conv_seg_channels": None}
        n = _num_labels(config)
        if n is not None:
            cfg["num_classes"] = n  # the classifier's shape (infer_cfg) has the last word
        return cfg

    return KeyLayout(
        "huggingface",
        "transformers SegformerForSemanticSegmentation: config.json + model.safetensors/pytorch_model.bin, kv split into key/value",
        to_canonical=_hf_to_canonical,
        from_canonical=_canonical_to_hf,
        container="hf",
        cfg_overrides={"norm_eps": HF_NORM_EPS, "conv_seg_channels": None},
        hf_config=hf_config,
        cfg_from_hf_config=cfg_from_hf_config,
    )


# ---------------------------------------------------------------- open-mmlab mmsegmentation
#
# mmsegmentation's re-implementation (mmseg/models/backbones/mit.py `MixVisionTransformer`, in
# 0.x from v0.13 and in 1.x; mmseg/models/decode_heads/segformer_head.py `SegformerHead`):
# - backbone.layers.{i} = ModuleList([PatchEmbed (`projection` conv, `norm`), ModuleList of
#   TransformerEncoderLayer, LayerNorm]);
# - a layer: norm1, attn (EfficientMultiheadAttention: `attn.attn` is torch's
#   nn.MultiheadAttention, whose in_proj_weight stacks the q, k, v projections row-wise;
#   `attn.attn.out_proj`; `attn.sr`, `attn.norm` when sr_ratio > 1), norm2, ffn (MixFFN:
#   `ffn.layers` = [1x1 conv fc1, 3x3 depthwise pe_conv, GELU, Dropout, 1x1 conv fc2, Dropout]);
# - every LayerNorm from norm_cfg=dict(type='LN', eps=1e-6), patch embeddings included;
# - decode_head.convs.{i} and decode_head.fusion_conv are ConvModules (conv without bias, bn,
#   ReLU), decode_head.conv_seg the classifier: see `MMSegSegformerHead`.
# Saved by mmengine's CheckpointHook as {'meta', 'state_dict', ...}.

_MM_BLOCK_TO_CANON = {"norm1": "norm1", "norm2": "norm2", "attn.attn.out_proj": "attn.proj", "attn.sr": "attn.sr",
                      "attn.norm": "attn.norm", "ffn.layers.0": "mlp.fc1", "ffn.layers.1": "mlp.dwconv.dwconv",
                      "ffn.layers.4": "mlp.fc2"}
_CANON_BLOCK_TO_MM = {v: k for k, v in _MM_BLOCK_TO_CANON.items()}
_POINTWISE = ("mlp.fc1", "mlp.fc2")  # 1x1 convs in mmseg, linear layers here: (out, in, 1, 1) <-> (out, in)


def _mmseg1_to_canonical(sd: dict) -> dict:
    if "backbone.layers.0.0.projection.weight" not in sd or "decode_head.fusion_conv.conv.weight" not in sd:
        raise LayoutMismatch("not an mmsegmentation SegFormer state dict (backbone.layers.*.0.projection, decode_head.fusion_conv)")
    out: dict[str, Any] = {}
    for k, v in sd.items():
        if m := re.fullmatch(r"backbone\.layers\.(\d+)\.0\.(projection|norm)\.(\w+)", k):
            s, mod, leaf = m.groups()
            out[f"backbone.patch_embed{int(s) + 1}.{'proj' if mod == 'projection' else 'norm'}.{leaf}"] = v
        elif m := re.fullmatch(r"backbone\.layers\.(\d+)\.1\.(\d+)\.attn\.attn\.in_proj_(weight|bias)", k):
            s, j, leaf = m.groups()
            c = v.shape[0] // 3
            if v.shape[0] != 3 * c:
                raise LayoutMismatch(f"{k} does not stack three projections")
            base = f"backbone.block{int(s) + 1}.{j}.attn"
            # rows [0, C) project queries, [C, 2C) keys, [2C, 3C) values (nn.MultiheadAttention);
            # NVlabs' kv projection stacks K rows then V rows: the same order.
            out[f"{base}.q.{leaf}"], out[f"{base}.kv.{leaf}"] = v[:c], v[c:]
        elif m := re.fullmatch(r"backbone\.layers\.(\d+)\.1\.(\d+)\.(.+)\.(\w+)", k):
            s, j, mod, leaf = m.groups()
            canon = _MM_BLOCK_TO_CANON.get(mod)
            if canon is None:
                out[k] = v
                continue
            if canon in _POINTWISE and leaf == "weight" and v.dim() == 4:
                v = v.reshape(v.shape[0], v.shape[1])
            out[f"backbone.block{int(s) + 1}.{j}.{canon}.{leaf}"] = v
        elif m := re.fullmatch(r"backbone\.layers\.(\d+)\.2\.(\w+)", k):
            s, leaf = m.groups()
            out[f"backbone.norm{int(s) + 1}.{leaf}"] = v
        else:
            out[k] = v  # decode_head.* keep mmseg's names (MMSegSegformerHead); anything else is reported
    return out


def _canonical_to_mmseg1(sd: dict) -> dict:
    out: dict[str, Any] = {}
    for k, v in sd.items():
        if m := re.fullmatch(r"backbone\.patch_embed(\d)\.(proj|norm)\.(\w+)", k):
            s, mod, leaf = m.groups()
            out[f"backbone.layers.{int(s) - 1}.0.{'projection' if mod == 'proj' else 'norm'}.{leaf}"] = v
        elif m := re.fullmatch(r"backbone\.block(\d)\.(\d+)\.attn\.q\.(weight|bias)", k):
            s, j, leaf = m.groups()
            kv = sd[f"backbone.block{s}.{j}.attn.kv.{leaf}"]
            out[f"backbone.layers.{int(s) - 1}.1.{j}.attn.attn.in_proj_{leaf}"] = cat_rows([v, kv])
        elif re.fullmatch(r"backbone\.block\d\.\d+\.attn\.kv\.\w+", k):
            continue  # joined with q above
        elif m := re.fullmatch(r"backbone\.block(\d)\.(\d+)\.(.+)\.(\w+)", k):
            s, j, mod, leaf = m.groups()
            if mod in _POINTWISE and leaf == "weight":
                v = v.reshape(*v.shape, 1, 1)
            out[f"backbone.layers.{int(s) - 1}.1.{j}.{_CANON_BLOCK_TO_MM[mod]}.{leaf}"] = v
        elif m := re.fullmatch(r"backbone\.norm(\d)\.(\w+)", k):
            s, leaf = m.groups()
            out[f"backbone.layers.{int(s) - 1}.2.{leaf}"] = v
        else:
            out[k] = v
    return out


MMSEG1 = KeyLayout(
    "mmseg1",
    "open-mmlab/mmsegmentation SegFormer (1.x, and 0.x >= 0.13): {'meta', 'state_dict'}; backbone.layers.{i}.{0,1,2}, "
    "attn.attn.in_proj_weight (q/k/v), decode_head.{convs,fusion_conv,conv_seg}",
    to_canonical=_mmseg1_to_canonical,
    from_canonical=_canonical_to_mmseg1,
    container="mmseg",
    cfg_overrides={"norm_eps": MMSEG1_NORM_EPS, "embed_norm_eps": MMSEG1_NORM_EPS, "head": "mmseg", "conv_seg_channels": None},
)


def infer_cfg(sd: dict) -> dict:
    if "decode_head.fusion_conv.conv.weight" in sd:  # mmsegmentation's SegformerHead
        return {"num_classes": int(sd["decode_head.conv_seg.weight"].shape[0]),
                "decoder_dim": int(sd["decode_head.fusion_conv.conv.weight"].shape[0])}
    if "decode_head.conv_seg.weight" in sd and "decode_head.linear_pred.weight" not in sd:  # its deploy form (segformer_deploy.py)
        seg = sd["decode_head.conv_seg.weight"]
        return {"num_classes": int(seg.shape[0]), "decoder_dim": int(seg.shape[1])}
    cfg = {"num_classes": int(sd["decode_head.linear_pred.weight"].shape[0])}
    if "decode_head.conv_seg.weight" in sd:
        cfg["conv_seg_channels"] = int(sd["decode_head.conv_seg.weight"].shape[1])
    return cfg
