"""Checkpoint -> model: safe reading, key layouts, architecture detection, deploy files."""
