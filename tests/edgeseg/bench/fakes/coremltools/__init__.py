"""A stand-in for coremltools on the loopback "Mac" (tests only): MLModel loads a .mlpackage
directory written by the test and "predicts" with numpy, so the SSH path, the directory
upload and the runner protocol are exercised without macOS."""

__version__ = "9.0-fake"


class ComputeUnit:
    ALL = "ALL"
    CPU_ONLY = "CPU_ONLY"
    CPU_AND_GPU = "CPU_AND_GPU"
    CPU_AND_NE = "CPU_AND_NE"


from coremltools import models  # noqa: E402,F401
