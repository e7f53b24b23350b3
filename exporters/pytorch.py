"""PyTorch as a Runner: the reference side of every comparison, and the runner for edgeseg
deploy checkpoints (.safetensors) so a fused checkpoint can be gated like an export."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeseg.api import load
from edgeseg.exporters.runner import Runner
from edgeseg.exporters.wrap import wrap_for_export


class TorchRunner(Runner):
    name = "pytorch"
    precision = "fp32"

    def __init__(self, model, *, postprocess: str = "none"):
        self.model = model
        self.info = model.edgeseg
        self.wrapper = wrap_for_export(model, self.info.task, postprocess)
        self.input_shape = None
        self.output_names = None

    def infer(self, feeds) -> list[np.ndarray]:
        return self.run(next(iter(feeds.values())))

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            outs = self.wrapper(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
        return [t.detach().cpu().numpy() for t in outs]

    def run_many(self, batches: list[np.ndarray], chunk: int = 8) -> list[list[np.ndarray]]:
        """`run` of each batch. Batches of one shape go through the model together, up to `chunk`
        at a time: one forward of N images costs far less than N forwards on a CPU."""
        out: list[list[np.ndarray]] = []
        i = 0
        while i < len(batches):
            group = [batches[i]]
            while len(group) < chunk and i + len(group) < len(batches) and batches[i + len(group)].shape == group[0].shape:
                group.append(batches[i + len(group)])
            i += len(group)
            if len(group) == 1:
                out.append(self.run(group[0]))
                continue
            joint = self.run(np.concatenate(group))
            starts = np.cumsum([0] + [len(b) for b in group])
            out.extend([o[a:b] for o in joint] for a, b in zip(starts[:-1], starts[1:]))
        return out


def open_deploy_checkpoint(path: str | Path, *, postprocess: str = "none", arch: str | None = None, **_: object) -> TorchRunner:
    return TorchRunner(load(path, arch), postprocess=postprocess)
