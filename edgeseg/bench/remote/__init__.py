"""Device runs over SSH: the transport (`ssh`) and one module per runtime (ONNX Runtime on
ARM boards, trtexec on Jetsons, Core ML on a macOS host)."""
