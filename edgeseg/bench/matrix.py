"""Sweeps: models x input sizes x devices from one YAML/JSON file.

    models: [mobileone_s0, checkpoints/fastvit_t8.pth]
    sizes: [256, 512, 1024x512]
    devices:
      - host-cpu
      - {name: raspberry-pi-5, host: pi@10.0.0.7, identity: ~/.ssh/id_ed25519}
      - {name: jetson-nano, predict: true}
    options: {iterations: 50, warmup: 10}      # any BenchOptions field

Jobs for one device run one at a time (a device is never shared between two timings);
different devices run in parallel threads. A failing job is recorded and the sweep goes on.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgeseg.bench.harness import _open_store, bench_artifact
from edgeseg.devices import get_profile
from edgeseg.errors import EdgesegError
from edgeseg.sizes import parse_size

_DEVICE_KEYS = {"name", "host", "identity", "known_hosts", "port", "predict", "options"}


@dataclass
class DeviceSpec:
    name: str
    host: str | None = None
    identity: str | None = None
    known_hosts: str | None = None
    port: int | None = None
    predict: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.name}@{self.host}" if self.host else self.name


@dataclass
class Job:
    model: str
    size: tuple[int, int]
    device: DeviceSpec


@dataclass
class Matrix:
    models: list[str]
    sizes: list[tuple[int, int] | None]
    devices: list[DeviceSpec]
    options: dict[str, Any] = field(default_factory=dict)

    def jobs(self) -> list[Job]:
        return [Job(m, s, d) for d in self.devices for m in self.models for s in self.sizes]


@dataclass
class JobOutcome:
    job: Job
    results: list = field(default_factory=list)
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.job.model, "size": list(self.job.size) if self.job.size else None, "device": self.job.device.name,
                "host": self.job.device.host, "error": self.error, "notes": self.notes,
                "results": [r.as_dict(with_times=False) for r in self.results]}


def _size(v) -> tuple[int, int] | None:
    if v is None:
        return None
    if isinstance(v, int):
        return (v, v)
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return (int(v[0]), int(v[1]))
    return parse_size(str(v))


def load_matrix(path: str | Path) -> Matrix:
    import json

    import yaml

    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise EdgesegError(f"cannot read matrix file {p} ({exc.strerror})", "check the path") from exc
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise EdgesegError(f"matrix file {p} is not valid {'JSON' if p.suffix == '.json' else 'YAML'}", "fix its syntax") from exc
    if not isinstance(data, dict):
        raise EdgesegError(f"matrix file {p} must be a mapping with models, sizes and devices", "see `edgeseg bench --help`")
    unknown = set(data) - {"models", "sizes", "devices", "options"}
    if unknown:
        raise EdgesegError(f"matrix file {p}: unknown key(s) {', '.join(sorted(unknown))}", "use models, sizes, devices, options")
    models = data.get("models") or []
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        raise EdgesegError(f"matrix file {p}: 'models' must be a non-empty list of names or paths", "e.g. models: [mobileone_s0]")
    sizes = [_size(s) for s in (data.get("sizes") or [None])]
    devices = []
    for d in data.get("devices") or []:
        if isinstance(d, str):
            d = {"name": d}
        if not isinstance(d, dict) or "name" not in d:
            raise EdgesegError(f"matrix file {p}: each device is a profile name or a mapping with 'name'", "e.g. - {name: host-cpu}")
        bad = set(d) - _DEVICE_KEYS
        if bad:
            raise EdgesegError(f"matrix file {p}: device {d.get('name')}: unknown key(s) {', '.join(sorted(bad))}",
                               f"use {', '.join(sorted(_DEVICE_KEYS))}")
        devices.append(DeviceSpec(**d))
    if not devices:
        raise EdgesegError(f"matrix file {p}: 'devices' is empty", "list at least one profile, e.g. devices: [host-cpu]")

    for d in devices:
        get_profile(d.name)  # fail early on a typo, before hours of sweeping
    options = data.get("options") or {}
    if not isinstance(options, dict):
        raise EdgesegError(f"matrix file {p}: 'options' must be a mapping", "e.g. options: {iterations: 50}")
    return Matrix(models=models, sizes=sizes, devices=devices, options=options)


def run_matrix(matrix: Matrix, *, store: Any = None, base_options: dict[str, Any] | None = None,
               on_job_start: Callable[[Job], None] | None = None, on_job_done: Callable[[JobOutcome], None] | None = None,
               max_parallel_devices: int | None = None) -> list[JobOutcome]:
    """Run every job; one worker per device (sequential within a device), devices in parallel."""
    db = _open_store(store)
    all_jobs = matrix.jobs()
    by_device: dict[str, list[Job]] = {}
    for job in all_jobs:
        by_device.setdefault(job.device.key, []).append(job)
    outcomes: list[JobOutcome] = []
    lock = threading.Lock()

    def worker(jobs: list[Job]) -> None:
        for job in jobs:
            if on_job_start:
                on_job_start(job)
            opts = {**(base_options or {}), **matrix.options, **job.device.options}
            if job.size is not None:
                opts["input_size"] = job.size
            out = JobOutcome(job)
            try:
                res = bench_artifact(job.model, job.device.name, host=job.device.host, identity=job.device.identity,
                                     known_hosts=job.device.known_hosts, port=job.device.port, predict=job.device.predict,
                                     store=db if db is not None else False, **opts)
                out.results, out.notes = res.results, res.notes
            except EdgesegError as exc:
                out.error = str(exc)
            with lock:
                outcomes.append(out)
            if on_job_done:
                on_job_done(out)

    groups = list(by_device.values())
    with ThreadPoolExecutor(max_workers=max(1, min(len(groups), max_parallel_devices or len(groups)))) as pool:
        for f in [pool.submit(worker, g) for g in groups]:
            f.result()
    order = {id(j): i for i, j in enumerate(all_jobs)}
    outcomes.sort(key=lambda o: order.get(id(o.job), 0))
    return outcomes
