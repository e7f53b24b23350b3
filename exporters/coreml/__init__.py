"""Core ML target: convert, MLModel runner, remote Mac driver."""
