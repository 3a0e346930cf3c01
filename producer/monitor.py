"""``redis-infer status``: one read-only look at a request stream, its consumer groups, workers and dead letters.

Only read commands are sent (XINFO, XPENDING, XLEN, XREVRANGE, SCAN, HGETALL, TTL, HGET, TIME, INFO), so it is
safe to point at production with a read-only ACL user. ``--watch`` (or ``top``) redraws the view every
``--interval`` seconds; rates come from the difference between two samples. On a terminal with rich installed
the frames are rich's live view (producer/live.py), else plain text.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from redis import Redis
from redis.exceptions import NoPermissionError

from redis_infer_protocol import keys

DEFAULT_STALE_MS = 30_000  # the worker's default recovery.min_idle_ms: a consumer this idle with no heartbeat is gone
LATEST_DEAD_LETTERS = 5
CLEAR_SCREEN = "\x1b[H\x1b[2J"


@dataclass(slots=True)
class ConsumerStatus:
    name: str
    pending: int
    idle_ms: int
    inactive_ms: int | None  # Redis >= 7.2: since the last successful read
    alive: bool  # a heartbeat hash exists for this consumer
    stale: bool  # no heartbeat and idle past the threshold: its pending entries wait for the claimer


@dataclass(slots=True)
class GroupStatus:
    name: str
    lag: int | None
    lag_note: str  # why lag is unknown, or "" when known
    pending: int
    oldest_pending_id: str | None
    oldest_pending_age_ms: int | None  # server time minus the oldest pending entry's id time
    last_delivered_id: str
    consumers: list[ConsumerStatus]


@dataclass(slots=True)
class WorkerHealth:
    consumer: str
    ttl_s: int | None  # None: TTL not permitted for this user
    fields: dict[str, str]


@dataclass(slots=True)
class DeadLetterBrief:
    id: str
    original_id: str
    reason: str
    worker: str
    dead_lettered_ms: int | None
    truncated: bool


@dataclass(slots=True)
class Rates:
    interval_s: float
    added_per_s: float | None  # entries XADDed to the stream (Redis >= 7: entries-added)
    served_per_s: float  # ok + errors + expired over all live workers
    dead_lettered_per_s: float


@dataclass(slots=True)
class StreamStatus:
    stream: str
    exists: bool
    redis_version: str
    server_time_ms: int
    length: int
    entries_added: int | None
    max_backlog: int | None  # producers' backpressure limit from the limits hash (None: not set)
    groups: list[GroupStatus] = field(default_factory=list)
    workers: list[WorkerHealth] = field(default_factory=list)
    dead_letter_stream: str = ""
    dead_letters: int = 0
    latest_dead_letters: list[DeadLetterBrief] = field(default_factory=list)
    rates: Rates | None = None
    notes: list[str] = field(default_factory=list)  # what this user may not read (ACL), so was left out


def _text(value: Any) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


def _id_ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


def _major(version: str) -> int:
    try:
        return int(version.split(".", 1)[0])
    except ValueError:
        return 0


def _workers(redis: Redis, stream: str, allowed: Callable[[str, Callable[[], Any], Any], Any]) -> list[WorkerHealth]:
    prefix = keys.health_key(stream, "")
    found = []
    for key in sorted(redis.scan_iter(match=keys.health_pattern(stream), count=100)):
        name = _text(key)
        raw = redis.hgetall(key)
        if not raw:
            continue  # expired between SCAN and HGETALL
        fields = {_text(k): _text(v) for k, v in raw.items()}  # type: ignore[union-attr]
        ttl = allowed("TTL of health keys", lambda: redis.ttl(key), None)  # noqa: B023 - called at once
        found.append(WorkerHealth(name[len(prefix) :], None if ttl is None else int(ttl), fields))
    return found


def group_lag(group: dict[Any, Any], major: int) -> tuple[int | None, str]:
    """A group's lag from XINFO GROUPS and, when Redis does not know it, why (never reported as 0)."""
    lag = group.get("lag")
    if lag is not None:
        return int(lag), ""
    if major == 0:
        return None, "unknown: Redis does not report it (its version is not readable; lag needs >= 7)"
    if major < 7:
        return None, f"unknown: Redis {major} does not report lag (needs >= 7)"
    return None, "unknown: Redis cannot tell (entries were deleted or trimmed past the group)"


def _group(redis: Redis, stream: str, group: dict[Any, Any], ctx: tuple[int, int, set[str], int]) -> GroupStatus:
    major, now_ms, alive, stale_ms = ctx
    name = _text(group["name"])
    lag, note = group_lag(group, major)
    oldest_id: str | None = None
    summary = redis.xpending(stream, name)
    if summary and summary.get("pending"):  # type: ignore[union-attr]
        oldest_id = _text(summary["min"])  # type: ignore[index]
    consumers = []
    for c in redis.xinfo_consumers(stream, name):  # type: ignore[union-attr]
        cname, idle = _text(c["name"]), int(c["idle"])
        inactive = c.get("inactive")
        is_alive = cname in alive
        consumers.append(
            ConsumerStatus(
                cname,
                int(c["pending"]),
                idle,
                None if inactive is None else int(inactive),
                is_alive,
                not is_alive and idle >= stale_ms,
            )
        )
    return GroupStatus(
        name=name,
        lag=lag,
        lag_note=note,
        pending=int(group["pending"]),
        oldest_pending_id=oldest_id,
        oldest_pending_age_ms=None if oldest_id is None else max(0, now_ms - _id_ms(oldest_id)),
        last_delivered_id=_text(group["last-delivered-id"]),
        consumers=consumers,
    )


def _server_ms(redis: Redis) -> int:
    seconds, micros = redis.time()  # type: ignore[misc]
    return int(seconds) * 1000 + int(micros) // 1000


def _dead_letters(redis: Redis, dead_stream: str, count: int) -> list[DeadLetterBrief]:
    latest = []
    entries: Any = redis.xrevrange(dead_stream, count=count)
    for entry_id, raw in entries:
        f = {_text(k): v for k, v in raw.items()}
        at = f.get("dead_lettered_ms")
        latest.append(
            DeadLetterBrief(
                _text(entry_id),
                _text(f.get("original_id", b"")),
                _text(f.get("reason", b"")),
                _text(f.get("worker", b"")),
                None if at is None else int(at),
                "truncated" in f,
            )
        )
    return latest


def snapshot(
    redis: Redis,
    stream: str,
    *,
    dead_letter_stream: str | None = None,
    stale_ms: int = DEFAULT_STALE_MS,
    latest_dead_letters: int = LATEST_DEAD_LETTERS,
) -> StreamStatus:
    """Read the state of ``stream`` (read-only commands only).

    Args:
        redis: a client (``decode_responses`` off).
        stream: the request stream.
        dead_letter_stream: where the workers dead-letter (default ``<stream>:dead``).
        stale_ms: a consumer with no heartbeat idle this long is flagged stale.
        latest_dead_letters: how many of the latest dead letters to read (0: none, only their count).
    """
    notes: list[str] = []

    def allowed(what: str, op: Callable[[], Any], default: Any) -> Any:
        try:
            return op()
        except NoPermissionError:
            if f"{what}: not permitted for this user" not in notes:
                notes.append(f"{what}: not permitted for this user")
            return default

    version = _text(allowed("INFO server", lambda: redis.info("server"), {}).get("redis_version", "unknown"))
    now_ms = allowed("TIME (the local clock is used)", lambda: _server_ms(redis), None) or int(time.time() * 1000)
    limit = allowed(f"HGET {keys.limits_key(stream)}", lambda: redis.hget(keys.limits_key(stream), "max_backlog"), None)
    dead = dead_letter_stream or keys.dead_letter_stream(stream)
    status = StreamStatus(stream, bool(redis.exists(stream)), version, now_ms, 0, None,
                          None if limit is None else int(limit), dead_letter_stream=dead, notes=notes)  # fmt: skip
    status.workers = _workers(redis, stream, allowed)
    status.dead_letters = int(redis.xlen(dead))  # type: ignore[arg-type]
    if latest_dead_letters > 0:
        status.latest_dead_letters = allowed(
            f"XREVRANGE {dead} (latest reasons)", lambda: _dead_letters(redis, dead, latest_dead_letters), []
        )
    if not status.exists:
        return status
    info = redis.xinfo_stream(stream)
    status.length = int(info["length"])  # type: ignore[index]
    added = info.get("entries-added")  # type: ignore[union-attr]
    status.entries_added = None if added is None else int(added)
    ctx = (_major(version), now_ms, {w.consumer for w in status.workers}, stale_ms)
    status.groups = [_group(redis, stream, g, ctx) for g in redis.xinfo_groups(stream)]  # type: ignore[union-attr]
    return status


def _served(status: StreamStatus) -> tuple[int, int]:
    served = dead = 0
    for worker in status.workers:
        served += sum(int(worker.fields.get(k, "0")) for k in ("ok", "errors", "expired"))
        dead += int(worker.fields.get("dead_lettered", "0"))
    return served, dead


def rates(before: StreamStatus, after: StreamStatus) -> Rates | None:
    """Per-second rates between two snapshots (None if no server time passed)."""
    interval_s = (after.server_time_ms - before.server_time_ms) / 1000
    if interval_s <= 0:
        return None
    added = None
    if before.entries_added is not None and after.entries_added is not None:
        added = max(0, after.entries_added - before.entries_added) / interval_s
    (served0, dead0), (served1, dead1) = _served(before), _served(after)
    # a worker that restarted starts its counters at 0: never report a negative rate
    return Rates(interval_s, added, max(0, served1 - served0) / interval_s, max(0, dead1 - dead0) / interval_s)


def _age(ms: int | None) -> str:
    if ms is None:
        return "-"
    return f"{ms / 1000:.1f}s" if ms < 120_000 else f"{ms / 60_000:.1f}min"


def _group_lines(group: GroupStatus) -> list[str]:
    lag = str(group.lag) if group.lag is not None else group.lag_note
    lines = [
        f"group {group.name}: lag {lag} | pending {group.pending} | oldest pending {_age(group.oldest_pending_age_ms)}"
        f" | consumers {len(group.consumers)}",
        f"  {'consumer':32} {'pending':>8} {'idle':>9}  state",
    ]
    for c in group.consumers:
        state = "alive" if c.alive else ("STALE (no heartbeat)" if c.stale else "no heartbeat")
        lines.append(f"  {c.name:32} {c.pending:>8} {_age(c.idle_ms):>9}  {state}")
    return lines


def _worker_lines(workers: list[WorkerHealth]) -> list[str]:
    columns = ("status", "ok", "errors", "batches", "rows", "queued", "redis")
    lines = [f"workers: {len(workers)} with a live heartbeat"]
    if workers:
        lines.append(f"  {'consumer':32} " + " ".join(f"{c:>9}" for c in columns))
    for w in workers:
        lines.append(f"  {w.consumer:32} " + " ".join(f"{w.fields.get(c, '-'):>9}" for c in columns))
    return lines


def format_status(status: StreamStatus) -> str:
    """The human-readable view (what ``status`` and each ``--watch`` frame print)."""
    backlog = "unbounded" if not status.max_backlog else str(status.max_backlog)
    head = f"stream {status.stream} (Redis {status.redis_version}): "
    if not status.exists:
        lines = [head + "does not exist (no request was ever sent, or it was deleted)"]
    else:
        lines = [head + f"length {status.length} | backpressure limit {backlog}"]
        for group in status.groups:
            lines.extend(_group_lines(group))
    if status.rates is not None:
        r = status.rates
        added = "unknown (Redis < 7)" if r.added_per_s is None else f"{r.added_per_s:.1f}/s"
        lines.append(f"rates over {r.interval_s:.1f}s: added {added} | served {r.served_per_s:.1f}/s"
                     f" | dead-lettered {r.dead_lettered_per_s:.1f}/s")  # fmt: skip
    lines.extend(_worker_lines(status.workers))
    lines.append(f"dead letters ({status.dead_letter_stream}): {status.dead_letters}")
    lines.extend(f"note: {note}" for note in status.notes)
    for d in status.latest_dead_letters:
        cut = " [truncated]" if d.truncated else ""
        lines.append(f"  {d.id} original {d.original_id} by {d.worker}: {d.reason}{cut}")
    return "\n".join(lines)


def to_json(status: StreamStatus) -> str:
    return json.dumps(asdict(status), indent=2)


def _live_view(args: argparse.Namespace) -> bool:
    """rich's live view: for ``--watch`` on a terminal with rich installed, unless ``--plain`` or ``--json``."""
    if not args.watch or args.json or args.plain or not sys.stdout.isatty():
        return False
    from producer.live import available

    return available()


def run_status(args: argparse.Namespace, out: Callable[[str], None] = print) -> int:
    """The ``status`` command: one snapshot (rates from a second one ``--interval`` later), or ``--watch``."""
    if args.watch and args.interval <= 0:
        print("status: --watch needs --interval > 0", file=sys.stderr)
        return 2
    redis = Redis.from_url(args.url)
    try:

        def take() -> StreamStatus:
            return snapshot(redis, args.stream, dead_letter_stream=args.dead_letter_stream, stale_ms=args.stale_ms)

        if _live_view(args):
            from producer.live import run_live

            return run_live(take, interval_s=args.interval, count=args.count)
        current = take()
        frames = 0
        while True:
            if args.interval > 0 and (args.watch or frames == 0):
                time.sleep(args.interval)  # the sampling period of the rates, not a wait for a condition
                previous, current = current, take()
                current.rates = rates(previous, current)
            frames += 1
            if args.json:
                out(to_json(current))
            else:
                out((CLEAR_SCREEN if args.watch and sys.stdout.isatty() else "") + format_status(current))
            if not args.watch or (args.count and frames >= args.count):
                return 0
    except KeyboardInterrupt:
        return 0
    finally:
        redis.close()


def _add_view_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between the two samples of the rates "
                        "and between --watch frames (0: no rates; default 1)")  # fmt: skip
    parser.add_argument("--count", type=int, default=0, help="with --watch: stop after this many frames (0: never)")
    parser.add_argument("--plain", action="store_true", help="plain text frames even on a terminal with rich")
    parser.add_argument("--dead-letter-stream", help="default: <stream>:dead")
    parser.add_argument(
        "--stale-ms",
        type=int,
        default=DEFAULT_STALE_MS,
        help=f"flag consumers idle this long with no heartbeat (default {DEFAULT_STALE_MS})",
    )


def add_parser(commands: Any, add_connection_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``status`` and ``top`` (read-only) on the producer CLI."""
    status = commands.add_parser("status", help="read-only view of a stream, its groups, workers and dead letters")
    add_connection_args(status)
    status.add_argument("--json", action="store_true", help="print JSON (with --watch: one document per frame)")
    status.add_argument("--watch", action="store_true", help="redraw every --interval seconds until Ctrl-C "
                        "(the rich live view on a terminal, when rich is installed)")  # fmt: skip
    _add_view_args(status)
    status.set_defaults(func=run_status)
    top = commands.add_parser("top", help="live view of a stream (status --watch): lag, pending, workers, rates")
    add_connection_args(top)
    _add_view_args(top)
    top.set_defaults(func=run_status, watch=True, json=False)
