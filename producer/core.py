"""The sans-IO client core: request preparation, the pending table, reply routing, dedupe, deadlines, backoff.

Nothing here does I/O and nothing awaits (as in h11 or httpcore). :class:`~producer.client.Client` (threads)
and :class:`~producer.aio.AsyncClient` (asyncio) are thin shells: they move bytes to and from Redis and
sleep where the core says. Sending is driven by :class:`producer.submission.Submission`; reading by
:class:`ReplyCursor`, which hands every batch of reply-stream entries to :meth:`ClientCore.handle_entries`;
after every read the shell calls :meth:`ClientCore.expire`. A fix here lands in both clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import logging
import math
import random
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import InvalidStateError as FuturesInvalidStateError
from dataclasses import dataclass
from typing import Any, Final, Generic, Protocol, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from producer.errors import ClientClosed, InferTimeout, InvalidInput, error_for
from producer.wire import RequestEncoder, RequestIds
from redis_infer_protocol import keys, validation
from redis_infer_protocol.acl import tenant_reply_prefix
from redis_infer_protocol.codec import CodecError, ParamValue, Reply, Status
from redis_infer_protocol.limits import Limits
from redis_infer_protocol.replies import RawEntry, decode_reply_fields, entries

log = logging.getLogger(__name__)

DEFAULT_URL: Final = "redis://127.0.0.1:6379/0"
DEFAULT_STREAM: Final = keys.DEFAULT_STREAM
DEFAULT_REPLY_PREFIX: Final = keys.DEFAULT_REPLY_PREFIX

# A client opened from a URL uses a blocking pool of this size: more concurrent calls wait for a free
# connection (up to POOL_TIMEOUT_S) instead of failing with "Too many connections".
MAX_CONNECTIONS: Final = 64
POOL_TIMEOUT_S: Final = 20.0
READ_BLOCK_MS: Final = 100  # longest XREAD BLOCK: bounds how long close() waits for the reader
READ_COUNT: Final = 512  # most reply entries read per XREAD
BACKOFF_FIRST_S: Final = 0.05
BACKOFF_MAX_S: Final = 1.0
STOP_TIMEOUT_S: Final = 5.0  # how long close() waits for the reader before giving up on it
RESULT_GRACE_S: Final = 5.0  # infer() waits this long past the deadline if the reader has not failed the request
REMEMBER_FINISHED: Final = 10_000  # finished request ids kept to tell duplicate replies from late ones
# close() adds an entry with this field to its own reply stream: it wakes the blocked XREAD at once,
# where waiting out BLOCK would take up to 1/hz s more (Redis checks blocking timeouts at ``hz``).
WAKE_FIELD: Final = b"wake"
REPLY_ID_CHARS: Final = 32  # hex digits after reply_prefix in a reply stream key

_INVALID_STATE: Final = (FuturesInvalidStateError, asyncio.InvalidStateError)
_TRANSIENT: Final = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError)


def backoff_s(attempt: int, *, first_s: float = BACKOFF_FIRST_S, max_s: float = BACKOFF_MAX_S) -> float:
    """Jittered exponential backoff ("equal jitter"): half of ``min(max_s, first_s * 2**attempt)``, plus up to half.

    The one backoff of the SDK: re-sends after a connection error, busy retries and reply-read retries. Never
    zero, so a retry loop cannot spin; jittered, so clients that failed together do not retry together.
    """
    cap = min(max_s, first_s * 2 ** min(attempt, 32))
    return float(cap / 2 + random.uniform(0, cap / 2))


def is_transient(error: BaseException) -> bool:
    """Whether an error is a lost or timed-out connection, worth retrying."""
    return isinstance(error, _TRANSIENT)


@dataclass(slots=True)
class ClientStats:
    """Counters of one client. ``client.stats`` returns a snapshot copy."""

    submitted: int = 0  # requests registered to be sent
    replies: int = 0  # replies that resolved a pending request
    timeouts: int = 0  # requests failed client-side with InferTimeout
    duplicate_replies: int = 0  # a second reply for a request that was already answered
    late_replies: int = 0  # a reply for a request that had timed out or was cancelled
    unknown_replies: int = 0  # a reply for a request id this client does not know (or no longer remembers)
    undecodable_replies: int = 0
    read_errors: int = 0  # failed reads of the reply stream (connection lost...), retried with backoff


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """The constructor arguments shared by both clients, validated once."""

    model: str
    stream: str
    model_version: str | None
    default_timeout_s: float | None
    reply_prefix: str
    limits: Limits
    retries: int = 0  # re-sends of an XADD that met a connection error
    tenant: str | None = None  # reply streams under ``<reply_prefix><tenant>:`` (one ACL user per tenant)

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError("retries must be >= 0")
        if not self.model:
            raise ValueError("model must be a non-empty string")
        if not self.stream:
            raise ValueError("stream must be a non-empty string")
        if self.default_timeout_s is not None and not _positive_finite(self.default_timeout_s):
            raise ValueError(f"default_timeout_s must be positive and finite, got {self.default_timeout_s!r}")
        validation.check_reply_prefix(self.tenant_reply_prefix, REPLY_ID_CHARS)

    @property
    def tenant_reply_prefix(self) -> str:
        """The prefix of this client's reply stream: ``reply_prefix``, plus ``<tenant>:`` with a tenant."""
        return self.reply_prefix if self.tenant is None else tenant_reply_prefix(self.tenant, self.reply_prefix)


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """An encoded request, ready for XADD."""

    request_id: str
    fields: dict[str, bytes]
    timeout_s: float | None
    deadline: float | None  # time.monotonic() seconds
    head: bytes = b""  # RESP of the field/value arguments up to the body's bytes (producer.wire)

    @property
    def body(self) -> bytes:
        return self.fields["body"]


class ReplyFuture(Protocol):
    """What the core needs of a future: ``concurrent.futures.Future`` and ``asyncio.Future`` both fit."""

    def done(self) -> bool: ...

    def cancelled(self) -> bool: ...

    def set_result(self, result: Reply, /) -> None: ...

    def set_exception(self, exception: BaseException, /) -> None: ...

    def add_done_callback(self, fn: Callable[[Any], object], /) -> None: ...

    def cancel(self) -> bool: ...


F = TypeVar("F", bound=ReplyFuture)


@dataclass(slots=True)
class _Pending(Generic[F]):
    future: F
    timeout_s: float | None
    deadline: float | None


def new_reply_key(prefix: str) -> str:
    """A reply stream key private to one client instance."""
    return f"{prefix}{uuid.uuid4().hex}"


def resolve(future: ReplyFuture, reply: Reply) -> None:
    """Resolve a future with a reply: its result if OK, else the typed ServerError."""
    if reply.status is not Status.OK:
        fail(future, error_for(reply))
    elif not future.done():
        with contextlib.suppress(*_INVALID_STATE):  # cancelled by another thread since done()
            future.set_result(reply)


def fail(future: ReplyFuture, exc: BaseException) -> None:
    """Fail a future unless it is already done (cancelled by its owner, say)."""
    if not future.done():
        with contextlib.suppress(*_INVALID_STATE):
            future.set_exception(exc)


def _positive_finite(value: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


class ClientCore(Generic[F]):
    """Request encoding, the table of pending requests, reply routing and client-side deadlines.

    Thread-safe: the sync client submits from any thread while its listener thread routes replies.
    Futures are resolved outside the lock because their callbacks may call back into the core.
    """

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self.reply_key = new_reply_key(config.tenant_reply_prefix)
        self._encoder = RequestEncoder(self.reply_key, config.model, config.model_version)
        self._new_id = RequestIds()
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending[F]] = {}
        self._deadlines: list[tuple[float, str]] = []  # heap; stale entries are skipped lazily
        self._finished: OrderedDict[str, bool] = OrderedDict()  # id -> answered (True) or abandoned (False)
        self._stats = ClientStats()
        self._closed = False

    # ------------------------------------------------------------------------------------ state

    @property
    def stats(self) -> ClientStats:
        with self._lock:
            return dataclasses.replace(self._stats)

    @property
    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    @property
    def closed(self) -> bool:
        return self._closed

    # --------------------------------------------------------------------------------- requests

    def prepare(
        self,
        inputs: Mapping[str, Any],
        *,
        timeout: float | None,
        priority: int,
        parameters: Mapping[str, ParamValue] | None,
        outputs: Sequence[str] | None,
        request_id: str | None,
    ) -> PreparedRequest:
        """Validate and encode one request. Raises InvalidInput; nothing is sent."""
        timeout_s, tail = self._options(timeout, priority, parameters, outputs)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        return self._prepare_one(inputs, request_id, timeout_s, deadline, tail)

    def prepare_many(
        self,
        inputs: Sequence[Mapping[str, Any]],
        *,
        timeout: float | None,
        priority: int,
        parameters: Mapping[str, ParamValue] | None,
        outputs: Sequence[str] | None,
        request_ids: Sequence[str] | None,
    ) -> list[PreparedRequest]:
        """Validate and encode a batch of requests. Raises InvalidInput if any is invalid; nothing is sent.

        The options every request shares are checked and encoded once for the batch.
        """
        if isinstance(inputs, Mapping):
            raise InvalidInput("submit_many takes a sequence of input mappings, got a single mapping")
        inputs = list(inputs)
        ids: Sequence[str | None] = [None] * len(inputs) if request_ids is None else request_ids
        if len(ids) != len(inputs):
            raise InvalidInput(f"{len(ids)} request_ids for {len(inputs)} requests")
        timeout_s, tail = self._options(timeout, priority, parameters, outputs)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        one = self._prepare_one
        return [one(item, rid, timeout_s, deadline, tail) for item, rid in zip(inputs, ids, strict=True)]

    def _options(
        self,
        timeout: float | None,
        priority: int,
        parameters: Mapping[str, ParamValue] | None,
        outputs: Sequence[str] | None,
    ) -> tuple[float | None, dict[str, Any]]:
        """Check the options of a call; returns its timeout and the body entries they encode to."""
        limits = self.config.limits
        timeout_s = self.config.default_timeout_s if timeout is None else timeout
        if timeout_s is not None and not _positive_finite(timeout_s):
            raise InvalidInput(f"timeout must be a positive number of seconds, got {timeout_s!r}")
        try:
            validation.check_priority(priority)
            validation.check_parameters(parameters, limits)
            validation.check_outputs(outputs, limits)
        except CodecError as exc:
            raise InvalidInput(str(exc)) from exc
        timeout_ms = None if timeout_s is None else max(1, math.ceil(timeout_s * 1000))
        try:
            return timeout_s, self._encoder.options(timeout_ms, priority, outputs, parameters)
        except (ValueError, TypeError) as exc:  # outputs that are no sequence, say
            raise InvalidInput(f"cannot encode request: {exc}") from exc

    def _prepare_one(
        self,
        inputs: Mapping[str, Any],
        request_id: str | None,
        timeout_s: float | None,
        deadline: float | None,
        tail: dict[str, Any],
    ) -> PreparedRequest:
        limits = self.config.limits
        try:
            rid = self._new_id() if request_id is None else validation.check_request_id(request_id)
            validation.check_inputs(inputs, limits)
            if not inputs:
                raise CodecError("a request needs at least one input", Status.INVALID_ARGUMENT)
        except CodecError as exc:
            raise InvalidInput(str(exc)) from exc
        try:
            fields, head = self._encoder.encode(rid, inputs, tail)
        except (CodecError, ValueError, TypeError, OverflowError) as exc:  # msgpack/numpy raise the latter
            raise InvalidInput(f"cannot encode request: {exc}") from exc
        if len(fields["body"]) > limits.max_body_bytes:
            try:
                validation.check_body_size(fields["body"], limits)
            except CodecError as exc:
                raise InvalidInput(str(exc)) from exc
        return PreparedRequest(rid, fields, timeout_s, deadline, head)

    def register(self, prepared: Sequence[PreparedRequest], futures: Sequence[F]) -> None:
        """Add requests to the pending table, all or none, before they are sent.

        Raises:
            ClientClosed: If the client is closed.
            InvalidInput: If a request id is already pending (or repeated in ``prepared``).
        """
        ids = [p.request_id for p in prepared]
        with self._lock:
            if self._closed:
                raise ClientClosed("client closed")
            if len(set(ids)) != len(ids) or any(rid in self._pending for rid in ids):
                raise InvalidInput("request id is already pending")
            for p, future in zip(prepared, futures, strict=True):
                self._pending[p.request_id] = _Pending(future, p.timeout_s, p.deadline)
                if p.deadline is not None:
                    heapq.heappush(self._deadlines, (p.deadline, p.request_id))
            self._stats.submitted += len(ids)
            self._compact_deadlines()
        for rid, future in zip(ids, futures, strict=True):
            future.add_done_callback(self._forget_if_cancelled(rid))

    def sent(self, prepared: Sequence[PreparedRequest], futures: Sequence[F], results: Sequence[Any]) -> None:
        """Apply a pipeline's per-command results: a request whose XADD failed is failed and forgotten."""
        for p, future, result in zip(prepared, futures, results, strict=True):
            if isinstance(result, Exception):
                self.discard(p.request_id)
                fail(future, result)

    def discard(self, request_id: str) -> None:
        """Forget a pending request (its send failed or its owner gave up). A later reply counts as late."""
        with self._lock:
            if self._pending.pop(request_id, None) is not None:
                self._remember(request_id, answered=False)

    def _forget_if_cancelled(self, request_id: str) -> Callable[[Any], None]:
        def callback(future: Any) -> None:
            if future.cancelled():
                self.discard(request_id)

        return callback

    def count_read_error(self) -> None:
        with self._lock:
            self._stats.read_errors += 1

    # ---------------------------------------------------------------------------------- replies

    def handle_entries(self, entries: Sequence[RawEntry]) -> list[bytes]:
        """Decode a read's reply entries and resolve their futures. Returns the entry ids, to be XDELed.

        The whole read is decoded first and routed under one acquisition of the lock; a reply that cannot be
        decoded is counted and logged and the others go on.
        """
        replies: list[Reply] = []
        bad = 0
        limits = self.config.limits
        for entry_id, flat in entries:
            if WAKE_FIELD in flat[::2]:
                continue
            try:
                replies.append(decode_reply_fields(flat, limits))
            except Exception as exc:  # CodecError, or a shape no codec path expected: never stop the reader
                bad += 1
                log.warning("dropping undecodable reply %s on %s: %s", entry_id, self.reply_key, exc)
        with self._lock:
            self._stats.undecodable_replies += bad
            routed = [(future, reply) for reply in replies if (future := self._route(reply)) is not None]
        for future, reply in routed:
            resolve(future, reply)
        return [entry_id for entry_id, _ in entries]

    def _route(self, reply: Reply) -> F | None:
        """The pending future a reply answers, or None (counted as duplicate, late or unknown). Holds the lock."""
        entry = self._pending.pop(reply.id, None)
        if entry is not None:
            self._stats.replies += 1
            self._remember(reply.id, answered=True)
            return entry.future
        answered = self._finished.get(reply.id)
        if answered is None:
            self._stats.unknown_replies += 1
            kind = "unknown"
        elif answered:
            self._stats.duplicate_replies += 1
            kind = "duplicate"
        else:
            self._stats.late_replies += 1
            kind = "late"
        log.debug("dropping %s reply for request %s (status %s)", kind, reply.id, reply.status.value)
        return None

    def _remember(self, request_id: str, *, answered: bool) -> None:
        self._finished[request_id] = answered
        while len(self._finished) > REMEMBER_FINISHED:
            self._finished.popitem(last=False)

    # -------------------------------------------------------------------------------- deadlines

    def expire(self, now: float | None = None) -> int:
        """Fail every pending request whose deadline has passed with InferTimeout. Returns how many."""
        now = time.monotonic() if now is None else now
        expired: list[tuple[str, _Pending[F]]] = []
        with self._lock:
            while self._deadlines and self._deadlines[0][0] <= now:
                deadline, rid = heapq.heappop(self._deadlines)
                entry = self._pending.get(rid)
                if entry is not None and entry.deadline == deadline:
                    del self._pending[rid]
                    self._remember(rid, answered=False)
                    expired.append((rid, entry))
            self._stats.timeouts += len(expired)
        for rid, entry in expired:
            message = f"no reply to request {rid} within {entry.timeout_s:g} s"
            fail(entry.future, InferTimeout(message, request_id=rid, timeout_s=entry.timeout_s))
        return len(expired)

    def block_ms(self, now: float | None = None) -> int:
        """How long the next XREAD may block: until the next deadline, at most READ_BLOCK_MS, at least 1."""
        with self._lock:
            if not self._deadlines:
                return READ_BLOCK_MS
            next_deadline = self._deadlines[0][0]
        now = time.monotonic() if now is None else now
        return max(1, min(READ_BLOCK_MS, math.ceil((next_deadline - now) * 1000)))

    def _compact_deadlines(self) -> None:
        # Answered requests leave their deadline in the heap until it passes; rebuild when mostly stale.
        if len(self._deadlines) > 4 * len(self._pending) + 1024:
            self._deadlines = [(e.deadline, rid) for rid, e in self._pending.items() if e.deadline is not None]
            heapq.heapify(self._deadlines)

    # ---------------------------------------------------------------------------------- closing

    def close(self) -> int:
        """Refuse new requests and fail the pending ones with ClientClosed. Returns how many were failed."""
        with self._lock:
            self._closed = True
            pending = list(self._pending.values())
            self._pending.clear()
            self._deadlines.clear()
        for entry in pending:
            fail(entry.future, ClientClosed("client closed"))
        return len(pending)


class ReplyCursor:
    """The reply reader's position and backoff, shared by the listener thread and the reader task.

    A reader loop reads from ``last_id`` (deleting ``to_delete`` in the same round trip), then calls
    :meth:`consumed` with the raw response (the connection's ``read_response``, no redis-py callback), or
    :meth:`failed` with the error and waits the delay it returns.
    """

    def __init__(self, core: ClientCore[Any]) -> None:
        self._core = core
        self.last_id: bytes = b"0-0"
        self.to_delete: list[bytes] = []
        self._failures = 0  # consecutive failed reads

    def consumed(self, response: Any) -> None:
        """Handle a raw XREAD response: route the replies, remember them for deletion, reset the backoff."""
        self._failures = 0
        read = entries(response)
        self.to_delete = self._core.handle_entries(read)
        if read:
            self.last_id = read[-1][0]

    def failed(self, exc: Exception) -> float:
        """Count and log a failed read. Returns how long to wait before the next one."""
        self._core.count_read_error()
        delay = backoff_s(self._failures)
        self._failures += 1
        key = self._core.reply_key
        if isinstance(exc, _TRANSIENT):
            log.warning("reading replies from %s failed (%s); retrying in %.2f s", key, exc, delay)
        else:  # a bug or a clobbered key: keep going so pending requests still time out, but say it loudly
            log.error("unexpected error reading replies from %s; retrying in %.2f s", key, delay, exc_info=exc)
        return delay
