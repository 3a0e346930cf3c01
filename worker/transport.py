"""Redis transport: the only worker module that talks to Redis.

Reads the request stream through a consumer group, publishes replies, dead-letters what cannot be
answered, and acknowledges entries only after their reply (or dead-letter record) was written: one
server-side script per batch writes, then acks what was written (``worker/settle_script.py``), so a
crash at any point leaves an unanswered entry pending (at-least-once).

Every redis-py error leaves this module as one of the worker's own types (``worker/errors.py``):
``RedisUnavailable`` for outages and passing refusals, ``NoGroup`` when the group is gone, and
``RedisRefused`` for refusals that a retry cannot cure.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import redis.asyncio as aioredis
import redis.exceptions as rexc

from redis_infer_protocol import keys
from worker import settle_script
from worker.config import RedisSettings
from worker.errors import ConfigError, NoGroup, RedisRefused, RedisUnavailable

if TYPE_CHECKING:
    from worker.maintenance import GroupMaintenance

log = logging.getLogger(__name__)

Entry = tuple[str, dict[bytes, bytes]]

# The fields of a request entry; anything else a producer adds is dropped at read (never kept, copied
# into dead letters or counted against memory for longer than the read itself).
PROTOCOL_FIELDS = frozenset({b"v", b"id", b"reply_to", b"body"})
# What was dropped (names and sizes, at most 512 bytes) stays with the entry under this name, for the
# dead-letter record and so that an entry of nothing but foreign fields is not taken for a deleted one.
DROPPED_FIELD = b"dropped"

# Refusals that pass: out of memory, a script running, loading, a replica, a failed background save,
# missing replicas, cluster trouble. Redis puts the code first in the message.
_TRANSIENT = ("OOM", "BUSY", "LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS",
              "MISCONF")  # fmt: skip
_NO_GROUP = ("NOGROUP", "UNBLOCKED")  # the group, or the whole stream, was deleted

P = ParamSpec("P")
T = TypeVar("T")


def _code(error: Exception) -> str:
    """The error code Redis sent (first word of the message), or the exception's class name."""
    if isinstance(error, rexc.OutOfMemoryError):
        return "OOM"
    if isinstance(error, rexc.ReadOnlyError):
        return "READONLY"
    if isinstance(error, rexc.BusyLoadingError):
        return "LOADING"
    if isinstance(error, rexc.NoPermissionError):
        return "NOPERM"
    words = str(error).split(maxsplit=1)
    return words[0] if words and words[0].isupper() else type(error).__name__


def _transient(error: Exception) -> bool:
    """Whether a write refused with ``error`` may succeed later."""
    if not isinstance(error, rexc.ResponseError):
        return True  # a connection error inside a pipeline
    return _code(error).startswith(_TRANSIENT)


def translate(error: BaseException) -> BaseException:
    """The worker's own error for a redis-py (or socket) error; other exceptions are returned as they are."""
    if isinstance(error, rexc.AuthenticationError):
        return ConfigError(f"Redis refused our credentials: {error}")
    if isinstance(error, rexc.ConnectionError | rexc.TimeoutError | OSError):
        return RedisUnavailable(f"{type(error).__name__}: {error}", reason="connection")
    if isinstance(error, rexc.ResponseError):
        code = _code(error)
        if code.startswith(_NO_GROUP) or "no such key" in str(error):
            return NoGroup(str(error), reason=code)
        if code.startswith(_TRANSIENT):
            return RedisUnavailable(str(error), reason=code)
        return RedisRefused(str(error), reason=code)
    if isinstance(error, rexc.RedisError):
        return RedisUnavailable(f"{type(error).__name__}: {error}", reason=type(error).__name__)
    return error


def translated(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Decorator: a transport method raises only the worker's own errors."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except (rexc.RedisError, OSError) as exc:
            raise translate(exc) from exc

    return wrapper


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bytes(value: Any) -> bytes:
    return value if type(value) is bytes else str(value).encode()


def _flat(fields: Mapping[Any, Any]) -> list[bytes]:
    """name, value, name, value... as bytes, for the settle script."""
    flat: list[bytes] = []
    for name, value in fields.items():
        flat += (_NAMES.get(name) or _bytes(name), value if type(value) is bytes else _bytes(value))
    return flat


_NAMES = {name: name.encode() for name in ("v", "id", "body")}  # a reply's fields


def _refusal(message: str) -> rexc.ResponseError:
    """A write the settle script reported failed, as the error redis-py would have raised for it."""
    return rexc.ResponseError(message)


@dataclass(slots=True)
class OutgoingReply:
    stream: str
    fields: dict[str, bytes]
    entry_id: str  # the request entry it answers
    request_fields: Mapping[Any, Any]  # that entry's fields, dead-lettered if the reply cannot be written


@dataclass(slots=True)
class DeadLetter:
    entry_id: str
    fields: Mapping[Any, Any]
    reason: str
    fallback: bool = False  # the bounded record written when Redis refused the full one for good


@dataclass(slots=True)
class Outcome:
    """What must be written for one request entry before it may be acknowledged."""

    entry_id: str
    reply: OutgoingReply | None = None
    dead: DeadLetter | None = None
    refused: str | None = None  # set when Redis refused the reply for good; it was dead-lettered instead
    dead_written: bool = False
    dead_lost: str | None = None  # Redis refused even the bounded dead-letter record: acked and logged only
    refusal: str | None = None  # the code of the last passing refusal met (OOM, READONLY...), for the caller


@dataclass(slots=True)
class DeadLetterPolicy:
    """How dead-letter records are bounded.

    Attributes:
        maxlen: approximate MAXLEN of the dead-letter stream (0: unbounded).
        max_field_bytes: a field longer than this is cut to this many bytes; the record says so in
            ``truncated`` (the field names and their original sizes).
    """

    maxlen: int = 100_000
    max_field_bytes: int = 64 * 1024


def protocol_fields(fields: Any) -> dict[bytes, bytes]:
    """The protocol's fields of an entry; the names and sizes of the others under ``DROPPED_FIELD``."""
    kept: dict[bytes, bytes] = {}
    dropped: list[bytes] = []
    for key, value in dict(fields or {}).items():
        if key in PROTOCOL_FIELDS:
            kept[key] = value
        else:
            dropped.append(b"%r(%dB)" % (key[:64], len(value)))
    if dropped:
        kept[DROPPED_FIELD] = b",".join(dropped)[:512]
    return kept


def _allow_any(_key: str) -> bool:
    return True


class Transport:
    """Consumer-group I/O for one worker.

    Args:
        client: an asyncio Redis client (``decode_responses=False``).
        stream: the request stream key.
        group: the consumer group.
        consumer: this worker's consumer name.
        dead_letter_stream: where undeliverable entries go.
        reply_maxlen: approximate MAXLEN of reply streams.
        reply_ttl_s: TTL refreshed on a reply stream at each reply.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        stream: str,
        group: str,
        consumer: str,
        dead_letter_stream: str,
        reply_maxlen: int,
        reply_ttl_s: int,
    ) -> None:
        self.client = client
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.dead_letter_stream = dead_letter_stream
        self.reply_maxlen = reply_maxlen
        self.reply_ttl_s = reply_ttl_s
        # The one reply-target rule (``Intake.may_reply_to``), applied again here at the last gate: no
        # path writes a reply to, or sets a TTL on, a key the rule does not allow.
        self.reply_allowed: Callable[[str], bool] = _allow_any
        self.dead_letters = DeadLetterPolicy()
        self.dropped_fields = 0  # non-protocol fields dropped at read, for the metrics

    def apply_policy(self, *, reply_allowed: Callable[[str], bool], dead_letters: DeadLetterPolicy) -> None:
        """Set the reply-target rule and the dead-letter bounds (the worker calls this once, at start)."""
        self.reply_allowed = reply_allowed
        self.dead_letters = dead_letters

    @translated
    async def ensure_group(self) -> None:
        """Create the group (and the stream) if missing; a new group starts at the stream's first entry.

        Looks first (XINFO GROUPS reads), so that a restart works while Redis refuses writes (OOM).
        """
        with contextlib.suppress(rexc.ResponseError):  # no such key: create it below
            groups = await self.client.xinfo_groups(self.stream)
            if any(_text(g["name"]) == self.group for g in groups):
                return
        try:
            await self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
            log.info("created consumer group %s on %s", self.group, self.stream)
        except rexc.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    @translated
    async def read(self, count: int, block_ms: int, *, after: str | None = None) -> list[Entry]:
        """New entries for this consumer (``>``); or, given ``after``, this consumer's own unacknowledged
        entries with ids above it (``"0"`` for all), which a restarted worker of the same name drains first.

        A pending entry whose data was trimmed away comes back with empty fields. Fields other than the
        protocol's are dropped here.
        """
        block = () if after else (b"BLOCK", b"%d" % block_ms)
        command = (b"XREADGROUP", b"GROUP", self.group.encode(), self.consumer.encode(), b"COUNT", b"%d" % count,
                   *block, b"STREAMS", self.stream.encode(), (after or ">").encode())  # fmt: skip
        return self._entries(await self._call(settle_script.command(command)))

    def _entries(self, reply: Any) -> list[Entry]:
        """The entries of a raw XREADGROUP answer (field names and values as flat lists)."""
        entries: list[Entry] = []
        streams: Any = reply or []
        if isinstance(streams, dict):  # RESP3 replies are keyed by stream
            streams = list(streams.items())
        for _stream, items in streams:
            for entry_id, flat in items:
                if flat is None:  # a pending entry whose data was trimmed or deleted
                    entries.append((_text(entry_id), {}))
                    continue
                fields = dict(zip(flat[::2], flat[1::2], strict=True)) if isinstance(flat, list) else dict(flat)
                if not fields.keys() <= PROTOCOL_FIELDS:
                    fields = self._protocol_fields(fields)
                entries.append((_text(entry_id), fields))
        return entries

    def _protocol_fields(self, fields: Any) -> dict[bytes, bytes]:
        kept = protocol_fields(fields)
        self.dropped_fields += DROPPED_FIELD in kept
        return kept

    @translated
    async def delivery_counts(self, entry_ids: Sequence[str]) -> dict[str, int]:
        """How many times each of this consumer's pending entries was delivered (absent: not pending)."""
        if not entry_ids:
            return {}
        rows = await self.client.xpending_range(
            self.stream, self.group, min=entry_ids[0], max=entry_ids[-1], count=len(entry_ids) + 16,
            consumername=self.consumer,
        )  # fmt: skip
        wanted = set(entry_ids)
        return {i: int(r["times_delivered"]) for r in rows if (i := _text(r["message_id"])) in wanted}

    @translated
    async def settle(self, outcomes: Sequence[Outcome]) -> list[Outcome]:
        """Write each outcome's reply and dead letter, then acknowledge the entries all of whose writes
        succeeded: in one round trip, a server-side script (``worker/settle_script.py``) that acks only
        after the writes, so an entry is never acknowledged without its record.

        A reply Redis refuses for good (its key holds a hash, say) is dead-lettered instead, in a second
        round trip. A dead-letter record Redis refuses for good is replaced by a bounded one (ids and
        reason only); if that is refused too, the entry is acknowledged with the loss logged and
        recorded in ``Outcome.dead_lost``. Returns the outcomes that met a passing refusal (out of
        memory, read-only...), reduced to what is still to write: the caller retries them after a
        backoff; until then they stay pending.
        """
        todo, retry = list(outcomes), list[Outcome]()
        while todo:
            self._gate(todo)
            writes = self._writes(todo)
            failed = await self._run_script(todo, writes)
            if not failed:  # the usual case: everything written and acknowledged
                for o in todo:
                    o.dead_written, o.reply, o.dead = o.dead_written or o.dead is not None, None, None
                return retry
            results = iter([_refusal(failed[i]) if i in failed else True for i in range(len(writes))])
            unacked = {writes[i].entry for i in failed}  # the script acked every other entry
            again: list[Outcome] = []
            for index, o in enumerate(todo, start=1):
                if self._apply(o, results):
                    retry.append(o)
                elif index in unacked:  # a refused reply or record, now dead-lettered (or given up): ack next
                    again.append(o)
            todo = again
        return retry

    def _gate(self, todo: Sequence[Outcome]) -> None:
        """The last gate of the reply-target rule: a reply to a key it does not allow is dead-lettered."""
        for o in todo:
            if o.reply is not None and not self.reply_allowed(o.reply.stream):
                log.error("reply for %s to %r refused at the transport: not a reply stream", o.entry_id,
                          o.reply.stream)  # fmt: skip
                o.refused = f"reply_to {o.reply.stream!r} is not a reply stream"
                o.dead = o.dead or DeadLetter(o.entry_id, o.reply.request_fields, o.refused)
                o.reply = None

    def _writes(self, todo: Sequence[Outcome]) -> list[settle_script.Write]:
        writes: list[settle_script.Write] = []
        for index, o in enumerate(todo, start=1):
            if o.reply is not None:
                writes.append(settle_script.Write(index, o.reply.stream, False, _flat(o.reply.fields)))
            if o.dead is not None:
                writes.append(
                    settle_script.Write(index, self.dead_letter_stream, True, _flat(self._dead_fields(o.dead)))
                )
        return writes

    async def _run_script(self, todo: Sequence[Outcome], writes: list[settle_script.Write]) -> dict[int, str]:
        """Run the settle script once: {index of a failed write: Redis's error}. Sent as EVALSHA; after
        a Redis restart or SCRIPT FLUSH (NOSCRIPT) once more as EVAL, which loads it again."""
        entry_ids = [o.entry_id for o in todo]

        def packed(load: bool) -> bytes:
            return settle_script.pack(entry_ids, writes, stream=self.stream, dead_stream=self.dead_letter_stream,
                                      group=self.group, reply_maxlen=self.reply_maxlen, reply_ttl_s=self.reply_ttl_s,
                                      dead_maxlen=self.dead_letters.maxlen, load=load)  # fmt: skip

        try:
            answer = await self._call(packed(load=False))
        except rexc.NoScriptError:
            answer = await self._call(packed(load=True))
        failed, ack_error = settle_script.failures(answer)
        if ack_error:  # the entries stay pending and are processed again
            log.warning("acknowledging settled entries failed: %s", ack_error)
        return failed

    async def _call(self, packed: bytes) -> Any:
        """Send one command already packed as RESP bytes and read its answer (redis-py packs every
        argument in Python: for a batch's script that was the worker's largest single cost)."""
        pool = self.client.connection_pool
        try:
            conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        except TypeError:  # redis-py < 5.3 wants a command name (pyproject allows >= 5.0), as the SDK does
            conn = await pool.get_connection("EVALSHA")  # type: ignore[no-untyped-call]
        try:
            await conn.send_packed_command(packed)
            return await conn.read_response()
        except rexc.ResponseError:
            raise  # an error answer: the connection is in step and stays usable
        except BaseException:
            await conn.disconnect()  # an answer may still be on its way: never reuse this connection
            raise
        finally:
            await pool.release(conn)

    def _apply(self, o: Outcome, results: Iterator[Any]) -> bool:
        """Take one outcome's results from the script; True if a write met a passing refusal."""
        passing = False
        refused: OutgoingReply | None = None
        if o.reply is not None:
            result = next(results)
            if not isinstance(result, Exception):
                o.reply = None
            elif _transient(result):
                passing, o.refusal = True, _code(result)
            else:
                refused, o.refused, o.reply = o.reply, str(result), None
        if o.dead is not None:
            result = next(results)
            if not isinstance(result, Exception):
                o.dead, o.dead_written = None, True
            elif _transient(result):
                passing, o.refusal = True, _code(result)
            else:
                self._dead_letter_refused(o, o.dead, result)
        if refused is not None and o.dead is None and not o.dead_written and o.dead_lost is None:
            reason = f"reply to {refused.stream!r} failed: {o.refused}"
            o.dead = DeadLetter(o.entry_id, refused.request_fields, reason)
        return passing

    def _dead_letter_refused(self, o: Outcome, letter: DeadLetter, error: Exception) -> None:
        """Redis refused a dead-letter record for good: try once more without the entry's fields; if
        even that is refused, give up on the record (the entry is acknowledged, the loss logged)."""
        if not letter.fallback:
            log.error("dead-letter write for %s refused (%s); writing a record without the entry's fields",
                      o.entry_id, error)  # fmt: skip
            o.dead = DeadLetter(o.entry_id, {}, f"{letter.reason} [fields dropped: {error}]"[:4096], fallback=True)
            return
        log.error("dead-letter stream %s refuses writes (%s): entry %s acknowledged without a record",
                  self.dead_letter_stream, error, o.entry_id)  # fmt: skip
        o.dead, o.dead_lost = None, str(error)

    def _dead_fields(self, letter: DeadLetter) -> dict[Any, Any]:
        fields: dict[Any, Any] = {
            "original_id": letter.entry_id,
            "reason": letter.reason[:4096],
            "worker": self.consumer,
            "stream": self.stream,
            "dead_lettered_ms": str(int(time.time() * 1000)),
        }
        limit = self.dead_letters.max_field_bytes
        cut: list[str] = []
        for key, value in letter.fields.items():
            name = key if isinstance(key, bytes) else str(key).encode()
            if name == DROPPED_FIELD:
                fields["dropped_fields"] = value
                continue
            if name not in PROTOCOL_FIELDS:
                continue  # read already dropped these; entries handed in by other paths are held to it too
            data = value if isinstance(value, bytes) else str(value).encode()
            if len(data) > limit:
                cut.append(f"{name.decode()}={len(data)}")
                data = data[:limit]
            fields[b"f:" + name] = data
        if cut:
            fields["truncated"] = ",".join(cut)
        return fields

    @translated
    async def heartbeat(self, fields: Mapping[str, Any], ttl_s: int) -> None:
        key = keys.health_key(self.stream, self.consumer)
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(key, mapping={k: str(v) for k, v in fields.items()})
        pipe.expire(key, ttl_s)
        await pipe.execute()

    @translated
    async def clear_heartbeat(self) -> None:
        await self.client.delete(keys.health_key(self.stream, self.consumer))

    @translated
    async def server_time_ms(self) -> int:
        """The Redis server's clock (TIME), in ms."""
        seconds, micros = await self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    @translated
    async def memory(self) -> tuple[int, int, str]:
        """(used bytes, maxmemory bytes (0: no limit), maxmemory policy) from INFO memory."""
        info = await self.client.info("memory")
        return int(info["used_memory"]), int(info.get("maxmemory", 0)), str(info.get("maxmemory_policy", ""))

    def maintenance(self) -> GroupMaintenance:
        """The recovery commands over the same connection, group and consumer name."""
        from worker.maintenance import GroupMaintenance  # it builds on this module's helpers

        return GroupMaintenance(self.client, stream=self.stream, group=self.group, consumer=self.consumer)


def connect(settings: RedisSettings, *, block_ms: int, url: str | None = None) -> aioredis.Redis:
    """An asyncio client for the configured Redis (ACL user, password and TLS files applied).

    The socket timeout leaves room for the longest XREADGROUP BLOCK.
    """
    kwargs: dict[str, Any] = {
        "socket_timeout": max(settings.socket_timeout_s, block_ms / 1000 + 5),
        "socket_connect_timeout": settings.socket_timeout_s,
        "health_check_interval": settings.health_check_interval_s,
        "client_name": f"redis-infer-worker:{socket.gethostname()}:{os.getpid()}",
    }
    if settings.username:
        kwargs["username"] = settings.username
    if settings.password is not None:
        kwargs["password"] = settings.password.get_secret_value()
    for key, path in (
        ("ssl_ca_certs", settings.tls_ca_file),
        ("ssl_certfile", settings.tls_cert_file),
        ("ssl_keyfile", settings.tls_key_file),
    ):
        if path is not None:
            kwargs[key] = str(path)
    target = url or settings.url
    if target is None:
        raise ValueError("no Redis URL")
    return aioredis.Redis.from_url(target, **kwargs)
