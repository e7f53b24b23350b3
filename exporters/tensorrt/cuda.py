"""The little CUDA that TensorRT needs from Python: device memory, copies, a stream, and the
GPU's name and compute capability. Backed by cuda-python (preferred: NVIDIA's own bindings)
or pycuda, whichever is installed."""

from __future__ import annotations

import numpy as np

from edgeseg.errors import BackendUnavailable

INSTALL_HINT = "pip install -c constraints.txt -e \".[trt]\" (pycuda; cuda-python also works) matching the CUDA of your TensorRT"


class CudaPython:
    name = "cuda-python"

    def __init__(self):
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            from cuda import cudart  # older cuda-python
        self.rt = cudart
        self._check(cudart.cudaFree(0), "initialize CUDA")  # creates the primary context

    def _check(self, result, what: str):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if err != self.rt.cudaError_t.cudaSuccess:
            _, msg = self.rt.cudaGetErrorString(err)
            raise BackendUnavailable(f"CUDA could not {what}: {msg.decode() if isinstance(msg, bytes) else msg}",
                                     "check the GPU driver (nvidia-smi)")
        return rest[0] if len(rest) == 1 else rest

    def device(self) -> tuple[str, str]:
        dev = self._check(self.rt.cudaGetDevice(), "select a device")
        prop = self._check(self.rt.cudaGetDeviceProperties(dev), "read device properties")
        name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
        return name.split("\x00")[0].strip(), f"{prop.major}.{prop.minor}"

    def malloc(self, nbytes: int) -> int:
        return int(self._check(self.rt.cudaMalloc(max(1, int(nbytes))), f"allocate {nbytes} bytes"))

    def free(self, ptr: int) -> None:
        self._check(self.rt.cudaFree(ptr), "free device memory")

    def stream(self):
        return self._check(self.rt.cudaStreamCreate(), "create a stream")

    def handle(self, stream) -> int:
        return int(stream)

    def htod(self, ptr: int, array: np.ndarray, stream) -> None:
        a = np.ascontiguousarray(array)
        self._check(self.rt.cudaMemcpyAsync(ptr, a.ctypes.data, a.nbytes, self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream),
                    "copy to the device")

    def dtoh(self, array: np.ndarray, ptr: int, stream) -> None:
        self._check(self.rt.cudaMemcpyAsync(array.ctypes.data, ptr, array.nbytes, self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream),
                    "copy from the device")

    def sync(self, stream) -> None:
        self._check(self.rt.cudaStreamSynchronize(stream), "synchronize")

    def destroy(self, stream) -> None:
        self._check(self.rt.cudaStreamDestroy(stream), "destroy a stream")


class PyCuda:
    name = "pycuda"

    def __init__(self):
        import pycuda.autoinit  # noqa: F401  (creates and pushes a context on device 0)
        import pycuda.driver as cuda

        self.cuda = cuda
        self._allocs: dict[int, object] = {}

    def device(self) -> tuple[str, str]:
        dev = self.cuda.Context.get_device()
        major, minor = dev.compute_capability()
        return dev.name().strip(), f"{major}.{minor}"

    def malloc(self, nbytes: int) -> int:
        alloc = self.cuda.mem_alloc(max(1, int(nbytes)))
        self._allocs[int(alloc)] = alloc  # the allocation lives as long as we hold it
        return int(alloc)

    def free(self, ptr: int) -> None:
        alloc = self._allocs.pop(ptr, None)
        if alloc is not None:
            alloc.free()

    def stream(self):
        return self.cuda.Stream()

    def handle(self, stream) -> int:
        return int(stream.handle)

    def htod(self, ptr: int, array: np.ndarray, stream) -> None:
        self.cuda.memcpy_htod_async(ptr, np.ascontiguousarray(array), stream)

    def dtoh(self, array: np.ndarray, ptr: int, stream) -> None:
        self.cuda.memcpy_dtoh_async(array, ptr, stream)

    def sync(self, stream) -> None:
        stream.synchronize()

    def destroy(self, stream) -> None:
        pass


def cuda_api():
    """cuda-python, else pycuda; BackendUnavailable (with the install hint) if neither works."""
    errors = []
    for cls, module in ((CudaPython, "cuda"), (PyCuda, "pycuda")):
        try:
            return cls()
        except ImportError:
            errors.append(f"{module} not installed")
        except BackendUnavailable:
            raise
        except Exception as exc:  # driver errors surface as the bindings' own exception types
            errors.append(f"{module}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__}")
    raise BackendUnavailable(f"no usable CUDA Python bindings ({'; '.join(errors)})", INSTALL_HINT)
