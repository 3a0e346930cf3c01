"""Health and metrics over HTTP: ``/livez``, ``/readyz``, ``/metrics`` (Prometheus text format).

Names follow Triton's where a counterpart exists (``*_request_success``/``*_failure``, inference
vs execution counts for the mean batch size, queue and compute durations), plus the stream's view:
consumer-group lag and pending entries, Redis availability, recoveries and dead letters.

The server is a few lines of asyncio on purpose: one GET per scrape needs no web framework.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from redis_infer_protocol.codec import Status, Timing

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Stats:
    """The worker's counters, as the health key and ``/readyz`` show them."""

    ok: int = 0
    errors: int = 0
    expired: int = 0
    dead_lettered: int = 0
    batches: int = 0
    rows: int = 0
    redis_errors: int = 0
    recovered: int = 0
    dead_letters_lost: int = 0
    refused_writes: int = 0  # write retries after a passing refusal (OOM, READONLY...)


_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30)


@dataclass
class Metrics:
    """The worker's Prometheus metrics, in a registry of their own (several workers may share a process)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.replies = Counter("redis_infer_replies", "Replies published, by status", ["status"], registry=r)
        self.inference_count = Counter("redis_infer_inference_count", "Rows computed", registry=r)
        self.exec_count = Counter("redis_infer_exec_count", "Batches executed", registry=r)
        self.batch_rows = Histogram(
            "redis_infer_batch_rows", "Rows per executed batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r
        )
        self.queue_seconds = Histogram(
            "redis_infer_queue_duration_seconds", "Enqueue (XADD) to batch formed", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.compute_seconds = Histogram(
            "redis_infer_compute_duration_seconds", "Engine time per batch", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.request_seconds = Histogram(
            "redis_infer_request_duration_seconds", "Enqueue to reply published", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.dead_lettered = Counter(
            "redis_infer_dead_lettered", "Entries written to the dead-letter stream", registry=r
        )
        self.dead_letters_lost = Counter(
            "redis_infer_dead_letters_lost", "Entries acked with no record: refused for good", registry=r
        )
        self.refused_writes = Counter(
            "redis_infer_refused_writes", "Reply or dead-letter writes refused for a while (OOM...)", registry=r
        )
        self.recovered = Counter("redis_infer_recovered", "Entries claimed from other consumers", registry=r)
        self.redis_errors = Counter("redis_infer_redis_errors", "Failed Redis operations", registry=r)
        self.redis_up = Gauge("redis_infer_redis_up", "1 while Redis answers, 0 during an outage", registry=r)
        self.queued = Gauge("redis_infer_queued_requests", "Requests waiting in the batcher", registry=r)
        self.inflight = Gauge("redis_infer_inflight_batches", "Batches on execution slots", registry=r)
        self.group_lag = Gauge("redis_infer_group_lag", "Entries not yet delivered to the group", registry=r)
        self.group_pending = Gauge("redis_infer_group_pending", "Delivered, unacknowledged entries", registry=r)
        self.redis_up.set(1)

    def observe_reply(self, status: Status, timing: Timing) -> None:
        self.replies.labels(status.value).inc()
        if timing.enqueued_ns and timing.published_ns:
            self.request_seconds.observe(max(0, timing.published_ns - timing.enqueued_ns) / 1e9)

    def observe_batch(self, rows: int, timing: Timing) -> None:
        self.exec_count.inc()
        self.inference_count.inc(rows)
        self.batch_rows.observe(rows)
        self.compute_seconds.observe(max(0, timing.compute_end_ns - timing.compute_start_ns) / 1e9)
        if timing.enqueued_ns:
            self.queue_seconds.observe(max(0, timing.batched_ns - timing.enqueued_ns) / 1e9)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HealthServer:
    """Serves ``/livez``, ``/readyz`` and ``/metrics`` on ``host:port`` (port 0: any free port).

    Args:
        health: returns the worker's health dict; ``/readyz`` is 200 when its ``ready`` is true.
        metrics: the worker's metrics.
    """

    def __init__(self, host: str, port: int, health: Callable[[], dict[str, Any]], metrics: Metrics) -> None:
        self.host, self.port = host, port
        self.health, self.metrics = health, metrics
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("health and metrics on http://%s:%d/{livez,readyz,metrics}", self.host, self.port)
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), timeout=5)
            while (await asyncio.wait_for(reader.readline(), timeout=5)) not in (b"\r\n", b"\n", b""):
                pass  # headers are not needed
            parts = request_line.decode("latin-1").split()
            path = parts[1].split("?", 1)[0] if len(parts) >= 2 else ""
            status, ctype, body = self._route(parts[0] if parts else "", path)
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, asyncio.TimeoutError, ConnectionError, UnicodeDecodeError, ValueError):
            pass  # a broken or oversized request gets no answer; the server carries on
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _route(self, method: str, path: str) -> tuple[str, str, bytes]:
        if method != "GET":
            return "405 Method Not Allowed", "text/plain", b"GET only\n"
        if path == "/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, self.metrics.render()
        if path in ("/livez", "/readyz", "/healthz"):
            health = self.health()
            ok = path == "/livez" or bool(health.get("ready"))
            body = json.dumps(health, sort_keys=True).encode() + b"\n"
            return ("200 OK" if ok else "503 Service Unavailable"), "application/json", body
        return "404 Not Found", "text/plain", b"try /livez, /readyz or /metrics\n"
