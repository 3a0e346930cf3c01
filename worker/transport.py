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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from producer import keys
from worker.config import RedisSettings

log = logging.getLogger(__name__)

Entry = tuple[str, dict[bytes, bytes]]


@dataclass(slots=True)
class OutgoingReply:
    stream: str
    fields: dict[str, bytes]
    entry_id: str  # the request entry it answers


@dataclass(slots=True)
class DeadLetter:
    entry_id: str
    fields: Mapping[Any, Any]
    reason: str


@dataclass(slots=True)
class PublishResult:
    acked: int
    failed_replies: list[tuple[OutgoingReply, str]]  # reply could not be written (e.g. WRONGTYPE key)


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

    async def publish(
        self, replies: Sequence[OutgoingReply], dead: Sequence[DeadLetter] = (), ack_ids: Sequence[str] = ()
    ) -> PublishResult:
        """Write replies and dead letters, then XACK ``ack_ids``: one pipeline, one round trip.

        A reply that Redis refuses (the reply_to key holds another type, say) is dead-lettered and
        acknowledged in a second round trip, so it is never lost and never retried forever.
        """
        pipe = self.client.pipeline(transaction=False)
        ttl_streams: set[str] = set()
        for reply in replies:
            pipe.xadd(reply.stream, dict(reply.fields), maxlen=self.reply_maxlen, approximate=True)  # type: ignore[arg-type]
            ttl_streams.add(reply.stream)
        for stream in ttl_streams:
            pipe.expire(stream, self.reply_ttl_s)
        for letter in dead:
            pipe.xadd(self.dead_letter_stream, self._dead_fields(letter))  # type: ignore[arg-type]
        if ack_ids:
            pipe.xack(self.stream, self.group, *ack_ids)
        results = await pipe.execute(raise_on_error=False)
        failed = [(reply, str(res)) for reply, res in zip(replies, results, strict=False) if isinstance(res, Exception)]
        others = results[len(replies) :]
        errors = [res for res in others if isinstance(res, Exception)]
        if errors:
            raise errors[0]
        acked = int(others[-1]) if ack_ids else 0
        if failed:
            await self.publish((), [DeadLetter(r.entry_id, r.fields, f"reply failed: {err}") for r, err in failed])
        return PublishResult(acked, failed)

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
        for group in await self.t.client.xinfo_groups(self.t.stream):
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
