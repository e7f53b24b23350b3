"""The registry imports an explicit list of family modules and fails loudly on a broken one."""

import sys

import pytest

from edgeseg import registry
from edgeseg.errors import EdgesegError


def test_family_modules_are_listed_explicitly():
    names = {e.family for e in registry.list_models()}
    assert names == {"fastvit", "mobileone", "segformer", "topformer", "edgeformer", "boostformer"}
    assert all(m.startswith("edgeseg.models.") for m in registry.FAMILY_MODULES)
    # segmentation variants are registered through the list, not by their family module
    assert {"edgeseg.models.fastvit_seg", "edgeseg.models.edgeformer_seg"} <= set(registry.FAMILY_MODULES)


def test_a_family_module_that_fails_to_import_is_an_error(monkeypatch):
    broken = "edgeseg.models._broken_for_test"
    monkeypatch.setitem(sys.modules, broken, None)  # importing it raises ImportError, as a missing dependency would
    monkeypatch.setattr(registry, "FAMILY_MODULES", registry.FAMILY_MODULES + (broken,))
    monkeypatch.setattr(registry, "_populated", False)
    with pytest.raises(EdgesegError, match=r"model family module edgeseg\.models\._broken_for_test failed to import"):
        registry.list_models()
