"""Scratch request streams on a shared Redis: a name of our own, and every derived key deleted after."""

from __future__ import annotations

import os

import redis

from redis_infer_protocol.keys import health_pattern, stream_keys


def scratch_stream(prefix: str) -> str:
    """A request stream of our own, so that a shared Redis's real streams and workers are never touched."""
    return f"redis-infer-{prefix}:{os.getpid()}:requests"


def drop_stream(url: str, stream: str) -> None:
    """Delete a scratch stream and the keys derived from it (acked entries stay in a stream until deleted)."""
    client = redis.Redis.from_url(url)
    try:
        keys = [*stream_keys(stream), *client.scan_iter(match=health_pattern(stream), count=1000)]
        client.delete(*keys)
    finally:
        client.close()
