"""Dispatching: free execution slot -> next ready batch -> engine -> one reply per request -> publisher.

The dispatcher takes a free execution slot, then the next ready batch (expired requests are answered
first), and starts a batch task on that slot, so the next batch forms while others run. A failing
batch is bisected so that a bad request fails alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from redis_infer_protocol.batchcodec import encode_ok_replies
from redis_infer_protocol.codec import Status, encode_reply
from worker.batcher import Batcher, Item
from worker.engines.base import Engine, ExecutionSlot
from worker.engines.hooked import mark_hook_stages
from worker.errors import EngineError
from worker.intake import Rejection, WorkItem
from worker.observability import Metrics, Stats
from worker.publisher import Publisher
from worker.transport import DeadLetter, Outcome, OutgoingReply

log = logging.getLogger(__name__)


def expired_rejection(item: WorkItem, why: str) -> Rejection:
    """The EXPIRED answer for a request whose deadline passed."""
    request = item.request
    return Rejection(item.entry_id, request.id, request.reply_to, Status.EXPIRED, why, item.timing, item.fields)


@dataclass(slots=True)
class Computed:
    """What a batch (or one half of it, when bisected) produced: replies, and the requests that failed."""

    replies: list[OutgoingReply] = field(default_factory=list)
    failed: list[tuple[WorkItem, str]] = field(default_factory=list)

    def __add__(self, other: Computed) -> Computed:
        return Computed(self.replies + other.replies, self.failed + other.failed)


class Dispatcher:
    """Forms batches from the batcher and runs them on the engine's execution slots.

    Args:
        engine: the engine and its slots.
        batcher: where admitted requests wait.
        publisher: writes the replies, then acks.
        stats: counters to update.
        metrics: metrics to update.
        consumer: this worker's consumer name, written in replies.
        spawn: starts a task the worker's lifecycle tracks (drained at shutdown).
        room_made: called when requests left the batcher (the reader may be waiting for room).
    """

    def __init__(
        self,
        engine: Engine,
        batcher: Batcher[WorkItem],
        publisher: Publisher,
        stats: Stats,
        metrics: Metrics,
        consumer: str,
        spawn: Callable[[Awaitable[Any], str], None],
        room_made: Callable[[], None],
    ) -> None:
        self.engine, self.batcher, self.publisher = engine, batcher, publisher
        self.stats, self.metrics, self.consumer = stats, metrics, consumer
        self.spawn, self.room_made = spawn, room_made
        self.computing = 0  # batches on execution slots now
        self._free_slots: asyncio.Queue[ExecutionSlot] = asyncio.Queue()
        for slot in engine.slots:
            self._free_slots.put_nowait(slot)
        self._wakeup = asyncio.Event()
        self._reading_done = False

    def wake(self) -> None:
        """New requests were queued: a batch may be ready."""
        self._wakeup.set()

    def reading_done(self) -> None:
        """No more requests will come: flush what is queued, then ``run`` returns."""
        self._reading_done = True
        self.batcher.flushing = True
        self._wakeup.set()

    async def run(self) -> None:
        """Dispatch batches until reading is done and the batcher is empty."""
        while True:
            slot = await self._free_slots.get()
            batch = await self._next_batch()
            if batch is None:
                self._free_slots.put_nowait(slot)
                return
            self.room_made()
            self.spawn(self._run_batch(slot, [item.payload for item in batch]), "batch")

    async def _next_batch(self) -> list[Item[WorkItem]] | None:
        while True:
            now = time.monotonic()
            expired = self.batcher.pop_expired(now)
            if expired:
                self.room_made()  # the reader may be waiting for room that expiry just made
                why = "deadline passed while queued for a batch"
                rejections = [expired_rejection(it.payload, why) for it in expired]
                self.spawn(self.publisher.publish_rejections(rejections), "expire")
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
        self.computing += 1
        try:
            computed = await self._compute(slot, items)
        finally:
            self.computing -= 1
            self._free_slots.put_nowait(slot)
        outcomes = {reply.entry_id: Outcome(reply.entry_id, reply) for reply in computed.replies}
        for item, error in computed.failed:
            outcomes[item.entry_id].dead = DeadLetter(
                item.entry_id, item.fields, f"engine failed on this request: {error}"
            )
        await self.publisher.write_then_ack(list(outcomes.values()))

    async def _compute(self, slot: ExecutionSlot, items: list[WorkItem]) -> Computed:
        """Run ``items`` on ``slot``; on failure bisect until the failing requests are isolated."""
        status = Status.INTERNAL
        try:
            return Computed(await self._run_once(slot, items))
        except EngineError as exc:
            if exc.fatal:
                raise
            error = str(exc)
            status = getattr(exc, "status", Status.INTERNAL)  # issue 13: a hook's HookRejected is INVALID_ARGUMENT
        except Exception as exc:  # a bug or an engine raising something unexpected: isolate, don't die
            log.exception("engine raised on a batch of %d", len(items))
            error = f"{type(exc).__name__}: {exc}"
        if len(items) == 1:
            self.stats.errors += 1
            failed = [(items[0], error)] if status == Status.INTERNAL else []  # a refused input is answered only
            return Computed([self._error_reply(items[0], status, error)], failed)
        mid = len(items) // 2
        left = await self._compute(slot, items[:mid])
        right = await self._compute(slot, items[mid:])
        return left + right

    async def _run_once(self, slot: ExecutionSlot, items: list[WorkItem]) -> list[OutgoingReply]:
        info = self.engine.info
        rows = sum(it.rows for it in items)
        first = items[0].request.inputs
        staged = slot.stage({spec.name: (rows, *first[spec.name].shape[1:]) for spec in info.inputs})
        for name, buffer in staged.items():  # one copy per input, straight into the slot's buffer
            np.concatenate([item.request.inputs[name] for item in items], axis=0, out=buffer)
        start_ns = time.time_ns()
        outputs = await slot.run()
        end_ns = time.time_ns()
        mark_hook_stages(slot, (item.timing for item in items))  # issue 13: hook stages in the timing trace
        replies = self._split(items, outputs, rows, start_ns, end_ns)
        self.metrics.observe_batch(rows, items[0].timing)
        return replies

    def _split(
        self, items: list[WorkItem], outputs: dict[str, np.ndarray[Any, Any]], rows: int, start_ns: int, end_ns: int
    ) -> list[OutgoingReply]:
        """One OK reply per request, encoded in one pass over the batch (``encode_ok_replies``)."""
        for name, arr in outputs.items():
            if arr.ndim == 0 or arr.shape[0] != rows:
                raise EngineError(f"engine output {name!r} has shape {arr.shape}, expected batch {rows} first")
        published_ns = time.time_ns()
        timings = []
        for item in items:
            timing = item.timing
            timing.compute_start_ns, timing.compute_end_ns, timing.published_ns = start_ns, end_ns, published_ns
            timings.append(timing)
        requests = [item.request for item in items]
        encoded = encode_ok_replies([r.id for r in requests], [item.rows for item in items], outputs,
                                    [r.outputs for r in requests], timings, model=self.engine.info.name,
                                    worker=self.consumer)  # fmt: skip
        self.metrics.observe_replies(Status.OK, timings)
        self.stats.ok += len(items)
        return [OutgoingReply(r.reply_to, fields, item.entry_id, item.fields)
                for r, fields, item in zip(requests, encoded, items, strict=True)]  # fmt: skip

    def _error_reply(self, item: WorkItem, status: Status, error: str) -> OutgoingReply:
        item.timing.published_ns = time.time_ns()
        self.metrics.observe_reply(status, item.timing)
        fields = encode_reply(item.request.id, status, error=error, model=self.engine.info.name, timing=item.timing,
                              worker=self.consumer)  # fmt: skip
        return OutgoingReply(item.request.reply_to, fields, item.entry_id, item.fields)
