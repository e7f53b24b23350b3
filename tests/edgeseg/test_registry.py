"""The registry imports an explicit list of family modules and fails loudly on a broken one."""

import sys

import pytest

from edgeseg import registry
from edgeseg.errors import EdgesegError


def test_family_modules_are_listed_explicitly():
    names = {e.family for e in registry.list_models()}
    assert names == {"fastvit", "mobileone", "segformer", "topformer", "edgeformer", "boostformer"}
    assert all(m.startswith("edgeseg.models.") for m in registry.FAMILY_MODULES)
    # one torch-free registration module per family (segmentation variants included)
    assert registry.FAMILY_MODULES == tuple(f"edgeseg.models.{f}_entries" for f in
                                            ("fastvit", "mobileone", "segformer", "topformer", "edgeformer", "boostformer"))
    assert {"fastvit_sa12_seg", "edgeformer_s_deeplabv3"} <= {e.name for e in registry.list_models()}


def test_listing_and_detection_metadata_need_no_torch():
    """Registering every built-in model, reading its layouts and signatures (`edgeseg info`) must
    not import torch (1.3 s): the networks are imported when a factory builds."""
    import subprocess

    code = ("import sys\n"
            "from edgeseg.registry import list_models\n"
            "from edgeseg.checkpoint.signatures import code_fingerprint\n"
            "from edgeseg.checkpoint.cfg_schema import cfg_fields\n"
            "entries = list_models(); code_fingerprint()\n"
            "[cfg_fields(e.factory, keys=['num_classes']) for e in entries]\n"
            "print(len(entries), sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(len(registry.list_models())), "[]"]


def test_cfg_fields_follow_the_network_a_factory_imports():
    from edgeseg.checkpoint.cfg_schema import cfg_fields

    fields = cfg_fields(registry.get_entry("edgeformer_s").factory)
    assert {"num_classes", "output_stride", "classifier_dropout"} <= set(fields)
    seg = cfg_fields(registry.get_entry("edgeformer_s_deeplabv3").factory, keys=["aspp_rates"])
    assert "aspp_rates" in seg


def test_a_family_module_that_fails_to_import_is_an_error(monkeypatch):
    broken = "edgeseg.models._broken_for_test"
    monkeypatch.setitem(sys.modules, broken, None)  # importing it raises ImportError, as a missing dependency would
    monkeypatch.setattr(registry, "FAMILY_MODULES", registry.FAMILY_MODULES + (broken,))
    monkeypatch.setattr(registry, "_populated", False)
    with pytest.raises(EdgesegError, match=r"model family module edgeseg\.models\._broken_for_test failed to import"):
        registry.list_models()
