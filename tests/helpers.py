"""Test helpers: raw stream I/O and random inputs. Workers, Redis and the tiny model come from ``worker.testing``."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import redis

from redis_infer_protocol.codec import Reply, decode_reply, encode_request
from worker.testing import WorkerThread, make_affine_model

__all__ = ["ROOT", "WorkerThread", "collect", "make_affine_model", "rand", "send"]

ROOT = Path(__file__).resolve().parent.parent


def send(
    client: redis.Redis, model: str, inputs: Mapping[str, Any], *, request_id: str, reply_to: str = "infer:reply:test",
    stream: str = "infer:requests", **kw: Any,
) -> str:  # fmt: skip
    return client.xadd(stream, encode_request(request_id, reply_to, model, inputs, **kw)).decode()  # type: ignore[union-attr]


def collect(
    client: redis.Redis, count: int, *, reply_to: str = "infer:reply:test", timeout_s: float = 30,
    until: Callable[[dict[str, Reply]], bool] | None = None,
) -> dict[str, Reply]:  # fmt: skip
    """Read replies from ``reply_to`` until ``count`` distinct ids arrived (or ``until`` holds)."""
    replies: dict[str, Reply] = {}
    last = "0"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = client.xread({reply_to: last}, block=100, count=1000) or []
        for _key, items in got:
            for entry_id, fields in items:
                last = entry_id
                reply = decode_reply(fields)
                replies[reply.id] = reply
        if (until and until(replies)) or (until is None and len(replies) >= count):
            return replies
    raise AssertionError(f"only {len(replies)} of {count} replies within {timeout_s}s")


def rand(*shape: int, seed: int | None = None) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
