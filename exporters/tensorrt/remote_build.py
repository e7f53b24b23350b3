"""Build an engine on a remote Jetson with its own trtexec (engines do not move between
TensorRT versions or GPUs), through the bench harness's SSH build
(`edgeseg.exporters.tensorrt.remote.build_engine_remote`): the plan's decisions travel as trtexec
flags (shape ranges, per-layer fp32, TF32 off, the int8 calibration cache)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from edgeseg.errors import EdgesegError
from edgeseg.exporters.tensorrt.plan import trtexec_flags
from edgeseg.exporters.tensorrt.remote import build_engine_remote
from edgeseg.exporters.tensorrt.trtexec import parse_version
from edgeseg.remote.common import rjoin
from edgeseg.remote.ssh import SSHSession, SSHTarget, Timeouts


def build_remote(plan, onnx_path: Path, profile, output: Path, host: str, options: dict[str, Any]) -> dict[str, Any]:
    """Run the build on `host`; the engine lands at `output`. Returns the harness's build record."""
    version = parse_version(profile.software.tensorrt)
    if not version:
        raise EdgesegError(f"device profile {profile.name} does not state its TensorRT version", "set software.tensorrt in the profile")
    session = SSHSession(SSHTarget.parse(host, options.get("port")), identity=options.get("identity"),
                         known_hosts=options.get("known_hosts"), timeouts=Timeouts.from_profile(profile))
    with session, contextlib.ExitStack() as stack:
        calib_remote = None
        if plan.precision == "int8":
            remote_dir = stack.enter_context(session.tempdir(profile.access.workdir, prefix="edgeseg-calib"))
            calib_remote = rjoin(remote_dir, "calib.cache")
            session.put(plan.calibration.cache, calib_remote)
        extra = trtexec_flags(plan, version, calib_path=calib_remote)
        return build_engine_remote(session, onnx_path, profile, plan.precision, output=output,
                                   workspace_mib=plan.workspace_bytes >> 20,
                                   timing_cache=plan.timing_cache, extra_flags=extra, overwrite=True)
