"""ONNX Runtime on an ARM board (or any SSH host): copy the model and the runner, run, fetch."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from edgeseg.exporters.runner import RemoteRun
from edgeseg.remote.common import check_python, measurement_from_runner, rjoin
from edgeseg.remote.ssh import RemoteError, SSHSession
from edgeseg.timing import Measurement, Warmup

# self-contained script copied to the device and run with its own Python (no edgeseg there)
DEVICE_RUNNER = Path(__file__).with_name("device_runner.py")


def run_ort_remote(session: SSHSession, onnx_path: str | Path, *, python: str = "python3", workdir: str = "/tmp",
                   warmup: "str | int | Warmup" = 10, iterations: int = 50, threads: int | None = None,
                   shape: list[int] | None = None, input_array: np.ndarray | None = None,
                   run_timeout: float | None = None) -> Measurement:
    """Time `onnx_path` on the device with the self-contained ORT runner.

    With `input_array`, the device runs on that exact input and its outputs come back in
    `extra["outputs"]` (a list of arrays) for parity against the host reference.
    """
    onnx_path = Path(onnx_path)
    versions = check_python(session, python, ["numpy", "onnxruntime"],
                            f"install them on the device: {python} -m pip install numpy onnxruntime")
    w = Warmup.parse(warmup)
    with tempfile.TemporaryDirectory(prefix="edgeseg-remote-") as local_tmp, session.tempdir(workdir) as tmp:
        runner = rjoin(tmp, "ort_runner.py")
        model = rjoin(tmp, onnx_path.name)
        result = rjoin(tmp, "result.json")
        session.put(DEVICE_RUNNER, runner)
        session.put(onnx_path, model)
        external = onnx_path.with_name(onnx_path.name + ".data")
        if external.is_file():  # weights saved beside the graph (models over 2 GB)
            session.put(external, rjoin(tmp, external.name))
        argv = [python, runner, "--model", model, "--out", result, "--warmup", str(w), "--iterations", str(iterations)]
        if threads:
            argv += ["--threads", str(threads)]
        if shape:
            argv += ["--shape", "x".join(str(int(d)) for d in shape)]
        outputs_remote = None
        if input_array is not None:
            local_in = Path(local_tmp) / "input.npy"
            np.save(local_in, np.ascontiguousarray(input_array))
            session.put(local_in, rjoin(tmp, "input.npy"))
            outputs_remote = rjoin(tmp, "outputs.npz")
            argv += ["--input", rjoin(tmp, "input.npy"), "--save-outputs", outputs_remote]
        session.run(argv, step="run the ONNX Runtime runner", timeout=run_timeout, cwd=tmp)
        m = measurement_from_runner(session.read_text(result), iterations, "the ONNX Runtime runner")
        if outputs_remote:
            local_out = Path(local_tmp) / "outputs.npz"
            session.get(outputs_remote, local_out)
            with np.load(local_out, allow_pickle=False) as z:
                keys = sorted(z.files, key=lambda k: int(k[3:]) if k[3:].isdigit() else 0)
                m.extra["outputs"] = [np.array(z[k]) for k in keys]
    if m.extra.get("runner") != "onnxruntime":
        raise RemoteError("the device runner reported an unexpected identity", "rerun with a matching edgeseg version")
    m.extra["runtime"] = "onnxruntime"
    m.extra.setdefault("environment", {})["device_python_modules"] = versions
    return m


def time_on_device(session: SSHSession, artifact: Path, run: RemoteRun) -> Measurement:
    """bench's entry (Target.remote): the ORT runner on the device, outputs for parity."""
    threads = run.threads or run.profile.threads
    m = run_ort_remote(session, artifact, python=run.profile.access.python, workdir=run.workdir, warmup=run.warmup,
                       iterations=run.iterations, threads=threads, shape=run.shape, input_array=run.input_array,
                       run_timeout=run.timeout)
    m.extra["settings"] = {"threads": threads, "seed": run.seed}
    # fp32/fp16 graphs compute the same values on every CPU's ORT (fp32 tolerances against the
    # host); int8 kernels are not bit-identical across ISAs (Arm's requantization rounding, x86's
    # 7-bit weights where u8s8 saturates), so an int8 graph is held to the int8 thresholds
    m.extra["parity_precision"] = "int8" if run.precision == "int8" else "fp32"
    return m
