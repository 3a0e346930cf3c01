"""The asyncio client: the same API as :class:`producer.client.Client` on ``redis.asyncio``.

Example::

    async with AsyncClient("redis://localhost:6379/0", model="resnet50") as client:
        outputs = await client.infer({"x": np.zeros((1, 3, 224, 224), np.float32)}, timeout=5.0)
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Final

import numpy as np
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError, ResponseError

from producer import discovery
from producer.backpressure import OnBusy
from producer.core import (
    DEFAULT_REPLY_PREFIX,
    DEFAULT_STREAM,
    DEFAULT_URL,
    MAX_CONNECTIONS,
    POOL_TIMEOUT_S,
    RESULT_GRACE_S,
    STOP_TIMEOUT_S,
    WAKE_FIELD,
    ClientConfig,
    PreparedRequest,
    ReplyCursor,
)
from producer.errors import ClientClosed, InferTimeout
from producer.shell import ClientShell
from producer.submission import FetchLimits, LoadScript, SendRound, Sleep, Submission
from redis_infer_protocol.codec import ParamValue, Reply
from redis_infer_protocol.limits import DEFAULT_LIMITS, Limits

log = logging.getLogger(__name__)

_BASE_SEND = AbstractConnection.send_packed_command
BULK_READ: Final = 8  # from this many replies a round is read under one deadline (asyncio.wait_for costs a task)


class AsyncClient(ClientShell[asyncio.Future[Reply]], discovery.AsyncDiscovery):  # issue 13: models(), metadata()
    """An asyncio client for the inference worker; use it from one event loop.

    Each instance owns a private reply stream read by a background task, started by the first
    request (or ``async with``). The worker caps that stream and refreshes its TTL on every reply;
    :meth:`aclose` deletes it.

    Args:
        url: Redis URL, used when ``redis`` is not given.
        model: Name of the model every request of this client asks for.
        stream: The request stream the workers read; None: the model's own (``keys.model_stream``).
        model_version: Model version to ask for; None lets the worker choose.
        default_timeout_s: Deadline of a request that passes no ``timeout``; None means no deadline.
        reply_prefix: Prefix of the reply stream's key.
        tenant: A tenant name (letters, digits, ``_``, ``-``): the reply stream goes under
            ``<reply_prefix><tenant>:``, where only that tenant's ACL user can read it.
        limits: Bounds applied when decoding replies and checked on requests before sending.
        redis: A ``redis.asyncio.Redis`` to use instead of opening one from ``url`` (it must not decode
            responses). It is not closed by :meth:`aclose`. The client opened from ``url`` has a
            blocking pool of at most 64 connections: a call waits for a free one rather than failing.
        on_busy: What to do when workers published a backlog limit and the request stream is full:
            ``"raise"`` fails the submit with :class:`~producer.errors.Busy`; ``"wait"`` retries with
            backoff until the request's deadline, then raises ``Busy``.
        retries: How many times to re-send a request whose XADD failed on a connection error (same
            request id; a duplicate that results is answered twice and dropped by the client).

    Raises:
        ValueError: If an argument is invalid.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        model: str,
        stream: str | None = DEFAULT_STREAM,
        model_version: str | None = None,
        default_timeout_s: float | None = 30.0,
        reply_prefix: str = DEFAULT_REPLY_PREFIX,
        limits: Limits = DEFAULT_LIMITS,
        redis: Redis | None = None,
        on_busy: OnBusy = "raise",
        retries: int = 0,
        tenant: str | None = None,
    ) -> None:
        config = ClientConfig(
            model=model,
            stream=discovery.route(model, stream, model_version),  # None: the model's own stream (issue 13)
            model_version=model_version,
            default_timeout_s=default_timeout_s,
            reply_prefix=reply_prefix,
            limits=limits,
            retries=retries,
            tenant=tenant,
        )
        self._redis: Redis = _open(url) if redis is None else redis
        super().__init__(config, on_busy, self._redis, owns_redis=redis is None)
        self._stop = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._closed = False
        self._outbox: list[tuple[PreparedRequest, asyncio.Future[Reply]]] = []
        self._sender: asyncio.Task[None] | None = None
        self._send_conn: Any = None  # the sender's connection, held between its batches

    # --------------------------------------------------------------------------------- requests

    async def submit(
        self,
        inputs: Mapping[str, Any],
        *,
        timeout: float | None = None,
        priority: int = 0,
        parameters: Mapping[str, ParamValue] | None = None,
        outputs: Sequence[str] | None = None,
        request_id: str | None = None,
    ) -> asyncio.Future[Reply]:
        """Send one request; returns once it is in the stream, without waiting for its reply.

        Arguments, results and errors are those of :meth:`producer.client.Client.submit`; the
        returned future is an ``asyncio.Future`` of this loop. Cancelling it forgets the request.
        """
        prepared = self._core.prepare(
            inputs, timeout=timeout, priority=priority, parameters=parameters, outputs=outputs, request_id=request_id
        )
        future = self._start_reader().create_future()
        await self._drive(self._submission([prepared], [future], raise_errors=True))
        return future

    async def submit_many(
        self,
        inputs: Sequence[Mapping[str, Any]],
        *,
        timeout: float | None = None,
        priority: int = 0,
        parameters: Mapping[str, ParamValue] | None = None,
        outputs: Sequence[str] | None = None,
        request_ids: Sequence[str] | None = None,
    ) -> list[asyncio.Future[Reply]]:
        """Send many requests in one pipelined round trip; see :meth:`producer.client.Client.submit_many`."""
        prepared = self._core.prepare_many(
            inputs, timeout=timeout, priority=priority, parameters=parameters, outputs=outputs, request_ids=request_ids
        )
        loop = self._start_reader()
        futures: list[asyncio.Future[Reply]] = [loop.create_future() for _ in prepared]
        await self._drive(self._submission(prepared, futures))
        return futures

    async def _drive(self, submission: Submission[asyncio.Future[Reply]]) -> None:
        """Run a submission's actions until it is done (see :mod:`producer.submission`)."""
        try:
            await self._drive_actions(submission)
        except BaseException:
            submission.abandon()
            raise

    async def _drive_actions(self, submission: Submission[asyncio.Future[Reply]], *, own: bool = False) -> None:
        while (action := submission.next_action()) is not None:
            if isinstance(action, Sleep):
                await asyncio.sleep(action.seconds)
                continue
            try:
                submission.done(action, await self._run(action, own=own))
            except Exception as exc:
                submission.failed(exc)

    async def _run(self, action: FetchLimits | LoadScript | SendRound, *, own: bool = False) -> Any:
        """One round trip; ``own``: send rounds on the sender's own connection (kept between batches)."""
        if isinstance(action, FetchLimits):
            return await self._redis.hget(action.key, action.field)
        if isinstance(action, LoadScript):
            return await self._redis.script_load(action.script)
        pool = self._redis.connection_pool
        if own:
            if self._send_conn is None:
                self._send_conn = await _checkout(pool)
            try:
                return await exchange(self._send_conn, self._round_bytes(action), action.commands)
            except BaseException:  # exchange disconnected it: give it back, take another next time
                conn, self._send_conn = self._send_conn, None
                await _release(pool, conn)
                raise
        conn = await _checkout(pool)
        try:
            return await exchange(conn, self._round_bytes(action), action.commands)
        finally:
            await _release(pool, conn)

    def _enqueue(self, prepared: PreparedRequest, future: asyncio.Future[Reply]) -> None:
        """Send a request with the others queued in this turn of the loop: one round trip for all of them.

        The sender drives one :class:`~producer.submission.Submission` per batch (published limit, backlog
        script, NOSCRIPT, connection retries); what it cannot send fails the request's future.
        """
        self._core.register([prepared], [future])
        self._outbox.append((prepared, future))
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send_outbox())

    async def _send_outbox(self) -> None:
        try:
            while self._outbox:
                batch, self._outbox = [item for item in self._outbox if not item[1].done()], []
                if not batch:
                    continue
                submission = Submission(self._core, self._backpressure, [p for p, _ in batch], [f for _, f in batch])
                try:
                    await self._drive_actions(submission, own=True)
                except asyncio.CancelledError:
                    submission.fail_unsent(ClientClosed("client closed"))
                    raise
                except Exception as exc:
                    submission.fail_unsent(exc)
        finally:
            self._sender = None

    async def infer(
        self,
        inputs: Mapping[str, Any],
        *,
        timeout: float | None = None,
        priority: int = 0,
        parameters: Mapping[str, ParamValue] | None = None,
        outputs: Sequence[str] | None = None,
        request_id: str | None = None,
    ) -> dict[str, np.ndarray[Any, Any]]:
        """Send one request and wait for its outputs; see :meth:`producer.client.Client.infer`.

        Cancelling the awaiting task forgets the request (a reply that comes later is dropped). Requests of
        concurrent ``infer`` calls are sent together, in one round trip per turn of the event loop, unless
        ``on_busy="wait"`` (each call then waits for room on its own).
        """
        prepared = self._core.prepare(
            inputs, timeout=timeout, priority=priority, parameters=parameters, outputs=outputs, request_id=request_id
        )
        future = self._start_reader().create_future()
        if self._backpressure.on_busy == "wait":
            await self._drive(self._submission([prepared], [future], raise_errors=True))
        else:
            self._enqueue(prepared, future)
        return (await self._result(future, self._result_timeout_s(timeout))).outputs

    @staticmethod
    async def _result(future: asyncio.Future[Reply], timeout_s: float | None) -> Reply:
        """Await a request's reply; cancelling the task cancels the future, so the request is forgotten."""
        if timeout_s is None:
            return await future
        # The reader fails the future at its deadline; the grace only matters if the reader is stuck.
        stuck: list[bool] = []
        timer = asyncio.get_running_loop().call_later(timeout_s + RESULT_GRACE_S, _give_up, future, stuck)
        try:
            return await future
        except asyncio.CancelledError:
            if stuck:
                message = f"no reply within {timeout_s:g} s (reply reader stuck?)"
                raise InferTimeout(message, timeout_s=timeout_s) from None
            raise
        finally:
            timer.cancel()

    # ---------------------------------------------------------------------------------- replies

    def _start_reader(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._closed:
            raise ClientClosed("client closed")
        if self._reader is None:
            self._reader = loop.create_task(self._read_loop(), name=f"redis-infer-replies-{self.reply_stream[-8:]}")
        return loop

    async def _read_loop(self) -> None:
        cursor = ReplyCursor(self._core)
        pool = self._redis.connection_pool
        conn: Any = None  # the reader's own connection, held across reads
        log.debug("reply reader started on %s", self.reply_stream)
        try:
            while not self._stop.is_set():
                try:
                    if conn is None:
                        conn = await _checkout(pool)
                    response = (await exchange(conn, *self._read_bytes(cursor)))[-1]
                    if isinstance(response, Exception):  # an error reply: a clobbered key, an ACL refusal...
                        raise response
                except Exception as exc:  # survive anything: pending requests must still time out
                    if conn is not None:
                        conn, released = None, conn
                        await _release(pool, released)
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), cursor.failed(exc))
                else:
                    cursor.consumed(response)
                self._core.expire()
        finally:
            if conn is not None:
                await _release(pool, conn)
        log.debug("reply reader stopped on %s", self.reply_stream)

    # ---------------------------------------------------------------------------------- closing

    async def aclose(self) -> None:
        """Stop the reader, fail pending requests with ClientClosed and delete the reply stream.

        Idempotent. Never raises for Redis errors (they are logged).
        """
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        reader, self._reader = self._reader, None
        if reader is not None:
            with contextlib.suppress(RedisError):
                await self._redis.xadd(self._core.reply_key, {WAKE_FIELD: b""})
            _, not_done = await asyncio.wait([reader], timeout=STOP_TIMEOUT_S)
            if not_done:  # hard deadline: cancel it
                log.warning("reply reader on %s did not stop within %.1f s", self.reply_stream, STOP_TIMEOUT_S)
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
        failed = self._core.close()
        if failed:
            log.info("client closed with %d requests pending", failed)
        sender = self._sender
        if sender is not None:  # its requests were failed above; let its round trip end before the pool closes
            _, not_done = await asyncio.wait([sender], timeout=STOP_TIMEOUT_S)
            for task in not_done:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._send_conn is not None:
            conn, self._send_conn = self._send_conn, None
            await _release(self._redis.connection_pool, conn)
        try:
            await self._redis.delete(self._core.reply_key)
        except RedisError as exc:
            log.warning("could not delete reply stream %s: %s", self._core.reply_key, exc)
        finally:
            if self._owns_redis:
                await self._redis.aclose()

    async def __aenter__(self) -> AsyncClient:
        self._start_reader()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncClient(model={self.model!r}, stream={self.stream!r}, reply_stream={self.reply_stream!r})"


def _open(url: str) -> Redis:
    pool = BlockingConnectionPool.from_url(url, max_connections=MAX_CONNECTIONS, timeout=POOL_TIMEOUT_S)
    return Redis.from_pool(pool)


def _give_up(future: asyncio.Future[Reply], stuck: list[bool]) -> None:
    """The grace past a request's deadline ran out and the reader never failed it: cancel the wait."""
    if not future.done():
        stuck.append(True)
        future.cancel()


async def _checkout(pool: Any) -> Any:
    """A connection from the pool (redis-py < 5.3 wants a command name, later ones warn about it)."""
    try:
        return await pool.get_connection()
    except TypeError:
        return await pool.get_connection("XADD")


async def _release(pool: Any, conn: Any) -> None:
    released = pool.release(conn)
    if inspect.isawaitable(released):  # a coroutine from redis-py 5 on
        await released


async def _send(conn: Any, payload: bytes) -> None:
    """Write on the connection's stream, waiting for the kernel only when its buffer is full.

    redis-py's ``send_packed_command`` wraps every write in ``asyncio.wait_for`` when a socket timeout is set
    (redis-py sets 5 s by default), which costs a task per write on Python 3.11; this is the same write
    without it. A connection class that overrides ``send_packed_command`` (instrumentation, a test spy), a
    closed connection, or a redis-py without the stream writer takes the public path.
    """
    writer = getattr(conn, "_writer", None)
    overridden = type(conn).send_packed_command is not _BASE_SEND
    if overridden or writer is None or not conn.is_connected or writer.transport.is_closing():
        await conn.send_packed_command([payload])
        return
    writer.write(payload)
    if writer.transport.get_write_buffer_size():
        await asyncio.wait_for(writer.drain(), conn.socket_timeout)


async def exchange(conn: Any, payload: bytes, replies: int) -> list[Any]:
    """Write packed commands on ``conn`` and read their ``replies`` replies; an error reply is a result.

    A round of many replies is read under one deadline (the connection's socket timeout) instead of one
    timer per reply. Any other failure (a cancel included) disconnects ``conn`` before it is raised, so
    unread replies never reach its next user.
    """
    try:
        await _send(conn, payload)
        timeout_s = conn.socket_timeout
        if replies < BULK_READ or not timeout_s:
            return await _read(conn, replies, None)
        return await asyncio.wait_for(_read(conn, replies, math.inf), timeout_s)
    except BaseException:
        await conn.disconnect()
        raise


async def _read(conn: Any, replies: int, timeout: float | None) -> list[Any]:
    """``replies`` replies; ``timeout`` None: each read under the socket timeout, ``math.inf``: none."""
    results: list[Any] = []
    for _ in range(replies):
        try:
            results.append(await conn.read_response(timeout=timeout))
        except ResponseError as exc:
            results.append(exc)
    return results
