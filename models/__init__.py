"""Architectures (installed as `edgeseg.models`). Each family module registers its variants
with `@register_model`; `edgeseg.registry` imports the modules its FAMILY_MODULES lists on
first use, and refuses to run with one that fails to import."""
