"""Reading: XREADGROUP, admission of each entry into the batcher, and the book of entries held in memory.

The reader first re-reads this consumer name's own unacknowledged entries (a restart under the same
name), by cursor so that none is read twice; then new entries. It pauses when ``max_queued`` requests
are held. It also admits what recovery claimed and answers entries delivered too often.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence

from redis_infer_protocol.codec import Status, Timing
from worker.batcher import Batcher
from worker.config import Settings
from worker.dispatcher import expired_rejection
from worker.errors import NoGroup
from worker.intake import Intake, Rejection, WorkItem, entry_time_ns
from worker.link import REDIS_ERRORS, Backoff, RedisLink
from worker.maintenance import GroupMaintenance
from worker.observability import Metrics, Stats
from worker.publisher import Publisher
from worker.recovery import Recovered
from worker.transport import Entry, Outcome, Transport

log = logging.getLogger(__name__)

OFFLOAD_DECODE_BYTES = 1024 * 1024  # bodies this large are decoded off the event loop


class _Everything:
    """A container holding every entry id: no own entry may be claimed back while the own PEL is read."""

    def __contains__(self, _item: object) -> bool:
        return True


class Reader:
    """Reads entries, admits them into the batcher, and keeps the set of entry ids held in memory.

    Args:
        settings: the worker's settings.
        transport: the Redis transport.
        maintenance: group creation and limits (recreated when the group is lost).
        intake: decodes and validates entries.
        batcher: where admitted requests wait.
        publisher: answers rejections.
        link: the Redis link (retries, up/down).
        stats: counters to update.
        metrics: metrics to update.
        max_queued: at most this many entries held in memory.
        stopping: True once the worker was asked to stop.
        admitted: called after a read's requests were queued (the dispatcher may form a batch).
        sleep: sleeps for some seconds, or less when the worker is asked to stop.
    """

    def __init__(
        self,
        settings: Settings,
        transport: Transport,
        maintenance: GroupMaintenance,
        intake: Intake,
        batcher: Batcher[WorkItem],
        publisher: Publisher,
        link: RedisLink,
        stats: Stats,
        metrics: Metrics,
        max_queued: int,
        stopping: Callable[[], bool],
        admitted: Callable[[], None],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self.settings, self.transport, self.maintenance = settings, transport, maintenance
        self.intake, self.batcher, self.publisher, self.link = intake, batcher, publisher, link
        self.stats, self.metrics = stats, metrics
        self.max_queued = max_queued
        self.stopping, self.admitted, self.sleep = stopping, admitted, sleep
        # Entry ids this worker holds in memory, from admission until settled (queued, computing or
        # being written): they count against max_queued, and recovery never claims them back.
        self._held: set[str] = set()
        self._space = asyncio.Event()
        self._own_pel_read = False  # the own pending entries of a previous life were re-read
        self.clock_offset_ns = 0  # Redis server clock minus ours, measured by the heartbeat

    # ------------------------------------------------------------------------------ the held book

    def release(self, entry_ids: Iterable[str]) -> None:
        """These entries were settled (or given up): they no longer count against ``max_queued``."""
        self._held.difference_update(entry_ids)
        self._space.set()

    def room_made(self) -> None:
        """Wake the reader if it waits for room (requests left the batcher, or the worker stops)."""
        self._space.set()

    def room(self) -> int:
        """How many more entries may be held."""
        return self.max_queued - len(self._held)

    @property
    def own_pel_read(self) -> bool:
        """Whether the own pending entries of a previous life (same consumer name) were all re-read."""
        return self._own_pel_read

    def held_now(self) -> set[str] | _Everything:
        """The entry ids recovery must not claim back: all of them until the own PEL was re-read."""
        return self._held if self._own_pel_read else _Everything()

    # ----------------------------------------------------------------------------------- reading

    async def run(self) -> None:
        """Read until stopping."""
        cfg = self.settings
        own_cursor: str | None = "0"
        backoff = Backoff()
        while not self.stopping():
            room = self.room()
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
                await self.link.with_retry(self.transport.ensure_group, writes=False)
                await self.link.with_retry(self.maintenance.publish_limits, cfg.streams.max_backlog, writes=False)
                continue
            except REDIS_ERRORS as exc:  # an outage or a refusal (MISCONF, READONLY, BUSY...): never fatal
                self.link.failed(exc)
                delay = backoff.next_delay()
                log.debug("read failed (%s); retry in %.2fs", exc, delay)
                await self.sleep(delay)
                continue
            self.link.ok()
            if own_cursor is not None:
                own_cursor = entries[-1][0] if len(entries) == count else None
                self._own_pel_read = own_cursor is None
                entries = await self._over_max_deliveries(entries)
            if entries:
                await self.admit(entries)

    async def _over_max_deliveries(self, entries: list[Entry]) -> list[Entry]:
        """Own pending entries re-read after a restart: dead-letter those delivered too often (each
        read counted one delivery), return the rest."""
        if not entries:
            return entries
        counts = await self.link.with_retry(self.transport.delivery_counts, [e[0] for e in entries], writes=False)
        limit = self.settings.recovery.max_deliveries
        poison = [(e, counts[e[0]]) for e in entries if counts.get(e[0], 0) > limit]
        if poison:
            self._held.update(e[0] for e, _ in poison)
            await self._publish_poison(poison)
        return [e for e in entries if counts.get(e[0], 0) <= limit]

    # --------------------------------------------------------------------------------- admission

    async def admit(self, entries: Sequence[Entry]) -> None:
        """Decode and validate entries; queue the good ones in the batcher and answer the others."""
        if any(entry_id in self._held for entry_id, _ in entries):  # delivered again while in hand: run once
            entries = [entry for entry in entries if entry[0] not in self._held]
        self._held.update(entry_id for entry_id, _ in entries)
        read_ns = now_ns = time.time_ns()
        now_s = time.monotonic()
        rejections: list[Rejection] = []
        for entry_id, fields in entries:
            if not fields:  # a pending entry whose data was trimmed or deleted
                timing = self._timing(entry_id, read_ns)
                rejections.append(self.intake.reject(entry_id, {}, Status.MALFORMED, "entry data was deleted", timing))
                continue
            try:
                if len(fields.get(b"body", b"")) < OFFLOAD_DECODE_BYTES:  # no coroutine per entry
                    result = self.intake.admit(entry_id, fields, read_ns, read_ns + self.clock_offset_ns)
                else:
                    result = await self._decode(entry_id, fields, read_ns)
            except Exception as exc:  # a bug must not stop the reader: this entry fails alone, kept for a look
                log.exception("could not admit entry %s", entry_id)
                why = f"worker could not process the entry: {type(exc).__name__}: {exc}"
                timing = self._timing(entry_id, read_ns)
                result = self.intake.reject(entry_id, fields, Status.INTERNAL, why, timing, dead_letter=True)
            if isinstance(result, Rejection):
                rejections.append(result)
            elif result.deadline_ns is not None and result.deadline_ns <= now_ns:
                rejections.append(expired_rejection(result, "deadline passed before the request was read"))
            else:
                deadline_s = None if result.deadline_ns is None else now_s + (result.deadline_ns - now_ns) / 1e9
                self.batcher.add(result, result.signature, result.rows, deadline_s=deadline_s,
                                 priority=result.request.priority)  # fmt: skip
        self.admitted()  # the dispatcher may form a batch while the rejections are written
        if rejections:
            await self.publisher.publish_rejections(rejections)

    async def _decode(self, entry_id: str, fields: dict[bytes, bytes], read_ns: int) -> WorkItem | Rejection:
        """Decode one entry; a large body in a thread, so that the event loop keeps serving (a 64 MiB
        BYTES tensor takes seconds to unpack)."""
        server_now_ns = read_ns + self.clock_offset_ns
        if len(fields.get(b"body", b"")) < OFFLOAD_DECODE_BYTES:
            return self.intake.admit(entry_id, fields, read_ns, server_now_ns)
        return await asyncio.to_thread(self.intake.admit, entry_id, fields, read_ns, server_now_ns)

    def _timing(self, entry_id: str, read_ns: int) -> Timing:
        return Timing(enqueued_ns=entry_time_ns(entry_id, read_ns + self.clock_offset_ns), read_ns=read_ns)

    # --------------------------------------------------------------------------------- recovered

    async def recovered(self, result: Recovered) -> None:
        """Admit what recovery claimed, answer what was delivered too often, ack what was deleted."""
        self.stats.recovered += len(result.entries)
        if result.entries and not self.stopping():
            await self.admit(result.entries)
        if result.poison:
            self._held.update(entry[0] for entry, _ in result.poison)
            await self._publish_poison(result.poison)
        if result.deleted:
            self._held.update(result.deleted)
            await self.publisher.write_then_ack([Outcome(entry_id) for entry_id in result.deleted])

    async def _publish_poison(self, poison: Sequence[tuple[Entry, int]]) -> None:
        """Answer INTERNAL (to an allowed reply stream only) and dead-letter entries delivered too often."""
        rejections = []
        for (entry_id, fields), count in poison:
            why = f"delivered {count} times (max {self.settings.recovery.max_deliveries}): giving up"
            timing = self._timing(entry_id, time.time_ns())
            rejections.append(self.intake.reject(entry_id, fields, Status.INTERNAL, why, timing, dead_letter=True))
        await self.publisher.publish_rejections(rejections)
