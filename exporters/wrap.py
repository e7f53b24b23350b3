"""The module that gets exported: the model's outputs as a flat tuple, plus optional
segmentation post-processing inside the graph. Parity wraps the PyTorch reference with the
same module so both sides compute the same function."""

from __future__ import annotations

from typing import Any

from edgeseg.errors import EdgesegError

POSTPROCESS = ("none", "upsample", "argmax")


def check_postprocess(task: str, postprocess: str) -> None:
    if postprocess not in POSTPROCESS:
        raise EdgesegError(f"unknown --postprocess {postprocess!r}", f"choose one of: {', '.join(POSTPROCESS)}")
    if postprocess != "none" and task != "segmentation":
        raise EdgesegError(f"--postprocess {postprocess} applies to segmentation models; this one does {task}", "omit --postprocess")


def wrap_for_export(model, task: str, postprocess: str = "none"):
    """An nn.Module whose forward returns a tuple of tensors (logits or label maps)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from edgeseg.reparam.verify import flatten_outputs  # lazy: pulls torch

    check_postprocess(task, postprocess)

    class ExportWrapper(nn.Module):
        def __init__(self, inner: nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor):
            outs = flatten_outputs(self.inner(x))
            if postprocess == "none":
                return tuple(outs)
            done = []
            for t in outs:
                if t.dim() == 4:  # per-pixel class scores (N, C, h, w)
                    if tuple(t.shape[-2:]) != tuple(x.shape[-2:]):
                        t = F.interpolate(t, size=x.shape[-2:], mode="bilinear", align_corners=False)
                    if postprocess == "argmax":
                        # int32: what TensorRT and Core ML accept as an output type
                        t = t.argmax(dim=1).to(torch.int32)
                done.append(t)
            return tuple(done)

    wrapper = ExportWrapper(model).eval()
    return wrapper


def output_names(n: int, task: str, postprocess: str) -> list[str]:
    base = "labels" if postprocess == "argmax" else "logits"
    return [base] if n == 1 else [f"{base}_{i}" for i in range(n)]


def flat_numpy(outputs: Any) -> list:
    return [t.detach().cpu().numpy() for t in outputs]
