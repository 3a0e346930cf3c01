"""Recovery: take over work that dead consumers left pending, dead-letter poison, trim, clean up.

Every ``interval_s`` each worker:

1. lists group entries pending for at least ``min_idle_ms`` (XPENDING ... IDLE);
2. claims (XCLAIM, with the same min-idle so two claimers never both win) those of other consumers
   whose owner is not alive (no health key), or that have been idle for ``stuck_ms`` whatever the
   owner says; and this worker's own entries that it does not hold in memory (a read whose reply
   never arrived: a timeout, a frozen process, lost bytes), which no one else would take while this
   worker is alive;
3. hands claimed entries to the worker like fresh reads, except those delivered more than
   ``max_deliveries`` times, which are dead-lettered and answered with an error;
4. trims the stream below the oldest unacknowledged entry (XTRIM MINID), so the stream length is the
   backlog that producers' backpressure sees;
5. deletes consumers whose pending list is empty and that have been idle for ``min_idle_ms``.

``min_idle_ms`` must stay safely above max batch delay + compute + publish time, so that only work
that nobody is doing gets claimed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Container
from dataclasses import dataclass, field

from worker.maintenance import GroupMaintenance
from worker.transport import Entry

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Recovered:
    """One round's outcome."""

    entries: list[Entry] = field(default_factory=list)  # claimed, to be processed
    poison: list[tuple[Entry, int]] = field(default_factory=list)  # claimed, over max deliveries
    deleted: list[str] = field(default_factory=list)  # pending ids whose data is gone
    trimmed: int = 0
    consumers_deleted: list[str] = field(default_factory=list)


class Recovery:
    """The recovery policy over ``GroupMaintenance``'s Redis commands."""

    def __init__(
        self,
        maintenance: GroupMaintenance,
        *,
        min_idle_ms: int,
        stuck_ms: int,
        max_deliveries: int,
        count: int = 100,
        trim: bool = True,
    ) -> None:
        self.m = maintenance
        self.min_idle_ms = min_idle_ms
        self.stuck_ms = stuck_ms
        self.max_deliveries = max_deliveries
        self.count = count
        self.trim = trim

    async def round(self, room: int, held: Container[str] = frozenset()) -> Recovered:
        """One pass. ``room``: how many entries the worker can take now; ``held``: the entry ids this
        worker holds in memory (queued, computing or being settled), never claimed back."""
        out = Recovered()
        if room > 0:
            await self._claim(out, room, held)
        if self.trim:
            out.trimmed = await self.m.trim_acknowledged()
        for consumer in await self.m.idle_consumers(self.min_idle_ms):
            if await self.m.delete_idle_consumer(consumer, self.min_idle_ms):  # re-checked atomically
                out.consumers_deleted.append(consumer)
        return out

    async def _claim(self, out: Recovered, room: int, held: Container[str]) -> None:
        candidates = await self.m.idle_pending(self.min_idle_ms, min(self.count, room))
        if not candidates:
            return
        # Own entries held in memory are being worked on: never claim them. Own entries not held were
        # delivered by a read whose reply never reached us: nobody is working on them.
        me = self.m.consumer
        lost = [p for p in candidates if p.consumer == me and p.entry_id not in held]
        others = [p for p in candidates if p.consumer != me]
        owners = sorted({p.consumer for p in others})
        alive = await self.m.alive(owners) if owners else {}
        chosen = lost + [p for p in others if not alive.get(p.consumer, False) or p.idle_ms >= self.stuck_ms]
        if not chosen:
            return
        deliveries = {p.entry_id: p.deliveries + 1 for p in chosen}  # XCLAIM counts one more delivery
        entries, out.deleted = await self.m.claim([p.entry_id for p in chosen], self.min_idle_ms)
        for entry in entries:
            count = deliveries.get(entry[0], 1)
            if count > self.max_deliveries:
                out.poison.append((entry, count))
            else:
                out.entries.append(entry)
        log.info("recovered %d entries from %s (%d over max deliveries, %d deleted)",
                 len(entries), owners or "self", len(out.poison), len(out.deleted))  # fmt: skip


async def run_forever(
    recovery: Recovery,
    *,
    interval_s: float,
    room: Callable[[], int],
    held: Callable[[], Container[str]] = frozenset,
    handle: Callable[[Recovered], Awaitable[None]],
    stopping: Callable[[], bool],
    sleep: Callable[[float], Awaitable[None]],
    on_error: Callable[[Exception], None] = lambda exc: None,
) -> None:
    """Run rounds until ``stopping()``; errors are logged, reported to ``on_error`` and the loop carries on."""
    while not stopping():
        try:
            result = await recovery.round(room(), held())
            await handle(result)
        except Exception as exc:
            log.warning("recovery round failed (%s); retrying in %.1fs", exc, interval_s)
            on_error(exc)
        await sleep(interval_s)
