"""When a worker may claim others' entries: never while it re-reads its own pending list (no Redis)."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from tests.fakes import TimesTen
from worker.config import load_settings
from worker.service import Worker
from worker.transport import Transport


def make_worker() -> Worker:
    settings = load_settings(model={"name": "poison"})
    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0")  # never contacted here
    transport = Transport(client, stream=settings.stream, group=settings.group, consumer="pod-0",
                          dead_letter_stream=settings.dead_letter_stream, reply_maxlen=100, reply_ttl_s=60)  # fmt: skip
    return Worker(settings, TimesTen(), transport)


def test_no_claims_until_the_own_pending_list_is_read() -> None:
    """A claimed entry joins this consumer's pending list; the re-read by cursor would run it twice."""
    worker = make_worker()
    worker.reader._own_pel_read = False
    assert worker._claim_room() == 0
    worker.reader._own_pel_read = True
    assert worker._claim_room() == worker.reader.room() > 0


def test_an_entry_delivered_again_while_in_hand_is_admitted_once() -> None:
    worker = make_worker()
    worker.reader._held.add("5-0")

    async def admit() -> None:
        await worker.reader.admit([("5-0", {b"v": b"1"})])

    asyncio.run(admit())
    assert len(worker.batcher) == 0  # the copy in hand runs; the second delivery is not queued
