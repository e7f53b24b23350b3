"""TensorRT Runner: a serialized engine run from Python (tensor-name API of TensorRT 8.5+) through
cuda-python or pycuda, after its manifest says it was built for this TensorRT and this GPU. The
one place edgeseg creates a TensorRT execution context. Without TensorRT, CUDA bindings or a GPU
here, or for an engine built for another TensorRT/GPU, opening one raises BackendUnavailable and
parity reports 'skipped: <reason>'."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.exporters.runner import Runner
from edgeseg.exporters.tensorrt.build import import_tensorrt, local_platform, make_logger
from edgeseg.exporters.tensorrt.cuda import cuda_api
from edgeseg.exporters.tensorrt.manifest import check_compatible, read_engine_section
from edgeseg.hashing import file_sha256


class EngineRunner(Runner):
    name = "tensorrt"

    def __init__(self, path: str | Path, **_options: object):
        self.path = Path(path)
        if not self.path.is_file():
            raise EdgesegError(f"{self.path} does not exist", "export it with `edgeseg export --target trt`")
        trt = import_tensorrt()
        self.section = read_engine_section(self.path)
        cuda = cuda_api()
        check_compatible(self.section, local_platform(trt, cuda), engine_sha256=file_sha256(self.path))
        self.trt, self.cuda = trt, cuda
        self.logger = make_logger(trt)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise EdgesegError(f"TensorRT cannot deserialize {self.path.name}: {'; '.join(self.logger.errors[-2:])[:300]}",
                               "re-export the engine on this machine")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_input[n]]
        self.output_names = [n for n in names if not is_input[n]]
        if len(self.input_names) != 1:
            raise EdgesegError(f"{self.path.name} has {len(self.input_names)} inputs; edgeseg engines have one", "re-export it")
        self.input_name = self.input_names[0]
        self.min_shape, _, self.max_shape = self._profile_range(self.input_name)
        self.stream = cuda.stream()
        self.precision = self.section.get("precision", "fp32")

    def _profile_range(self, name: str):
        if self.engine.num_optimization_profiles and hasattr(self.engine, "get_tensor_profile_shape"):
            try:
                lo, opt, hi = self.engine.get_tensor_profile_shape(name, 0)
                return tuple(lo), tuple(opt), tuple(hi)
            except Exception:  # static engines have no profile range for their input
                pass
        shape = tuple(self.engine.get_tensor_shape(name))
        return shape, shape, shape

    @property
    def input_shape(self) -> tuple:
        """Static dims as ints, dynamic ones as None."""
        return tuple(None if lo != hi else int(lo) for lo, hi in zip(self.min_shape, self.max_shape))

    def _chunks(self, batch: np.ndarray) -> list[np.ndarray]:
        n, lo, hi = batch.shape[0], self.min_shape[0], self.max_shape[0]
        if lo <= n <= hi:
            return [batch]
        if lo == hi and n % lo == 0:  # a fixed-batch engine takes the batch in pieces
            return [batch[i:i + lo] for i in range(0, n, lo)]
        raise EdgesegError(f"batch {n} is outside the engine's range {lo}..{hi}", "re-export with --batch or --dynamic")

    def _run_one(self, x: np.ndarray) -> list[np.ndarray]:
        trt, cuda, ctx, eng = self.trt, self.cuda, self.context, self.engine
        for v, lo, hi in zip(x.shape, self.min_shape, self.max_shape):
            if not lo <= v <= hi:
                raise EdgesegError(f"input shape {tuple(x.shape)} is outside the engine's range {self.min_shape}..{self.max_shape}",
                                   "re-export for this shape")
        x = np.ascontiguousarray(x, dtype=trt.nptype(eng.get_tensor_dtype(self.input_name)))
        ctx.set_input_shape(self.input_name, tuple(x.shape))
        ptrs = []
        try:
            ptr = cuda.malloc(x.nbytes)
            ptrs.append(ptr)
            ctx.set_tensor_address(self.input_name, ptr)
            cuda.htod(ptr, x, self.stream)
            outs = []
            for name in self.output_names:
                host = np.empty(tuple(ctx.get_tensor_shape(name)), dtype=trt.nptype(eng.get_tensor_dtype(name)))
                p = cuda.malloc(host.nbytes)
                ptrs.append(p)
                ctx.set_tensor_address(name, p)
                outs.append((host, p))
            if not ctx.execute_async_v3(cuda.handle(self.stream)):
                raise EdgesegError(f"TensorRT failed to run {self.path.name}: {'; '.join(self.logger.errors[-2:])[:300]}",
                                   "check the input shape against the manifest")
            for host, p in outs:
                cuda.dtoh(host, p, self.stream)
            cuda.sync(self.stream)
        finally:
            for p in ptrs:
                cuda.free(p)
        return [h.astype(np.float32) if h.dtype == np.float16 else h for h, _ in outs]

    def infer(self, feeds) -> list[np.ndarray]:
        return self.run(feeds[self.input_name])

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        parts = [self._run_one(c) for c in self._chunks(np.asarray(batch, dtype=np.float32))]
        return [np.concatenate([p[k] for p in parts], axis=0) for k in range(len(parts[0]))]

    def describe(self) -> dict:
        return {"runtime": "tensorrt", "runtime_version": getattr(self.trt, "__version__", "?")}


def open_engine(path: str | Path, **_options: object) -> EngineRunner:
    return EngineRunner(path)
