"""``redis-infer exporter``: the consumer group's gauges for Prometheus, exported once per deployment.

Every worker exports its own counters (replies, batches, latencies); the state of the *group* (lag,
pending entries, the oldest pending entry's age, consumers, live workers, stream and dead-letter lengths)
belongs to no one worker, and exported by each of N workers it would be counted N times by ``sum()``.
Run one exporter per deployment instead: it reads Redis on each scrape with the same read-only commands
as ``redis-infer status`` (producer/monitor.py), so the read-only ``monitor`` ACL user is enough.

Series (gauges only, so there is no ``_created`` series), labelled ``stream``, ``group`` and ``model``:

- ``redis_infer_group_lag``: entries not yet delivered to the group. ABSENT when Redis does not know it
  (Redis < 7, or entries deleted past the group), never 0;
- ``redis_infer_group_pending``: delivered, unacknowledged entries;
- ``redis_infer_group_oldest_pending_age_seconds``: server time minus the oldest pending entry's id
  time (0 when nothing is pending);
- ``redis_infer_group_consumers``: consumers the group knows (alive or not);
- ``redis_infer_group_stale_consumers``: consumers with no heartbeat, idle past ``--stale-ms``;
- ``redis_infer_workers{status}``: workers with a live health key, by the status they report;
- ``redis_infer_stream_length``, ``redis_infer_dead_letter_length`` (``dead_letter_stream`` label);
- ``redis_infer_exporter_redis_up``: 1 when the last scrape could read Redis (then the others are
  present), 0 when it could not (then only this and the scrape duration are).

The ``model`` label is ``--model`` if given, else the models the stream's live workers report (sorted,
comma-joined), else empty (a stream scaled to zero with no ``--model``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError

from producer.monitor import DEFAULT_STALE_MS, StreamStatus, snapshot

log = logging.getLogger(__name__)

DEFAULT_PORT = 9200
ENV_PASSWORD = "REDIS_INFER_PASSWORD"  # kept out of the URL, so that a Secret needs no URL-encoding
TLS_ENV = {  # for rediss:// (mutual TLS: the client certificate too)
    "REDIS_INFER_TLS_CA_FILE": "ssl_ca_certs",
    "REDIS_INFER_TLS_CERT_FILE": "ssl_certfile",
    "REDIS_INFER_TLS_KEY_FILE": "ssl_keyfile",
}
GROUP_LABELS = ["stream", "group", "model"]


def _gauge(name: str, doc: str, labels: Sequence[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def model_label(status: StreamStatus, model: str | None) -> str:
    """The ``model`` label of a stream's series: ``model`` if given, else what its live workers serve."""
    if model:
        return model
    return ",".join(sorted({w.fields["model"] for w in status.workers if w.fields.get("model")}))


def stream_metrics(statuses: Iterable[tuple[StreamStatus, str]]) -> list[Metric]:
    """The exporter's series for ``(status, model label)`` pairs (one per request stream)."""
    lag = _gauge("redis_infer_group_lag", "Entries not yet delivered to the group (absent when unknown)", GROUP_LABELS)
    pending = _gauge("redis_infer_group_pending", "Delivered, unacknowledged entries", GROUP_LABELS)
    oldest = _gauge(
        "redis_infer_group_oldest_pending_age_seconds",
        "Age of the oldest pending entry, by the Redis clock (0: nothing pending)",
        GROUP_LABELS,
    )
    consumers = _gauge("redis_infer_group_consumers", "Consumers of the group", GROUP_LABELS)
    stale = _gauge("redis_infer_group_stale_consumers", "Consumers with no heartbeat, idle past the threshold",
                   GROUP_LABELS)  # fmt: skip
    workers = _gauge("redis_infer_workers", "Workers with a live health key, by status", ["stream", "model", "status"])
    length = _gauge("redis_infer_stream_length", "Entries in the request stream", ["stream", "model"])
    dead = _gauge("redis_infer_dead_letter_length", "Entries in the dead-letter stream",
                  ["stream", "model", "dead_letter_stream"])  # fmt: skip
    for status, model in statuses:
        for group in status.groups:
            labels = [status.stream, group.name, model]
            if group.lag is not None:  # unknown lag is left out, never exported as 0
                lag.add_metric(labels, group.lag)
            pending.add_metric(labels, group.pending)
            oldest.add_metric(labels, (group.oldest_pending_age_ms or 0) / 1000)
            consumers.add_metric(labels, len(group.consumers))
            stale.add_metric(labels, sum(c.stale for c in group.consumers))
        by_status: dict[str, int] = {}
        for worker in status.workers:
            key = worker.fields.get("status", "unknown")
            by_status[key] = by_status.get(key, 0) + 1
        for name, count in sorted(by_status.items()):
            workers.add_metric([status.stream, model, name], count)
        length.add_metric([status.stream, model], status.length)
        dead.add_metric([status.stream, model, status.dead_letter_stream], status.dead_letters)
    return [lag, pending, oldest, consumers, stale, workers, length, dead]


class GroupCollector(Collector):
    """Reads every stream on each scrape (Prometheus's pace; nothing is cached between scrapes).

    Args:
        redis: a client (``decode_responses`` off); only read commands are sent.
        streams: the request streams to export.
        model: the ``model`` label (default: what the live workers report).
        stale_ms: see ``redis_infer_group_stale_consumers``.
    """

    def __init__(self, redis: Redis, streams: Sequence[str], *, model: str | None = None,
                 stale_ms: int = DEFAULT_STALE_MS) -> None:  # fmt: skip
        self.redis, self.streams, self.model, self.stale_ms = redis, list(streams), model, stale_ms
        self._lock = threading.Lock()  # the HTTP server may serve two scrapes at once: one reads at a time

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        up = _gauge("redis_infer_exporter_redis_up", "1 if the last scrape could read Redis", [])
        with self._lock:
            try:
                statuses = [self._read(stream) for stream in self.streams]
            except RedisError as exc:
                log.warning("scrape failed: %s: %s", type(exc).__name__, exc)
                up.add_metric([], 0)
            else:
                up.add_metric([], 1)
                yield from stream_metrics(statuses)
        yield up
        took = _gauge("redis_infer_exporter_scrape_duration_seconds", "Time spent reading Redis for this scrape", [])
        took.add_metric([], time.perf_counter() - started)
        yield took

    def describe(self) -> Iterator[Metric]:
        """Every family this collector may export (empty), without reading Redis."""
        yield from stream_metrics([])
        yield _gauge("redis_infer_exporter_redis_up", "1 if the last scrape could read Redis", [])
        yield _gauge("redis_infer_exporter_scrape_duration_seconds", "Time spent reading Redis for this scrape", [])

    def _read(self, stream: str) -> tuple[StreamStatus, str]:
        status = snapshot(self.redis, stream, stale_ms=self.stale_ms, latest_dead_letters=0)
        for note in status.notes:
            log.debug("%s: %s", stream, note)
        return status, model_label(status, self.model)


def registry_for(redis: Redis, streams: Sequence[str], **kwargs: Any) -> CollectorRegistry:
    """A registry holding only the group collector (no process or platform collectors, no ``_created``)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GroupCollector(redis, streams, **kwargs))
    return registry


def _client(args: argparse.Namespace) -> Redis:
    """The Redis client: password and TLS files from the environment (a Secret), so that the URL stays plain."""
    tls = {kwarg: os.environ[env] for env, kwarg in TLS_ENV.items() if os.environ.get(env)}
    return Redis.from_url(
        args.url,
        password=os.environ.get(ENV_PASSWORD) or None,  # a password in the URL wins
        socket_timeout=args.redis_timeout_s,
        socket_connect_timeout=args.redis_timeout_s,
        **tls,  # rediss:// only
    )


def run_exporter(args: argparse.Namespace) -> int:
    """The ``exporter`` command: serve ``/metrics`` until SIGTERM or Ctrl-C (exit 0)."""
    streams = [s.strip() for s in args.stream.split(",") if s.strip()]
    if not streams:
        print("exporter: --stream names no stream", file=sys.stderr)
        return 2
    redis = _client(args)
    registry = registry_for(redis, streams, model=args.model, stale_ms=args.stale_ms)
    server, thread = start_http_server(args.port, addr=args.host, registry=registry)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"exporting {', '.join(streams)} on http://{args.host}:{server.server_address[1]}/metrics",
          file=sys.stderr, flush=True)  # fmt: skip
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.shutdown()
        server.server_close()
        thread.join(5)
        redis.close()
    return 0


def add_parser(commands: Any, add_connection_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``exporter`` (read-only) on the producer CLI."""
    exporter = commands.add_parser(
        "exporter",
        help="Prometheus exporter of the group's lag, pending, consumers, workers, dead letters",
        description=f"Serves /metrics; read-only. The Redis password may come from ${ENV_PASSWORD} instead of the URL; "
        f"for rediss://, ${', $'.join(TLS_ENV)} name the CA, client certificate and key files.",
    )
    add_connection_args(exporter)  # --stream takes a comma-separated list here
    exporter.add_argument("--host", default="0.0.0.0", help="listen address (default 0.0.0.0)")
    exporter.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"listen port (default {DEFAULT_PORT})")
    exporter.add_argument("--model", help="the model label (default: the model the live workers report)")
    stale_help = f"a consumer idle this long with no heartbeat is stale (default {DEFAULT_STALE_MS})"
    exporter.add_argument("--stale-ms", type=int, default=DEFAULT_STALE_MS, help=stale_help)
    exporter.add_argument("--redis-timeout-s", type=float, default=5.0, help="Redis socket timeout (default 5)")
    exporter.set_defaults(func=run_exporter)
