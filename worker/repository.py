"""The model repository: a folder with one sub-folder per model, each holding a ``config.toml`` and its files.

In the spirit of Triton's model repository (docs/operations.md, "Model repository")::

    models/
      orientation/
        config.toml        # name, version, file, backend, instances, [batching], [hook], [warmup]
        model.onnx
        hook.py            # optional: the hook class, referenced as "hook.py:Class"

Every entry is validated at start, with errors that name the model and the field. Each model is then
served by its own :class:`~worker.service.Worker` (request stream, consumer group, batcher, execution
slots) in one process: see :mod:`worker.fleet`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from redis_infer_protocol import keys
from worker.config import BatchSettings, ModelSettings, Settings
from worker.engines.base import Engine
from worker.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

__all__ = ["CONFIG_FILE", "ModelConfig", "ModelEntry", "load_model", "load_repository", "model_settings"]

CONFIG_FILE = "config.toml"


class HookConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    class_: str = Field(alias="class", min_length=1, description="'module:Class', or 'Class' of the folder's hook.py.")
    options: dict[str, Any] = Field(default_factory=dict, description="Passed to the hook's setup(model, options).")


class WarmupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_sizes: list[int] = Field(default_factory=list, description="Run zero-filled batches of these sizes first.")

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(size < 1 for size in value):
            raise ValueError("batch sizes must be >= 1")
        return value


class ModelConfig(BaseModel):
    """One model's ``config.toml``."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, description="Model name requests carry. Default: the folder name.")
    version: str | None = Field(default=None, description="Served version; with one, the stream is per version.")
    file: str = Field(default="model.onnx", min_length=1, description="Model file, relative to the folder.")
    backend: Literal["onnxruntime", "tensorrt"] | None = Field(default=None, description="Default: WORKER_BACKEND.")
    stream: str | None = Field(default=None, min_length=1, description="Request stream. Default: keys.model_stream.")
    instances: int = Field(default=1, ge=1, le=64, description="Execution slots (ONNX sessions, TensorRT contexts).")
    batching: BatchSettings = Field(default_factory=BatchSettings)
    hook: HookConfig | None = None
    warmup: WarmupConfig = Field(default_factory=WarmupConfig)


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """A validated repository entry."""

    name: str
    folder: Path
    config: ModelConfig
    path: Path  # the model file
    stream: str


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(file)'}: {err['msg']}" for err in exc.errors())


def _load_entry(folder: Path) -> ModelEntry:
    config_path = folder / CONFIG_FILE
    where = f"model {folder.name!r} ({config_path})"
    try:
        raw = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read: {exc}") from exc
    try:
        config = ModelConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_problems(exc)}") from None
    name = config.name or folder.name
    where = f"model {name!r} ({config_path})"
    try:
        stream = config.stream or keys.model_stream(name, config.version)
    except ValueError as exc:
        field = "version" if config.version is not None and str(exc).startswith("model version") else "name"
        raise ConfigError(f"{where}: {field}: {exc}") from None
    path = (folder / config.file).resolve()
    if not path.is_file():
        raise ConfigError(f"{where}: file: {path} does not exist")
    return ModelEntry(name, folder, config, path, stream)


def load_repository(root: Path, only: Sequence[str] | None = None) -> list[ModelEntry]:
    """Read and validate every model of ``root`` (or those named in ``only``), sorted by name.

    Raises:
        ConfigError: naming the model and the field at fault; also for an empty repository, a name in
            ``only`` that is not in it, and two models with one name and version or one stream.
    """
    if not root.is_dir():
        raise ConfigError(f"model repository {root} is not a folder")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and (p / CONFIG_FILE).is_file())
    entries = [_load_entry(folder) for folder in folders]
    if only:
        names = {entry.name for entry in entries}
        unknown = sorted(set(only) - names)
        if unknown:
            raise ConfigError(f"model repository {root} has no model {unknown} (it has {sorted(names)})")
        entries = [entry for entry in entries if entry.name in only]
    if not entries:
        raise ConfigError(f"model repository {root} has no model (no sub-folder with a {CONFIG_FILE})")
    seen: dict[str, ModelEntry] = {}
    for entry in entries:
        other = seen.get(entry.stream)
        if other is not None:
            raise ConfigError(
                f"models {other.name!r} ({other.folder}) and {entry.name!r} ({entry.folder}) would share the "
                f"stream {entry.stream!r}: give them different names or versions"
            )
        seen[entry.stream] = entry
    return sorted(entries, key=lambda e: (e.name, e.config.version or ""))


def model_settings(base: Settings, entry: ModelEntry, *, first: bool) -> Settings:
    """The settings of one model's worker: the process's, with this model's stream, file, batching and slots.

    Only the first model's worker serves ``http.port`` (one port per process).

    Raises:
        ConfigError: the model's batching breaks a process-wide rule (named after the model and field).
    """
    cfg = entry.config
    if base.recovery.min_idle_ms < 10 * cfg.batching.max_delay_ms:
        raise ConfigError(f"model {entry.name!r}: batching.max_delay_ms ({cfg.batching.max_delay_ms}) must be at "
                          f"most a tenth of recovery.min_idle_ms ({base.recovery.min_idle_ms})")  # fmt: skip
    update: dict[str, Any] = {
        "stream": entry.stream,
        "model": ModelSettings(path=entry.path, name=entry.name, version=cfg.version),
        "batch": cfg.batching,
        "backend": cfg.backend or base.backend,
        "onnx": base.onnx.model_copy(update={"sessions": cfg.instances}),
        "tensorrt": base.tensorrt.model_copy(update={"contexts": cfg.instances}),
        "streams": base.streams.model_copy(update={"dead_letter_stream": None}),
        "model_repository": None,
    }
    if not first:
        update["http"] = base.http.model_copy(update={"port": None})
    return base.model_copy(update=update)


def load_model(entry: ModelEntry, settings: Settings) -> Engine:
    """Load one model's engine, wrap it in its hook, and run its warm-up batches.

    Raises:
        ConfigError: the hook cannot be loaded or declares invalid tensors; a warm-up shape is not fixed.
        ModelError: the model file cannot be loaded.
    """
    from worker.engines.factory import load_engine
    from worker.engines.hooked import HookedEngine
    from worker.hooks import load_hook

    engine = load_engine(settings)
    try:
        _warm_up(entry, engine)
        if entry.config.hook is not None:
            hook = load_hook(entry.config.hook.class_, entry.folder)
            engine = HookedEngine(engine, hook, entry.config.hook.options)
    except BaseException:
        engine.close()
        raise
    return engine


def _warm_up(entry: ModelEntry, engine: Engine) -> None:
    """Run zero-filled batches through the model (not the hook) so the first requests do not pay for it."""
    from redis_infer_protocol.codec import DATATYPES
    from worker.engines.base import infer_once

    info = engine.info
    for size in entry.config.warmup.batch_sizes:
        if size > info.max_batch_size:
            raise ConfigError(f"model {entry.name!r}: warmup.batch_sizes: {size} exceeds the max batch "
                              f"{info.max_batch_size}")  # fmt: skip
        inputs = {}
        for spec in info.inputs:
            if any(d < 0 for d in spec.sample_shape) or spec.datatype not in DATATYPES:
                raise ConfigError(
                    f"model {entry.name!r}: warmup.batch_sizes: input {spec.name!r} has shape {list(spec.shape)} "
                    f"({spec.datatype}); only fixed numeric inputs can be warmed up"
                )
            inputs[spec.name] = np.zeros((size, *spec.sample_shape), dtype=DATATYPES[spec.datatype])
        asyncio.run(infer_once(engine, inputs))  # called in a thread of its own (asyncio.to_thread)
        log.info("model %r warmed up at batch %d", entry.name, size)
