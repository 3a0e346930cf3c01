"""Redis transport: the only worker module that talks to Redis.

Reads the request stream through a consumer group, publishes replies, dead-letters what cannot be
answered, and acknowledges entries only after their reply (or dead-letter record) was written, in
the same pipeline and after it, so a crash between the two leaves the entry pending (at-least-once).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError

from redis_infer_protocol import keys
from worker.config import RedisSettings

log = logging.getLogger(__name__)

Entry = tuple[str, dict[bytes, bytes]]


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


@dataclass(slots=True)
class Outcome:
    """What must be written for one request entry before it may be acknowledged."""

    entry_id: str
    reply: OutgoingReply | None = None
    dead: DeadLetter | None = None
    refused: str | None = None  # set when Redis refused the reply for good; it was dead-lettered instead
    dead_written: bool = False


# Refusals that pass: out of memory, a script running, loading, a replica, cluster trouble.
_TRANSIENT = ("OOM", "BUSY", "LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS")


def _transient(error: Exception) -> bool:
    if not isinstance(error, ResponseError) or isinstance(error, OutOfMemoryError | ReadOnlyError):
        return True
    return str(error).startswith(_TRANSIENT)  # the prefixes redis-py keeps in the message


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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

    async def ensure_group(self) -> None:
        """Create the group (and the stream) if missing; a new group starts at the stream's first entry."""
        try:
            await self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
            log.info("created consumer group %s on %s", self.group, self.stream)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(self, count: int, block_ms: int, *, after: str | None = None) -> list[Entry]:
        """New entries for this consumer (``>``); or, given ``after``, this consumer's own unacknowledged
        entries with ids above it (``"0"`` for all), which a restarted worker of the same name drains first.

        A pending entry whose data was trimmed away comes back with empty fields.
        """
        reply = await self.client.xreadgroup(
            self.group, self.consumer, {self.stream: after or ">"}, count=count,
            block=None if after else block_ms,
        )  # fmt: skip
        entries: list[Entry] = []
        streams: Any = reply or []
        if isinstance(streams, dict):  # RESP3 replies are keyed by stream
            streams = list(streams.items())
        for _stream, items in streams:
            for entry_id, fields in items:
                entries.append((_text(entry_id), dict(fields or {})))
        return entries

    async def settle(self, outcomes: Sequence[Outcome]) -> list[Outcome]:
        """Write each outcome's reply and dead letter, then acknowledge the entries all of whose writes
        succeeded: writes first, XACK after, so an entry is never acknowledged without its record.

        A reply Redis refuses for good (its key holds a hash, say) is dead-lettered instead, in a second
        round trip. Returns the outcomes that met a passing refusal (out of memory, read-only...), reduced
        to what is still to write: the caller retries them after a backoff; until then they stay pending.
        """
        todo, retry = list(outcomes), []
        while todo:
            pipe = self.client.pipeline(transaction=False)
            for o in todo:
                if o.reply is not None:
                    pipe.xadd(o.reply.stream, dict(o.reply.fields), maxlen=self.reply_maxlen, approximate=True)  # type: ignore[arg-type]
                if o.dead is not None:
                    pipe.xadd(self.dead_letter_stream, self._dead_fields(o.dead))  # type: ignore[arg-type]
            results = iter(await pipe.execute(raise_on_error=False))
            ttl_streams: set[str] = set()
            acks: list[str] = []
            again: list[Outcome] = []
            for o in todo:
                passing = self._apply(o, results, ttl_streams)
                if passing:
                    retry.append(o)
                elif o.dead is not None:  # a refused reply, now to be dead-lettered
                    again.append(o)
                else:
                    acks.append(o.entry_id)
            await self._finish(ttl_streams, acks)
            todo = again
        return retry

    def _apply(self, o: Outcome, results: Iterator[Any], ttl_streams: set[str]) -> bool:
        """Take one outcome's results from a pipeline; True if a write met a passing refusal."""
        passing = False
        refused: OutgoingReply | None = None
        if o.reply is not None:
            result = next(results)
            if not isinstance(result, Exception):
                ttl_streams.add(o.reply.stream)
                o.reply = None
            elif _transient(result):
                passing = True
            else:
                refused, o.refused, o.reply = o.reply, str(result), None
        if o.dead is not None:
            result = next(results)
            if not isinstance(result, Exception):
                o.dead, o.dead_written = None, True
            elif _transient(result):
                passing = True
            else:
                raise result  # the dead-letter stream itself is unusable: a configuration error
        if refused is not None and o.dead is None and not o.dead_written:
            reason = f"reply to {refused.stream!r} failed: {o.refused}"
            o.dead = DeadLetter(o.entry_id, refused.request_fields, reason)
        return passing

    async def _finish(self, ttl_streams: set[str], acks: list[str]) -> None:
        """Refresh the TTL of reply streams just written to, and acknowledge what is settled."""
        if not ttl_streams and not acks:
            return
        pipe = self.client.pipeline(transaction=False)
        for stream in ttl_streams:
            pipe.expire(stream, self.reply_ttl_s)
        if acks:
            pipe.xack(self.stream, self.group, *acks)
        for result in await pipe.execute(raise_on_error=False):
            if isinstance(result, Exception):  # the entries stay pending and are processed again
                log.warning("acknowledging or refreshing reply TTLs failed: %s", result)

    def _dead_fields(self, letter: DeadLetter) -> dict[Any, Any]:
        fields: dict[Any, Any] = {
            "original_id": letter.entry_id,
            "reason": letter.reason[:4096],
            "worker": self.consumer,
            "stream": self.stream,
            "dead_lettered_ms": str(int(time.time() * 1000)),
        }
        for key, value in letter.fields.items():  # keys stay bytes: a hostile one need not be UTF-8
            fields[b"f:" + key if isinstance(key, bytes) else f"f:{key}"] = value
        return fields

    async def heartbeat(self, fields: Mapping[str, Any], ttl_s: int) -> None:
        key = keys.health_key(self.stream, self.consumer)
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(key, mapping={k: str(v) for k, v in fields.items()})
        pipe.expire(key, ttl_s)
        await pipe.execute()

    async def clear_heartbeat(self) -> None:
        await self.client.delete(keys.health_key(self.stream, self.consumer))


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


@dataclass(slots=True)
class PendingEntry:
    entry_id: str
    consumer: str
    idle_ms: int
    deliveries: int


class GroupMaintenance:
    """Redis commands for recovery: inspect, claim and trim the consumer group's pending entries."""

    def __init__(self, transport: Transport) -> None:
        self.t = transport

    async def idle_pending(self, min_idle_ms: int, count: int) -> list[PendingEntry]:
        """Pending entries idle for at least ``min_idle_ms`` (oldest first), with owner and delivery count."""
        rows = await self.t.client.xpending_range(
            self.t.stream, self.t.group, min="-", max="+", count=count, idle=min_idle_ms
        )
        return [
            PendingEntry(
                entry_id=_text(r["message_id"]),
                consumer=_text(r["consumer"]),
                idle_ms=int(r["time_since_delivered"]),
                deliveries=int(r["times_delivered"]),
            )
            for r in rows
        ]

    async def alive(self, consumers: Sequence[str]) -> dict[str, bool]:
        """Which consumers have a live health key."""
        pipe = self.t.client.pipeline(transaction=False)
        for consumer in consumers:
            pipe.exists(keys.health_key(self.t.stream, consumer))
        return {c: bool(n) for c, n in zip(consumers, await pipe.execute(), strict=True)}

    async def claim(self, entry_ids: Sequence[str], min_idle_ms: int) -> tuple[list[Entry], list[str]]:
        """XCLAIM entries for this consumer (only those still idle >= min_idle_ms, so two claimers
        never both win). Returns (claimed entries, ids whose data was deleted from the stream)."""
        if not entry_ids:
            return [], []
        claimed = await self.t.client.xclaim(
            self.t.stream, self.t.group, self.t.consumer, min_idle_time=min_idle_ms, message_ids=list(entry_ids)
        )
        entries: list[Entry] = []
        deleted: list[str] = []
        for item in claimed or []:
            entry_id, fields = item if isinstance(item, list | tuple) else (item, None)
            if fields is None:
                deleted.append(_text(entry_id))
            else:
                entries.append((_text(entry_id), cast("dict[bytes, bytes]", dict(fields))))
        return entries, deleted

    async def group_backlog(self) -> tuple[int, int]:
        """(lag, pending) of this worker's group: entries not yet delivered, and delivered but unacked."""
        try:
            groups = await self.t.client.xinfo_groups(self.t.stream)
        except ResponseError as exc:
            if "no such key" in str(exc):
                return 0, 0
            raise
        for group in groups:
            if _text(group["name"]) == self.t.group:
                return int(group.get("lag") or 0), int(group["pending"])
        return 0, 0

    async def trim_acknowledged(self) -> int:
        """Delete entries every group has delivered and acknowledged: XTRIM MINID at the lowest of each
        group's oldest pending id and first undelivered id. Never removes an unacknowledged entry."""
        client, stream = self.t.client, self.t.stream
        groups = await client.xinfo_groups(stream)
        if not groups:
            return 0
        floor: tuple[int, int] | None = None
        for group in groups:
            candidates = [_next_id(_text(group["last-delivered-id"]))]
            if int(group["pending"]):
                summary = await client.xpending(stream, _text(group["name"]))
                if summary["min"] is not None:  # None when the last pending entry was acked meanwhile
                    candidates.append(_parse_id(_text(summary["min"])))
            low = min(candidates)
            floor = low if floor is None else min(floor, low)
        assert floor is not None
        if floor <= (0, 1):
            return 0
        return int(await client.xtrim(stream, minid=f"{floor[0]}-{floor[1]}", approximate=False))

    async def idle_consumers(self, min_idle_ms: int) -> list[str]:
        """Consumers with an empty pending list, idle for ``min_idle_ms``: safe to delete."""
        rows = await self.t.client.xinfo_consumers(self.t.stream, self.t.group)
        return [
            _text(r["name"]) for r in rows
            if int(r["pending"]) == 0 and int(r["idle"]) >= min_idle_ms and _text(r["name"]) != self.t.consumer
        ]  # fmt: skip

    async def delete_consumer(self, consumer: str) -> int:
        """Delete a consumer; returns how many pending entries it had (0 when called as intended)."""
        return int(await self.t.client.xgroup_delconsumer(self.t.stream, self.t.group, consumer))

    async def publish_limits(self, max_backlog: int) -> None:
        """Publish producer-facing limits (read by the SDK's XADD script) under ``keys.limits_key``."""
        await self.t.client.hset(keys.limits_key(self.t.stream), mapping={"max_backlog": str(max_backlog)})


def _parse_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _next_id(entry_id: str) -> tuple[int, int]:
    ms, seq = _parse_id(entry_id)
    return (ms, seq + 1)
