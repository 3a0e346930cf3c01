"""Chaos load: a producer that submits valid requests through ``producer.Client`` and keeps count.

``Load`` drives requests at a steady rate, as a real producer would: an XADD that fails (Redis away) is
retried with the *same* request id until it succeeds, so an ambiguous first attempt can only ever
duplicate an entry, and the SDK must then drop the duplicate reply. Every reply is checked against
``y = 2x + 1``, ``s = sum(x)`` and the request id, and timed, for the recovery figures.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis
from redis.exceptions import RedisError

from benchmarks.chaos_harness import WIDTH
from producer import Client
from producer.errors import ClientClosed, InferTimeout, ServerError
from redis_infer_protocol.codec import Reply, encode_request

log = logging.getLogger(__name__)


def request_input(index: int) -> np.ndarray[Any, Any]:
    """Request ``index``'s x: distinct per request, exactly representable, so outputs can be checked."""
    x = np.arange(WIDTH, dtype=np.float32).reshape(1, WIDTH)
    x[0, 0] = float(index % 65_536)
    return x


def reply_is_correct(index: int, reply: Reply) -> bool:
    x = request_input(index)
    y, s = reply.outputs.get("y"), reply.outputs.get("s")
    return (
        y is not None and s is not None and np.array_equal(y, 2 * x + 1) and np.array_equal(s, x.sum(axis=1))
    )  # fmt: skip


@dataclass(slots=True)
class Tracked:
    """One valid request's life as the producer saw it (monotonic seconds)."""

    index: int
    sent_at: float | None = None  # its XADD succeeded
    replied_at: float | None = None
    published_ns: int = 0  # wall clock at which the worker published the reply (from its timing)
    status: str | None = None  # "OK", another reply status, or "TIMEOUT" / "CLOSED" (no reply)
    correct: bool = False
    callbacks: int = 0  # how often the caller was told about it: must be 1


@dataclass(slots=True)
class LoadSummary:
    sent: int
    ok: int
    error_replies: int
    lost: int
    unsent: int
    wrong_outputs: int
    duplicates_surfaced: int
    xadd_retries: int
    duplicates_seen: int
    late_replies: int
    unknown_replies: int
    statuses: dict[str, int] = field(default_factory=dict)


class Load:
    """Submits ``count`` valid requests through a ``producer.Client`` at ``rate_per_s``, in chunks.

    Args:
        client: the SDK client (its stats give the duplicate replies it dropped).
        count: how many requests.
        rate_per_s: target submission rate.
        chunk: requests per ``submit_many`` (one pipelined round trip).
        timeout_s: each request's deadline (client-side, and sent to the worker).
        retry_for_s: how long a failing XADD is retried before the request is given up as unsent.
    """

    def __init__(
        self,
        client: Client,
        count: int,
        *,
        rate_per_s: float,
        chunk: int = 50,
        timeout_s: float = 60.0,
        retry_for_s: float = 60.0,
        tag: str = "r",
    ) -> None:
        self.client = client
        self.count = count
        self.rate_per_s = rate_per_s
        self.chunk = chunk
        self.timeout_s = timeout_s
        self.retry_for_s = retry_for_s
        self.tag = tag
        self.tracked = [Tracked(i) for i in range(count)]
        self.xadd_retries = 0
        self.submitted = 0  # requests whose XADD succeeded so far
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-load", daemon=True)
        self.error: BaseException | None = None

    def request_id(self, index: int) -> str:
        return f"{self.tag}{index:06d}"

    def start(self) -> Load:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def wait_submitted(self, fraction: float, timeout_s: float = 120) -> None:
        """Block until ``fraction`` of the requests have been XADDed."""
        deadline = time.monotonic() + timeout_s
        while self.submitted < fraction * self.count and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.01)

    def join(self, timeout_s: float = 300) -> None:
        self._thread.join(timeout_s)

    def _run(self) -> None:
        try:
            start = time.monotonic()
            for first in range(0, self.count, self.chunk):
                if self._stop.is_set():
                    break
                due = start + first / self.rate_per_s
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self._send(list(range(first, min(first + self.chunk, self.count))))
        except BaseException as exc:
            log.exception("load thread failed")
            self.error = exc

    def _send(self, indices: list[int]) -> None:
        deadline = time.monotonic() + self.retry_for_s
        backoff_s = 0.05
        todo = indices
        while todo:
            failed = self._attempt(todo)
            if not failed:
                return
            with self._lock:
                self.xadd_retries += len(failed)
            if time.monotonic() > deadline:
                for i in failed:
                    self.tracked[i].status = "UNSENT"
                log.error("gave up on %d requests after %.0fs of failing XADDs", len(failed), self.retry_for_s)
                return
            time.sleep(backoff_s)
            backoff_s = min(1.0, backoff_s * 2)
            todo = failed

    def _attempt(self, indices: list[int]) -> list[int]:
        """One submit_many of ``indices`` with their fixed request ids; returns those whose XADD failed."""
        ids = [self.request_id(i) for i in indices]
        before = time.monotonic()  # the XADDs happen during the call: count them as sent from its start
        try:
            futures = self.client.submit_many(
                [{"x": request_input(i)} for i in indices], timeout=self.timeout_s, request_ids=ids
            )
        except RedisError as exc:
            log.info("XADD pipeline failed (%s); retrying %d requests", type(exc).__name__, len(indices))
            return indices
        failed = []
        for i, future in zip(indices, futures, strict=True):
            if future.done() and isinstance(future.exception(), RedisError):
                failed.append(i)
                continue
            self.tracked[i].sent_at = before
            future.add_done_callback(self._callback(i))
        with self._lock:
            self.submitted += len(indices) - len(failed)
        return failed

    def _callback(self, index: int) -> Any:
        def done(future: Future[Reply]) -> None:
            now = time.monotonic()
            item = self.tracked[index]
            with self._lock:
                item.callbacks += 1
                if item.callbacks > 1:
                    return
                exc = future.exception()
                if exc is None:
                    reply = future.result()
                    item.status, item.replied_at, item.published_ns = "OK", now, reply.timing.published_ns
                    item.correct = reply.id == self.request_id(index) and reply_is_correct(index, reply)
                elif isinstance(exc, ServerError):
                    item.status, item.replied_at = exc.status.value, now
                    item.published_ns = exc.reply.timing.published_ns if exc.reply is not None else 0
                elif isinstance(exc, InferTimeout):
                    item.status = "TIMEOUT"
                elif isinstance(exc, ClientClosed):
                    item.status = "CLOSED"
                else:
                    item.status = f"EXC:{type(exc).__name__}"

        return done

    def lost_after(self, since: float) -> int:
        """Requests sent after ``since`` that never got a reply."""
        with self._lock:
            return sum(1 for t in self.tracked if t.sent_at is not None and t.sent_at > since and t.replied_at is None)

    def replay(self, client: redis.Redis, *, before: float, count: int) -> int:
        """XADD again the last ``count`` requests sent before ``before``, byte for byte what the SDK sent
        (same id, same reply stream), as a producer retrying an ambiguous XADD would. Returns how many."""
        with self._lock:
            indices = [t.index for t in self.tracked if t.sent_at is not None and t.sent_at <= before][-count:]
        pipe = client.pipeline(transaction=False)
        for i in indices:
            fields = encode_request(self.request_id(i), self.client.reply_stream, self.client.model,
                                    {"x": request_input(i)}, timeout_ms=int(self.timeout_s * 1000))  # fmt: skip
            pipe.xadd(self.client.stream, fields)  # type: ignore[arg-type]
        pipe.execute()
        return len(indices)

    def answered(self) -> int:
        with self._lock:
            return sum(1 for t in self.tracked if t.replied_at is not None)

    def wait_answered(self, timeout_s: float) -> bool:
        """Wait until every sent request has a reply (or the client failed it). True if all did."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._thread.is_alive():
                time.sleep(0.05)
                continue
            with self._lock:
                open_ = sum(1 for t in self.tracked if t.status is None)
            if open_ == 0:
                return True
            time.sleep(0.05)
        return False

    def summary(self) -> LoadSummary:
        stats = self.client.stats
        with self._lock:
            statuses: dict[str, int] = {}
            for t in self.tracked:
                key = t.status or "NO_REPLY"
                statuses[key] = statuses.get(key, 0) + 1
            sent = sum(1 for t in self.tracked if t.sent_at is not None)
            ok = statuses.get("OK", 0)
            lost = sum(1 for t in self.tracked if t.sent_at is not None and t.replied_at is None)
            return LoadSummary(
                sent=sent,
                ok=ok,
                error_replies=sum(1 for t in self.tracked if t.replied_at is not None and t.status != "OK"),
                lost=lost,
                unsent=statuses.get("UNSENT", 0),
                wrong_outputs=sum(1 for t in self.tracked if t.status == "OK" and not t.correct),
                duplicates_surfaced=sum(t.callbacks - 1 for t in self.tracked if t.callbacks > 1),
                xadd_retries=self.xadd_retries,
                duplicates_seen=stats.duplicate_replies,
                late_replies=stats.late_replies,
                unknown_replies=stats.unknown_replies,
                statuses=statuses,
            )

    def recovery(self, fault_at: float, over_at: float, affected: set[str] | None) -> dict[str, Any]:
        """Timings of a fault, in seconds from ``fault_at`` (definitions in docs/reliability.md).

        ``first_reply_s`` counts only replies a worker *published* after the fault was over (workers run
        on this machine, so their wall clock is ours), not older ones the client happened to read late.

        Args:
            fault_at: when the fault began (monotonic).
            over_at: when it was over (Redis back; for a kill, ``fault_at``).
            affected: request ids pending on the victim at the fault, if there was one.
        """
        over_ns = time.time_ns() - int((time.monotonic() - over_at) * 1e9)  # over_at on the wall clock
        with self._lock:
            after = [t.replied_at for t in self.tracked if t.replied_at is not None and t.published_ns > over_ns]
            hit = [t for t in self.tracked if affected is not None and self.request_id(t.index) in affected]
            in_flight = [t for t in self.tracked if t.sent_at is not None and t.sent_at <= fault_at]
            in_flight = [t for t in in_flight if t.replied_at is None or t.replied_at > fault_at]
            seen = {t.index for t in in_flight}
            in_flight += [t for t in hit if t.index not in seen]
        first = _rounded(min(after) - fault_at) if after else None
        drained = _latest(in_flight, fault_at)
        out: dict[str, Any] = {
            "first_reply_s": first,
            "in_flight_at_fault": len(in_flight),
            "in_flight_answered_s": drained,
            "recovery_s": None if first is None or drained is None else max(first, drained),
        }
        if affected is not None:
            out["orphaned"] = len(hit)
            out["orphans_answered_s"] = _latest(hit, fault_at)
        return out


def _latest(items: list[Tracked], since: float) -> float | None:
    """Seconds from ``since`` until the last of ``items`` was answered (None if one never was)."""
    if not items:
        return 0.0
    if any(t.replied_at is None for t in items):
        return None
    return _rounded(max(t.replied_at or 0.0 for t in items) - since)


def _rounded(value: float) -> float:
    return round(max(0.0, value), 3)
