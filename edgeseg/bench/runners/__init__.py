"""Self-contained scripts copied to devices and run there with the device's own Python.

They import nothing from edgeseg (the device has no edgeseg install) and write raw
per-iteration times as JSON; statistics are computed on the host.
"""

from pathlib import Path


def runner_path(name: str) -> Path:
    """Path of a runner script shipped with edgeseg ("ort_runner.py", "coreml_runner.py")."""
    path = Path(__file__).with_name(name)
    if not path.is_file():
        raise FileNotFoundError(path)
    return path
