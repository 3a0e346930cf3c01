"""The worker: wiring and lifecycle of read -> intake -> batch -> engine slot -> reply -> ack.

Each stage is a module of its own, and four loops share one asyncio loop:

- the *reader* (worker/reader.py) pulls entries with XREADGROUP, admits or rejects each, and queues
  work in the batcher (it pauses when ``max_queued`` requests are held);
- the *dispatcher* (worker/dispatcher.py) takes a free execution slot, then the next ready batch
  (expired requests are answered first), and runs it on that slot, bisecting a failing batch so that a
  bad request fails alone;
- the *publisher* (worker/publisher.py) writes replies and dead letters, then acks (write-then-ack);
- the *recovery* loop claims what dead consumers left pending and trims the stream (worker/recovery.py);
- the *heartbeat* keeps the health key fresh (the group's lag and pending are the exporter's, once per
  deployment: ``redis-infer exporter``).

A loop that dies of an unexpected error stops the worker with a non-zero exit. Shutdown stops reading,
flushes the batcher, finishes in-flight batches within the grace period and exits; whatever is left
unacked stays pending for another worker to claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable
from typing import Any

from worker.batcher import Batcher
from worker.config import Settings
from worker.dispatcher import Dispatcher
from worker.engines.base import Engine
from worker.errors import EngineError, RedisError
from worker.intake import Intake, WorkItem
from worker.link import REDIS_ERRORS, RedisLink
from worker.observability import HealthServer, Metrics, Stats
from worker.publisher import Publisher
from worker.reader import Reader
from worker.recovery import Recovery, run_forever
from worker.transport import DeadLetterPolicy, Transport

log = logging.getLogger(__name__)

__all__ = ["Stats", "Worker"]

HEADROOM_WARN_SHARE = 0.8  # warn at start above this share of maxmemory (noeviction)


class Worker:
    """One worker process's loop over one engine. ``await run()`` until ``stop()``."""

    def __init__(self, settings: Settings, engine: Engine, transport: Transport) -> None:
        self.settings = settings
        self.engine = engine
        self.transport = transport
        info = engine.info
        self.batcher: Batcher[WorkItem] = Batcher(
            max_size=min(settings.batch.max_size, info.max_batch_size),
            max_delay_s=settings.batch.max_delay_ms / 1000,
            preferred_sizes=settings.batch.preferred_sizes,
        )
        self.intake = Intake(
            info,
            version=settings.model.version,
            default_timeout_ms=settings.streams.default_timeout_ms,
            limits=settings.limits.to_codec(),
            forbidden_reply_to=frozenset({settings.stream, settings.dead_letter_stream}),
            reply_prefix=settings.streams.allowed_reply_prefixes,
            max_rows=self.batcher.max_size,
        )
        streams = settings.streams
        transport.apply_policy(
            reply_allowed=self.intake.may_reply_to,
            dead_letters=DeadLetterPolicy(maxlen=streams.dead_letter_maxlen,
                                          max_field_bytes=streams.dead_letter_max_field_bytes),
        )  # fmt: skip
        self.maintenance = transport.maintenance()
        rec = settings.recovery
        self.recovery = Recovery(
            self.maintenance,
            min_idle_ms=rec.min_idle_ms,
            stuck_ms=rec.stuck_ms,
            max_deliveries=rec.max_deliveries,
            count=rec.count,
            trim=rec.trim,
        )
        self.max_queued = settings.batch.max_queued or 2 * self.batcher.max_size * len(engine.slots)
        self.metrics = Metrics(model=info.name, version=settings.model.version or "")
        self.stats = self.metrics.stats  # one record: the health key and /metrics read the same counters
        self.link = RedisLink(self.stats, self.metrics, settings.health_ttl_s, self._give_up)
        self.started_ms = int(time.time() * 1000)
        self._stop = asyncio.Event()
        self._reading_done = False
        self._closed = asyncio.Event()  # set once drained: the heartbeat stops
        self._drain_deadline = float("inf")
        self.http_port: int | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._fatal: BaseException | None = None
        self._serving = False  # start-up writes done, loops started
        self.publisher = Publisher(transport, self.link, self.stats, self.metrics, info.name,
                                   past_grace=self._past_grace, released=self._released)  # fmt: skip
        self.dispatcher = Dispatcher(engine, self.batcher, self.publisher, self.stats, self.metrics,
                                     transport.consumer, spawn=self._spawn, room_made=self._room_made)  # fmt: skip
        self.reader = Reader(settings, transport, self.maintenance, self.intake, self.batcher, self.publisher,
                             self.link, self.stats, self.metrics, self.max_queued, stopping=lambda: self.stopping,
                             admitted=self.dispatcher.wake, sleep=self._sleep_unless_stopping)  # fmt: skip
        self.metrics.queued.set_function(lambda: len(self.batcher))  # read at each scrape, never stale
        self.metrics.inflight.set_function(lambda: self.dispatcher.computing)

    # The three stages are wired through these callbacks, so that none reaches into another.
    def _released(self, entry_ids: Any) -> None:
        self.reader.release(entry_ids)

    def _room_made(self) -> None:
        self.reader.room_made()

    def _past_grace(self) -> bool:
        return self.stopping and time.monotonic() > self._drain_deadline

    def _give_up(self) -> bool:
        """A failing Redis operation raises instead of retrying: stopping before serving, or past the grace."""
        return self.stopping and (not self._serving or (self._reading_done and time.monotonic() > self._drain_deadline))

    @property
    def redis_down_since(self) -> float | None:
        """When Redis went down (monotonic clock), or None while it is up."""
        return self.link.down_since

    # ----------------------------------------------------------------------------------- lifecycle

    def stop(self) -> None:
        """Ask the worker to stop: stop reading, finish what is in flight. Idempotent."""
        if not self._stop.is_set():
            log.info("stopping: no new reads; finishing %d queued requests", len(self.batcher))
            self._stop.set()
            self.dispatcher.wake()
            self.reader.room_made()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run(self) -> None:
        """Serve until ``stop()``; returns after draining (or raises the fatal engine error)."""
        try:
            await self.link.with_retry(self.transport.ensure_group)
            await self.link.with_retry(self.maintenance.publish_limits, self.settings.streams.max_backlog)
        except REDIS_ERRORS:
            if not self.stopping:
                raise
            log.warning("stopped before Redis accepted the start-up writes")
            return
        self._serving = True
        await self._check_headroom()
        reader = asyncio.create_task(self.reader.run(), name="reader")
        recovery = asyncio.create_task(self._recovery_loop(), name="recovery")
        dispatcher = asyncio.create_task(self.dispatcher.run(), name="dispatcher")
        heartbeat = asyncio.create_task(self._heartbeat_loop(), name="heartbeat")
        for task in (reader, recovery, dispatcher, heartbeat):
            task.add_done_callback(self._loop_done)
        http = self.settings.http
        server = HealthServer(http.host, http.port, self.health, self.metrics) if http.port is not None else None
        if server is not None:
            self.http_port = await server.start()
        log.info("worker %s serving model %r from %s", self.transport.consumer, self.engine.info.name,
                 self.settings.stream)  # fmt: skip
        await self._stop.wait()
        await self._drain(reader, dispatcher)
        # No cancel(): a cancellation that lands inside a redis-py call can be swallowed there. These
        # loops watch the events instead and end at their next step.
        self._closed.set()
        await asyncio.gather(heartbeat, recovery, return_exceptions=True)
        if server is not None:
            await server.close()
        with contextlib.suppress(*REDIS_ERRORS):
            await self.transport.clear_heartbeat()
        if self._fatal is not None:
            raise self._fatal

    async def _check_headroom(self) -> None:
        """Warn at start when Redis runs with noeviction and little memory to spare: under OOM no reply,
        dead letter or acknowledgement can free memory (docs/reliability.md, "Out of memory")."""
        try:
            used, limit, policy = await self.transport.memory()
        except RedisError as exc:  # INFO may be denied by the ACL: the rule is then the operator's
            log.info("cannot check Redis memory headroom: %s", exc)
            return
        if limit and policy == "noeviction" and used > HEADROOM_WARN_SHARE * limit:
            log.warning("redis uses %d of its %d bytes with maxmemory-policy noeviction: writes will be refused "
                        "(OOM) and the queue cannot drain; raise maxmemory or lower streams.max_backlog",
                        used, limit)  # fmt: skip

    async def _drain(self, reader: asyncio.Task[None], dispatcher: asyncio.Task[None]) -> None:
        grace = self.settings.shutdown_grace_s
        deadline = self._drain_deadline = time.monotonic() + grace
        try:
            await asyncio.wait_for(asyncio.shield(reader), timeout=self.settings.streams.block_ms / 1000 + 2)
        except (TimeoutError, asyncio.TimeoutError):
            reader.cancel()
        except Exception:  # the reader died (already logged and recorded): drain what is queued all the same
            pass
        self._reading_done = True
        self.dispatcher.reading_done()
        remaining = max(0.0, deadline - time.monotonic())
        _done, _ = await asyncio.wait({dispatcher}, timeout=remaining)
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=max(0.0, deadline - time.monotonic()))
        left = [t for t in (dispatcher, *self._tasks) if not t.done()]
        if left or len(self.batcher):
            log.warning("grace period of %.1fs over: %d tasks cancelled, %d requests left pending for others",
                        grace, len(left), len(self.batcher))  # fmt: skip
        for task in left:
            task.cancel()
        await asyncio.gather(reader, dispatcher, *self._tasks, return_exceptions=True)

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._loop_done(task)

    def _loop_done(self, task: asyncio.Task[Any]) -> None:
        """A task died of an exception: stop, and exit non-zero so the orchestrator restarts us. What
        this worker holds stays pending and is recovered by the others."""
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        if isinstance(exc, EngineError) and exc.fatal:
            log.critical("fatal engine error, stopping so the orchestrator restarts this worker: %s", exc)
        else:
            log.critical("task %s failed; stopping the worker", task.get_name(), exc_info=exc)
        if self._fatal is None:
            self._fatal = exc
        self.stop()

    # ------------------------------------------------------------------------------------- recovery

    async def _recovery_loop(self) -> None:
        if not self.settings.recovery.enabled:
            return
        await run_forever(
            self.recovery,
            interval_s=self.settings.recovery.interval_s,
            room=self._claim_room,
            held=self.reader.held_now,
            handle=self.reader.recovered,
            stopping=lambda: self.stopping,
            sleep=self._sleep_unless_stopping,
            on_error=self._recovery_failed,
        )

    def _recovery_failed(self, exc: Exception) -> None:
        if isinstance(exc, REDIS_ERRORS):
            self.link.failed(exc)  # no claims until Redis is back and a health TTL has passed

    def _claim_room(self) -> int:
        if not self.link.may_claim():
            return 0  # also while Redis answers BUSY, MISCONF, READONLY...: those count as outages
        if not self.reader.own_pel_read:
            # An entry claimed now joins this consumer's pending list, which the reader is still
            # re-reading by cursor: it would be read (and run) a second time.
            return 0
        return self.reader.room()

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    # ----------------------------------------------------------------------------------------- health

    def health(self) -> dict[str, Any]:
        s = self.stats
        down = self.redis_down_since
        return {
            "status": "draining" if self.stopping else ("degraded" if down is not None else "ready"),
            "ready": not self.stopping and down is None,
            "redis": "up" if down is None else "down",
            "redis_down_s": 0.0 if down is None else round(time.monotonic() - down, 3),
            "model": self.engine.info.name,
            "backend": self.settings.backend,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_ms": self.started_ms,
            "heartbeat_ms": int(time.time() * 1000),
            "queued": len(self.batcher),
            "inflight_batches": self.dispatcher.computing,
            "ok": s.ok,
            "errors": s.errors,
            "expired": s.expired,
            "dead_lettered": s.dead_lettered,
            "batches": s.batches,
            "rows": s.rows,
            "redis_errors": s.redis_errors,
            "recovered": s.recovered,
            "dead_letters_lost": s.dead_letters_lost,
        }

    async def _heartbeat_loop(self) -> None:
        ttl = self.settings.health_ttl_s
        while not self._closed.is_set():
            try:
                await self.transport.heartbeat(self.health(), ttl)
                before = time.time_ns()
                server_ms = await self.transport.server_time_ms()
                self.reader.clock_offset_ns = server_ms * 1_000_000 - (before + time.time_ns()) // 2
            except REDIS_ERRORS as exc:
                self.link.failed(exc)
            else:
                self.link.ok()
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(self._closed.wait(), timeout=ttl / 3)
