"""BoostFormer checkpoint layouts and the configuration its releases publish.

Sources:
- Final release: boostcampaitech4lv23cv3/final-project-level3-cv-16, `boostformer/modeling_segformer.py`
  (module names) and `train.py` (`model.module.save_pretrained(dir)` under transformers 4.26): a
  directory with `config.json` (a `SegformerConfig` dump, `model_type: "segformer"`,
  `layer_norm_eps: 1e-06`, `hidden_act: "gelu"`, B2 sizes, 150 `id2label` entries) and
  `pytorch_model.bin` (torch.save of a plain dict, 513 tensors with `num_batches_tracked`). Its
  pooling patch embeddings are `segformer.encoder.patch_embeddings.{i}.conv` (1x1) and
  `...patch_embeddings.{i}.layer_norm`. These are edgeseg's module names: the canonical layout.
- Development repository: choipp/lightweight-transformer-modeling, `custom/modeling_segformer.py`.
  The same modules, but the patch embedding's 1x1 conv is named `proj`; saved the same way.

Each origin comes as its directory (`*-hf`) or as the weights file alone (`*-pth`). Only names
differ between the final and the development layouts: numerics are identical.
"""

from __future__ import annotations

import re

from edgeseg.checkpoint.layouts import KeyLayout, LayoutMismatch
from edgeseg.errors import CheckpointError

# The published configuration (SegFormer-B2 sizes; SegformerConfig fields in config.json).
DIMS = (64, 128, 320, 512)
DEPTHS = (3, 4, 6, 3)
HEADS = (1, 2, 5, 8)
PATCH_SIZES = (7, 3, 3, 3)
STRIDES = (4, 2, 2, 2)
MLP_RATIO = 4
DECODER_DIM = 768
POOL_STAGES = 2  # stages 1-2 mix tokens by pooling, stages 3-4 by attention
HIDDEN_ACTS = ("gelu", "relu", "relu6")  # config.hidden_act values the Mix-CFN supports

_ENC = "segformer.encoder."
_FINAL_EMBED = re.compile(rf"^{re.escape(_ENC)}patch_embeddings\.(\d+)\.conv\.")
_DEV_EMBED = re.compile(rf"^{re.escape(_ENC)}patch_embeddings\.(\d+)\.proj\.")


def _check_boostformer(sd: dict) -> dict:
    # Keys every BoostFormer state dict has, fused or not, and no SegFormer one does: pooling
    # patch embeddings (1x1 convs) and the stage 1-2 layer scales.
    conv = sd.get(f"{_ENC}patch_embeddings.0.conv.weight")
    if (conv is None or tuple(conv.shape[-2:]) != (1, 1) or f"{_ENC}block.0.0.layer_scale_1" not in sd
            or "decode_head.classifier.weight" not in sd):
        raise LayoutMismatch("not a BoostFormer state dict (pooling patch embeddings, pool blocks, weighted-sum head)")
    return sd


def final_to_canonical(sd: dict) -> dict:
    if any(_DEV_EMBED.match(k) for k in sd):
        raise LayoutMismatch("development names (patch_embeddings.{i}.proj), not the final release's")
    return _check_boostformer(dict(sd))


def dev_to_canonical(sd: dict) -> dict:
    if not any(_DEV_EMBED.match(k) for k in sd) or any(_FINAL_EMBED.match(k) for k in sd):
        raise LayoutMismatch("not the development names (patch_embeddings.{i}.proj)")
    return _check_boostformer({_DEV_EMBED.sub(rf"{_ENC}patch_embeddings.\1.conv.", k): v for k, v in sd.items()})


def canonical_to_dev(sd: dict) -> dict:
    return {_FINAL_EMBED.sub(rf"{_ENC}patch_embeddings.\1.proj.", k): v for k, v in sd.items()}


def _hf_config(transformers_version: str):
    def hf_config(entry, cfg: dict) -> dict:
        """config.json as the original's save_pretrained writes it (its SegformerConfig, B2 sizes)."""
        n = int(cfg.get("num_classes", 150))
        id2label = {str(i): f"LABEL_{i}" for i in range(n)}
        return {
            "architectures": ["SegformerForSemanticSegmentation"],
            "model_type": "segformer",
            "num_channels": 3,
            "num_encoder_blocks": 4,
            "depths": list(DEPTHS),
            "sr_ratios": [8, 4, 2, 1],
            "hidden_sizes": list(DIMS),
            "patch_sizes": list(PATCH_SIZES),
            "strides": list(STRIDES),
            "num_attention_heads": list(HEADS),
            "mlp_ratios": [MLP_RATIO] * 4,
            "hidden_act": cfg.get("hidden_act", "gelu"),
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
            "classifier_dropout_prob": 0.1,
            "initializer_range": 0.02,
            "drop_path_rate": 0.1,
            "layer_norm_eps": 1e-06,
            "decoder_hidden_size": DECODER_DIM,
            "semantic_loss_ignore_index": 255,
            "reshape_last_stage": True,
            "id2label": id2label,
            "label2id": {v: int(k) for k, v in id2label.items()},
            "torch_dtype": "float32",
            "transformers_version": transformers_version,
        }

    return hf_config


def cfg_from_hf_config(config: dict) -> dict:
    if config.get("model_type") != "segformer":
        raise LayoutMismatch("config.json is not a SegformerConfig")
    act = config.get("hidden_act", "gelu")
    if act not in HIDDEN_ACTS:
        # Only reached once the keys are BoostFormer's (to_canonical runs first).
        raise CheckpointError(f"config.json sets hidden_act={act!r}; edgeseg's BoostFormer supports {', '.join(HIDDEN_ACTS)}",
                              "retrain or convert with a supported activation")
    cfg: dict = {"hidden_act": act}
    labels = config.get("id2label")
    if isinstance(labels, dict) and labels:
        cfg["num_classes"] = len(labels)
    return cfg


FINAL_HF = KeyLayout(
    "boostformer-hf",
    "BoostFormer final release (final-project-level3-cv-16) save_pretrained directory: config.json + pytorch_model.bin; "
    "segformer.encoder.patch_embeddings.{i}.conv, decode_head.*",
    to_canonical=final_to_canonical,
    container="hf",
    hf_config=_hf_config("4.26.0"),
    cfg_from_hf_config=cfg_from_hf_config,
    hf_weights="pytorch_model.bin",
)
FINAL_PTH = KeyLayout("boostformer-pth", "the final release's weights file alone (plain state dict, patch_embeddings.{i}.conv)",
                      to_canonical=final_to_canonical, container="plain")
DEV_HF = KeyLayout(
    "boostformer-dev-hf",
    "BoostFormer development repository (lightweight-transformer-modeling) save_pretrained directory; "
    "patch_embeddings.{i}.proj",
    to_canonical=dev_to_canonical,
    from_canonical=canonical_to_dev,
    container="hf",
    hf_config=_hf_config("4.25.1"),
    cfg_from_hf_config=cfg_from_hf_config,
    hf_weights="pytorch_model.bin",
)
DEV_PTH = KeyLayout("boostformer-dev-pth", "the development repository's weights file alone (patch_embeddings.{i}.proj)",
                    to_canonical=dev_to_canonical, from_canonical=canonical_to_dev, container="plain")
LAYOUTS = (FINAL_HF, FINAL_PTH, DEV_HF, DEV_PTH)


def infer_cfg(sd: dict) -> dict:
    cfg: dict = {"num_classes": int(sd["decode_head.classifier.weight"].shape[0])}
    if f"{_ENC}block.0.0.layer_scale_2" not in sd:  # fused: which block-end BNs its weights kept
        kept = [f"{i}.{j}" for i in range(POOL_STAGES) for j in range(DEPTHS[i]) if f"{_ENC}block.{i}.{j}.norm_2.weight" in sd]
        if kept:
            cfg["keep_block_norms"] = kept
    return cfg
