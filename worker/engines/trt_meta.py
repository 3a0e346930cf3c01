"""The sidecar that ``build-engine`` writes next to a TensorRT engine, and the check the worker makes.

A serialized TensorRT engine runs only on the TensorRT version that built it (unless it was built
version-compatible) and only on GPUs of the compute capability it was built for (unless built
hardware-compatible). TensorRT itself fails deep inside deserialization with a terse log line; the
sidecar ``<engine>.json`` lets the worker refuse a mismatch at start with a message that says what
to rebuild. It records the builder's TensorRT version, the GPU name and compute capability, the
build flags and the engine file's SHA-256 (so a sidecar cannot silently describe another file).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from worker.errors import ModelError

log = logging.getLogger(__name__)

FORMAT: Final = "redis-infer-tensorrt-engine"
FORMAT_VERSION: Final = 1
HARDWARE_COMPATIBILITY: Final = ("none", "ampere_plus", "same_compute_capability")


@dataclass(frozen=True, slots=True)
class EngineMetadata:
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "9.0"
    engine_sha256: str
    precision: str = "fp32"
    version_compatible: bool = False
    exclude_lean_runtime: bool = False
    hardware_compatibility: str = "none"
    profiles: list[dict[str, dict[str, list[int]]]] = field(default_factory=list)  # per profile: name -> min/opt/max
    onnx_sha256: str = ""
    built_at: str = ""
    format: str = FORMAT
    format_version: int = FORMAT_VERSION


def sidecar_path(engine_path: Path) -> Path:
    return engine_path.with_name(engine_path.name + ".json")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_metadata(engine_path: Path, meta: EngineMetadata) -> Path:
    path = sidecar_path(engine_path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(asdict(meta), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def read_metadata(engine_path: Path) -> EngineMetadata | None:
    """The sidecar of ``engine_path``, or None if there is none. ``ModelError`` if it is unreadable."""
    path = sidecar_path(engine_path)
    if not path.exists():
        return None
    try:
        raw: dict[str, Any] = json.loads(path.read_text())
        if raw.get("format") != FORMAT:
            raise ValueError(f"format is {raw.get('format')!r}, not {FORMAT!r}")
        if int(raw.get("format_version", 0)) > FORMAT_VERSION:
            raise ValueError(f"format_version {raw['format_version']} is newer than this worker's {FORMAT_VERSION}")
        known = set(EngineMetadata.__dataclass_fields__)
        return EngineMetadata(**{key: value for key, value in raw.items() if key in known})
    except (OSError, ValueError, TypeError) as exc:
        raise ModelError(f"engine metadata {path} is unreadable: {exc}") from None


def _major_minor(version: str) -> tuple[int, int]:
    parts = ([*version.split("."), "0", "0"])[:2]
    try:
        return int(parts[0]), int(parts[1])
    except ValueError:
        return (0, 0)


def check_compatible(
    engine_path: Path,
    meta: EngineMetadata | None,
    *,
    runtime_version: str,
    lean: bool,
    gpu_name: str,
    compute_capability: str,
) -> None:
    """Refuse an engine that cannot run on this runtime and GPU, with a message that says why.

    Raises:
        ModelError: version, GPU or file mismatch.
    """
    rebuild = f"rebuild it on this machine: python -m worker build-engine MODEL.onnx -o {engine_path}"
    if meta is None:
        log.warning(
            "%s has no metadata sidecar (%s): built outside build-engine? TensorRT will check the version "
            "and GPU itself at load",
            engine_path,
            sidecar_path(engine_path).name,
        )
        return
    digest = sha256_file(engine_path)
    if meta.engine_sha256 and digest != meta.engine_sha256:
        raise ModelError(f"{sidecar_path(engine_path)} describes another engine file (SHA-256 differs); {rebuild}")
    built, running = _major_minor(meta.tensorrt_version), _major_minor(runtime_version)
    if meta.version_compatible:
        if running < built:
            raise ModelError(
                f"{engine_path} was built version-compatible by TensorRT {meta.tensorrt_version}; "
                f"this runtime is older ({runtime_version}): upgrade the runtime or {rebuild}"
            )
    elif lean:
        raise ModelError(
            f"{engine_path} was not built version-compatible, and only the TensorRT lean runtime "
            f"({runtime_version}) is installed: install the full tensorrt package, or rebuild with "
            "`build-engine --version-compatible`"
        )
    elif running != built:
        raise ModelError(
            f"{engine_path} was built by TensorRT {meta.tensorrt_version}, this is TensorRT {runtime_version}: "
            f"engines are tied to the TensorRT version that built them; {rebuild} (or build it --version-compatible)"
        )
    _check_gpu(engine_path, meta, gpu_name=gpu_name, compute_capability=compute_capability, rebuild=rebuild)


def _check_gpu(
    engine_path: Path, meta: EngineMetadata, *, gpu_name: str, compute_capability: str, rebuild: str
) -> None:
    cc_built, cc_here = _major_minor(meta.compute_capability), _major_minor(compute_capability)
    if meta.hardware_compatibility == "ampere_plus":
        if cc_here < (8, 0):
            raise ModelError(
                f"{engine_path} is hardware-compatible for Ampere and newer; this GPU is {compute_capability}"
            )
    elif cc_built != cc_here:
        raise ModelError(
            f"{engine_path} was built for {meta.gpu_name} (compute capability {meta.compute_capability}); this GPU is "
            f"{gpu_name} ({compute_capability}): {rebuild}"
        )
    if meta.gpu_name and meta.gpu_name != gpu_name:
        log.warning(
            "%s was built on %s and runs on %s (same compute capability): it works, but its kernels were timed "
            "on the other model; rebuild for best speed",
            engine_path,
            meta.gpu_name,
            gpu_name,
        )
