"""Both clients against a real redis-server: a read decoded in bulk, and concurrent infer calls sent together."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import redis
import redis.asyncio as aioredis

from producer import AsyncClient, Client, ClientClosed
from redis_infer_protocol.codec import Status, encode_reply
from tests.client_drivers import KINDS, STREAM, WAIT_S, Driver, FakeWorker, Kind
from tests.test_client import spy_redis
from worker.testing import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(params=KINDS)
def client(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Driver]:
    kind: Kind = request.param
    driver = Driver(kind, url=redis_url)
    yield driver
    driver.shutdown()


def test_a_bad_reply_in_a_read_does_not_stop_the_good_ones(client: Driver, redis_client: redis.Redis) -> None:
    futures = [client.submit({"x": np.ones(1)}, request_id=f"r{i}") for i in range(3)]
    good = [encode_reply(f"r{i}", Status.OK, outputs={"y": np.full(1, i)}) for i in range(3)]
    bad = {"v": b"1", "id": b"r9", "body": b"\xc1"}
    with redis_client.pipeline(transaction=True) as pipe:  # one transaction: the blocked XREAD gets all five
        for fields in (good[0], bad, good[1], {"v": b"1"}, good[2]):
            pipe.xadd(client.reply_stream, fields)  # type: ignore[arg-type]
        pipe.execute()
    assert [f.result(WAIT_S).outputs["y"][0] for f in futures] == [0, 1, 2]
    stats = client.stats
    assert (stats.replies, stats.undecodable_replies, client.pending) == (3, 2, 0)


def test_concurrent_async_infers_go_out_in_one_write(redis_url: str) -> None:
    async def scenario() -> list[int]:
        spied = spy_redis("async", redis_url)()
        async with AsyncClient(model="double", stream=STREAM, redis=spied) as client:
            await client.infer({"x": np.ones(1)}, timeout=WAIT_S)  # the first reads the published limit
            spy = spied.connection_pool.connection_class
            spy.writes.clear()
            outputs = await asyncio.gather(*(client.infer({"x": np.full(1, i)}, timeout=WAIT_S) for i in range(8)))
            assert [o["y"][0] for o in outputs] == [2 * i for i in range(8)]
            writes = list(spy.writes)
        await spied.aclose()
        return writes

    with FakeWorker(redis_url):
        assert asyncio.run(asyncio.wait_for(scenario(), 30)) == [8]


def test_a_failed_send_fails_every_infer_of_the_write(redis_url: str) -> None:
    async def scenario() -> None:
        spied = spy_redis("async", redis_url)()
        async with AsyncClient(model="double", stream=STREAM, redis=spied) as client:
            await client.infer({"x": np.ones(1)}, timeout=WAIT_S)
            spied.connection_pool.connection_class.fail_sends = 1
            results = await asyncio.gather(
                *(client.infer({"x": np.ones(1)}, timeout=WAIT_S) for _ in range(3)), return_exceptions=True
            )
            assert all(isinstance(r, redis.ConnectionError) for r in results), results
            assert client.pending == 0
            np.testing.assert_array_equal((await client.infer({"x": np.ones(1)}, timeout=WAIT_S))["y"], [2])
        await spied.aclose()

    with FakeWorker(redis_url):
        asyncio.run(asyncio.wait_for(scenario(), 30))


class HoldFirstSend(redis.Connection):
    """Holds the first write of XADDs until ``release()`` says so: other threads queue meanwhile."""

    writes: list[int] = []
    release: Callable[[], bool] = staticmethod(lambda: True)
    held = False

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        data = b"".join(command) if isinstance(command, list) else command
        xadds = data.count(b"\r\n$4\r\nXADD\r\n")
        if xadds:
            if not HoldFirstSend.held:
                HoldFirstSend.held = True
                wait_until(HoldFirstSend.release, what="the other threads queued")
            HoldFirstSend.writes.append(xadds)
        super().send_packed_command(command, check_health)


def test_concurrent_sync_infers_go_out_together(redis_url: str) -> None:
    own = redis.Redis.from_url(redis_url, connection_class=HoldFirstSend)
    with FakeWorker(redis_url), Client(model="double", stream=STREAM, redis=own) as client:
        client.infer({"x": np.ones(1)}, timeout=WAIT_S)  # reads the published limit
        HoldFirstSend.writes, HoldFirstSend.held = [], False
        HoldFirstSend.release = staticmethod(lambda: len(client._outbox) == 7)
        with ThreadPoolExecutor(8) as pool:
            outputs = list(pool.map(lambda i: client.infer({"x": np.full(1, i)}, timeout=WAIT_S), range(8)))
        assert [o["y"][0] for o in outputs] == [2 * i for i in range(8)]
        assert HoldFirstSend.writes == [1, 7]  # the first caller sent its own, then the seven queued meanwhile
    own.close()


def test_aclose_during_a_send_fails_the_request_and_stops_the_sender(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import producer.aio

    monkeypatch.setattr(producer.aio, "STOP_TIMEOUT_S", 0.2)
    entered = asyncio.Event()

    class Stuck(aioredis.Connection):
        """A write of XADDs that never completes, as on a connection whose peer stopped reading."""

        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            data = b"".join(command) if isinstance(command, list) else command
            if b"\r\n$8\r\nreply_to\r\n" in data:  # a request's XADD (not close's wake entry)
                entered.set()
                await asyncio.Event().wait()
            await super().send_packed_command(command, check_health)

    async def scenario() -> None:
        own = aioredis.Redis.from_url(redis_url, connection_class=Stuck)
        client = AsyncClient(model="double", stream=STREAM, redis=own)
        infer = asyncio.create_task(client.infer({"x": np.ones(1)}, timeout=WAIT_S))
        await entered.wait()
        await client.aclose()  # waits 0.2 s for the stuck sender, then cancels it
        with pytest.raises(ClientClosed):
            await infer
        assert client._sender is None and client.pending == 0
        await own.aclose()

    asyncio.run(asyncio.wait_for(scenario(), 30))
