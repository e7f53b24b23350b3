"""Reparameterization: fuse train-time branches into single convs and prove nothing changed."""

from edgeseg.reparam.walker import FuseReport, reparameterize_model

__all__ = ["FuseReport", "reparameterize_model"]
