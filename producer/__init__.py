"""Client SDK for the Redis Streams inference worker.

:class:`Client` (threads) and :class:`AsyncClient` (asyncio) send requests to a worker's request
stream and route its replies back. Both drive one sans-IO core (:mod:`producer.core`); the wire
format they share with the worker is the :mod:`redis_infer_protocol` package.
"""

from __future__ import annotations

from producer.aio import AsyncClient
from producer.client import Client
from producer.core import ClientStats
from producer.discovery import ModelMetadata, TensorMetadata
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
from redis_infer_protocol.codec import Reply, Status, Timing

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
    "ModelMetadata",
    "ModelNotFound",
    "Reply",
    "ServerError",
    "Status",
    "TensorMetadata",
    "Timing",
    "error_for",
]
