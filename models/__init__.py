"""Architectures (installed as `edgeseg.models`).

Per family: `<family>.py` holds the networks (torch), `<family>_layouts.py` the variant tables
and the key layouts of the checkpoints the original projects publish, and `<family>_entries.py`
registers the variants with `@register_model`, each factory importing its network when it
builds. The entries and layouts modules never import torch, so listing models and detecting a
checkpoint (`edgeseg models`, `edgeseg info`) stay well under a second where `import torch`
alone takes 1.3 s. `edgeseg.registry` imports the entries modules its FAMILY_MODULES lists on
first use, and refuses to run with one that fails to import. Adding a family: its network
module, its layouts, one entries module, one line in FAMILY_MODULES, its tests.
"""
