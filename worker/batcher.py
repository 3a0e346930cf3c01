"""Dynamic batcher: groups compatible requests into batches by size, delay and deadline.

Pure logic with an injectable clock (monotonic seconds), no I/O, so every rule is tested with a fake
clock. Semantics follow Triton's dynamic batcher:

- Requests batch together only when their inputs agree in name, datatype and per-sample shape (the
  *signature*); others wait for a batch of their own.
- Sizes are counted in rows (dim 0): a request may carry several rows.
- A group holding ``max_size`` rows is dispatched at once. With ``preferred_sizes``, the largest
  preferred size that the group can fill exactly is dispatched at once.
- Otherwise a group is dispatched when its oldest request has waited ``max_delay_s``.
- Among ready groups, the one with the most urgent head (priority, then age) goes first; inside a
  group, higher ``priority`` rows go first, then arrival order.
- A request whose deadline has passed is handed back by ``pop_expired`` and never dispatched.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

GroupKey = Hashable  # what requests batch by; the worker passes intake.Signature (the one signature type)


@dataclass(slots=True)
class Item(Generic[T]):
    """One request waiting for a batch."""

    payload: T
    signature: GroupKey
    rows: int
    arrived_s: float
    deadline_s: float | None = None
    priority: int = 0
    seq: int = 0

    def order_key(self) -> tuple[int, int]:
        return (-self.priority, self.seq)


@dataclass(slots=True)
class _Group(Generic[T]):
    items: list[Item[T]] = field(default_factory=list)
    rows: int = 0


class Batcher(Generic[T]):
    """Holds waiting requests and decides what to dispatch next.

    Args:
        max_size: the most rows in one batch.
        max_delay_s: the longest the oldest request of a group waits for more rows.
        preferred_sizes: batch sizes (rows) sent without waiting once reachable exactly.
        clock: monotonic time source in seconds (injectable for tests).
    """

    def __init__(
        self,
        max_size: int,
        max_delay_s: float,
        preferred_sizes: list[int] | tuple[int, ...] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_size < 1:
            raise ValueError("max_size must be >= 1")
        if max_delay_s < 0:
            raise ValueError("max_delay_s must be >= 0")
        self.max_size = max_size
        self.max_delay_s = max_delay_s
        self.preferred_sizes = sorted({s for s in preferred_sizes if 1 <= s <= max_size}, reverse=True)
        self.clock = clock
        self._groups: dict[GroupKey, _Group[T]] = {}
        self._seq = itertools.count()
        self._count = 0
        self.flushing = False  # when set, every group is ready at once (drain on shutdown)

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Item[T]]:
        for group in self._groups.values():
            yield from group.items

    def add(
        self,
        payload: T,
        signature: GroupKey,
        rows: int = 1,
        *,
        deadline_s: float | None = None,
        priority: int = 0,
    ) -> Item[T]:
        """Queue a request. ``rows`` must not exceed ``max_size`` (validate before adding)."""
        if not 1 <= rows <= self.max_size:
            raise ValueError(f"rows must be in 1..{self.max_size}, got {rows}")
        item = Item(payload, signature, rows, self.clock(), deadline_s, priority, next(self._seq))
        group = self._groups.setdefault(signature, _Group())
        group.items.append(item)
        group.rows += rows
        self._count += 1
        return item

    def pop_expired(self, now: float | None = None) -> list[Item[T]]:
        """Remove and return every request whose deadline is at or before ``now``."""
        now = self.clock() if now is None else now
        expired: list[Item[T]] = []
        for signature in list(self._groups):
            group = self._groups[signature]
            keep = [it for it in group.items if it.deadline_s is None or it.deadline_s > now]
            if len(keep) != len(group.items):
                expired.extend(it for it in group.items if it.deadline_s is not None and it.deadline_s <= now)
                self._replace(signature, keep)
        return expired

    def pop_all(self) -> list[Item[T]]:
        """Remove and return every waiting request."""
        items = list(self)
        self._groups.clear()
        self._count = 0
        return items

    def next_batch(self, now: float | None = None) -> list[Item[T]] | None:
        """The next batch to dispatch, removed from the queue, or None if no group is ready yet."""
        now = self.clock() if now is None else now
        best: tuple[tuple[int, int], GroupKey, int] | None = None
        for signature, group in self._groups.items():
            size = self._ready_size(group, now)
            if size:
                head = min(it.order_key() for it in group.items)
                if best is None or head < best[0]:
                    best = (head, signature, size)
        if best is None:
            return None
        _, signature, size = best
        return self._take(signature, size)

    def wait_time(self, now: float | None = None) -> float | None:
        """Seconds until a group becomes ready by delay or a deadline passes; None when empty."""
        now = self.clock() if now is None else now
        times: list[float] = []
        for group in self._groups.values():
            oldest = min(it.arrived_s for it in group.items)
            times.append(oldest + self.max_delay_s)
            times.extend(it.deadline_s for it in group.items if it.deadline_s is not None)
        if not times:
            return None
        return max(0.0, min(times) - now)

    # ------------------------------------------------------------------------------------ internals

    def _ready_size(self, group: _Group[T], now: float) -> int:
        """Rows to dispatch from this group now (0: not ready)."""
        if group.rows >= self.max_size:
            return self.max_size
        for preferred in self.preferred_sizes:
            if group.rows >= preferred and self._fill(group, preferred) == preferred:
                return preferred
        oldest = min(it.arrived_s for it in group.items)
        if self.flushing or now - oldest >= self.max_delay_s:
            return self.max_size
        return 0

    @staticmethod
    def _ordered(group: _Group[T]) -> list[Item[T]]:
        return sorted(group.items, key=Item.order_key)

    def _fill(self, group: _Group[T], limit: int) -> int:
        """Rows a batch of at most ``limit`` rows takes, in dispatch order (a request is never split)."""
        total = 0
        for item in self._ordered(group):
            if total + item.rows > limit:
                break
            total += item.rows
        return total

    def _take(self, signature: GroupKey, limit: int) -> list[Item[T]]:
        group = self._groups[signature]
        ordered = self._ordered(group) if any(it.priority for it in group.items) else group.items
        batch: list[Item[T]] = []
        total = 0
        for item in ordered:
            if total + item.rows > limit:
                break
            batch.append(item)
            total += item.rows
        taken = {id(it) for it in batch}
        self._replace(signature, [it for it in group.items if id(it) not in taken])
        return batch

    def _replace(self, signature: GroupKey, items: list[Item[T]]) -> None:
        group = self._groups[signature]
        self._count += len(items) - len(group.items)
        if items:
            group.items = items
            group.rows = sum(it.rows for it in items)
        else:
            del self._groups[signature]
