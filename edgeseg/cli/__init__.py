"""The `edgeseg` command. Each module registers its commands on the shared Typer app; the
commands parse arguments and delegate to the Python API."""

from edgeseg.cli.app import app, main
from edgeseg.cli import models, reparam, demo, export, parity, bench, devices, results, report, predict  # noqa: F401,E402  (registers commands)

__all__ = ["app", "main"]
