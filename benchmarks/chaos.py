"""Chaos run: kill workers and Redis under load, feed hostile entries, and count what survives.

Every scenario runs against a real redis-server and real worker processes (``python -m worker run``)
serving a tiny ONNX model, with a producer (``producer.Client``) submitting valid requests at a steady
rate and checking every reply. A scenario fails if a valid request is lost (no reply at all), if the
caller is ever handed a duplicate or a wrong result, if a hostile entry is neither answered nor
dead-lettered, if work is left unacknowledged at the end, or if a worker dies that was not killed on
purpose. The results go to ``chaos-report.json`` and are printed as a table; the exit code is 1 if any
scenario failed. Definitions of every column: docs/reliability.md.

Usage::

    python -m benchmarks.chaos                      # every scenario, 10k requests each (a few minutes)
    python -m benchmarks.chaos --requests 1000 --only kill9_one_of_two hostile_entries
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import chaos_hostile as hostile
from benchmarks import chaos_refusals as refusals
from benchmarks.chaos_harness import GROUP, MODEL, STREAM, Cluster, _text, workdir
from benchmarks.chaos_load import Load, LoadSummary
from producer import Client
from worker.testing import make_affine_model

log = logging.getLogger("benchmarks.chaos")

FAULT_AT = 0.4  # the fault is injected once this share of the load has been submitted


@dataclass(slots=True)
class Options:
    """Scenario sizes and timings. The defaults are the ``make chaos`` run."""

    requests: int = 10_000  # valid requests per scenario
    hostile: int = 10_000  # hostile entries in the hostile scenario
    rate_per_s: float = 2000.0  # valid request submission rate
    request_timeout_s: float = 60.0  # each request's deadline: a reply later than this counts as lost
    outage_s: float = 2.0  # how long Redis stays down
    restart_delay_s: float = 0.5  # between killing the only worker and starting its replacement
    loss_timeout_s: float = 10.0  # request deadline where losing in-flight requests is expected
    replays: int = 50  # requests re-sent after the Redis restart as if their XADD had been ambiguous
    stall_s: float = 6.0  # how long a stalled (SIGSTOPped) worker stays frozen
    aim_pending: int = 10  # strike a worker once it holds this many unacknowledged entries...
    aim_s: float = 2.0  # ...waiting this long for that many, then any; after twice this, whatever it holds
    work: Path | None = None  # keep models and worker logs here
    skip_hostile: frozenset[str] = frozenset()  # hostile kinds left out (to work around a known bug)


@dataclass(slots=True)
class Fault:
    """What a scenario's fault did: when it began and ended, which requests it orphaned, and notes."""

    at: float  # monotonic time the fault began (the signal was sent, Redis was killed)
    over_at: float  # when it was over: same as ``at`` for a kill, Redis accepting connections again...
    affected: set[str] | None = None  # request ids pending on the victim at the fault
    pending_at_fault: int = 0  # entries pending in the whole group at the fault
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


FaultFn = Callable[[Cluster, Load, Options], Fault]


# --------------------------------------------------------------------------------------------- faults


def _aim(cluster: Cluster, victim: str | None, opts: Options) -> None:
    """Return once ``victim`` (None: the whole group) holds ``opts.aim_pending`` unacknowledged entries,
    or after ``opts.aim_s``."""
    deadline = time.monotonic() + opts.aim_s
    while time.monotonic() < deadline:
        held = cluster.group_backlog()[0] if victim is None else cluster.pending_count(victim)
        if held >= opts.aim_pending:
            return
        time.sleep(0.0005)


def _freeze(cluster: Cluster, victim: str, opts: Options) -> float:
    """SIGSTOP ``victim`` at a moment it holds unacknowledged entries, so that the fault lands on work in
    flight rather than between two batches (a stopped worker's pending list cannot change under us).
    Tries for ``2 * opts.aim_s``, then leaves it stopped whatever it holds. Returns when it stopped."""
    deadline = time.monotonic() + 2 * opts.aim_s
    while True:
        _aim(cluster, victim, opts)
        at = cluster.freeze(victim)
        if cluster.pending_count(victim) or time.monotonic() > deadline:
            return at
        cluster.thaw(victim)


def _kill(victim: str, restart: str | None = None) -> FaultFn:
    """SIGKILL ``victim``; with ``restart``, start a worker of that name ``restart_delay_s`` later."""

    def fault(cluster: Cluster, load: Load, opts: Options) -> Fault:
        at = _freeze(cluster, victim, opts)
        cluster.signal(victim, signal.SIGKILL)
        cluster.wait_exit(victim)
        out = Fault(at, at, cluster.request_ids(cluster.pending_of(victim)), cluster.group_backlog()[0])
        if restart is not None:
            time.sleep(opts.restart_delay_s)
            cluster.start_worker(restart)
            cluster.wait_ready([restart])
            out.extra["replacement_ready_s"] = round(time.monotonic() - at, 3)
        return out

    return fault


def _stall(victim: str) -> FaultFn:
    """SIGSTOP ``victim`` for ``stall_s`` (a long GC pause, a starved VM), then SIGCONT it.

    Its entries are claimed by the other worker once its health key has expired and they have been
    idle ``min_idle_ms``; when it wakes up it finishes them too, so those requests are answered twice.
    """

    def fault(cluster: Cluster, load: Load, opts: Options) -> Fault:
        at = _freeze(cluster, victim, opts)
        out = Fault(at, at, cluster.request_ids(cluster.pending_of(victim)), cluster.group_backlog()[0])
        time.sleep(max(0.0, at + opts.stall_s - time.monotonic()))
        cluster.thaw(victim)
        woke = time.monotonic()
        # Keep the client open until the woken worker has published what it held (the duplicates).
        while cluster.pending_count(victim) and time.monotonic() - woke < 10:
            time.sleep(0.05)
        time.sleep(0.5)
        return out

    return fault


def _sigterm(victim: str, replacement: str) -> FaultFn:
    """SIGTERM ``victim`` while it holds entries (it must finish them and exit 0), and start
    ``replacement`` at once. The signal is sent while the victim is stopped, and handled as it resumes."""

    def fault(cluster: Cluster, load: Load, opts: Options) -> Fault:
        _freeze(cluster, victim, opts)
        affected = cluster.request_ids(cluster.pending_of(victim))
        cluster.signal(victim, signal.SIGTERM)
        at = cluster.thaw(victim)
        out = Fault(at, at, affected, cluster.group_backlog()[0])
        cluster.start_worker(replacement)
        code = cluster.wait_exit(victim)
        out.extra["drain_exit_s"] = round(time.monotonic() - at, 3)
        if code != 0:
            cluster.crashes.append(f"{victim} exited with code {code} after SIGTERM")
        left = len(cluster.pending_of(victim))
        out.extra["left_pending_by_victim"] = left
        if left:
            out.notes.append(f"{victim} left {left} entries pending after SIGTERM (claimed by others)")
        cluster.wait_ready([replacement])
        return out

    return fault


def _redis_restart(*, replay: bool) -> FaultFn:
    """SIGKILL redis-server, keep it down ``outage_s``, start it again on the same port (from its AOF if
    it has one, else empty).

    With ``replay``, then re-send the last ``opts.replays`` requests sent before the crash, as a producer
    does whose XADD was applied but whose connection died before the answer came back (an ambiguous
    write, retried with the same request id): the stream then holds them twice, and the SDK must drop
    one of the two replies.
    """

    def fault(cluster: Cluster, load: Load, opts: Options) -> Fault:
        _aim(cluster, None, opts)
        pending = cluster.group_backlog()[0]
        cluster.kill_redis()
        at = time.monotonic()
        time.sleep(opts.outage_s)
        cluster.restart_redis()
        over = time.monotonic()
        out = Fault(at, over, None, pending)
        out.extra["redis_back_s"] = round(over - at, 3)
        if replay:
            out.extra["replayed"] = load.replay(cluster.admin, before=at, count=opts.replays)
        return out

    return fault


def _refusal(induce: Callable[[Cluster], Callable[[], None]]) -> FaultFn:
    """Make Redis refuse writes (an error reply, not a lost connection) for ``outage_s``, then undo it.
    Workers must back off and carry on, producers' XADDs are retried, nothing is lost or duplicated."""

    def fault(cluster: Cluster, load: Load, opts: Options) -> Fault:
        pending = cluster.group_backlog()[0]
        restore = induce(cluster)
        at = time.monotonic()
        time.sleep(opts.outage_s)
        restore()
        over = time.monotonic()
        out = Fault(at, over, None, pending)
        out.extra["refused_s"] = round(over - at, 3)
        return out

    return fault


def _lost_read(count: int = 20) -> FaultFn:
    """Deliver ``count`` new entries to w1's consumer name from outside, as a read whose reply never
    reached the worker (a timeout, lost bytes): w1 itself must notice and answer them."""

    def fault(cluster: Cluster, load: Load, opts: Options) -> Fault:
        workers = cluster.alive()
        for name in workers:  # a moment's pause, so that new entries wait undelivered
            cluster.freeze(name)
        deadline = time.monotonic() + 5
        while cluster.group_backlog()[1] < count and time.monotonic() < deadline:
            time.sleep(0.005)
        reply = cluster.admin.xreadgroup(GROUP, "w1", {STREAM: ">"}, count=count)
        at = time.monotonic()
        for name in workers:
            cluster.thaw(name)
        ids = [_text(eid) for _stream, items in reply or [] for eid, _fields in items]
        out = Fault(at, at, cluster.request_ids(ids), cluster.group_backlog()[0])
        out.extra["lost_read_entries"] = len(ids)
        return out

    return fault


# ------------------------------------------------------------------------------------------ scenarios


@contextlib.contextmanager
def _cluster(name: str, opts: Options, workers: Sequence[str], **kw: Any) -> Iterator[Cluster]:
    """A cluster with ``workers`` started and ready, in a scratch (or kept) directory."""
    with workdir(None if opts.work is None else opts.work / name) as work:
        model = make_affine_model(work / f"{MODEL}.onnx")
        with Cluster(work, model, **kw) as cluster:
            for worker in workers:
                cluster.start_worker(worker)
            cluster.wait_ready(list(workers))
            yield cluster


def _client(cluster: Cluster, opts: Options) -> Client:
    return Client(cluster.url, model=MODEL, stream=STREAM, default_timeout_s=opts.request_timeout_s)


def run_load_scenario(
    name: str,
    opts: Options,
    fault: FaultFn,
    *,
    workers: Sequence[str],
    durable: bool = False,
    loses_in_flight: bool = False,
) -> dict[str, Any]:
    """Start ``workers``, submit ``opts.requests`` valid requests, inject ``fault`` part-way, count.

    ``loses_in_flight``: the fault destroys data (Redis restarts empty), so requests in flight at that
    moment may be lost (they end in InferTimeout); every request sent after it must still be answered.
    """
    timeout_s = min(opts.request_timeout_s, opts.loss_timeout_s) if loses_in_flight else opts.request_timeout_s
    with _cluster(name, opts, workers, durable=durable) as cluster:
        dead_before, added_before = cluster.dead_len(), cluster.entries_added()
        started = time.monotonic()
        with _client(cluster, opts) as client:
            load = Load(client, opts.requests, rate_per_s=opts.rate_per_s, timeout_s=timeout_s)
            load.start()
            load.wait_submitted(FAULT_AT)
            info = fault(cluster, load, opts)
            load.join()
            load.wait_answered(timeout_s + 5)
            summary = load.summary()
            recovery = load.recovery(info.at, info.over_at, info.affected)
            lost_after = load.lost_after(info.at)
        pending, lag = _settle(cluster)
        time.sleep(1.0)  # one heartbeat, so that the health hashes hold the final counters
        row = _row(name, summary, cluster.dead_len() - dead_before, pending, lag, time.monotonic() - started)
        row.update(recovery, pending_at_fault=info.pending_at_fault, reclaimed=cluster.health_total("recovered"))
        if not loses_in_flight:
            row["duplicate_entries"] = cluster.entries_added() - added_before - summary.sent  # replayed XADDs
        row.update(info.extra)
        if row["duplicates_seen"] < row.get("replayed", 0):
            row["notes"].append(f"{row['replayed']} requests were replayed but the SDK saw only "
                                f"{row['duplicates_seen']} duplicate replies")  # fmt: skip
        row["notes"] += info.notes
        if info.affected is not None and not row.get("orphaned"):
            row["notes"].append("the fault hit no unacknowledged entry of its victim")
        failures = []
        if loses_in_flight:  # judged on what was sent after the fault, and on losing no more than was in flight
            row["lost_after_fault"] = lost_after
            if lost_after:
                failures.append(f"lost_after_fault={lost_after}")
            if row["lost"] > row["in_flight_at_fault"]:
                failures.append(f"lost={row['lost']} > in_flight_at_fault={row['in_flight_at_fault']}")
        return _finish(cluster, row, skip=("lost",) if loses_in_flight else (), failures=failures)


def run_hostile_scenario(name: str, opts: Options) -> dict[str, Any]:
    """Two workers; ``opts.hostile`` hostile entries interleaved with valid requests from a real client."""
    valid, rate = max(1, opts.requests // 5), opts.rate_per_s / 2
    env = {"WORKER_LIMITS__MAX_BODY_BYTES": str(hostile.MAX_BODY_BYTES)}
    with _cluster(name, opts, ["w1", "w2"], env=env) as cluster:
        cluster.admin.hset(hostile.WRONG_TYPE_KEY, "kind", "hash")
        dead_before = cluster.dead_len()
        started = time.monotonic()
        with _client(cluster, opts) as client:
            entries = hostile.Generator(7, client.reply_stream, opts.skip_hostile).make(opts.hostile)
            load = Load(client, valid, rate_per_s=rate, timeout_s=opts.request_timeout_s)
            sender = threading.Thread(target=_send_hostile, args=(cluster, entries, valid / rate), daemon=True)
            load.start()
            sender.start()
            load.join()
            sender.join()
            load.wait_answered(opts.request_timeout_s + 5)
            pending, lag = _settle(cluster)
            summary = load.summary()
        report = hostile.account(cluster.admin, entries, summary.unknown_replies)
        row = _row(name, summary, cluster.dead_len() - dead_before, pending, lag, time.monotonic() - started)
        row.update(first_reply_s=None, recovery_s=None)
        row.update({f"hostile_{k}": v for k, v in asdict(report).items() if k not in ("by_kind", "examples")})
        row["hostile_by_kind"] = report.by_kind
        row["notes"] += report.examples
        return _finish(cluster, row)


def _send_hostile(cluster: Cluster, entries: list[hostile.Hostile], over_s: float) -> None:
    """XADD the hostile entries in chunks spread evenly over ``over_s`` seconds."""
    chunk = 100
    start = time.monotonic()
    for i in range(0, len(entries), chunk):
        delay = start + over_s * i / len(entries) - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        hostile.send(cluster.admin, entries[i : i + chunk])


def _settle(cluster: Cluster, timeout_s: float = 10.0) -> tuple[int, int]:
    """Wait for the group to have nothing pending and nothing undelivered; returns (pending, lag)."""
    deadline = time.monotonic() + timeout_s
    while True:
        pending, lag = cluster.group_backlog()
        if (pending == 0 and lag == 0) or time.monotonic() > deadline:
            return pending, lag
        time.sleep(0.1)


def _row(name: str, s: LoadSummary, dead: int, pending: int, lag: int, took_s: float) -> dict[str, Any]:
    return {
        "scenario": name,
        "sent": s.sent,
        "ok": s.ok,
        "error_replies": s.error_replies,
        "dead_lettered": dead,
        "lost": s.lost,
        "duplicates_seen": s.duplicates_seen,
        "duplicates_surfaced": s.duplicates_surfaced,
        "wrong_outputs": s.wrong_outputs,
        "unsent": s.unsent,
        "xadd_retries": s.xadd_retries,
        "late_replies": s.late_replies,
        "statuses": s.statuses,
        "pending_left": pending,
        "lag_left": lag,
        "took_s": round(took_s, 1),
        "notes": [],
    }


FATAL = ("lost", "unsent", "duplicates_surfaced", "wrong_outputs", "worker_crashes", "pending_left", "lag_left",
         "hostile_unaccounted")  # fmt: skip


def _finish(
    cluster: Cluster, row: dict[str, Any], *, skip: Sequence[str] = (), failures: Sequence[str] = ()
) -> dict[str, Any]:
    """Check every worker is alive, stop them (each must exit 0), and judge the row: it fails on any
    ``FATAL`` count (but those in ``skip``) and on ``failures``."""
    cluster.check_alive()
    row["workers_alive"] = len(cluster.alive())
    cluster.stop_workers()
    row["worker_crashes"] = len(cluster.crashes)
    row["notes"] += cluster.crashes
    row["failures"] = [f"{key}={row[key]}" for key in FATAL if key not in skip and row.get(key)] + list(failures)
    row["passed"] = not row["failures"]
    return row


def _refusal_scenario(name: str) -> Callable[[Options], dict[str, Any]]:
    fault = _refusal(refusals.INDUCE[name])
    return lambda o: run_load_scenario(f"refused_{name}", o, fault, workers=["w1", "w2"])


SCENARIOS: dict[str, Callable[[Options], dict[str, Any]]] = {
    "kill9_one_of_two": lambda o: run_load_scenario("kill9_one_of_two", o, _kill("w1"), workers=["w1", "w2"]),
    "kill9_only_worker_same_name": lambda o: run_load_scenario(
        "kill9_only_worker_same_name", o, _kill("w1", restart="w1"), workers=["w1"]
    ),
    "kill9_only_worker_new_name": lambda o: run_load_scenario(
        "kill9_only_worker_new_name", o, _kill("w1", restart="w2"), workers=["w1"]
    ),
    "stall_one_of_two": lambda o: run_load_scenario("stall_one_of_two", o, _stall("w1"), workers=["w1", "w2"]),
    "redis_restart": lambda o: run_load_scenario(
        "redis_restart", o, _redis_restart(replay=True), workers=["w1", "w2"], durable=True
    ),
    "redis_restart_empty": lambda o: run_load_scenario(
        "redis_restart_empty", o, _redis_restart(replay=False), workers=["w1", "w2"], loses_in_flight=True
    ),
    "sigterm_with_replacement": lambda o: run_load_scenario(
        "sigterm_with_replacement", o, _sigterm("w1", "w3"), workers=["w1", "w2"]
    ),
    "hostile_entries": lambda o: run_hostile_scenario("hostile_entries", o),
    "lost_read_reply": lambda o: run_load_scenario("lost_read_reply", o, _lost_read(), workers=["w1", "w2"]),
    **{f"refused_{name}": _refusal_scenario(name) for name in refusals.INDUCE},
}


# ---------------------------------------------------------------------------------------------- report

COLUMNS = [
    ("scenario", "scenario"),
    ("sent", "sent"),
    ("ok", "ok"),
    ("error_replies", "err"),
    ("dead_lettered", "dead"),
    ("lost", "lost"),
    ("duplicates_seen", "dup seen"),
    ("duplicates_surfaced", "dup surfaced"),
    ("worker_crashes", "crashes"),
    ("orphaned", "orphaned"),
    ("first_reply_s", "first reply s"),
    ("orphans_answered_s", "orphans done s"),
    ("recovery_s", "recovery s"),
    ("passed", "pass"),
]


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The report as a Markdown table (the same one docs/reliability.md shows)."""

    def cell(row: dict[str, Any], key: str) -> str:
        value = row.get(key)
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "**NO**"
        return str(value)

    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(row, key) for key, _ in COLUMNS) + " |" for row in rows]
    hostile_rows = [r for r in rows if "hostile_sent" in r]
    for r in hostile_rows:
        lines.append("")
        lines.append(
            f"{r['scenario']}: {r['hostile_sent']} hostile entries: {r['hostile_answered']} answered, "
            f"{r['hostile_dead_lettered']} dead-lettered, {r['hostile_unaccounted']} unaccounted, "
            f"{r['hostile_unexpected']} with an unexpected outcome; workers alive: {r['workers_alive']}"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    return {
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def run(names: Sequence[str], opts: Options) -> list[dict[str, Any]]:
    rows = []
    for name in names:
        log.info("scenario %s", name)
        try:
            row = SCENARIOS[name](opts)
        except Exception as exc:  # a broken scenario is a failed row; the others still run
            log.exception("scenario %s could not run", name)
            row = {"scenario": name, "passed": False, "failures": [f"harness: {exc!r}"], "notes": [repr(exc)]}
        log.info("scenario %s: %s", name, "passed" if row["passed"] else f"FAILED {row['failures']}")
        rows.append(row)
    return rows


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Options]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__.split("\n\n")[0])
    defaults = Options()
    p.add_argument("--requests", type=int, default=defaults.requests, help="valid requests per scenario")
    p.add_argument("--hostile", type=int, default=defaults.hostile, help="hostile entries in hostile_entries")
    p.add_argument("--rate", type=float, default=defaults.rate_per_s, help="valid requests per second")
    p.add_argument("--only", nargs="+", choices=sorted(SCENARIOS), help="run only these scenarios")
    p.add_argument("--out", type=Path, default=Path("chaos-report.json"), help="JSON report")
    p.add_argument("--skip-hostile", nargs="+", default=[], choices=hostile.kinds(), help="hostile kinds to leave out")
    p.add_argument("--work", type=Path, help="keep models and worker logs here (default: a temporary dir)")
    args = p.parse_args(argv)
    if args.requests < 1 or args.hostile < 0 or args.rate <= 0:
        p.error("--requests must be >= 1, --hostile >= 0, --rate > 0")
    opts = Options(requests=args.requests, hostile=args.hostile, rate_per_s=args.rate, work=args.work,
                   skip_hostile=frozenset(args.skip_hostile))  # fmt: skip
    return args, opts


def main(argv: Sequence[str] | None = None) -> int:
    args, opts = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    names = args.only or list(SCENARIOS)
    started = time.monotonic()
    rows = run(names, opts)
    meta = {
        **machine(),
        "command": " ".join(["python -m benchmarks.chaos", *(sys.argv[1:] if argv is None else argv)]),
        "took_s": round(time.monotonic() - started, 1),
        "options": {k: str(v) for k, v in asdict(opts).items()},
    }
    for row in rows:
        row["run"] = meta
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(table(rows))
    print(f"\nwrote {args.out} ({meta['took_s']}s, {meta['cpus']} CPUs)")
    failed = [r["scenario"] for r in rows if not r["passed"]]
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
