"""Device profiles: the built-ins, the schema (errors name the field), drop-in user profiles."""

from __future__ import annotations

import textwrap

import pytest

from edgeseg.devices import DeviceProfile, get_profile, load_profile_file, load_profiles, profile_paths, user_dir
from edgeseg.errors import EdgesegError

REQUIRED = ["host-cpu", "jetson-nano", "jetson-orin-nano", "iphone-12-pro", "iphone-15-pro", "raspberry-pi-4", "raspberry-pi-5",
            "rk3588", "snapdragon-865"]

GOOD = """\
    name: my-board
    description: a test board
    runtime: onnxruntime
    precisions: [fp32]
    default_precision: fp32
    ceilings: {fp32: {gflops: 20, gbps: 4}}
    access: {kind: ssh}
    """


def test_all_required_profiles_load_and_state_their_facts():
    profiles = load_profiles()
    for name in REQUIRED:
        assert name in profiles, name
        p = get_profile(name)
        assert p.default_precision in p.precisions
        assert p.access.kind in ("local", "ssh", "macos-host")
        if not p.detect:
            assert p.default_precision in p.ceilings


def test_facts_from_the_reference():
    nano = get_profile("jetson-nano")
    assert nano.runtime == "tensorrt" and nano.software.tensorrt == "8.2.1" and nano.software.jetpack.startswith("4.6")
    assert nano.export.opset_max == 13 and "LayerNormalization" in nano.export.avoid_ops and nano.export.static_shapes
    assert nano.ceilings["fp16"].gflops == 472 and nano.ceilings["fp32"].gbps == 25.6
    orin = get_profile("jetson-orin-nano")
    assert orin.software.tensorrt.startswith("10.3") and "int8" in orin.precisions and orin.ceilings["fp32"].gbps == 102
    iphone = get_profile("iphone-12-pro")
    assert iphone.runtime == "coreml" and iphone.default_precision == "fp16" and iphone.access.kind == "macos-host"
    assert iphone.ceilings["fp16"].gbps == 34.1 and iphone.export.coreml_min_target
    assert get_profile("raspberry-pi-4").ceilings["fp32"].gbps == 5.5
    assert get_profile("raspberry-pi-5").ceilings["fp32"].gflops == 154
    assert get_profile("snapdragon-865").threads == 1


def test_host_cpu_is_detected_at_run_time():
    from edgeseg.devices import cpu_model, host_threads

    p = get_profile("host-cpu")
    assert p.detect and p.threads == host_threads()
    assert cpu_model() in p.description
    assert p.software.python


def test_host_cpu_uses_cached_calibration(monkeypatch):
    from edgeseg.bench import calibrate

    cal = calibrate.HostCalibration(cpu="x", threads=get_profile("host-cpu").threads, gemm_gflops=123.0, copy_gbps=9.5,
                                    overhead_us={"pytorch": 7.0, "onnxruntime": 1.5}, measured_at="now")
    calibrate.save_calibration(cal)
    p = get_profile("host-cpu")
    c = p.ceiling("fp32")
    assert (c.gflops, c.gbps, c.layer_overhead_us) == (123.0, 9.5, 1.5)
    assert c.overhead_us("pytorch") == 7.0 and c.overhead_us("tensorrt") == 1.5
    assert "123.0 GFLOP/s" in p.latency_model.calibration


def test_uncalibrated_host_ceiling_error():
    p = get_profile("host-cpu")
    if p.ceilings:
        pytest.skip("a calibration is cached in this user's cache dir")
    with pytest.raises(EdgesegError, match="calibrate"):
        p.ceiling()


def test_unknown_profile_suggests():
    with pytest.raises(EdgesegError) as ei:
        get_profile("jetson-nan")
    assert "jetson-nano" in str(ei.value)


def _write(tmp_path, text, name="my-board.yaml"):
    f = tmp_path / name
    f.write_text(textwrap.dedent(text))
    return f


def test_user_profile_drop_in_and_override(tmp_path, monkeypatch):
    d = user_dir()
    d.mkdir(parents=True)
    _write(d, GOOD)
    _write(d, GOOD.replace("my-board", "jetson-nano").replace("onnxruntime", "onnxruntime"), "nano.yaml")
    assert get_profile("my-board").ceilings["fp32"].gflops == 20
    assert get_profile("jetson-nano").runtime == "onnxruntime"  # the user's file wins
    assert profile_paths()["my-board"].parent == d


def test_profiles_from_env_dir(tmp_path, monkeypatch):
    _write(tmp_path, GOOD.replace("my-board", "env-board"))
    monkeypatch.setenv("EDGESEG_PROFILES", str(tmp_path))
    assert get_profile("env-board").description == "a test board"


@pytest.mark.parametrize("edit,field", [
    (("precisions: [fp32]", "precisions: [fp64]"), "precisions.0"),
    (("default_precision: fp32", "default_precision: fp16"), "default_precision"),
    (("runtime: onnxruntime", "runtime: tflite"), "runtime"),
    (("gflops: 20", "gflops: -1"), "ceilings.fp32.gflops"),
    (("access: {kind: ssh}", "access: {kind: telnet}"), "access.kind"),
    (("access: {kind: ssh}", "access: {kind: ssh, timeout: 3}"), "access.timeout"),
    (("name: my-board", "name: My Board"), "name"),
])
def test_invalid_profile_error_names_the_field(tmp_path, edit, field):
    f = _write(tmp_path, GOOD.replace(*edit))
    with pytest.raises(EdgesegError) as ei:
        load_profile_file(f)
    msg = str(ei.value)
    assert f"field '{field}'" in msg and str(f) in msg and "\n" not in msg


def test_cross_field_rules(tmp_path):
    no_ceiling = _write(tmp_path, GOOD.replace("ceilings: {fp32: {gflops: 20, gbps: 4}}", "ceilings: {}"))
    with pytest.raises(EdgesegError, match="ceilings are required"):
        load_profile_file(no_ceiling)
    trt = _write(tmp_path, GOOD.replace("runtime: onnxruntime", "runtime: tensorrt"), "trt.yaml")
    with pytest.raises(EdgesegError, match="software.tensorrt"):
        load_profile_file(trt)
    extra = _write(tmp_path, GOOD.replace("ceilings: {fp32: {gflops: 20, gbps: 4}}",
                                          "ceilings: {fp32: {gflops: 20, gbps: 4}, fp16: {gflops: 40, gbps: 4}}"), "x.yaml")
    with pytest.raises(EdgesegError, match="not in precisions"):
        load_profile_file(extra)


def test_not_yaml_and_not_mapping(tmp_path):
    with pytest.raises(EdgesegError, match="not valid YAML"):
        load_profile_file(_write(tmp_path, "name: [unclosed"))
    with pytest.raises(EdgesegError, match="mapping"):
        load_profile_file(_write(tmp_path, "- a\n- b\n", "list.yaml"))


def test_ceiling_precision_check():
    with pytest.raises(EdgesegError, match="does not run int8"):
        get_profile("jetson-nano").ceiling("int8")
    assert isinstance(get_profile("rk3588"), DeviceProfile)
