"""Discovery, worker side: each served model's metadata in the ``infer:models`` hash (docs/protocol.md §17).

Field = the model's request stream, value = JSON in the spirit of KServe v2 model metadata (name,
versions, platform, inputs and outputs with datatypes and shapes) plus what a producer needs to route
and size requests (stream, max batch size, batching). Which workers are live is not stored here: it is
read from the health keys of the stream (``<stream>:worker:*``), which expire when a worker dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from redis_infer_protocol import keys
from worker.config import Settings
from worker.engines.base import ModelInfo, TensorSpec

log = logging.getLogger(__name__)

__all__ = ["model_metadata", "publish_forever"]

CATALOG_VERSION = 1


def _tensor(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}


def model_metadata(settings: Settings, info: ModelInfo, *, instances: int, hook: str | None) -> dict[str, Any]:
    """The JSON document a worker publishes for the model it serves (``settings`` are that model's)."""
    batch = settings.batch
    return {
        "catalog_version": CATALOG_VERSION,
        "name": info.name,
        "versions": [] if settings.model.version is None else [settings.model.version],
        "platform": settings.backend,
        "stream": settings.stream,
        "group": settings.group,
        "inputs": [_tensor(spec) for spec in info.inputs],
        "outputs": [_tensor(spec) for spec in info.outputs],
        "max_batch_size": min(batch.max_size, info.max_batch_size),
        "batching": {"max_delay_ms": batch.max_delay_ms, "preferred_sizes": list(batch.preferred_sizes)},
        "instances": instances,
        "hook": hook,
        "parameters": {k: v for k, v in info.metadata.items() if len(v) <= 4096},
        "health_pattern": keys.health_pattern(settings.stream),
        "updated_ms": int(time.time() * 1000),
    }


async def publish_forever(
    client: Any, documents: Sequence[dict[str, Any]], interval_s: float, stop: asyncio.Event
) -> None:
    """Write the documents now and every ``interval_s`` until ``stop`` (a deleted hash comes back).

    A refusal (an ACL without the key, an outage) is logged and retried: discovery never stops serving.
    """
    while not stop.is_set():
        mapping = {}
        for doc in documents:
            doc["updated_ms"] = int(time.time() * 1000)
            mapping[doc["stream"]] = json.dumps(doc, separators=(",", ":"))
        try:
            await client.hset(keys.MODELS_KEY, mapping=mapping)
        except Exception as exc:  # redis-py's errors, and OSError under it: never fatal here
            log.warning("cannot publish model metadata to %s: %s", keys.MODELS_KEY, exc)
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
