"""Client SDK for the Redis Streams inference worker.

:class:`Client` (threads) and :class:`AsyncClient` (asyncio) send requests to a worker's request
stream and route its replies back; :mod:`producer.codec` is the wire format they share with it.

The names below are imported on first use, so that ``import producer.codec`` (what the worker
needs) does not pull in the Redis client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from producer._common import ClientStats
    from producer.aio import AsyncClient
    from producer.client import Client
    from producer.codec import Reply, Status, Timing
    from producer.errors import (
        Busy,
        ClientClosed,
        Expired,
        InferError,
        InferTimeout,
        InvalidInput,
        InvalidRequest,
        ModelNotFound,
        ServerError,
        error_for,
    )

_EXPORTS: dict[str, str] = {
    "AsyncClient": "producer.aio",
    "Client": "producer.client",
    "ClientStats": "producer._common",
    "Reply": "producer.codec",
    "Status": "producer.codec",
    "Timing": "producer.codec",
    **dict.fromkeys(
        [
            "Busy",
            "ClientClosed",
            "Expired",
            "InferError",
            "InferTimeout",
            "InvalidInput",
            "InvalidRequest",
            "ModelNotFound",
            "ServerError",
            "error_for",
        ],
        "producer.errors",
    ),
}

__all__ = [
    "AsyncClient",
    "Busy",
    "Client",
    "ClientClosed",
    "ClientStats",
    "Expired",
    "InferError",
    "InferTimeout",
    "InvalidInput",
    "InvalidRequest",
    "ModelNotFound",
    "Reply",
    "ServerError",
    "Status",
    "Timing",
    "error_for",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'producer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
