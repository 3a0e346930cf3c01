"""The synchronous client: submit requests from any thread, a listener thread routes the replies.

Example::

    with Client("redis://localhost:6379/0", model="resnet50") as client:
        outputs = client.infer({"x": np.zeros((1, 3, 224, 224), np.float32)}, timeout=5.0)
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import Any

import numpy as np
from redis import BlockingConnectionPool, Redis
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
    fail,
)
from producer.errors import ClientClosed, InferError, InferTimeout
from producer.shell import ClientShell
from producer.submission import FetchLimits, LoadScript, SendRound, Sleep, Submission
from redis_infer_protocol.codec import ParamValue, Reply
from redis_infer_protocol.limits import DEFAULT_LIMITS, Limits

log = logging.getLogger(__name__)


class Client(ClientShell[Future[Reply]], discovery.SyncDiscovery):  # issue 13: models(), metadata()
    """A blocking client for the inference worker, safe to share between threads.

    Each instance owns a private reply stream (``reply_prefix`` + a random hex id) that a background
    thread reads with ``XREAD BLOCK``. The worker caps that stream's length and refreshes its TTL on
    every reply, so the stream of a client that died expires; :meth:`close` deletes it.

    Futures are resolved on that thread, so their done-callbacks run there: keep them short, and
    never wait on another reply from one.

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
        redis: A client to use instead of opening one from ``url`` (it must not decode responses).
            It is not closed by :meth:`close`. The client opened from ``url`` has a blocking pool of
            at most 64 connections: a call waits for a free one rather than failing.
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
        self._stop = threading.Event()
        self._outbox: list[tuple[PreparedRequest, Future[Reply]]] = []
        self._outbox_lock = threading.Lock()
        self._sending = False  # a caller is sending the outbox (see _enqueue)
        self._close_lock = threading.Lock()
        self._closed = False
        self._listener = threading.Thread(
            target=self._listen, name=f"redis-infer-replies-{self._core.reply_key[-8:]}", daemon=True
        )
        self._listener.start()

    # --------------------------------------------------------------------------------- requests

    def submit(
        self,
        inputs: Mapping[str, Any],
        *,
        timeout: float | None = None,
        priority: int = 0,
        parameters: Mapping[str, ParamValue] | None = None,
        outputs: Sequence[str] | None = None,
        request_id: str | None = None,
    ) -> Future[Reply]:
        """Send one request without waiting for its reply.

        Args:
            inputs: Input name to array (anything ``np.asarray`` accepts).
            timeout: Seconds the request may take, from now; the worker gets it as ``timeout_ms``.
                None means ``default_timeout_s``.
            priority: Higher is served first by workers that honour priorities.
            parameters: Model parameters (str, int, float or bool values).
            outputs: Names of the outputs wanted; None means all.
            request_id: The request's id; by default a fresh one (32 hex digits: a random per-client prefix, a counter).

        Returns:
            A future that resolves to the OK :class:`~redis_infer_protocol.codec.Reply`, or fails with the
            :class:`~producer.errors.ServerError` subclass for its status, with
            :class:`~producer.errors.InferTimeout` at the deadline, or with
            :class:`~producer.errors.ClientClosed` when the client is closed first.

        Raises:
            InvalidInput: If the request cannot be encoded; nothing is sent.
            ClientClosed: If the client is closed.
            redis.exceptions.RedisError: If the request could not be added to the stream.
        """
        prepared = self._core.prepare(
            inputs, timeout=timeout, priority=priority, parameters=parameters, outputs=outputs, request_id=request_id
        )
        future: Future[Reply] = Future()
        self._drive(self._submission([prepared], [future], raise_errors=True))
        return future

    def submit_many(
        self,
        inputs: Sequence[Mapping[str, Any]],
        *,
        timeout: float | None = None,
        priority: int = 0,
        parameters: Mapping[str, ParamValue] | None = None,
        outputs: Sequence[str] | None = None,
        request_ids: Sequence[str] | None = None,
    ) -> list[Future[Reply]]:
        """Send many requests in one pipelined round trip.

        Every request is validated before anything is sent. Arguments are as for :meth:`submit` and
        apply to every request; ``request_ids``, if given, holds one id per request.

        Returns:
            One future per request, in order. A request whose XADD failed has its future failed
            with the Redis error.

        Raises:
            InvalidInput: If any request cannot be encoded; nothing is sent.
            ClientClosed: If the client is closed.
            redis.exceptions.RedisError: If the pipeline could not be sent.
        """
        prepared = self._core.prepare_many(
            inputs, timeout=timeout, priority=priority, parameters=parameters, outputs=outputs, request_ids=request_ids
        )
        futures: list[Future[Reply]] = [Future() for _ in prepared]
        self._drive(self._submission(prepared, futures))
        return futures

    def infer(
        self,
        inputs: Mapping[str, Any],
        *,
        timeout: float | None = None,
        priority: int = 0,
        parameters: Mapping[str, ParamValue] | None = None,
        outputs: Sequence[str] | None = None,
        request_id: str | None = None,
    ) -> dict[str, np.ndarray[Any, Any]]:
        """Send one request and wait for its outputs. Arguments are as for :meth:`submit`.

        Returns:
            Output name to array (read-only views of the reply's bytes).

        Raises:
            InvalidInput: If the request cannot be encoded.
            ServerError: The subclass for the reply's status, if it is not OK.
            InferTimeout: If no reply arrived before the deadline.
            ClientClosed: If the client was closed while waiting.
        """
        if threading.current_thread() is self._listener:
            raise InferError("infer() called from a reply callback would wait on itself; use submit()")
        prepared = self._core.prepare(
            inputs, timeout=timeout, priority=priority, parameters=parameters, outputs=outputs, request_id=request_id
        )
        future: Future[Reply] = Future()
        if self._backpressure.on_busy == "wait":
            self._drive(self._submission([prepared], [future], raise_errors=True))
        else:
            self._enqueue(prepared, future)
        timeout_s = self._result_timeout_s(timeout)
        # The listener fails the future at its deadline; the grace only matters if the listener is stuck.
        try:
            reply = future.result(None if timeout_s is None else timeout_s + RESULT_GRACE_S)
        except concurrent.futures.TimeoutError:  # the wait ran out, or the request's own InferTimeout
            if not future.done():
                future.cancel()
                message = f"no reply within {timeout_s:g} s (reply listener stuck?)"
                raise InferTimeout(message, timeout_s=timeout_s) from None
            reply = future.result()
        return reply.outputs

    def _enqueue(self, prepared: PreparedRequest, future: Future[Reply]) -> None:
        """Send a request with those other threads queue meanwhile: one round trip for all of them.

        The caller that finds no send under way sends what is queued, round after round, until nothing is
        left (a request queued while it sends goes in its next round); the others only queue. Each round is
        one :class:`~producer.submission.Submission`; what it cannot send fails the request's future.
        """
        self._core.register([prepared], [future])
        with self._outbox_lock:
            self._outbox.append((prepared, future))
            if self._sending:
                return
            self._sending = True
        try:
            while batch := self._take_outbox():
                submission = Submission(self._core, self._backpressure, [p for p, _ in batch], [f for _, f in batch])
                try:
                    self._drive_actions(submission)
                except Exception as exc:
                    submission.fail_unsent(exc)
        except BaseException as exc:  # KeyboardInterrupt in the sender: nothing queued may be left behind
            with self._outbox_lock:
                left, self._outbox, self._sending = self._outbox, [], False
            for p, f in left:
                self._core.discard(p.request_id)
                fail(f, ClientClosed(f"the thread sending this request stopped: {exc!r}"))
            raise

    def _take_outbox(self) -> list[tuple[PreparedRequest, Future[Reply]]]:
        """What is queued and not cancelled; when nothing, this thread stops sending."""
        with self._outbox_lock:
            batch, self._outbox = [item for item in self._outbox if not item[1].done()], []
            if not batch:
                self._sending = False
            return batch

    def _drive(self, submission: Submission[Future[Reply]]) -> None:
        """Run a submission's actions until it is done (see :mod:`producer.submission`)."""
        try:
            self._drive_actions(submission)
        except BaseException:
            submission.abandon()
            raise

    def _drive_actions(self, submission: Submission[Future[Reply]]) -> None:
        while (action := submission.next_action()) is not None:
            if isinstance(action, Sleep):
                time.sleep(action.seconds)
                continue
            try:
                submission.done(action, self._run(action))
            except Exception as exc:
                submission.failed(exc)

    def _run(self, action: FetchLimits | LoadScript | SendRound) -> Any:
        """One round trip."""
        if isinstance(action, FetchLimits):
            return self._redis.hget(action.key, action.field)
        if isinstance(action, LoadScript):
            return self._redis.script_load(action.script)
        pool = self._redis.connection_pool
        conn = _checkout(pool)
        try:
            return exchange(conn, self._round_bytes(action), action.commands)
        finally:
            pool.release(conn)

    # ---------------------------------------------------------------------------------- replies

    def _listen(self) -> None:
        cursor = ReplyCursor(self._core)
        key = self._core.reply_key
        pool = self._redis.connection_pool
        conn: Any = None  # the listener's own connection, held across reads
        log.debug("reply listener started on %s", key)
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = _checkout(pool)
                response = exchange(conn, *self._read_bytes(cursor))[-1]
                if isinstance(response, Exception):  # an error reply: a clobbered key, an ACL refusal...
                    raise response
            except Exception as exc:  # survive anything: pending requests must still time out
                if conn is not None:
                    pool.release(conn)
                    conn = None
                self._stop.wait(cursor.failed(exc))
            else:
                cursor.consumed(response)
            self._core.expire()
        if conn is not None:
            pool.release(conn)
        log.debug("reply listener stopped on %s", key)

    # ---------------------------------------------------------------------------------- closing

    def close(self) -> None:
        """Stop the listener, fail pending requests with ClientClosed and delete the reply stream.

        Idempotent. Never raises for Redis errors (they are logged).
        """
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        with contextlib.suppress(RedisError):
            self._redis.xadd(self._core.reply_key, {WAKE_FIELD: b""})
        if self._listener is not threading.current_thread():
            self._listener.join(STOP_TIMEOUT_S)
            if self._listener.is_alive():
                log.warning("reply listener on %s did not stop within %.1f s", self.reply_stream, STOP_TIMEOUT_S)
        failed = self._core.close()
        if failed:
            log.info("client closed with %d requests pending", failed)
        try:
            self._redis.delete(self._core.reply_key)
        except RedisError as exc:
            log.warning("could not delete reply stream %s: %s", self._core.reply_key, exc)
        finally:
            if self._owns_redis:
                self._redis.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(model={self.model!r}, stream={self.stream!r}, reply_stream={self.reply_stream!r})"


def _open(url: str) -> Redis:
    pool = BlockingConnectionPool.from_url(url, max_connections=MAX_CONNECTIONS, timeout=POOL_TIMEOUT_S)
    return Redis.from_pool(pool)


def _checkout(pool: Any) -> Any:
    """A connection from the pool (redis-py < 5.3 wants a command name, later ones warn about it)."""
    try:
        return pool.get_connection()
    except TypeError:
        return pool.get_connection("XADD")


def exchange(conn: Any, payload: bytes, replies: int) -> list[Any]:
    """Write packed commands on ``conn`` and read their ``replies`` replies; an error reply is a result.

    Any other failure disconnects ``conn`` before it is raised, so unread replies never reach its next user.
    """
    try:
        conn.send_packed_command([payload])
        results: list[Any] = []
        for _ in range(replies):
            try:
                results.append(conn.read_response())
            except ResponseError as exc:
                results.append(exc)
        return results
    except BaseException:
        conn.disconnect()
        raise
