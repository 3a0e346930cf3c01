"""Discovery, producer side: which models are served, where, with which inputs (docs/protocol.md §17).

Workers serving a model repository write one JSON document per request stream into the ``infer:models``
hash; a model counts as served while at least one health key of its stream (``<stream>:worker:*``)
exists, i.e. while a worker heartbeats. :func:`parse_catalog` and :func:`pick` are pure; the sync and
asyncio readers only run the Redis commands (``HGETALL`` once, one ``SCAN`` per stream).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from producer.errors import ModelNotFound
from redis_infer_protocol import keys
from redis_infer_protocol.codec import Status

log = logging.getLogger(__name__)

__all__ = [
    "AsyncDiscovery",
    "ModelMetadata",
    "SyncDiscovery",
    "TensorMetadata",
    "add_parser",
    "models_async",
    "models_sync",
    "parse_catalog",
    "pick",
    "route",
]


@dataclass(frozen=True, slots=True)
class TensorMetadata:
    """One input or output: KServe v2 datatype, shape with -1 for a dynamic dimension (dim 0: batch)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """One served model version, as its workers published it, and the workers live now."""

    name: str
    version: str | None
    stream: str
    platform: str
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]
    max_batch_size: int
    workers: tuple[str, ...] = ()
    batching: Mapping[str, Any] = field(default_factory=dict)
    hook: str | None = None
    parameters: Mapping[str, str] = field(default_factory=dict)
    updated_ms: int = 0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the CLI's ``--json``)."""
        return {
            "name": self.name, "version": self.version, "stream": self.stream, "platform": self.platform,
            "inputs": _tensor_dicts(self.inputs), "outputs": _tensor_dicts(self.outputs),
            "max_batch_size": self.max_batch_size, "workers": list(self.workers), "batching": dict(self.batching),
            "hook": self.hook, "parameters": dict(self.parameters), "updated_ms": self.updated_ms,
        }  # fmt: skip


def _tensor_dicts(specs: Iterable[TensorMetadata]) -> list[dict[str, Any]]:
    return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in specs]


def route(model: str, stream: str | None, version: str | None = None) -> str:
    """The stream a client sends to: ``stream`` if given, else the model's own (``keys.model_stream``)."""
    return stream if stream is not None else keys.model_stream(model, version)


def _tensors(items: Any) -> tuple[TensorMetadata, ...]:
    return tuple(TensorMetadata(str(t["name"]), str(t["datatype"]), tuple(int(d) for d in t["shape"])) for t in items)


def _parse_one(raw: bytes) -> ModelMetadata:
    doc = json.loads(raw)
    versions = doc.get("versions") or []
    return ModelMetadata(
        name=str(doc["name"]),
        version=str(versions[0]) if versions else None,
        stream=str(doc["stream"]),
        platform=str(doc.get("platform", "")),
        inputs=_tensors(doc["inputs"]),
        outputs=_tensors(doc["outputs"]),
        max_batch_size=int(doc["max_batch_size"]),
        batching=dict(doc.get("batching") or {}),
        hook=doc.get("hook"),
        parameters={str(k): str(v) for k, v in (doc.get("parameters") or {}).items()},
        updated_ms=int(doc.get("updated_ms", 0)),
    )


def parse_catalog(raw: Mapping[bytes, bytes]) -> list[ModelMetadata]:
    """The documents of the ``infer:models`` hash, sorted by name and version; malformed ones are logged
    and skipped (one bad writer must not hide every model)."""
    found = []
    for stream, value in raw.items():
        try:
            found.append(_parse_one(value))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("skipping malformed model metadata under %s: %s", keys.MODELS_KEY, stream[:200], exc_info=exc)
    return sorted(found, key=lambda m: (m.name, m.version or ""))


def _with_workers(meta: ModelMetadata, health_keys: Iterable[bytes]) -> ModelMetadata:
    cut = len(keys.health_key(meta.stream, "").encode())
    workers = tuple(sorted(k[cut:].decode(errors="replace") for k in health_keys))
    return ModelMetadata(**{**{f: getattr(meta, f) for f in meta.__dataclass_fields__}, "workers": workers})


def pick(models: Iterable[ModelMetadata], name: str, version: str | None = None) -> ModelMetadata:
    """The served ``name`` (and ``version``): without a version, the unversioned stream's, else the only one.

    Raises:
        ModelNotFound: no live worker serves it, or several versions do and none was named.
    """
    same = [m for m in models if m.name == name and (version is None or m.version == version)]
    if version is None and len(same) > 1:
        same = [m for m in same if m.version is None] or same
    if len(same) == 1:
        return same[0]
    what = f"model {name!r}" + ("" if version is None else f" version {version!r}")
    if not same:
        raise ModelNotFound(f"{what} is not served by any live worker", status=Status.MODEL_NOT_FOUND, request_id="")
    versions = sorted(m.version or "" for m in same)
    raise ModelNotFound(f"{what} is served in versions {versions}: name one", status=Status.MODEL_NOT_FOUND,
                        request_id="")  # fmt: skip


def models_sync(redis: Any, *, live_only: bool = True) -> list[ModelMetadata]:
    """Every served model version (with a live worker unless ``live_only`` is False), sync redis-py."""
    result = []
    for meta in parse_catalog(redis.hgetall(keys.MODELS_KEY)):
        found = _with_workers(meta, redis.scan_iter(match=keys.health_pattern(meta.stream), count=100))
        if found.workers or not live_only:
            result.append(found)
    return result


async def models_async(redis: Any, *, live_only: bool = True) -> list[ModelMetadata]:
    """As :func:`models_sync`, with an asyncio redis-py client."""
    result = []
    for meta in parse_catalog(await redis.hgetall(keys.MODELS_KEY)):
        health = [k async for k in redis.scan_iter(match=keys.health_pattern(meta.stream), count=100)]
        found = _with_workers(meta, health)
        if found.workers or not live_only:
            result.append(found)
    return result


class SyncDiscovery:
    """``models()`` and ``metadata()`` of :class:`producer.Client` (a mixin: it reads through the client's Redis)."""

    _redis: Any

    @property
    def model(self) -> str:
        raise NotImplementedError

    def models(self, *, live_only: bool = True) -> list[ModelMetadata]:
        """The served model versions, with the consumer names of their live workers.

        Args:
            live_only: leave out models no live worker serves (no health key of their stream).
        """
        return models_sync(self._redis, live_only=live_only)

    def metadata(self, model: str | None = None, version: str | None = None) -> ModelMetadata:
        """One served model's metadata (default: this client's model).

        Raises:
            ModelNotFound: no live worker serves it, or several versions do and none was named.
        """
        return pick(self.models(), model or self.model, version)


class AsyncDiscovery:
    """``models()`` and ``metadata()`` of :class:`producer.AsyncClient`."""

    _redis: Any

    @property
    def model(self) -> str:
        raise NotImplementedError

    async def models(self, *, live_only: bool = True) -> list[ModelMetadata]:
        """As :meth:`SyncDiscovery.models`."""
        return await models_async(self._redis, live_only=live_only)

    async def metadata(self, model: str | None = None, version: str | None = None) -> ModelMetadata:
        """As :meth:`SyncDiscovery.metadata`."""
        return pick(await self.models(), model or self.model, version)


# ---------------------------------------------------------------------------------------------- CLI


def format_models(models: Iterable[ModelMetadata]) -> str:
    lines = []
    for m in models:
        version = "" if m.version is None else f" version {m.version}"
        lines.append(f"{m.name}{version}  stream {m.stream}  {m.platform}  max batch {m.max_batch_size}  "
                     f"workers {len(m.workers)}{'  hook ' + m.hook if m.hook else ''}")  # fmt: skip
        for kind, specs in (("in ", m.inputs), ("out", m.outputs)):
            lines.extend(f"  {kind} {t.name}: {t.datatype} {list(t.shape)}" for t in specs)
    return "\n".join(lines) if lines else "no model is served by a live worker"


def run_models(args: argparse.Namespace) -> int:
    """The ``models`` command."""
    from redis import Redis

    redis = Redis.from_url(args.url)
    try:
        found = models_sync(redis, live_only=not args.all)
    finally:
        redis.close()
    if args.model:
        try:
            found = [pick(found, args.model, args.model_version)]
        except ModelNotFound as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(json.dumps([m.as_dict() for m in found], indent=2) if args.json else format_models(found))
    return 0


def add_parser(commands: Any, add_connection_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``models`` on the producer CLI."""
    cmd = commands.add_parser("models", help="list the served models (published by workers with a repository)")
    add_connection_args(cmd)
    cmd.add_argument("model", nargs="?", help="show this model only (exit 1 if no live worker serves it)")
    cmd.add_argument("--model-version", help="with MODEL: this version")
    cmd.add_argument("--all", action="store_true", help="also models no live worker serves now")
    cmd.add_argument("--json", action="store_true", help="print as JSON")
    cmd.set_defaults(func=run_models)
