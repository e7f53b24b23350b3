"""timm hub folders: what `hf_hub_download` / `snapshot_download` of a timm model leaves on disk.

A `config.json` written by timm's `push_to_hf_hub` (huggingface/pytorch-image-models,
`timm/models/_hub.py`, `save_config`): `architecture` (the timm model name), `num_classes`,
`num_features` and `pretrained_cfg` (the model's preprocessing: `mean`, `std`, `input_size`
as [C, H, W], `crop_pct`, `crop_mode`, `interpolation`, ...), next to `model.safetensors` (or
`pytorch_model.bin`) holding timm's state dict.

The architecture name only selects among edgeseg's registered variants (it is looked up in
the registry, never imported); the weights must then match that variant in timm's layout.
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgeseg.errors import CheckpointError, EdgesegError
from edgeseg.registry import get_entry

TIMM_LAYOUT = "timm"


class PretrainedCfg(BaseModel):
    """The preprocessing fields of timm's `pretrained_cfg` edgeseg uses (others are ignored)."""

    model_config = ConfigDict(extra="ignore")
    mean: Optional[tuple[float, float, float]] = None
    std: Optional[tuple[float, float, float]] = None
    input_size: Optional[tuple[int, int, int]] = None  # (C, H, W)
    crop_pct: Optional[float] = Field(default=None, gt=0, le=1.5)
    crop_mode: Optional[str] = None
    interpolation: Optional[str] = None
    tag: Optional[str] = None

    @field_validator("std")
    @classmethod
    def _positive(cls, v):
        if v is not None and min(v) <= 0:
            raise ValueError("std must be positive")
        return v

    @field_validator("input_size")
    @classmethod
    def _size(cls, v):
        if v is not None and (v[0] != 3 or min(v[1:]) < 1):
            raise ValueError("input_size must be [3, H, W]")
        return v


class TimmHubConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")
    architecture: str = Field(pattern=r"^[A-Za-z0-9_]+$", max_length=100)
    num_classes: Optional[int] = Field(default=None, ge=0)
    pretrained_cfg: PretrainedCfg = Field(default_factory=PretrainedCfg)

    def preprocessing(self) -> dict[str, Any]:
        """What the hub says a model expects, as recorded in ModelInfo.extra['preprocessing']."""
        p = self.pretrained_cfg
        out: dict[str, Any] = {"source": "timm pretrained_cfg"}
        if p.mean is not None:
            out["mean"] = list(p.mean)
        if p.std is not None:
            out["std"] = list(p.std)
        if p.input_size is not None:
            out["input_size"] = list(p.input_size[1:])
        for key in ("crop_pct", "crop_mode", "interpolation", "tag"):
            if getattr(p, key) is not None:
                out[key] = getattr(p, key)
        return out


def is_timm_hub_config(config: Any) -> bool:
    """timm writes `architecture` + `pretrained_cfg`; transformers configs have `model_type` instead."""
    return isinstance(config, dict) and "architecture" in config and "pretrained_cfg" in config and "model_type" not in config


def parse_timm_config(config: dict, where: Any) -> TimmHubConfig:
    try:
        return TimmHubConfig.model_validate(config)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise CheckpointError(f"{where}/config.json is not a valid timm hub config ({loc}: {first['msg']})",
                              "re-download the model folder or fix config.json") from exc


def hub_architecture(hub: TimmHubConfig, where: Any) -> str:
    """The registered variant the hub's `architecture` names (timm and edgeseg share the names)."""
    try:
        entry = get_entry(hub.architecture)
    except EdgesegError as exc:
        raise CheckpointError(f"{where} is a timm {hub.architecture!r} model, which edgeseg does not implement ({exc.fix or exc.problem})",
                              "run `edgeseg models` for the supported architectures") from exc
    if not any(layout.name == TIMM_LAYOUT for layout in entry.layouts):
        raise CheckpointError(f"{where} is a timm {hub.architecture!r} model; edgeseg reads that architecture only in its original layout",
                              "convert the weights to the original project's names")
    return entry.name
