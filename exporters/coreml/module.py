"""The module that Core ML converts: the ONNX exporter's wrapper (same outputs, names and
segmentation post-processing as the .onnx), with the input normalization folded in for image
inputs.

Core ML's ImageType applies `scale * pixel + bias` with a per-channel bias but ONE scale, so a
per-channel std cannot live in the image preprocessing. We keep the exact `pixel/255 - mean`
there and fold `1/std` into the weights of the first convolution when the input feeds a
convolution and nothing else (exact: the conv is linear and zero padding stays zero after
scaling); otherwise the module divides by std with one explicit multiply.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from edgeseg.errors import EdgesegError
from edgeseg.exporters.wrap import wrap_for_export


class InputScale(nn.Module):
    """x * (1/std) per channel, then the model."""

    def __init__(self, inner: nn.Module, factors: torch.Tensor):
        super().__init__()
        self.inner = inner
        self.register_buffer("factors", factors.reshape(1, -1, 1, 1).float())

    def forward(self, x: torch.Tensor):
        return self.inner(x * self.factors)


@dataclass
class Normalization:
    """Where the model's mean/std went: `image` (Core ML preprocessing, plus `folded`) or
    `none` (the caller feeds normalized tensors, as for ONNX)."""

    mode: str
    scale: float = 1.0
    bias: tuple[float, ...] = ()
    folded: str = ""  # "" (uniform std: all in the image scale) | "multiply" | "conv:<parameter>"

    def describe(self) -> str:
        if self.mode == "none":
            return "none: input is the normalized tensor (x/255 - mean) / std"
        how = {"": "uniform 1/std in the image scale", "multiply": "1/std as an explicit multiply op"}.get(
            self.folded, f"1/std folded into {self.folded.removeprefix('conv:')}")
        return f"image: pixel/255 - mean in Core ML preprocessing; {how}"

    def as_dict(self) -> dict:
        return {"mode": self.mode, "image_scale": self.scale, "image_bias": list(self.bias), "std_folded": self.folded,
                "description": self.describe()}


def first_conv_weight(module: nn.Module, example: torch.Tensor) -> str | None:
    """Name of the weight of the conv that is the input's only consumer, if there is one."""
    ep = torch.export.export(module, (example,), strict=False)
    sig = ep.graph_signature
    kinds = torch.export.graph_signature.InputKind
    user_inputs = [s.arg.name for s in sig.input_specs if s.kind == kinds.USER_INPUT]
    if len(user_inputs) != 1:
        return None
    node = next(n for n in ep.graph.nodes if n.op == "placeholder" and n.name == user_inputs[0])
    users = list(node.users)
    if len(users) != 1:
        return None
    conv = users[0]
    if conv.target not in (torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default) or conv.args[0] is not node:
        return None
    return sig.inputs_to_parameters.get(getattr(conv.args[1], "name", ""))


@torch.no_grad()
def scale_input_channels_(weight: torch.Tensor, groups: int, factors: torch.Tensor) -> None:
    """W[o, j] *= factors[input channel of (o, j)], for grouped convs too."""
    out_ch, in_per_group = weight.shape[:2]
    per_group_out = out_ch // groups
    for o in range(out_ch):
        g = o // per_group_out
        f = factors[g * in_per_group:(g + 1) * in_per_group].to(weight.dtype)
        weight[o] *= f.reshape(-1, *([1] * (weight.dim() - 2)))


def build_module(model: nn.Module, task: str, postprocess: str, batch: int, input_size: tuple[int, int], image_input: bool,
                 mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[nn.Module, Normalization]:
    """The module to convert and where its normalization lives; `model` is left untouched."""
    if not image_input:
        return wrap_for_export(model, task, postprocess), Normalization("none")
    if batch != 1:
        raise EdgesegError(f"a Core ML image input takes one image; --batch {batch} was asked", "use --batch 1 or drop --image-input")
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise EdgesegError(f"image input needs 3-channel RGB normalization, the model has mean={mean} std={std}", "drop --image-input")
    bias = tuple(-float(m) for m in mean)
    if max(std) - min(std) <= 1e-9 * max(std):
        # One std for all channels: the whole normalization fits Core ML's scale + bias.
        s = float(std[0])
        return wrap_for_export(model, task, postprocess), Normalization("image", 1.0 / (255.0 * s), tuple(b / s for b in bias))
    factors = torch.tensor([1.0 / float(s) for s in std], dtype=torch.float64)
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    example = torch.zeros(batch, 3, *input_size, dtype=dtype)
    name = first_conv_weight(wrap_for_export(model, task, "none"), example)
    if name is None:
        return wrap_for_export(InputScale(model, factors), task, postprocess), Normalization("image", 1.0 / 255.0, bias, "multiply")
    module = wrap_for_export(copy.deepcopy(model), task, postprocess)
    owner = module.get_submodule(name.rsplit(".", 1)[0])
    scale_input_channels_(module.get_parameter(name).data, int(getattr(owner, "groups", 1)), factors)
    return module, Normalization("image", 1.0 / 255.0, bias, f"conv:{name.removeprefix('inner.')}")
