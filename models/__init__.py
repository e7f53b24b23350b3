"""Architectures (installed as `edgeseg.models`). Each family module registers its variants
with `@register_model`; `edgeseg.registry` imports them on first use."""
