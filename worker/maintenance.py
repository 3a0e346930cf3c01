"""Redis commands for recovery: inspect, claim and trim the consumer group's pending entries.

Part of the Redis transport (``worker/transport.py``, whose helpers it uses): the only other worker
module that talks to Redis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis
import redis.exceptions as rexc

from redis_infer_protocol import keys
from worker.transport import Entry, _text, protocol_fields, translated


@dataclass(slots=True)
class PendingEntry:
    entry_id: str
    consumer: str
    idle_ms: int
    deliveries: int


class GroupMaintenance:
    """Redis commands for recovery: inspect, claim and trim the consumer group's pending entries.

    Made by ``Transport.maintenance()``; ``consumer`` is this worker's consumer name.
    """

    def __init__(self, client: aioredis.Redis, *, stream: str, group: str, consumer: str) -> None:
        self._client = client
        self._stream = stream
        self._group = group
        self.consumer = consumer

    @translated
    async def idle_pending(self, min_idle_ms: int, count: int) -> list[PendingEntry]:
        """Pending entries idle for at least ``min_idle_ms`` (oldest first), with owner and delivery count."""
        rows = await self._client.xpending_range(
            self._stream, self._group, min="-", max="+", count=count, idle=min_idle_ms
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

    @translated
    async def alive(self, consumers: Sequence[str]) -> dict[str, bool]:
        """Which consumers have a live health key."""
        pipe = self._client.pipeline(transaction=False)
        for consumer in consumers:
            pipe.exists(keys.health_key(self._stream, consumer))
        return {c: bool(n) for c, n in zip(consumers, await pipe.execute(), strict=True)}

    @translated
    async def claim(self, entry_ids: Sequence[str], min_idle_ms: int) -> tuple[list[Entry], list[str]]:
        """XCLAIM entries for this consumer (only those still idle >= min_idle_ms, so two claimers
        never both win). Returns (claimed entries, ids whose data was deleted from the stream)."""
        if not entry_ids:
            return [], []
        claimed = await self._client.xclaim(
            self._stream, self._group, self.consumer, min_idle_time=min_idle_ms, message_ids=list(entry_ids)
        )
        entries: list[Entry] = []
        deleted: list[str] = []
        for item in claimed or []:
            entry_id, fields = item if isinstance(item, list | tuple) else (item, None)
            if fields is None:
                deleted.append(_text(entry_id))
            else:
                entries.append((_text(entry_id), protocol_fields(cast("dict[bytes, bytes]", fields))))
        return entries, deleted

    @translated
    async def group_backlog(self) -> tuple[int, int]:
        """(lag, pending) of this worker's group: entries not yet delivered, and delivered but unacked."""
        try:
            groups = await self._client.xinfo_groups(self._stream)
        except rexc.ResponseError as exc:
            if "no such key" in str(exc):
                return 0, 0
            raise
        for group in groups:
            if _text(group["name"]) == self._group:
                return int(group.get("lag") or 0), int(group["pending"])
        return 0, 0

    @translated
    async def trim_acknowledged(self) -> int:
        """Delete entries every group has delivered and acknowledged: XTRIM MINID at the lowest of each
        group's oldest pending id and first undelivered id. Never removes an unacknowledged entry."""
        client, stream = self._client, self._stream
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
        if floor is None or floor <= (0, 1):
            return 0
        return int(await client.xtrim(stream, minid=f"{floor[0]}-{floor[1]}", approximate=False))

    @translated
    async def idle_consumers(self, min_idle_ms: int) -> list[str]:
        """Consumers with an empty pending list, idle for ``min_idle_ms``: safe to delete."""
        rows = await self._client.xinfo_consumers(self._stream, self._group)
        return [
            _text(r["name"]) for r in rows
            if int(r["pending"]) == 0 and int(r["idle"]) >= min_idle_ms and _text(r["name"]) != self.consumer
        ]  # fmt: skip

    @translated
    async def delete_idle_consumer(self, consumer: str, min_idle_ms: int) -> bool:
        """Delete ``consumer`` if, at that instant, it has no health key, an empty pending list and has
        been idle ``min_idle_ms``: checked and deleted in one script, so that a worker restarting under
        that name cannot read entries into it between the check and the deletion."""
        health = keys.health_key(self._stream, consumer)
        args = (self._group, consumer, min_idle_ms)
        return int(await self._client.eval(_DELETE_IDLE_CONSUMER, 2, self._stream, health, *args)) >= 0  # type: ignore[misc]

    @translated
    async def publish_limits(self, max_backlog: int) -> None:
        """Publish producer-facing limits (read by the SDK's XADD script) under ``keys.limits_key``.

        Writes only when the value changed, so that a restart works while Redis refuses writes (OOM).
        """
        if await self._client.hget(keys.limits_key(self._stream), "max_backlog") == str(max_backlog).encode():
            return
        await self._client.hset(keys.limits_key(self._stream), mapping={"max_backlog": str(max_backlog)})


_DELETE_IDLE_CONSUMER = """
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
for _, row in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local f = {}
  for i = 1, #row, 2 do f[row[i]] = row[i + 1] end
  if f['name'] == ARGV[2] then
    if f['pending'] == 0 and f['idle'] >= tonumber(ARGV[3]) then
      return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
    end
    return -2
  end
end
return -3
"""


def _parse_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _next_id(entry_id: str) -> tuple[int, int]:
    ms, seq = _parse_id(entry_id)
    return (ms, seq + 1)
