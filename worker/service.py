"""The worker loop: read -> intake -> batch -> engine slot -> reply -> ack.

Four loops share one asyncio loop:

- the *reader* pulls entries with XREADGROUP, admits or rejects each, and queues work in the batcher
  (it pauses when ``max_queued`` requests are waiting);
- the *dispatcher* takes a free execution slot, then the next ready batch (expired requests are
  answered first), and starts a batch task on that slot, so the next batch forms while others run;
- the *recovery* loop claims what dead consumers left pending and trims the stream (worker/recovery.py);
- the *heartbeat* keeps the health key fresh and the group's lag and pending counts in the metrics.

A loop that dies of an unexpected error stops the worker with a non-zero exit.

A batch task stages the inputs in the slot's buffers, runs the engine, encodes one reply per request,
publishes all replies and then acks in one pipeline. A failing batch is bisected so that a bad
request fails alone. Shutdown stops reading, flushes the batcher, finishes in-flight batches within
the grace period and exits; whatever is left unacked stays pending for another worker to claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from redis_infer_protocol.codec import Status, Timing, encode_reply
from worker.batcher import Batcher, Item
from worker.config import Settings
from worker.engines.base import Engine, ExecutionSlot
from worker.errors import EngineError, NoGroup, RedisError, RedisUnavailable
from worker.intake import Intake, Rejection, WorkItem, entry_time_ns
from worker.observability import HealthServer, Metrics
from worker.recovery import Recovered, Recovery, run_forever
from worker.transport import DeadLetter, DeadLetterPolicy, Entry, Outcome, OutgoingReply, Transport

log = logging.getLogger(__name__)

REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError,)
OFFLOAD_DECODE_BYTES = 1024 * 1024  # bodies this large are decoded off the event loop
HEADROOM_WARN_SHARE = 0.8  # warn at start above this share of maxmemory (noeviction)


def _first_refusal(retry: list[Outcome]) -> str | None:
    return (retry[0].refusal or "refused") if retry else None


class _Everything:
    """A container holding every entry id: no own entry may be claimed back while the own PEL is read."""

    def __contains__(self, _item: object) -> bool:
        return True


@dataclass(slots=True)
class Stats:
    ok: int = 0
    errors: int = 0
    expired: int = 0
    dead_lettered: int = 0
    batches: int = 0
    rows: int = 0
    redis_errors: int = 0
    recovered: int = 0
    dead_letters_lost: int = 0
    refused_writes: int = 0  # settle retries after a passing refusal (OOM, READONLY...)


class Backoff:
    """Exponential backoff with full jitter, for Redis outages."""

    def __init__(self, base_s: float = 0.05, cap_s: float = 5.0) -> None:
        self.base_s, self.cap_s, self.attempt = base_s, cap_s, 0

    def next_delay(self) -> float:
        delay = random.uniform(0, min(self.cap_s, self.base_s * 2**self.attempt))
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


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
        self.stats = Stats()
        self.metrics = Metrics()
        self.redis_down_since: float | None = None
        self.started_ms = int(time.time() * 1000)
        self._stop = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._space = asyncio.Event()
        self._reading_done = False
        self._closed = asyncio.Event()  # set once drained: the heartbeat stops
        self._drain_deadline = float("inf")
        self._claims_paused_until = 0.0
        self.http_port: int | None = None
        self._free_slots: asyncio.Queue[ExecutionSlot] = asyncio.Queue()
        self._computing = 0  # batches on execution slots now
        self._tasks: set[asyncio.Task[Any]] = set()
        self._fatal: BaseException | None = None
        # Entry ids this worker holds in memory, from admission until settled (queued, computing or
        # being written): they count against max_queued, and recovery never claims them back.
        self._held: set[str] = set()
        self._serving = False  # start-up writes done, loops started
        self._own_pel_read = False  # the own pending entries of a previous life were re-read
        self._last_refusal_log = 0.0
        self._clock_offset_ns = 0  # Redis server clock minus ours, measured by the heartbeat

    # ----------------------------------------------------------------------------------- lifecycle

    def stop(self) -> None:
        """Ask the worker to stop: stop reading, finish what is in flight. Idempotent."""
        if not self._stop.is_set():
            log.info("stopping: no new reads; finishing %d queued requests", len(self.batcher))
            self._stop.set()
            self._wakeup.set()
            self._space.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run(self) -> None:
        """Serve until ``stop()``; returns after draining (or raises the fatal engine error)."""
        for slot in self.engine.slots:
            self._free_slots.put_nowait(slot)
        try:
            await self._with_retry(self.transport.ensure_group)
            await self._with_retry(self.maintenance.publish_limits, self.settings.streams.max_backlog)
        except REDIS_ERRORS:
            if not self.stopping:
                raise
            log.warning("stopped before Redis accepted the start-up writes")
            return
        self._serving = True
        await self._check_headroom()
        reader = asyncio.create_task(self._read_loop(), name="reader")
        recovery = asyncio.create_task(self._recovery_loop(), name="recovery")
        dispatcher = asyncio.create_task(self._dispatch_loop(), name="dispatcher")
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
        self.batcher.flushing = True
        self._wakeup.set()
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

    def _redis_failed(self, exc: BaseException) -> None:
        self.stats.redis_errors += 1
        self.metrics.redis_errors.inc()
        if self.redis_down_since is None:
            self.redis_down_since = time.monotonic()
            self.metrics.redis_up.set(0)
            log.error("redis unavailable: %s", exc)

    def _redis_ok(self) -> None:
        if self.redis_down_since is not None:
            log.warning("redis is back after %.1fs", time.monotonic() - self.redis_down_since)
            self.redis_down_since = None
            self.metrics.redis_up.set(1)
            # Other workers' health keys may have expired during the outage: give them one TTL to
            # write them again before taking their pending entries for orphans.
            self._claims_paused_until = time.monotonic() + self.settings.health_ttl_s

    async def _with_retry(
        self, op: Any, *args: Any, refused: Callable[[Any], str | None] | None = None, writes: bool = True
    ) -> Any:
        """Run a Redis operation, retrying through outages with backoff and jitter until it works.

        ``refused``: given the result, the reason Redis refused part of the work (the caller retries
        that part), or None; a refusal keeps the worker marked unavailable (/readyz 503).
        ``writes``: False for an operation that may succeed without writing (a read-only replica answers
        it): its success does not mark Redis available again.
        Gives up only when stopping and past the grace period, leaving the entries pending for others.
        """
        backoff = Backoff()
        while True:
            try:
                result = await op(*args)
            except REDIS_ERRORS as exc:  # outages and refusals alike; bad credentials raise ConfigError
                self._redis_failed(exc)
                if self.stopping and (
                    not self._serving or (self._reading_done and time.monotonic() > self._drain_deadline)
                ):
                    raise
                delay = backoff.next_delay()
                log.debug("redis operation failed (%s); retry in %.2fs", exc, delay)
                await asyncio.sleep(delay)
            else:
                reason = refused(result) if refused is not None else None
                if reason is not None:
                    self._redis_failed(RedisUnavailable(f"writes refused: {reason}", reason=reason))
                elif writes:
                    self._redis_ok()
                return result

    # -------------------------------------------------------------------------------------- reading

    async def _read_loop(self) -> None:
        cfg = self.settings
        # First this consumer name's own unacknowledged entries (a restart under the same name), by
        # cursor so none is read twice; then new entries.
        own_cursor: str | None = "0"
        backoff = Backoff()
        while not self.stopping:
            room = self.max_queued - len(self._held)
            if room <= 0:
                self._space.clear()
                await self._space.wait()
                continue
            count = min(cfg.streams.read_count, room)
            try:
                entries = await self.transport.read(count, cfg.streams.block_ms, after=own_cursor)
                backoff.reset()
            except NoGroup:  # the group or the stream was deleted under us
                log.error("consumer group %s is gone (Redis lost its data?): creating it again", cfg.group)
                await self._with_retry(self.transport.ensure_group, writes=False)
                await self._with_retry(self.maintenance.publish_limits, cfg.streams.max_backlog, writes=False)
                continue
            except REDIS_ERRORS as exc:  # an outage or a refusal (MISCONF, READONLY, BUSY...): never fatal
                self._redis_failed(exc)
                delay = backoff.next_delay()
                log.debug("read failed (%s); retry in %.2fs", exc, delay)
                await self._sleep_unless_stopping(delay)
                continue
            self._redis_ok()
            if own_cursor is not None:
                own_cursor = entries[-1][0] if len(entries) == count else None
                self._own_pel_read = own_cursor is None
                entries = await self._over_max_deliveries(entries)
            if entries:
                await self._admit(entries)

    async def _over_max_deliveries(self, entries: list[Entry]) -> list[Entry]:
        """Own pending entries re-read after a restart: dead-letter those delivered too often (each
        read counted one delivery), return the rest."""
        if not entries:
            return entries
        counts = await self._with_retry(self.transport.delivery_counts, [e[0] for e in entries], writes=False)
        limit = self.settings.recovery.max_deliveries
        poison = [(e, counts[e[0]]) for e in entries if counts.get(e[0], 0) > limit]
        if poison:
            self._held.update(e[0] for e, _ in poison)
            await self._publish_poison(poison)
        return [e for e in entries if counts.get(e[0], 0) <= limit]

    async def _admit(self, entries: Sequence[Entry]) -> None:
        if any(entry_id in self._held for entry_id, _ in entries):  # delivered again while in hand: run once
            entries = [entry for entry in entries if entry[0] not in self._held]
        self._held.update(entry_id for entry_id, _ in entries)
        read_ns = time.time_ns()
        now_ns, now_s = time.time_ns(), time.monotonic()
        rejections: list[Rejection] = []
        for entry_id, fields in entries:
            if not fields:  # a pending entry whose data was trimmed or deleted
                rejections.append(Rejection(entry_id, None, None, Status.MALFORMED, "entry data was deleted",
                                            self._timing(entry_id, read_ns), {}))  # fmt: skip
                continue
            try:
                result = await self._decode(entry_id, fields, read_ns)
            except Exception as exc:  # a bug must not stop the reader: this entry fails alone, kept for a look
                log.exception("could not admit entry %s", entry_id)
                why = f"worker could not process the entry: {type(exc).__name__}: {exc}"
                request_id, reply_to = self.intake.envelope(fields)
                timing = self._timing(entry_id, read_ns)
                result = Rejection(entry_id, request_id, reply_to, Status.INTERNAL, why, timing, fields, True)
            if isinstance(result, Rejection):
                rejections.append(result)
            elif result.deadline_ns is not None and result.deadline_ns <= now_ns:
                rejections.append(self._expired(result, "deadline passed before the request was read"))
            else:
                deadline_s = None if result.deadline_ns is None else now_s + (result.deadline_ns - now_ns) / 1e9
                self.batcher.add(result, result.signature, result.rows, deadline_s=deadline_s,
                                 priority=result.request.priority)  # fmt: skip
        self._wakeup.set()  # the dispatcher may form a batch while the rejections are written
        if rejections:
            await self._publish_rejections(rejections)

    async def _decode(self, entry_id: str, fields: dict[bytes, bytes], read_ns: int) -> WorkItem | Rejection:
        """Decode one entry; a large body in a thread, so that the event loop keeps serving (a 64 MiB
        BYTES tensor takes seconds to unpack)."""
        server_now_ns = read_ns + self._clock_offset_ns
        if len(fields.get(b"body", b"")) < OFFLOAD_DECODE_BYTES:
            return self.intake.admit(entry_id, fields, read_ns, server_now_ns)
        return await asyncio.to_thread(self.intake.admit, entry_id, fields, read_ns, server_now_ns)

    def _timing(self, entry_id: str, read_ns: int) -> Timing:
        return Timing(enqueued_ns=entry_time_ns(entry_id, read_ns + self._clock_offset_ns), read_ns=read_ns)

    def _expired(self, item: WorkItem, why: str) -> Rejection:
        request = item.request
        return Rejection(item.entry_id, request.id, request.reply_to, Status.EXPIRED, why, item.timing, item.fields)

    async def _publish_rejections(self, rejections: Sequence[Rejection]) -> None:
        outcomes: list[Outcome] = []
        for rej in rejections:
            if rej.status is Status.EXPIRED:
                self.stats.expired += 1
            else:
                self.stats.errors += 1
            outcome = Outcome(rej.entry_id)
            if rej.dead_letter or rej.reply_to is None or rej.request_id is None:
                outcome.dead = DeadLetter(rej.entry_id, rej.fields, f"{rej.status.value}: {rej.error}")
            if rej.reply_to is not None and rej.request_id is not None:
                rej.timing.published_ns = time.time_ns()
                self.metrics.observe_reply(rej.status, rej.timing)
                fields = encode_reply(rej.request_id, rej.status, error=rej.error, model=self.engine.info.name,
                                      timing=rej.timing, worker=self.transport.consumer)  # fmt: skip
                outcome.reply = OutgoingReply(rej.reply_to, fields, rej.entry_id, rej.fields)
            outcomes.append(outcome)
        await self._settle(outcomes)

    async def _settle(self, outcomes: list[Outcome]) -> None:
        """Write replies and dead letters, then acknowledge; through outages and passing refusals
        (out of memory, read-only) alike, with backoff. Gives up only when stopping past the grace
        period: what is not acknowledged then stays pending for the others."""
        everything = list(outcomes)
        try:
            await self._settle_all(outcomes)
        finally:
            self._held.difference_update(o.entry_id for o in everything)
            self._space.set()
        dead = sum(o.dead_written for o in everything)
        lost = sum(o.dead_lost is not None for o in everything)
        self.stats.dead_lettered += dead
        self.metrics.dead_lettered.inc(dead)
        if lost:
            self.stats.dead_letters_lost += lost
            self.metrics.dead_letters_lost.inc(lost)
        if dead:
            log.warning("dead-lettered %d entries", dead)

    async def _settle_all(self, outcomes: list[Outcome]) -> None:
        backoff = Backoff()
        while True:
            retry = await self._with_retry(self.transport.settle, outcomes, refused=_first_refusal)
            if not retry:
                return
            if self.stopping and time.monotonic() > self._drain_deadline:
                log.warning("%d entries left unacknowledged at shutdown", len(retry))
                return
            delay = backoff.next_delay()
            self.metrics.refused_writes.inc(len(retry))
            self.stats.refused_writes += 1
            now = time.monotonic()
            if now - self._last_refusal_log >= 10:  # one line per 10 s, not one per retry of every batch
                self._last_refusal_log = now
                log.warning("redis refused writes (%s) for %d entries; retrying with backoff", retry[0].refusal,
                            len(retry))  # fmt: skip
            await asyncio.sleep(delay)
            outcomes = retry

    # ------------------------------------------------------------------------------------- recovery

    async def _recovery_loop(self) -> None:
        if not self.settings.recovery.enabled:
            return
        await run_forever(
            self.recovery,
            interval_s=self.settings.recovery.interval_s,
            room=self._claim_room,
            held=self._held_now,
            handle=self._recovered,
            stopping=lambda: self.stopping,
            sleep=self._sleep_unless_stopping,
            on_error=self._recovery_failed,
        )

    def _recovery_failed(self, exc: Exception) -> None:
        if isinstance(exc, REDIS_ERRORS):
            self._redis_failed(exc)  # no claims until Redis is back and a health TTL has passed

    def _claim_room(self) -> int:
        if self.redis_down_since is not None or time.monotonic() < self._claims_paused_until:
            return 0  # also while Redis answers BUSY, MISCONF, READONLY...: those count as outages
        if not self._own_pel_read:
            # An entry claimed now joins this consumer's pending list, which the reader is still
            # re-reading by cursor: it would be read (and run) a second time.
            return 0
        return self.max_queued - len(self._held)

    def _held_now(self) -> set[str] | _Everything:
        return self._held if self._own_pel_read else _Everything()

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    async def _recovered(self, result: Recovered) -> None:
        self.stats.recovered += len(result.entries)
        self.metrics.recovered.inc(len(result.entries))
        if result.entries and not self.stopping:
            await self._admit(result.entries)
        if result.poison:
            self._held.update(entry[0] for entry, _ in result.poison)
            await self._publish_poison(result.poison)
        if result.deleted:
            self._held.update(result.deleted)
            await self._settle([Outcome(entry_id) for entry_id in result.deleted])

    async def _publish_poison(self, poison: Sequence[tuple[Entry, int]]) -> None:
        """Answer INTERNAL (to an allowed reply stream only) and dead-letter entries delivered too often."""
        rejections = []
        for (entry_id, fields), count in poison:
            request_id, reply_to = self.intake.envelope(fields)
            why = f"delivered {count} times (max {self.settings.recovery.max_deliveries}): giving up"
            timing = self._timing(entry_id, time.time_ns())
            rejections.append(Rejection(entry_id, request_id, reply_to, Status.INTERNAL, why, timing, fields, True))
        await self._publish_rejections(rejections)

    # ---------------------------------------------------------------------------------- dispatching

    async def _dispatch_loop(self) -> None:
        while True:
            slot = await self._free_slots.get()
            batch = await self._next_batch()
            if batch is None:
                self._free_slots.put_nowait(slot)
                return
            self._space.set()
            self._spawn(self._run_batch(slot, [item.payload for item in batch]), "batch")

    async def _next_batch(self) -> list[Item[WorkItem]] | None:
        while True:
            now = time.monotonic()
            expired = self.batcher.pop_expired(now)
            if expired:
                self._space.set()  # the reader may be waiting for room that expiry just made
                why = "deadline passed while queued for a batch"
                self._spawn(self._publish_rejections([self._expired(it.payload, why) for it in expired]), "expire")
            batch = self.batcher.next_batch(now)
            if batch:
                return batch
            if self._reading_done and not len(self.batcher):
                return None
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=self.batcher.wait_time(now))

    async def _run_batch(self, slot: ExecutionSlot, items: list[WorkItem]) -> None:
        batched_ns = time.time_ns()
        for item in items:
            item.timing.batched_ns = batched_ns
        self._computing += 1
        try:
            replies, failed = await self._compute(slot, items)
        finally:
            self._computing -= 1
            self._free_slots.put_nowait(slot)
        outcomes = {reply.entry_id: Outcome(reply.entry_id, reply) for reply in replies}
        for item, error in failed:
            outcomes[item.entry_id].dead = DeadLetter(
                item.entry_id, item.fields, f"engine failed on this request: {error}"
            )
        await self._settle(list(outcomes.values()))

    async def _compute(
        self, slot: ExecutionSlot, items: list[WorkItem]
    ) -> tuple[list[OutgoingReply], list[tuple[WorkItem, str]]]:
        """Run ``items`` on ``slot``; on failure bisect until the failing requests are isolated."""
        try:
            return await self._run_once(slot, items), []
        except EngineError as exc:
            if exc.fatal:
                raise
            error = str(exc)
        except Exception as exc:  # a bug or an engine raising something unexpected: isolate, don't die
            log.exception("engine raised on a batch of %d", len(items))
            error = f"{type(exc).__name__}: {exc}"
        if len(items) == 1:
            self.stats.errors += 1
            return [self._error_reply(items[0], Status.INTERNAL, error)], [(items[0], error)]
        mid = len(items) // 2
        left = await self._compute(slot, items[:mid])
        right = await self._compute(slot, items[mid:])
        return left[0] + right[0], left[1] + right[1]

    async def _run_once(self, slot: ExecutionSlot, items: list[WorkItem]) -> list[OutgoingReply]:
        info = self.engine.info
        rows = sum(it.rows for it in items)
        first = items[0].request.inputs
        staged = slot.stage({spec.name: (rows, *first[spec.name].shape[1:]) for spec in info.inputs})
        offset = 0
        for item in items:
            for name, arr in item.request.inputs.items():
                staged[name][offset : offset + item.rows] = arr
            offset += item.rows
        start_ns = time.time_ns()
        outputs = await slot.run()
        end_ns = time.time_ns()
        self.stats.batches += 1
        self.stats.rows += rows
        replies = self._split(items, outputs, rows, start_ns, end_ns)
        self.metrics.observe_batch(rows, items[0].timing)
        return replies

    def _split(
        self, items: list[WorkItem], outputs: dict[str, np.ndarray[Any, Any]], rows: int, start_ns: int, end_ns: int
    ) -> list[OutgoingReply]:
        for name, arr in outputs.items():
            if arr.ndim == 0 or arr.shape[0] != rows:
                raise EngineError(f"engine output {name!r} has shape {arr.shape}, expected batch {rows} first")
        replies = []
        offset = 0
        for item in items:
            wanted = item.request.outputs or tuple(outputs)
            timing = item.timing
            timing.compute_start_ns, timing.compute_end_ns = start_ns, end_ns
            timing.published_ns = time.time_ns()
            mine = {name: outputs[name][offset : offset + item.rows] for name in wanted}
            offset += item.rows
            self.metrics.observe_reply(Status.OK, timing)
            fields = encode_reply(item.request.id, Status.OK, outputs=mine, model=self.engine.info.name,
                                  timing=timing, worker=self.transport.consumer, batch_size=rows)  # fmt: skip
            replies.append(OutgoingReply(item.request.reply_to, fields, item.entry_id, item.fields))
        self.stats.ok += len(items)
        return replies

    def _error_reply(self, item: WorkItem, status: Status, error: str) -> OutgoingReply:
        item.timing.published_ns = time.time_ns()
        self.metrics.observe_reply(status, item.timing)
        fields = encode_reply(item.request.id, status, error=error, model=self.engine.info.name, timing=item.timing,
                              worker=self.transport.consumer)  # fmt: skip
        return OutgoingReply(item.request.reply_to, fields, item.entry_id, item.fields)

    # ----------------------------------------------------------------------------------------- health

    def health(self) -> dict[str, Any]:
        s = self.stats
        down = self.redis_down_since
        self.metrics.queued.set(len(self.batcher))
        self.metrics.inflight.set(self._computing)
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
            "inflight_batches": self._computing,
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
                self._clock_offset_ns = server_ms * 1_000_000 - (before + time.time_ns()) // 2
                lag, pending = await self.maintenance.group_backlog()
                self.metrics.group_lag.set(lag)
                self.metrics.group_pending.set(pending)
            except NoGroup as exc:  # the stream was deleted: the reader recreates it
                log.warning("heartbeat: %s", exc)
            except REDIS_ERRORS as exc:
                self._redis_failed(exc)
            else:
                self._redis_ok()
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(self._closed.wait(), timeout=ttl / 3)
