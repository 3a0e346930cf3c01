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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from redis_infer_protocol.codec import Status, Timing

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Stats:
    """The worker's counters: the one record of what happened. The health key and ``/readyz`` show them,
    and ``/metrics`` exports them (``Metrics`` reads them at each scrape), so nothing is counted twice."""

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
    refused_entries: int = 0  # entries whose writes were refused for a while, summed over those retries
    replies: dict[str, int] = field(default_factory=dict)  # replies published, by status


_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30)
_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class BulkHistogram:
    """A Prometheus histogram that takes a whole batch of observations in one numpy call."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self.name, self.documentation = name, documentation
        self.buckets = np.asarray(buckets, dtype=np.float64)
        self.counts = np.zeros(len(buckets) + 1, dtype=np.int64)  # the last one: above every bucket
        self.sum = 0.0

    def observe(self, values: Any) -> None:
        """Observe one value or an array of them."""
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.size:
            # side="left": a value equal to a bucket's bound falls into it (Prometheus's "le").
            self.counts += np.bincount(np.searchsorted(self.buckets, values, side="left"), minlength=len(self.counts))
            self.sum += float(values.sum())

    def family(self) -> HistogramMetricFamily:
        cumulative = np.cumsum(self.counts)
        bounds = [*(_bound(b) for b in self.buckets), "+Inf"]
        buckets = [(bound, float(count)) for bound, count in zip(bounds, cumulative, strict=True)]
        return HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=self.sum)


def _bound(value: float) -> str:
    return repr(float(value))


class Metrics:
    """The worker's Prometheus metrics, in a registry of their own (several workers may share a process).

    Counters are read from ``stats`` at each scrape (the one source of truth); histograms take a batch's
    observations at once; gauges are set by the heartbeat.

    Args:
        registry: where to register (default: a new one).
        stats: the counters to export (default: new ones, ``self.stats``).
    """

    def __init__(self, registry: CollectorRegistry | None = None, stats: Stats | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.stats = stats or Stats()
        self.batch_rows = BulkHistogram("redis_infer_batch_rows", "Rows per executed batch", _ROW_BUCKETS)
        self.queue_seconds = BulkHistogram(
            "redis_infer_queue_duration_seconds", "Enqueue (XADD) to batch formed", _LATENCY_BUCKETS
        )
        self.compute_seconds = BulkHistogram(
            "redis_infer_compute_duration_seconds", "Engine time per batch", _LATENCY_BUCKETS
        )
        self.request_seconds = BulkHistogram(
            "redis_infer_request_duration_seconds", "Enqueue to reply published", _LATENCY_BUCKETS
        )
        self.redis_up = Gauge("redis_infer_redis_up", "1 while Redis answers, 0 during an outage", registry=r)
        self.queued = Gauge("redis_infer_queued_requests", "Requests waiting in the batcher", registry=r)
        self.inflight = Gauge("redis_infer_inflight_batches", "Batches on execution slots", registry=r)
        self.group_lag = Gauge("redis_infer_group_lag", "Entries not yet delivered to the group", registry=r)
        self.group_pending = Gauge("redis_infer_group_pending", "Delivered, unacknowledged entries", registry=r)
        self.redis_up.set(1)
        r.register(_StatsCollector(self))

    def observe_replies(self, status: Status, timings: Sequence[Timing]) -> None:
        """Count replies of one status (one batch's, or one rejection's) and observe their latency."""
        if not timings:
            return
        replies = self.stats.replies
        replies[status.value] = replies.get(status.value, 0) + len(timings)
        seconds = [(t.published_ns - t.enqueued_ns) / 1e9 for t in timings if t.enqueued_ns and t.published_ns]
        self.request_seconds.observe(np.maximum(seconds, 0))

    def observe_reply(self, status: Status, timing: Timing) -> None:
        self.observe_replies(status, (timing,))

    def observe_batch(self, rows: int, timing: Timing) -> None:
        """One executed batch (``timing``: of its first request; the batch's times are shared)."""
        self.stats.batches += 1
        self.stats.rows += rows
        self.batch_rows.observe(rows)
        self.compute_seconds.observe(max(0, timing.compute_end_ns - timing.compute_start_ns) / 1e9)
        if timing.enqueued_ns:
            self.queue_seconds.observe(max(0, timing.batched_ns - timing.enqueued_ns) / 1e9)

    def render(self) -> bytes:
        return generate_latest(self.registry)


_COUNTERS = (
    ("redis_infer_inference_count", "Rows computed", "rows"),
    ("redis_infer_exec_count", "Batches executed", "batches"),
    ("redis_infer_dead_lettered", "Entries written to the dead-letter stream", "dead_lettered"),
    ("redis_infer_dead_letters_lost", "Entries acked with no record: refused for good", "dead_letters_lost"),
    ("redis_infer_refused_writes", "Reply or dead-letter writes refused for a while (OOM...)", "refused_entries"),
    ("redis_infer_recovered", "Entries claimed from other consumers", "recovered"),
    ("redis_infer_redis_errors", "Failed Redis operations", "redis_errors"),
)


class _StatsCollector(Collector):
    """Exports ``Stats`` and the bulk histograms at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        stats = self.metrics.stats
        replies = CounterMetricFamily("redis_infer_replies", "Replies published, by status", labels=["status"])
        for status, count in sorted(stats.replies.items()):
            replies.add_metric([status], count)
        yield replies
        for name, documentation, attr in _COUNTERS:
            yield CounterMetricFamily(name, documentation, value=getattr(stats, attr))
        m = self.metrics
        for histogram in (m.batch_rows, m.queue_seconds, m.compute_seconds, m.request_seconds):
            yield histogram.family()


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
