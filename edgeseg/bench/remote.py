"""Device runs of `edgeseg bench`: any target whose registration record has a remote driver.

The profile's runtime picks the target; the subject becomes the artifact that the driver
takes (given, or exported here within the profile's constraints); one SSH session runs it;
outputs on a seeded random input come back for parity against the host reference.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import numpy as np

from edgeseg.bench.local import resolve_shape
from edgeseg.bench.reference import parity_entry, reference_outputs
from edgeseg.bench.result import BenchResult, result_fields
from edgeseg.bench.subject import Subject
from edgeseg.errors import EdgesegError
from edgeseg.exporters import Target, get_target, load_attr, target_for_runtime, targets
from edgeseg.exporters.onnx.runner import input_spec
from edgeseg.exporters.runner import RemoteRun
from edgeseg.remote.ssh import SSHSession, SSHTarget, Timeouts


def open_session(profile, host: str, identity, known_hosts, port, timeout_s: float | None) -> SSHSession:
    return SSHSession(SSHTarget.parse(host, port), identity=identity, known_hosts=known_hosts,
                      timeouts=Timeouts.from_profile(profile, run=timeout_s))


@contextlib.contextmanager
def artifact_for(subject: Subject, takes: Target, profile, size, batch: int, precision: str | None, say):
    """(path, how it was made) of the artifact a remote driver takes."""
    with tempfile.TemporaryDirectory(prefix="edgeseg-bench-") as tmp:
        if subject.kind == takes.kind:
            yield subject.path, "given"
        elif subject.kind == "model":
            yield subject.export(takes.name, profile, size, batch, precision, Path(tmp), say)
        else:
            raise EdgesegError(f"{profile.name} runs {takes.name} artifacts; {subject.path} is a {subject.kind} artifact",
                               f"pass the {takes.suffix} file or the checkpoint")


def bench_remote(subject: Subject, profile, precision: str, size, opts, host, identity, known_hosts, port, say,
                 notes: list[str]) -> list[BenchResult]:
    target = target_for_runtime(profile.runtime)
    if target is None or not target.remote:
        runtimes = ", ".join(t.runtime for t in targets() if t.remote)
        raise EdgesegError(f"profile {profile.name} has runtime {profile.runtime}, which has no remote runner", f"use {runtimes}")
    if opts.backends:
        notes.append(f"--backend applies to local runs; {profile.name} runs {profile.runtime}")
    if opts.include_preprocessing:
        notes.append("pre-processing is not timed on devices (the runners time the model alone)")
    takes = get_target(target.remote_takes or target.name)
    # a given artifact carries its own precision (an int8 file stays int8 whatever the profile's default)
    precision = (subject.manifest.get("precision") if subject.kind == "onnx" else None) or precision
    # the runtime's own artifact is exported at the asked precision; a graph it builds from keeps the profile's default
    export_precision = precision if takes is target else None
    with artifact_for(subject, takes, profile, size, opts.batch, export_precision, say) as (path, how):
        shape = resolve_shape(input_spec(path)[1], size, opts.batch) if path.suffix == ".onnx" else [opts.batch, 3, *size]
        x = np.random.default_rng(opts.seed).standard_normal(shape).astype(np.float32) if opts.parity else None
        run = RemoteRun(profile=profile, precision=precision, warmup=opts.warmup, iterations=opts.iterations, threads=opts.threads,
                        input_array=x, shape=shape, workdir=opts.remote_workdir or profile.access.workdir, timeout=opts.timeout_s,
                        seed=opts.seed, options={"coreml_target": opts.coreml_target, "coreml_device_name": opts.coreml_device_name})
        with open_session(profile, host, identity, known_hosts, port, opts.timeout_s) as session:
            say(f"running {path.name} on {profile.name} ({session.target}) with {target.runtime}")
            m = load_attr(target.remote)(session, path, run)
            where = str(session.target)
        parity = _device_parity(subject, m, x, path, precision)
    settings = {takes.name: how, **m.extra.pop("settings", {})}
    return [BenchResult.from_measurement(m, fused=True, host=where, parity=parity, settings=settings,
                                         **result_fields(subject, profile, target.runtime, tuple(shape[2:]), precision, opts))]


def _device_parity(subject: Subject, m, x, path: Path, precision: str):
    skipped = m.extra.pop("parity_skipped", None)
    failed = m.extra.pop("parity_failed", None)
    run_precision = m.extra.pop("parity_precision", precision)
    if skipped:
        return {"status": "skipped", "reason": skipped}
    if x is None:
        return None
    if failed:
        return {"status": "failed", "reason": failed}
    ref, ref_name = reference_outputs(subject, x, path if path.suffix == ".onnx" else None, None)
    outs = list(m.extra.get("outputs") or [])
    # trtexec flattens what it exports: give each output the reference's shape when the sizes agree
    cand = [o.reshape(r.shape) if o.size == r.size else o for o, r in zip(outs, ref)] if ref else outs
    return parity_entry(subject, ref, cand, run_precision, ref_name)
