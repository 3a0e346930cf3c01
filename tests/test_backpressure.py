"""Backpressure against a real redis-server: BUSY at the published backlog, waiting, and with a worker."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from producer import AsyncClient, Busy, Client
from producer.wire import SCRIPT_CHUNK
from redis_infer_protocol.codec import Status
from tests.helpers import WorkerThread, make_affine_model, rand
from worker.testing import wait_until

pytestmark = pytest.mark.integration

STREAM = "infer:requests"


def limit(client: redis.Redis, max_backlog: int) -> None:
    client.hset(f"{STREAM}:limits", "max_backlog", max_backlog)


def test_submit_raises_busy_at_the_limit_and_adds_nothing(redis_url: str, redis_client: redis.Redis) -> None:
    limit(redis_client, 3)
    with Client(redis_url, model="m") as client:
        for _ in range(3):
            client.submit({"x": rand(1, 2)})
        with pytest.raises(Busy) as info:
            client.submit({"x": rand(1, 2)})
        assert info.value.status is Status.BUSY
        assert "limit is 3" in str(info.value)
        assert client.pending == 3
    assert redis_client.xlen(STREAM) == 3


def test_submit_many_fails_only_what_does_not_fit(redis_url: str, redis_client: redis.Redis) -> None:
    limit(redis_client, 4)
    with Client(redis_url, model="m") as client:
        futures = client.submit_many([{"x": rand(1, 2)} for _ in range(6)], timeout=30)
        failed = [f for f in futures if f.done() and isinstance(f.exception(), Busy)]
        assert len(failed) == 2 and futures.index(failed[0]) == 4
    assert redis_client.xlen(STREAM) == 4


def script_calls(client: redis.Redis) -> int:
    """How many scripts the server has run: the client's backlog-checked XADD is one each time it tries."""
    stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("eval", "evalsha"))


def test_wait_mode_waits_for_room_then_gives_up_at_the_deadline(redis_url: str, redis_client: redis.Redis) -> None:
    limit(redis_client, 2)
    with Client(redis_url, model="m", on_busy="wait") as client:
        client.submit_many([{"x": rand(1, 2)} for _ in range(2)], timeout=30)
        t0 = time.monotonic()
        with pytest.raises(Busy):
            client.submit({"x": rand(1, 2)}, timeout=0.3)
        assert 0.3 <= time.monotonic() - t0 < 10  # it waited until the deadline, then gave up
        before = script_calls(redis_client)

        def drain() -> None:  # a worker consumes and trims one entry once the client was turned away twice
            wait_until(lambda: script_calls(redis_client) >= before + 2, what="the client retried")
            oldest = redis_client.xrange(STREAM, count=1)[0][0]
            redis_client.xdel(STREAM, oldest)

        threading.Thread(target=drain).start()
        client.submit({"x": rand(1, 2)}, timeout=30)
        assert script_calls(redis_client) >= before + 3  # refused at least twice, then in
    assert redis_client.xlen(STREAM) == 2


def test_async_client_busy(redis_url: str, redis_client: redis.Redis) -> None:
    limit(redis_client, 2)

    async def scenario() -> None:
        async with AsyncClient(redis_url, model="m") as client:
            await client.submit({"x": rand(1, 2)})
            futures = await client.submit_many([{"x": rand(1, 2)} for _ in range(3)], timeout=30)
            assert [f.done() and isinstance(f.exception(), Busy) for f in futures] == [False, True, True]
            with pytest.raises(Busy):
                await client.submit({"x": rand(1, 2)})

    asyncio.run(asyncio.wait_for(scenario(), 30))
    assert redis_client.xlen(STREAM) == 2


def test_bounded_backlog_end_to_end(redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> None:
    model = make_affine_model(tmp_path / "affine.onnx")
    recovery = {"interval_s": 0.05, "min_idle_ms": 5000}
    with WorkerThread(redis_url, model, streams={"block_ms": 100, "max_backlog": 40}, recovery=recovery):
        wait_until(lambda: redis_client.hget(f"{STREAM}:limits", "max_backlog") == b"40", what="limit published")
        longest = watch_backlog(redis_url)
        xs = [rand(1, 8, seed=i) for i in range(400)]
        with Client(redis_url, model="affine", on_busy="wait") as client:
            futures = client.submit_many([{"x": x} for x in xs], timeout=60)  # 400 > 40: it must wait
            replies = [f.result(60) for f in futures]
        seen = longest()
    for x, reply in zip(xs, replies, strict=True):
        np.testing.assert_allclose(reply.outputs["y"], 2 * x + 1, rtol=1e-6)
    # Without the limit the 400 entries land in one pipeline, far faster than the worker trims them.
    assert 0 < seen <= 40, f"the request stream held {seen} entries; the limit is 40"


def watch_backlog(url: str) -> Callable[[], int]:
    """Sample XLEN of the request stream in a thread; the returned function stops it and gives the maximum."""
    stop = threading.Event()
    longest = [0]

    def watch() -> None:
        client = redis.Redis.from_url(url)
        while not stop.is_set():
            longest[0] = max(longest[0], int(client.xlen(STREAM)))
        client.close()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()

    def finish() -> int:
        stop.set()
        thread.join(10)
        return longest[0]

    return finish


def test_retries_carry_a_submit_through_a_redis_restart(tmp_path: Path) -> None:
    from worker.embedded import EmbeddedRedis

    server = EmbeddedRedis(appendonly=True).start()
    try:
        with Client(server.url, model="m", retries=8) as client:
            client.submit({"x": rand(1, 2)}, request_id="before")
            server.stop(cleanup=False)
            threading.Timer(0.4, server.start).start()  # Redis is back 0.4 s later
            client.submit({"x": rand(1, 2)}, request_id="during")  # retried until it is in
            client.submit_many([{"x": rand(1, 2)}] * 3, request_ids=["m1", "m2", "m3"])
            ids = [f[b"id"] for _id, f in redis.Redis.from_url(server.url).xrange(STREAM)]
        assert ids == [b"before", b"during", b"m1", b"m2", b"m3"]
        with Client(server.url, model="m") as plain:  # retries=0: the error reaches the caller
            server.stop(cleanup=False)
            with pytest.raises(redis.ConnectionError):
                plain.submit({"x": rand(1, 2)})
    finally:
        server.stop()


# ------------------------------------------------------------------------------- once per batch, not per request


def test_one_script_call_per_chunk_of_a_batch(redis_url: str, redis_client: redis.Redis) -> None:
    limit(redis_client, 10_000)
    with Client(redis_url, model="m") as client:
        client.submit({"x": rand(1, 2)})  # reads the limit and loads the script
        before = script_calls(redis_client)
        futures = client.submit_many([{"x": rand(1, 2)} for _ in range(2 * SCRIPT_CHUNK + 1)])
        assert not any(f.done() for f in futures)
        assert script_calls(redis_client) - before == 3  # chunks of SCRIPT_CHUNK, not one call per request
    assert redis_client.xlen(STREAM) == 2 * SCRIPT_CHUNK + 2


def test_wait_mode_retries_only_the_part_of_a_batch_over_the_limit(redis_url: str, redis_client: redis.Redis) -> None:
    limit(redis_client, 5)
    with Client(redis_url, model="m", on_busy="wait") as client:
        before = script_calls(redis_client)

        def drain() -> None:  # once the batch was turned away, a worker trims the first three entries
            wait_until(lambda: script_calls(redis_client) >= before + 2, what="the client retried")
            for entry_id, _ in redis_client.xrange(STREAM, count=3):
                redis_client.xdel(STREAM, entry_id)

        threading.Thread(target=drain).start()
        ids = [f"r{i}" for i in range(8)]
        futures = client.submit_many([{"x": rand(1, 2)} for _ in ids], request_ids=ids, timeout=30)
        assert not any(f.done() for f in futures) and client.pending == 8
    assert [f[b"id"] for _, f in redis_client.xrange(STREAM)] == [b"r3", b"r4", b"r5", b"r6", b"r7"]


class FlushBetweenCalls(redis.Connection):
    """Writes a round's first backlog script call, waits until Redis ran it, runs SCRIPT FLUSH on another
    connection, then writes the rest of the round: the later calls meet NOSCRIPT in the middle of a batch."""

    url = ""
    flushed = False

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        data = b"".join(command) if isinstance(command, list) else command
        second = data.find(b"$7\r\nEVALSHA\r\n", data.find(b"$7\r\nEVALSHA\r\n") + 1)
        if second < 0 or FlushBetweenCalls.flushed:
            super().send_packed_command(command, check_health)
            return
        FlushBetweenCalls.flushed = True
        split = data.rfind(b"*", 0, second)  # the second call's array header
        super().send_packed_command([data[:split]], check_health)
        other = redis.Redis.from_url(self.url)
        try:
            wait_until(lambda: other.xlen(STREAM) >= SCRIPT_CHUNK, what="the first call ran")
            other.script_flush()
        finally:
            other.close()
        super().send_packed_command([data[split:]], check_health)


def test_noscript_in_the_middle_of_a_batch_adds_every_request_once(redis_url: str, redis_client: redis.Redis) -> None:
    limit(redis_client, 10_000)
    FlushBetweenCalls.url, FlushBetweenCalls.flushed = redis_url, False
    own = redis.Redis.from_url(redis_url, connection_class=FlushBetweenCalls)
    n = 2 * SCRIPT_CHUNK + 7
    with Client(model="m", redis=own) as client:
        ids = [f"r{i}" for i in range(n)]
        futures = client.submit_many([{"x": rand(1, 2)} for _ in ids], request_ids=ids, timeout=30)
        assert FlushBetweenCalls.flushed
        assert not any(f.done() for f in futures) and client.pending == n
    own.close()
    assert [f[b"id"] for _, f in redis_client.xrange(STREAM)] == [i.encode() for i in ids]
