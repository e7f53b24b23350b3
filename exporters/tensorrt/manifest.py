"""TensorRT engine manifests, and the refusal to run an engine where it was not built for.

A serialized engine is specific to the TensorRT version and the GPU (compute capability)
that built it; TensorRT's own failure on a mismatch is a cryptic deserialization error at
best. So every engine edgeseg writes has a manifest beside it (`<engine>.manifest.json`,
the same file the export job writes, TensorRT facts under "tensorrt"), and loading checks it
first: a different TensorRT version, compute capability or GPU model, an engine whose bytes
do not match the manifest, or no manifest at all is refused with a clear error.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeseg.atomic import atomic_output
from edgeseg.errors import BackendUnavailable, EdgesegError
from edgeseg.manifest import manifest_path_for

MANIFEST_SUFFIX = ".manifest.json"
SCHEMA = 1


class EngineMismatch(BackendUnavailable):
    """This engine cannot run here (other TensorRT, other GPU, altered file). A parity run
    reports it as skipped with this reason; a direct load raises it."""


@dataclass(frozen=True)
class Platform:
    """Where an engine is built or run."""

    tensorrt: str  # "8.6.1", "10.3.0"
    gpu: str  # "NVIDIA Jetson Orin Nano", "NVIDIA GeForce RTX 4090"
    compute_capability: str  # "8.7"

    def as_dict(self) -> dict[str, str]:
        return {"tensorrt": self.tensorrt, "gpu": self.gpu, "compute_capability": self.compute_capability}


def version_key(version: str, parts: int = 3) -> tuple[int, ...]:
    nums = [int(p) for p in re.findall(r"\d+", str(version))[:parts]]
    return tuple(nums + [0] * (parts - len(nums)))


def normalize_gpu(name: str) -> str:
    return " ".join(str(name).replace("\x00", " ").split()).lower()


def engine_section(*, platform: Platform, precision: str, flags: list[str], inputs: list[dict], outputs: list[dict],
                   onnx_sha256: str, engine_sha256: str, builder: str, **extra: Any) -> dict[str, Any]:
    """The "tensorrt" block of an engine manifest."""
    return {
        "schema": SCHEMA, **platform.as_dict(), "precision": precision, "flags": list(flags), "inputs": inputs,
        "outputs": outputs, "onnx_sha256": onnx_sha256, "engine_sha256": engine_sha256, "builder": builder, **extra,
    }


def write_manifest(engine: str | Path, manifest: dict[str, Any]) -> Path:
    path = manifest_path_for(engine)
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        json.loads(tmp.read_text())
    return path


def read_engine_section(engine: str | Path) -> dict[str, Any]:
    path = manifest_path_for(engine)
    if not path.is_file():
        raise EngineMismatch(f"{Path(engine).name} has no manifest ({path.name}): its TensorRT version and GPU are unknown",
                             "re-export it with `edgeseg export --target trt`, which writes the manifest beside the engine")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EngineMismatch(f"manifest {path} is not valid JSON ({exc.__class__.__name__})", "re-export the engine") from exc
    section = data.get("tensorrt") if isinstance(data, dict) else None
    if not isinstance(section, dict) or not {"tensorrt", "gpu", "compute_capability"} <= set(section):
        raise EngineMismatch(f"manifest {path.name} does not describe a TensorRT engine", "re-export with --target trt")
    return section


def check_compatible(section: dict[str, Any], here: Platform, *, engine_sha256: str | None = None) -> None:
    """Raise EngineMismatch naming every difference between the engine's build and `here`."""
    problems = []
    built = version_key(section["tensorrt"])
    if built != version_key(here.tensorrt):
        problems.append(f"built with TensorRT {section['tensorrt']}, this machine has {here.tensorrt}")
    if str(section["compute_capability"]) != str(here.compute_capability):
        problems.append(f"built for compute capability {section['compute_capability']} ({section['gpu']}), "
                        f"this GPU is {here.compute_capability} ({here.gpu})")
    elif normalize_gpu(section["gpu"]) != normalize_gpu(here.gpu):
        # Same architecture, different model: TensorRT itself warns that tactics chosen for
        # one model may fail or misbehave on another.
        problems.append(f"built on {section['gpu']}, this GPU is {here.gpu}")
    if engine_sha256 and section.get("engine_sha256") and engine_sha256 != section["engine_sha256"]:
        problems.append("the engine file does not match the sha256 in its manifest (replaced or altered)")
    if problems:
        raise EngineMismatch("engine cannot run here: " + "; ".join(problems),
                             "build the engine on this machine (`edgeseg export --target trt`), or run it where it was built")


def check_platform_supported(version: str) -> None:
    """edgeseg drives TensorRT 8.5-10.x: the tensor-name I/O API appeared in 8.5, and 11.0
    removed the builder precision flags and calibrators this exporter is built on."""
    key = version_key(version)
    if key < (8, 5, 0) or key >= (11, 0, 0):
        raise EdgesegError(f"TensorRT {version} is not supported for local builds (8.5 to 10.x are)",
                           "use a supported TensorRT, or build on the device with trtexec (--device PROFILE --host user@device)")
