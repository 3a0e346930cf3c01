"""Publishing: replies and dead letters are written, then the entries acknowledged (write-then-ack).

Through outages and passing refusals (out of memory, read-only) alike the writes are retried with
backoff; only when stopping past the grace period is anything given up, and what is not acknowledged
then stays pending for the other workers to claim.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence

from redis_infer_protocol.codec import Status, encode_reply
from worker.intake import Rejection
from worker.link import Backoff, RedisLink
from worker.observability import Metrics, Stats
from worker.transport import DeadLetter, Outcome, OutgoingReply, Transport

log = logging.getLogger(__name__)


def _first_refusal(retry: list[Outcome]) -> str | None:
    return (retry[0].refusal or "refused") if retry else None


class Publisher:
    """Writes the outcomes of requests to Redis, then acknowledges them.

    Args:
        transport: the Redis transport.
        link: the Redis link (retries, up/down).
        stats: counters to update.
        metrics: metrics to update.
        model: the model name written in replies.
        past_grace: True when stopping and past the grace period: stop retrying refused writes.
        released: called with the entry ids once their outcomes are settled (written and acked, or given up).
    """

    def __init__(
        self,
        transport: Transport,
        link: RedisLink,
        stats: Stats,
        metrics: Metrics,
        model: str,
        past_grace: Callable[[], bool],
        released: Callable[[Iterable[str]], None],
    ) -> None:
        self.transport, self.link, self.stats, self.metrics = transport, link, stats, metrics
        self.model = model
        self.past_grace = past_grace
        self.released = released
        self._last_refusal_log = 0.0

    async def publish_rejections(self, rejections: Sequence[Rejection]) -> None:
        """Answer each rejection that has an allowed reply stream (under its request id, or under its entry id when
        the id is unreadable: ``Intake.reject`` decides, and asks for a dead letter too) and dead-letter those
        that ask for it or have nowhere to be answered."""
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
                fields = encode_reply(rej.request_id, rej.status, error=rej.error, model=self.model,
                                      timing=rej.timing, worker=self.transport.consumer)  # fmt: skip
                outcome.reply = OutgoingReply(rej.reply_to, fields, rej.entry_id, rej.fields)
            outcomes.append(outcome)
        await self.write_then_ack(outcomes)

    async def write_then_ack(self, outcomes: list[Outcome]) -> None:
        """Write replies and dead letters, then acknowledge; through outages and passing refusals
        (out of memory, read-only) alike, with backoff. Gives up only when stopping past the grace
        period: what is not acknowledged then stays pending for the others."""
        everything = list(outcomes)
        try:
            await self._write_until_done(outcomes)
        finally:
            self.released(o.entry_id for o in everything)
        dead = sum(o.dead_written for o in everything)
        lost = sum(o.dead_lost is not None for o in everything)
        self.stats.dead_lettered += dead
        self.stats.dead_letters_lost += lost
        if dead:
            log.warning("dead-lettered %d entries", dead)

    async def _write_until_done(self, outcomes: list[Outcome]) -> None:
        backoff = Backoff()
        while True:
            retry = await self.link.with_retry(self.transport.settle, outcomes, refused=_first_refusal)
            if not retry:
                return
            if self.past_grace():
                log.warning("%d entries left unacknowledged at shutdown", len(retry))
                return
            delay = backoff.next_delay()
            self.stats.refused_entries += len(retry)
            self.stats.refused_writes += 1
            now = time.monotonic()
            if now - self._last_refusal_log >= 10:  # one line per 10 s, not one per retry of every batch
                self._last_refusal_log = now
                log.warning("redis refused writes (%s) for %d entries; retrying with backoff", retry[0].refusal,
                            len(retry))  # fmt: skip
            await asyncio.sleep(delay)
            outcomes = retry
