"""Image preprocessing honours the model's channel order everywhere images reach a model:
parity inputs, int8 calibration (TensorRT), the fp16 preflight (Core ML)."""

import copy
import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from edgeseg.images import Preprocess, make_inputs

PIXEL = (255, 0, 128)  # R, G, B of a flat test image


@pytest.fixture()
def flat(tmp_path):
    from PIL import Image

    d = tmp_path / "imgs"
    d.mkdir()
    Image.new("RGB", (40, 30), PIXEL).save(d / "flat.png")
    return d


def _info(order):
    return SimpleNamespace(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), channel_order=order)


def test_edgeformer_is_declared_bgr_and_carries_it():
    from edgeseg.api import _info as make_info
    from edgeseg.registry import get_entry

    entry = get_entry("edgeformer_s")
    assert entry.channel_order == "bgr" and make_info(entry, {}).channel_order == "bgr"


def test_preprocess_reorders_channels(flat):
    rgb = Preprocess.for_model(_info("rgb"), (16, 16)).load(flat / "flat.png")
    bgr = Preprocess.for_model(_info("bgr"), (16, 16)).load(flat / "flat.png")
    np.testing.assert_allclose(rgb[:, 0, 0], np.array(PIXEL) / 255, atol=1e-6)
    np.testing.assert_allclose(bgr[:, 0, 0], np.array(PIXEL[::-1]) / 255, atol=1e-6)
    s = make_inputs((16, 16), (0, 0, 0), (1, 1, 1), images=flat, bundled=False, random_batches=0, seed=0, channel_order="bgr")
    np.testing.assert_allclose(s.samples[0].array[0, :, 0, 0], np.array(PIXEL[::-1]) / 255, atol=1e-6)
    with pytest.raises(Exception, match="channel order"):
        Preprocess((8, 8), (0,) * 3, (1,) * 3, channel_order="rgba")


def test_parity_feeds_a_bgr_model_bgr_images(flat):
    """What parity hands a runner for a BGR model: the image in B, G, R order."""
    import edgeseg
    from edgeseg.exporters.runner import Runner
    from edgeseg.parity import register_runner
    from edgeseg.parity.job import parity_for_model

    seen = []

    class Capture(Runner):
        name = "capture"

        def infer(self, feeds):
            seen.append(next(iter(feeds.values())))
            return [np.zeros((1, 10), np.float32)]

    register_runner(".capture")(lambda path, **_: Capture())
    model = edgeseg.create("mobileone_s0", num_classes=10, num_blocks=(1, 1, 1, 1), pretrained_like=0)
    for order, want in (("rgb", PIXEL), ("bgr", PIXEL[::-1])):
        m = copy.copy(model)
        m.edgeseg = dataclasses.replace(model.edgeseg, channel_order=order, mean=(0.0,) * 3, std=(1.0,) * 3)
        seen.clear()
        parity_for_model(m, [flat / "a.capture"], images=flat, bundled_images=False, samples=0, seed=0, input_size=(32, 32))
        np.testing.assert_allclose(seen[0][0, :, 0, 0], np.array(want) / 255, atol=1e-6)


def test_tensorrt_calibration_and_analysis_inputs_follow_the_model(flat):
    from edgeseg.exporters.calibration import CalibrationData
    from edgeseg.exporters.tensorrt.export import analysis_inputs

    shapes = [SimpleNamespace(name="input", opt=(1, 3, 16, 16))]
    feeds = analysis_inputs(shapes, _info("bgr"), (16, 16), [flat / "flat.png"])
    np.testing.assert_allclose(feeds[0]["input"][0, :, 0, 0], np.array(PIXEL[::-1]) / 255, atol=1e-6)
    data = CalibrationData([flat / "flat.png"], Preprocess.for_model(_info("bgr"), (16, 16)), batch=1)
    np.testing.assert_allclose(next(iter(data))[0, :, 0, 0], np.array(PIXEL[::-1]) / 255, atol=1e-6)
    rgb = CalibrationData([flat / "flat.png"], Preprocess.for_model(_info("rgb"), (16, 16)), batch=1)
    assert data.fingerprint() != rgb.fingerprint()  # a cache made from RGB images is not reused for a BGR model


def test_coreml_preflight_inputs_follow_the_model():
    from edgeseg.exporters.coreml.preflight import preflight_inputs

    _, rgb = preflight_inputs((16, 16), (0,) * 3, (1,) * 3, random_samples=0)
    _, bgr = preflight_inputs((16, 16), (0,) * 3, (1,) * 3, random_samples=0, channel_order="bgr")
    np.testing.assert_array_equal(bgr, rgb[:, ::-1])
