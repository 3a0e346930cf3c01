"""The asyncio client against a real redis-server and a fake worker task."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar

import numpy as np
import pytest
import redis
import redis.asyncio as aioredis

from producer import (
    AsyncClient,
    Busy,
    ClientClosed,
    Expired,
    InferTimeout,
    InvalidInput,
    InvalidRequest,
    ModelNotFound,
    ServerError,
    Status,
)
from redis_infer_protocol.codec import CodecError, Request, decode_request, encode_reply, peek_envelope

pytestmark = pytest.mark.integration

STREAM = "test:requests"
GROUP = "fake-workers"
WAIT_S = 10.0  # bound on every wait for something that should happen at once

T = TypeVar("T")
Handler = Callable[[Request], list[dict[str, bytes]]]


def run(coro: Awaitable[T]) -> T:
    """Run a test's body in a fresh loop, bounded."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, 3 * WAIT_S)

    return asyncio.run(bounded())


def doubler(request: Request) -> list[dict[str, bytes]]:
    return [encode_reply(request.id, Status.OK, outputs={"y": request.inputs["x"] * 2}, model=request.model)]


class FakeWorker:
    """A stand-in for the real worker: a task that answers every request with ``handler(request)``."""

    def __init__(self, url: str, handler: Handler = doubler) -> None:
        self.handler = handler
        self.received: list[Request] = []
        self._redis = aioredis.Redis.from_url(url)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> FakeWorker:
        await self._redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._redis.aclose()

    async def _run(self) -> None:
        while True:
            response = await self._redis.xreadgroup(GROUP, "fake-1", {STREAM: ">"}, count=256, block=50)
            for _, entries in response or []:
                for entry_id, fields in entries:
                    await self._answer(entry_id, fields)

    async def _answer(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        try:
            request = decode_request(fields)
            self.received.append(request)
            reply_to, replies = request.reply_to, self.handler(request)
        except CodecError as exc:
            request_id, reply_to = peek_envelope(fields)
            replies = [encode_reply(request_id or "", exc.status, error=str(exc))]
        async with self._redis.pipeline(transaction=False) as pipe:
            for reply in replies:
                pipe.xadd(reply_to or "nowhere", reply)  # type: ignore[arg-type]
            pipe.xack(STREAM, GROUP, entry_id)
            await pipe.execute()


def new_client(url: str, **kwargs: Any) -> AsyncClient:
    kwargs.setdefault("default_timeout_s", WAIT_S)
    return AsyncClient(url, model="double", stream=STREAM, **kwargs)


async def send_reply(url: str, reply_stream: str, request_id: str) -> None:
    """Play the worker by hand: put a reply on a client's reply stream."""
    async with aioredis.Redis.from_url(url) as r:
        await r.xadd(reply_stream, encode_reply(request_id, Status.OK, outputs={"y": np.ones(1)}))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ round trips


def test_infer_round_trip(redis_url: str) -> None:
    async def main() -> None:
        async with FakeWorker(redis_url) as worker, new_client(redis_url) as client:
            x = np.arange(6, dtype=np.int16).reshape(2, 3)
            outputs = await client.infer({"x": x}, priority=2, parameters={"k": "v"})
            np.testing.assert_array_equal(outputs["y"], x * 2)
            assert outputs["y"].dtype == np.int16
            reply = await (await client.submit({"x": x}, request_id="r-2", outputs=["y"]))
            assert (reply.id, reply.status, reply.model) == ("r-2", Status.OK, "double")
            first, second = worker.received
            assert (first.reply_to, first.priority, first.parameters) == (client.reply_stream, 2, {"k": "v"})
            assert (second.id, second.outputs, second.timeout_ms) == ("r-2", ("y",), WAIT_S * 1000)
            assert client.pending == 0

    run(main())


def test_many_concurrent_requests_all_answered(redis_url: str) -> None:
    async def main() -> None:
        async with FakeWorker(redis_url), new_client(redis_url) as client:
            xs = [np.full(3, i, np.float32) for i in range(200)]
            results = await asyncio.gather(*(client.infer({"x": x}) for x in xs))
            for x, outputs in zip(xs, results, strict=True):
                np.testing.assert_array_equal(outputs["y"], x * 2)
            assert (client.stats.submitted, client.stats.replies, client.pending) == (200, 200, 0)

    run(main())


class SpyRedis(aioredis.Redis):
    """Counts XADDs sent one by one and XADDs sent per pipeline."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.direct_xadds = 0
        self.pipelined_xadds: list[int] = []

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if args[0] == "XADD":
            self.direct_xadds += 1
        return await super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        async def spied_execute(raise_on_error: bool = True) -> list[Any]:
            xadds = sum(1 for command in pipe.command_stack if command[0][0] == "XADD")
            if xadds:
                self.pipelined_xadds.append(xadds)
            return await execute(raise_on_error)

        pipe.execute = spied_execute  # type: ignore[method-assign]
        return pipe


def test_submit_many_sends_one_pipeline(redis_url: str) -> None:
    async def main() -> None:
        spy = SpyRedis.from_url(redis_url)
        async with FakeWorker(redis_url), AsyncClient(model="double", stream=STREAM, redis=spy) as client:
            xs = [np.full(2, i, np.int64) for i in range(40)]
            futures = await client.submit_many([{"x": x} for x in xs])
            replies = await asyncio.gather(*futures)
            assert spy.pipelined_xadds == [40]
            assert spy.direct_xadds == 0
        for x, reply in zip(xs, replies, strict=True):
            np.testing.assert_array_equal(reply.outputs["y"], x * 2)
        await spy.aclose()

    run(main())


# -------------------------------------------------------------------------------------------- failures


def test_client_side_timeout_and_late_reply(redis_url: str) -> None:
    async def main() -> None:
        async with new_client(redis_url) as client:
            started = time.monotonic()
            with pytest.raises(InferTimeout) as caught:
                await client.infer({"x": np.ones(1)}, timeout=0.2, request_id="slow")
            assert 0.2 <= time.monotonic() - started < 0.2 + 2.0
            assert caught.value.request_id == "slow"
            assert (client.pending, client.stats.timeouts) == (0, 1)
            await send_reply(redis_url, client.reply_stream, "slow")
            barrier = await client.submit({"x": np.ones(1)}, request_id="barrier")
            await send_reply(redis_url, client.reply_stream, "barrier")
            assert (await barrier).id == "barrier"  # the reader goes in order: "slow" was handled first
            assert client.stats.late_replies == 1

    run(main())


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (Status.INVALID_ARGUMENT, InvalidRequest),
        (Status.MALFORMED, InvalidRequest),
        (Status.TOO_LARGE, InvalidRequest),
        (Status.UNSUPPORTED_VERSION, InvalidRequest),
        (Status.MODEL_NOT_FOUND, ModelNotFound),
        (Status.EXPIRED, Expired),
        (Status.BUSY, Busy),
        (Status.INTERNAL, ServerError),
        (Status.UNAVAILABLE, ServerError),
    ],
)
def test_error_status_raises_its_exception(redis_url: str, status: Status, error_class: type[ServerError]) -> None:
    def failing(request: Request) -> list[dict[str, bytes]]:
        return [encode_reply(request.id, status, error="boom")]

    async def main() -> None:
        async with FakeWorker(redis_url, failing), new_client(redis_url) as client:
            with pytest.raises(ServerError) as caught:
                await client.infer({"x": np.ones(1)}, request_id="bad-1")
        assert type(caught.value) is error_class
        assert (caught.value.status, caught.value.request_id) == (status, "bad-1")
        assert caught.value.reply is not None and caught.value.reply.error == "boom"

    run(main())


def test_duplicate_reply_resolves_once_and_is_counted(redis_url: str) -> None:
    def twice_for_dup(request: Request) -> list[dict[str, bytes]]:
        return doubler(request) * (2 if request.id == "dup" else 1)

    async def main() -> None:
        async with FakeWorker(redis_url, twice_for_dup), new_client(redis_url) as client:
            await client.infer({"x": np.ones(1)}, request_id="dup")
            await client.infer({"x": np.ones(1)}, request_id="barrier")
            stats = client.stats
            assert (stats.replies, stats.duplicate_replies) == (2, 1)

    run(main())


def test_reader_survives_garbage_replies(redis_url: str, redis_client: redis.Redis) -> None:
    async def main() -> None:
        async with FakeWorker(redis_url), new_client(redis_url) as client:
            redis_client.xadd(client.reply_stream, {"v": "1", "id": "g1", "body": b"\xc1"})
            redis_client.xadd(client.reply_stream, {"unrelated": "entry"})
            np.testing.assert_array_equal((await client.infer({"x": np.arange(2)}))["y"], [0, 2])
            assert client.stats.undecodable_replies == 2
            await client.infer({"x": np.arange(2)})  # consumed entries are deleted with the next read
            assert redis_client.xlen(client.reply_stream) <= 1

    run(main())


class FlakyRedis(aioredis.Redis):
    """Fails its first ``failures`` XREADs as if the connection dropped."""

    failures = 2

    async def xread(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if self.failures:
            self.failures -= 1
            raise redis.ConnectionError("connection reset by test")
        return await super().xread(*args, **kwargs)


def test_reader_backs_off_and_recovers_from_read_errors(redis_url: str) -> None:
    async def main() -> None:
        flaky = FlakyRedis.from_url(redis_url)
        async with FakeWorker(redis_url), AsyncClient(model="double", stream=STREAM, redis=flaky) as client:
            np.testing.assert_array_equal((await client.infer({"x": np.ones(1)}))["y"], [2])
            assert client.stats.read_errors == 2
        await flaky.aclose()

    run(main())


def test_cancelled_infer_forgets_request(redis_url: str) -> None:
    async def main() -> None:
        async with new_client(redis_url) as client:
            task = asyncio.create_task(client.infer({"x": np.ones(1)}))
            while client.pending == 0:  # wait for the submit to land; bounded by run()
                await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert client.pending == 0

    run(main())


# ---------------------------------------------------------------------------------------- invalid input


@pytest.mark.parametrize(
    ("inputs", "options"),
    [
        pytest.param({"x": np.zeros(2, np.complex128)}, {}, id="complex-dtype"),
        pytest.param({}, {}, id="no-inputs"),
        pytest.param({"x": np.zeros(1)}, {"timeout": -1}, id="negative-timeout"),
        pytest.param({"x": np.zeros(1)}, {"parameters": {"p": [1, 2]}}, id="bad-parameter"),
    ],
)
def test_invalid_input_raises_before_sending(
    redis_url: str, redis_client: redis.Redis, inputs: Any, options: dict[str, Any]
) -> None:
    async def main() -> None:
        async with new_client(redis_url) as client:
            with pytest.raises(InvalidInput):
                await client.submit(inputs, **options)
            with pytest.raises(InvalidInput):
                await client.submit_many([{"x": np.ones(1)}, inputs], **options)
            assert (client.pending, client.stats.submitted) == (0, 0)
        assert redis_client.exists(STREAM) == 0

    run(main())


# ---------------------------------------------------------------------------------------------- closing


def test_aclose_fails_pending_and_deletes_reply_stream(redis_url: str, redis_client: redis.Redis) -> None:
    def ignore_some(request: Request) -> list[dict[str, bytes]]:
        return [] if request.id == "ignored" else doubler(request)

    async def main() -> None:
        async with FakeWorker(redis_url, ignore_some):
            client = new_client(redis_url)
            await client.infer({"x": np.ones(1)})
            assert redis_client.exists(client.reply_stream) == 1
            future = await client.submit({"x": np.ones(1)}, request_id="ignored")
            await client.aclose()
            with pytest.raises(ClientClosed):
                await future
            assert redis_client.exists(client.reply_stream) == 0
            await client.aclose()  # idempotent
            with pytest.raises(ClientClosed):
                await client.submit({"x": np.ones(1)})
        names = {task.get_name() for task in asyncio.all_tasks()}
        assert not any(name.startswith("redis-infer-replies") for name in names)

    run(main())


def test_construct_outside_a_loop_and_close_unused(redis_url: str) -> None:
    client = new_client(redis_url)  # no running loop needed until the first request
    assert "reply_stream" in repr(client)
    run(client.aclose())
