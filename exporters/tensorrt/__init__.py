"""TensorRT target: engine build, engine runner, remote trtexec driver."""
