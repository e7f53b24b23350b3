"""ONNX target: export, ONNX Runtime runner, remote ORT driver."""
