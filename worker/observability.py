"""Health and metrics over HTTP: ``/livez``, ``/readyz``, ``/metrics`` (Prometheus text format).

Every per-worker series carries ``model`` and ``version`` labels. Triton's names where the meaning
matches, exposed exactly as Triton does (counters without ``_total``, cumulative microseconds):
``nv_inference_request_success``, ``nv_inference_request_failure{reason}``, ``nv_inference_count`` (rows),
``nv_inference_exec_count`` (batches), ``nv_inference_pending_request_count`` (the batcher's queue), and
``nv_inference_{request,queue,compute_input,compute_infer,compute_output}_duration_us``; GPU memory and
utilization through NVML when ``pynvml`` is importable (``nv_gpu_*{gpu_uuid}``). Ours: replies by status,
latency and batch-size histograms, Redis availability, recoveries and dead letters. The group's lag and
pending are not here: one ``redis-infer exporter`` per deployment exports them, so sums stay right.
No ``_created`` series: the counters are read from ``Stats`` by a collector at each scrape.

The server is a few lines of asyncio on purpose: one GET per scrape needs no web framework.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from redis_infer_protocol.codec import Status, Timing
from worker.nvml import gpu_families, load_nvml

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

    def family(self, labels: dict[str, str] | None = None) -> HistogramMetricFamily:
        """The histogram's family, its one series labelled with ``labels`` (none by default)."""
        cumulative = np.cumsum(self.counts)
        bounds = [*(_bound(b) for b in self.buckets), "+Inf"]
        buckets = [(bound, float(count)) for bound, count in zip(bounds, cumulative, strict=True)]
        labels = labels or {}
        family = HistogramMetricFamily(self.name, self.documentation, labels=list(labels))
        family.add_metric(list(labels.values()), buckets, sum_value=self.sum)
        return family


def _bound(value: float) -> str:
    return repr(float(value))


@dataclass(slots=True)
class Durations:
    """Cumulative nanoseconds over successful requests (Triton's ``*_duration_us`` counters, per request)."""

    request_ns: int = 0  # enqueued (XADD) .. reply published
    queue_ns: int = 0  # enqueued .. batch formed
    compute_input_ns: int = 0  # a hook's preprocess (0 without a hook)
    compute_infer_ns: int = 0  # the engine's run
    compute_output_ns: int = 0  # a hook's postprocess (0 without a hook)

    def add(self, timings: Sequence[Timing]) -> list[float]:
        """Add successful requests' durations; returns their request durations in seconds (for the histogram).

        One pass with local sums: this runs for every OK batch, so it is kept tight.
        """
        request = queue = pre = infer = post = 0
        seconds = []
        for t in timings:
            enqueued, start, end = t.enqueued_ns, t.compute_start_ns, t.compute_end_ns
            if enqueued:
                if t.published_ns:
                    elapsed = t.published_ns - enqueued
                    seconds.append(elapsed / 1e9)
                    request += elapsed if elapsed > 0 else 0
                if t.batched_ns > enqueued:
                    queue += t.batched_ns - enqueued
            compute = end - start if end > start else 0
            stage_in = t.preprocess_end_ns - start if t.preprocess_end_ns > start else 0
            stage_out = end - t.postprocess_start_ns if t.postprocess_start_ns and end > t.postprocess_start_ns else 0
            pre, post = pre + stage_in, post + stage_out
            infer += max(0, compute - stage_in - stage_out)
        self.request_ns += request
        self.queue_ns += queue
        self.compute_input_ns += pre
        self.compute_infer_ns += infer
        self.compute_output_ns += post
        return seconds


# Triton's failure reasons: REJECTED is a queue timeout or a refusal to queue, BACKEND the model's failure.
_FAILURE_REASONS = {Status.EXPIRED.value: "REJECTED", Status.BUSY.value: "REJECTED", Status.INTERNAL.value: "BACKEND"}
_LABELS = ("model", "version")
_NO_NVML: Any = object()  # Metrics(nvml=...) default: load pynvml at the first scrape


class Metrics:
    """The worker's Prometheus metrics, in a registry of their own (several workers may share a process).

    Counters are read from ``stats`` at each scrape (the one source of truth); histograms take a batch's
    observations at once; the Redis link sets ``redis_up``; ``queued`` and ``inflight`` are given functions
    by the worker, read at each scrape.

    Args:
        registry: where to register (default: a new one).
        stats: the counters to export (default: new ones, ``self.stats``).
        model: the ``model`` label of every series.
        version: the ``version`` label ("" when the model has none).
        nvml: an initialized NVML module for the GPU series, or None for none (default: ``pynvml`` if
            importable, loaded at the first scrape).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        stats: Stats | None = None,
        *,
        model: str = "",
        version: str = "",
        nvml: Any = _NO_NVML,
    ) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.stats = stats or Stats()
        self.labels = {"model": model, "version": version}
        self.durations = Durations()
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
        self.redis_up = self._gauge("redis_infer_redis_up", "1 while Redis answers, 0 during an outage")
        self.queued = self._gauge("nv_inference_pending_request_count", "Requests read, not yet executing")
        self.inflight = self._gauge("redis_infer_inflight_batches", "Batches on execution slots")
        self.redis_up.set(1)
        self._nvml = nvml
        self._served: list[Metrics] = [self]
        r.register(_StatsCollector(self))

    def _gauge(self, name: str, documentation: str) -> Gauge:
        return Gauge(name, documentation, _LABELS, registry=self.registry).labels(**self.labels)

    def serve_also(self, others: Iterable[Metrics]) -> None:
        """Render the series of ``others`` too (a fleet's models, when only this one serves HTTP)."""
        self._served.extend(others)

    def observe_replies(self, status: Status, timings: Sequence[Timing]) -> None:
        """Count replies of one status (one batch's, or one rejection's) and observe their latency."""
        if not timings:
            return
        replies = self.stats.replies
        replies[status.value] = replies.get(status.value, 0) + len(timings)
        if status is Status.OK:
            seconds = self.durations.add(timings)
        else:
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

    def families(self) -> list[Metric]:
        """Every family to expose: this worker's, those of ``serve_also``, then the GPU's (once per process)."""
        merged: dict[str, Metric] = {}
        for metrics in self._served:
            for family in metrics.registry.collect():
                if family.name in merged:
                    merged[family.name].samples.extend(family.samples)
                else:
                    merged[family.name] = family
        if self._nvml is _NO_NVML:
            self._nvml = load_nvml()
        gpu = gpu_families(self._nvml) if self._nvml is not None else []
        return [*merged.values(), *gpu]

    def render(self) -> bytes:
        return b"".join(_exposition(family) for family in self.families())


class TritonCounter(Metric):
    """A counter exposed under its own name, as Triton does (``nv_inference_count``, not ``..._total``)."""

    def __init__(self, name: str, documentation: str, labels: dict[str, str] | None = None, value: float = 0) -> None:
        super().__init__(name, documentation, "counter")
        if labels is not None:
            self.add(labels, value)

    def add(self, labels: dict[str, str], value: float) -> None:
        self.add_sample(self.name, labels, value)


class _One(Collector):
    def __init__(self, family: Metric) -> None:
        self.family = family

    def collect(self) -> Iterator[Metric]:
        yield self.family


def _exposition(family: Metric) -> bytes:
    if not isinstance(family, TritonCounter):
        return generate_latest(_One(family))
    # generate_latest names every counter "<name>_total" in its HELP and TYPE lines: write it untyped, retype.
    untyped = Metric(family.name, family.documentation, "unknown")
    untyped.samples = family.samples
    text = generate_latest(_One(untyped))
    return text.replace(f"# TYPE {family.name} untyped\n".encode(), f"# TYPE {family.name} counter\n".encode(), 1)


_COUNTERS = (
    ("redis_infer_dead_lettered", "Entries written to the dead-letter stream", "dead_lettered"),
    ("redis_infer_dead_letters_lost", "Entries acked with no record: refused for good", "dead_letters_lost"),
    ("redis_infer_refused_writes", "Reply or dead-letter writes refused for a while (OOM...)", "refused_entries"),
    ("redis_infer_recovered", "Entries claimed from other consumers", "recovered"),
    ("redis_infer_redis_errors", "Failed Redis operations", "redis_errors"),
)
_DURATIONS = (
    ("nv_inference_request_duration_us", "Cumulative request duration (enqueue to reply), successful requests",
     "request_ns"),
    ("nv_inference_queue_duration_us", "Cumulative queue duration (enqueue to batch formed)", "queue_ns"),
    ("nv_inference_compute_input_duration_us", "Cumulative compute input duration (a hook's preprocess)",
     "compute_input_ns"),
    ("nv_inference_compute_infer_duration_us", "Cumulative compute inference duration (the engine's run)",
     "compute_infer_ns"),
    ("nv_inference_compute_output_duration_us", "Cumulative compute output duration (a hook's postprocess)",
     "compute_output_ns"),
)  # fmt: skip


class _StatsCollector(Collector):
    """Exports ``Stats``, the durations and the bulk histograms at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        stats, labels = m.stats, m.labels
        yield from _request_counts(stats, labels)
        yield TritonCounter("nv_inference_count", "Inferences performed (rows; not batches)", labels, stats.rows)
        yield TritonCounter("nv_inference_exec_count", "Model executions performed (batches)", labels, stats.batches)
        for name, documentation, attr in _DURATIONS:
            yield TritonCounter(name, documentation, labels, getattr(m.durations, attr) / 1000)
        for name, documentation, attr in _COUNTERS:
            family = CounterMetricFamily(name, documentation, labels=list(labels))
            family.add_metric(list(labels.values()), getattr(stats, attr))
            yield family
        for histogram in (m.batch_rows, m.queue_seconds, m.compute_seconds, m.request_seconds):
            yield histogram.family(labels)


def _request_counts(stats: Stats, labels: dict[str, str]) -> Iterator[Metric]:
    """Triton's success and failure{reason} counters, and ours by reply status (same counts, finer)."""
    replies = CounterMetricFamily("redis_infer_replies", "Replies published, by status", labels=[*labels, "status"])
    failures: dict[str, int] = {}
    for status, count in sorted(stats.replies.items()):
        replies.add_metric([*labels.values(), status], count)
        if status != Status.OK.value:
            reason = _FAILURE_REASONS.get(status, "OTHER")
            failures[reason] = failures.get(reason, 0) + count
    yield TritonCounter("nv_inference_request_success", "Successful requests", labels, stats.replies.get("OK", 0))
    failure = TritonCounter("nv_inference_request_failure", "Failed requests, by Triton's reason")
    for reason in ("REJECTED", "CANCELED", "BACKEND", "OTHER"):
        failure.add({**labels, "reason": reason}, failures.get(reason, 0))
    yield failure
    yield replies


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
