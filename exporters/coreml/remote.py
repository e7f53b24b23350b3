"""Core ML on a macOS host over SSH: MLModel.predict timing on the Mac, or on an attached
iPhone through coremltools' remote-device support (see runners/coreml_runner.py)."""

from __future__ import annotations

from pathlib import Path

from edgeseg.exporters.runner import RemoteRun
from edgeseg.remote.common import check_python, measurement_from_runner, rjoin
from edgeseg.remote.ssh import RemoteError, SSHSession
from edgeseg.timing import Measurement, Warmup

# self-contained script copied to the device and run with its own Python (no edgeseg there)
DEVICE_RUNNER = Path(__file__).with_name("device_runner.py")


def run_coreml_remote(session: SSHSession, model_path: str | Path, *, python: str = "python3", workdir: str = "/tmp",
                      warmup: "str | int | Warmup" = 10, iterations: int = 50, compute_units: str = "ALL",
                      target: str = "mac", device_name: str | None = None, run_timeout: float | None = None,
                      require_macos: bool = True) -> Measurement:
    """Time a .mlpackage/.mlmodel on the Mac at `session` (or the iPhone attached to it)."""
    model_path = Path(model_path)
    if not model_path.exists():
        raise RemoteError(f"Core ML model {model_path} not found", "export it first: edgeseg export CKPT --target coreml")
    if require_macos:
        uname = session.run(["uname", "-s"], step="identify the host OS", timeout=session.timeouts.connect * 2).stdout.strip()
        if uname != "Darwin":
            raise RemoteError(f"{session.target} runs {uname or 'an unknown OS'}, not macOS",
                              "Core ML runs only on macOS: pass --host user@your-mac")
    versions = check_python(session, python, ["numpy", "coremltools"],
                            f"install them on the Mac: {python} -m pip install numpy coremltools")
    w = Warmup.parse(warmup)
    with session.tempdir(workdir, prefix="edgeseg-coreml") as tmp:
        runner = rjoin(tmp, "coreml_runner.py")
        remote_model = rjoin(tmp, model_path.name)
        result = rjoin(tmp, "result.json")
        session.put(DEVICE_RUNNER, runner)
        if model_path.is_dir():
            session.put_tree(model_path, remote_model)
        else:
            session.put(model_path, remote_model)
        argv = [python, runner, "--model", remote_model, "--out", result, "--warmup", str(w), "--iterations", str(iterations),
                "--compute-units", compute_units, "--target", target]
        if device_name:
            argv += ["--device-name", device_name]
        session.run(argv, step="run the Core ML runner", timeout=run_timeout, cwd=tmp)
        m = measurement_from_runner(session.read_text(result), iterations, "the Core ML runner")
    if m.extra.get("runner") != "coreml":
        raise RemoteError("the Mac's runner reported an unexpected identity", "rerun with a matching edgeseg version")
    m.extra["runtime"] = "coreml"
    m.extra.setdefault("environment", {})["host_python_modules"] = versions
    return m


def time_on_device(session: SSHSession, artifact: Path, run: RemoteRun) -> Measurement:
    """bench's entry (Target.remote): the Core ML runner on the Mac (or the iPhone attached)."""
    target = run.options.get("coreml_target", "mac")
    m = run_coreml_remote(session, artifact, python=run.profile.access.python, workdir=run.workdir, warmup=run.warmup,
                          iterations=run.iterations, compute_units=run.profile.compute_units or "ALL", target=target,
                          device_name=run.options.get("coreml_device_name"), run_timeout=run.timeout)
    m.extra["settings"] = {"compute_units": run.profile.compute_units, "target": target}
    m.extra["parity_skipped"] = "Core ML parity runs in `edgeseg export --target coreml` on macOS"
    return m
