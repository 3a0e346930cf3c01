"""Both SDK clients behind one blocking test API, so that one client test suite runs against each.

``Driver("sync", ...)`` wraps :class:`producer.Client`; ``Driver("async", ...)`` wraps
:class:`producer.AsyncClient` running on an event loop in a thread of its own (every call is
``run_coroutine_threadsafe`` onto it). A test calls ``driver.submit(...)`` and gets a :class:`Handle`
it can wait on from the test thread, whichever client made it. The fake worker is a plain thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, Literal, TypeVar

import redis
import redis.asyncio as aioredis

from producer import AsyncClient, Client, ClientStats
from redis_infer_protocol.codec import CodecError, Reply, Request, Timing, decode_request, encode_reply, peek_envelope
from redis_infer_protocol.codec import Status as Status

STREAM = "test:requests"
GROUP = "fake-workers"
WAIT_S = 10.0  # bound on every wait for something that should happen at once
KINDS = ("sync", "async")

Kind = Literal["sync", "async"]
T = TypeVar("T")
Handler = Callable[[Request, bytes], list[dict[str, bytes]]]  # (request, its entry id) -> reply entries


def timing_for(entry_id: bytes) -> Timing:
    now = time.time_ns()
    enqueued = int(entry_id.split(b"-")[0]) * 1_000_000
    return Timing(enqueued, now, now, now, now + 1000, now + 2000)


def doubler(request: Request, entry_id: bytes = b"0-0") -> list[dict[str, bytes]]:
    """Answer y = x * 2."""
    outputs = {"y": request.inputs["x"] * 2}
    return [
        encode_reply(request.id, Status.OK, outputs=outputs, model=request.model, worker="fake", batch_size=1,
                     timing=timing_for(entry_id))
    ]  # fmt: skip


class FakeWorker:
    """A stand-in for the real worker: a thread that answers every request with ``handler(request)``.

    It stops on an event checked between reads (XREADGROUP blocks 50 ms at most), never by cancelling a
    task inside the Redis client: redis.asyncio sends every command through ``asyncio.wait_for``, which on
    Python 3.11 drops a cancel that lands as the send completes (CPython gh-86296, fixed in 3.12). The
    async suite's old fake worker was a task stopped that way; now and then its loop went on reading and
    the test hung until its bound (the flaky ``test_aclose_fails_pending_and_deletes_reply_stream``).
    """

    def __init__(self, url: str, handler: Handler = doubler) -> None:
        self.handler = handler
        self.received: list[Request] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-worker", daemon=True)
        self._redis = redis.Redis.from_url(url)

    def __enter__(self) -> FakeWorker:
        self._redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(WAIT_S)
        self._redis.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                response = self._redis.xreadgroup(GROUP, "fake-1", {STREAM: ">"}, count=256, block=50)
            except redis.ConnectionError:
                continue  # the connection-kill test kills ours too; redis-py reconnects
            for _, entries in response or []:
                for entry_id, fields in entries:
                    self._answer(entry_id, fields)

    def _answer(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        try:
            request = decode_request(fields)
            self.received.append(request)
            reply_to, replies = request.reply_to, self.handler(request, entry_id)
        except CodecError as exc:
            request_id, reply_to = peek_envelope(fields)
            replies = [encode_reply(request_id or "", exc.status, error=str(exc))]
        pipe = self._redis.pipeline(transaction=False)
        for reply in replies:
            pipe.xadd(reply_to or "nowhere", reply)  # type: ignore[arg-type]
        pipe.xack(STREAM, GROUP, entry_id)
        pipe.execute()


class LoopThread:
    """An event loop running in a daemon thread, for driving the async client from blocking test code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 3 * WAIT_S) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(WAIT_S)
        self.loop.close()


class Handle:
    """A request's future from either client, waited on from the test thread."""

    def __init__(self, future: Any, loop: LoopThread | None) -> None:
        self.future = future
        self._loop = loop

    def result(self, timeout: float = WAIT_S) -> Reply:
        if self._loop is None:
            reply: Reply = self.future.result(timeout)
            return reply
        return self._loop.run(self._wait(), timeout)

    def exception(self, timeout: float = WAIT_S) -> BaseException | None:
        try:
            self.result(timeout)
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
            raise
        except BaseException as exc:
            return exc
        return None

    def cancel(self) -> bool:
        if self._loop is None:
            return bool(self.future.cancel())
        return self._loop.run(self._cancel())

    def add_done_callback(self, fn: Callable[[Any], object]) -> None:
        if self._loop is None:
            self.future.add_done_callback(fn)
        else:
            self._loop.loop.call_soon_threadsafe(self.future.add_done_callback, fn)

    async def _wait(self) -> Reply:
        reply: Reply = await asyncio.shield(self.future)
        return reply

    async def _cancel(self) -> bool:
        cancelled = bool(self.future.cancel())
        await asyncio.sleep(0)  # let the done-callbacks (the client's bookkeeping) run
        return cancelled


class Driver:
    """One client of either kind, with the blocking API of :class:`producer.Client`.

    Args:
        kind: ``"sync"`` or ``"async"``.
        url: Redis URL.
        redis: For ``kind="sync"`` a ``redis.Redis``; for ``"async"`` a callable returning a
            ``redis.asyncio.Redis`` (it is created on the driver's loop).
        **options: Client constructor arguments (``model`` defaults to "double", ``stream`` to STREAM,
            ``default_timeout_s`` to WAIT_S).
    """

    def __init__(self, kind: Kind, url: str | None = None, *, redis: Any = None, **options: Any) -> None:
        self.kind = kind
        options.setdefault("model", "double")
        options.setdefault("stream", STREAM)
        options.setdefault("default_timeout_s", WAIT_S)
        if url is not None:
            options["url"] = url
        self.loop: LoopThread | None = None
        self.client: Client | AsyncClient
        if kind == "sync":
            self.client = Client(redis=redis, **options)
            return
        self.loop = LoopThread()
        try:
            self.client = self.loop.run(self._open(redis, options))
        except BaseException:
            self.loop.close()
            raise

    @staticmethod
    async def _open(redis_factory: Callable[[], aioredis.Redis] | None, options: dict[str, Any]) -> AsyncClient:
        return AsyncClient(redis=None if redis_factory is None else redis_factory(), **options)

    def _call(self, result: Any) -> Any:
        """The value of a client call: awaited on the loop for the async client."""
        if self.loop is None:
            return result
        return self.loop.run(_awaited(result), timeout=None)

    def submit(self, inputs: Any, **options: Any) -> Handle:
        return Handle(self._call(self.client.submit(inputs, **options)), self.loop)

    def submit_many(self, inputs: Any, **options: Any) -> list[Handle]:
        return [Handle(f, self.loop) for f in self._call(self.client.submit_many(inputs, **options))]

    def infer(self, inputs: Any, **options: Any) -> Any:
        return self._call(self.client.infer(inputs, **options))

    def close(self) -> None:
        if isinstance(self.client, Client):
            self.client.close()
        else:
            assert self.loop is not None
            self.loop.run(self.client.aclose())

    def readers_alive(self) -> bool:
        """Whether any reply reader (listener thread or reader task) of this kind is still running."""
        if self.loop is None:
            return any(t.name.startswith("redis-infer-replies") and t.is_alive() for t in threading.enumerate())
        return self.loop.run(_reader_tasks_alive())

    def shutdown(self) -> None:
        """Close the client and stop the driver's loop."""
        try:
            self.close()
        finally:
            if self.loop is not None:
                self.loop.close()

    @property
    def reply_stream(self) -> str:
        return self.client.reply_stream

    @property
    def pending(self) -> int:
        return self.client.pending

    @property
    def stats(self) -> ClientStats:
        return self.client.stats

    def __enter__(self) -> Driver:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()


async def _awaited(value: Awaitable[T]) -> T:
    return await value


async def _reader_tasks_alive() -> bool:
    return any(task.get_name().startswith("redis-infer-replies") for task in asyncio.all_tasks())
