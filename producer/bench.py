"""Load generator: ``python -m producer bench``, pointed at any deployment, through the public SDK.

Two ways to load a deployment:

- **closed loop** (``--concurrency K``): K requests in flight; each answer sends the next. It finds
  the throughput a fixed number of users gets, and hides queueing delay (a slow server just slows the
  senders down).
- **open loop** (``--rate R``): requests are *scheduled* at a fixed rate R whatever the server does,
  and each latency is measured from its scheduled send time, so a stall shows up in the tail instead of
  silently lowering the offered load ("coordinated omission").

Every request ends in exactly one of ``ok`` (an OK reply), ``errors`` (a non-OK reply, or the SDK
refused or failed to send it) or ``lost`` (no reply before its deadline): ``ok + errors + lost == sent``.
With ``--procs N`` the load is split over N processes (each its own client; ``--concurrency``,
``--rate`` and ``--count`` are totals) and their latencies merged.

Example::

    python -m producer bench --model resnet50 --shape 1,3,224,224 --concurrency 16 --count 5000 --json
    python -m producer bench --model m --sweep 500,1000,2000 --duration 10 --plot sweep.png
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

import numpy as np

from producer.errors import ClientClosed, InferTimeout, ServerError

WARMUP_CONCURRENCY: Final = 8
READY_TIMEOUT_S: Final = 120.0
PROGRESS_INTERVAL_S: Final = 0.2


@dataclass(slots=True)
class LoadSpec:
    """What to send, how, and for how long (for one process; :func:`split` shares it out)."""

    url: str
    stream: str
    model: str
    inputs: dict[str, np.ndarray[Any, Any]]
    concurrency: int = 8  # closed loop: requests in flight (ignored when ``rate`` is set)
    rate_rps: float | None = None  # open loop: scheduled arrivals per second
    count: int | None = None  # measured requests to send; None: until ``duration_s``
    duration_s: float | None = None
    warmup: int = 0  # requests sent (closed loop) before measuring, not counted
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.count is None and self.duration_s is None:
            raise ValueError("give a count or a duration")
        if self.count is not None and self.count < 1:
            raise ValueError(f"count must be >= 1, got {self.count}")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ValueError(f"duration must be positive, got {self.duration_s}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.rate_rps is not None and not self.rate_rps > 0:
            raise ValueError(f"rate must be positive, got {self.rate_rps}")
        if not self.inputs:
            raise ValueError("a request needs at least one input")


@dataclass(slots=True)
class Outcome:
    """What happened to every request one process sent (latencies of the OK ones, in ms)."""

    sent: int = 0
    ok: int = 0
    errors: int = 0
    lost: int = 0
    elapsed_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    error_kinds: dict[str, int] = field(default_factory=dict)

    def record(self, kind: str, latency_s: float, error: str | None = None) -> None:
        """Count one finished request: ``kind`` is ``ok``, ``error`` or ``lost``."""
        if kind == "ok":
            self.ok += 1
            self.latencies_ms.append(latency_s * 1e3)
        elif kind == "lost":
            self.lost += 1
        else:
            self.errors += 1
        if error is not None:
            self.error_kinds[error] = self.error_kinds.get(error, 0) + 1

    def merge(self, other: Outcome) -> None:
        """Add another process's outcome (elapsed: the longest, as they ran side by side)."""
        self.sent += other.sent
        self.ok += other.ok
        self.errors += other.errors
        self.lost += other.lost
        self.elapsed_s = max(self.elapsed_s, other.elapsed_s)
        self.latencies_ms.extend(other.latencies_ms)
        for name, n in other.error_kinds.items():
            self.error_kinds[name] = self.error_kinds.get(name, 0) + n


class Counter:
    """Finished requests so far, readable from another thread or process (one writer each)."""

    def __init__(self, shared: Any = None) -> None:
        self._shared = shared  # a multiprocessing.Value("q") when the writer is another process
        self._local = 0

    def add(self, n: int = 1) -> None:
        if self._shared is not None:
            self._shared.value += n
        else:
            self._local += n

    @property
    def value(self) -> int:
        return int(self._shared.value) if self._shared is not None else self._local


# ---------------------------------------------------------------------------------------------- one process


async def _one(client: Any, spec: LoadSpec, started: float, outcome: Outcome, counter: Counter) -> None:
    """Send one request and record how it ended; latency from ``started`` (loop clock)."""
    loop = asyncio.get_running_loop()
    outcome.sent += 1
    try:
        await client.infer(spec.inputs, timeout=spec.timeout_s)
    except (InferTimeout, ClientClosed) as exc:
        outcome.record("lost", 0.0, type(exc).__name__)
    except ServerError as exc:
        outcome.record("error", 0.0, exc.status.value)
    except Exception as exc:  # InvalidInput, RedisError...: counted as an error, never dropped
        outcome.record("error", 0.0, type(exc).__name__)
    else:
        outcome.record("ok", loop.time() - started)
    counter.add()


class _Budget:
    """Hands out send permits until the count is reached or the duration is over."""

    def __init__(self, count: int | None, duration_s: float | None, now: float) -> None:
        self.left = count
        self.end = None if duration_s is None else now + duration_s

    def take(self, now: float) -> bool:
        if self.end is not None and now >= self.end:
            return False
        if self.left is None:
            return True
        if self.left <= 0:
            return False
        self.left -= 1
        return True


async def _closed(client: Any, spec: LoadSpec, count: int | None, counter: Counter) -> Outcome:
    loop = asyncio.get_running_loop()
    outcome = Outcome()
    t0 = loop.time()
    budget = _Budget(count, spec.duration_s, t0)

    async def user() -> None:
        while budget.take(loop.time()):
            await _one(client, spec, loop.time(), outcome, counter)

    await asyncio.gather(*(user() for _ in range(spec.concurrency)))
    outcome.elapsed_s = loop.time() - t0
    return outcome


async def _open(client: Any, spec: LoadSpec, rate_rps: float, counter: Counter) -> Outcome:
    loop = asyncio.get_running_loop()
    outcome = Outcome()
    interval = 1.0 / rate_rps
    t0 = loop.time()
    budget = _Budget(spec.count, spec.duration_s, t0)
    tasks: set[asyncio.Task[None]] = set()
    i = 0
    while True:
        scheduled = t0 + i * interval
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if not budget.take(scheduled):
            break
        task = asyncio.create_task(_one(client, spec, scheduled, outcome, counter))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        i += 1
    if tasks:
        await asyncio.gather(*tasks)
    outcome.elapsed_s = loop.time() - t0
    return outcome


async def _run(spec: LoadSpec, counter: Counter, go: Callable[[], None]) -> Outcome:
    from producer.aio import AsyncClient

    async with AsyncClient(spec.url, model=spec.model, stream=spec.stream, default_timeout_s=spec.timeout_s) as client:
        if spec.warmup:
            concurrency = min(spec.concurrency, WARMUP_CONCURRENCY)
            warm = replace(spec, concurrency=concurrency, rate_rps=None, count=spec.warmup, duration_s=None)
            await _closed(client, warm, spec.warmup, Counter())
        await asyncio.get_running_loop().run_in_executor(None, go)  # wait for the other processes
        if spec.rate_rps is not None:
            return await _open(client, spec, spec.rate_rps, counter)
        return await _closed(client, spec, spec.count, counter)


def run_load(spec: LoadSpec, counter: Counter | None = None, go: Callable[[], None] = lambda: None) -> Outcome:
    """Run one process's share of the load with an :class:`~producer.aio.AsyncClient`; blocks until done."""
    return asyncio.run(_run(spec, counter or Counter(), go))


# ------------------------------------------------------------------------------------------ several processes


def split(spec: LoadSpec, procs: int) -> list[LoadSpec]:
    """Share a load out over ``procs`` processes: count, concurrency and rate are totals."""
    if procs < 1:
        raise ValueError(f"procs must be >= 1, got {procs}")
    if spec.rate_rps is None and spec.concurrency < procs:
        raise ValueError(f"concurrency {spec.concurrency} is below procs {procs}: each process needs one")
    shares = []
    for i in range(procs):
        count = None if spec.count is None else spec.count // procs + (i < spec.count % procs)
        if count == 0:
            continue
        concurrency = spec.concurrency // procs + (i < spec.concurrency % procs)
        rate = None if spec.rate_rps is None else spec.rate_rps / procs
        warmup = -(-spec.warmup // procs)
        shares.append(replace(spec, count=count, concurrency=concurrency, rate_rps=rate, warmup=warmup))
    return shares


def _child(spec: LoadSpec, shared: Any, barrier: Any, results: Any) -> None:
    try:
        outcome = run_load(spec, Counter(shared), lambda: barrier.wait(READY_TIMEOUT_S))
    except BaseException as exc:  # reported by the parent, never a silent hang
        results.put(("failed", f"{type(exc).__name__}: {exc}"))
        with contextlib.suppress(Exception):
            barrier.abort()
        return
    results.put(("ok", outcome))


def run_procs(spec: LoadSpec, procs: int, on_progress: Callable[[int], None] | None = None) -> Outcome:
    """Run the load over ``procs`` processes and merge their outcomes.

    Raises:
        RuntimeError: If a process failed before it finished (its error is in the message).
    """
    shares = split(spec, procs)
    if len(shares) == 1 and procs == 1:
        return _in_process(shares[0], on_progress)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(shares) + 1)
    results = ctx.Queue()
    values = [ctx.Value("q", 0, lock=False) for _ in shares]
    children = [
        ctx.Process(target=_child, args=(share, value, barrier, results), daemon=True)
        for share, value in zip(shares, values, strict=True)
    ]
    for child in children:
        child.start()
    try:
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(READY_TIMEOUT_S)
        merged = Outcome()
        failures = []
        for _ in children:
            status, payload = _next_result(results, children, values, on_progress)
            if status == "ok":
                merged.merge(payload)
            else:
                failures.append(payload)
        if failures:
            raise RuntimeError(f"{len(failures)} load process(es) failed: {failures[0]}")
        return merged
    finally:
        for child in children:
            child.join(5)
            if child.is_alive():
                child.kill()


def _next_result(results: Any, children: list[Any], values: list[Any], on_progress: Any) -> tuple[str, Any]:
    import queue

    while True:
        if on_progress is not None:
            on_progress(sum(int(v.value) for v in values))
        try:
            item: tuple[str, Any] = results.get(timeout=PROGRESS_INTERVAL_S)
            return item
        except queue.Empty:
            if not any(child.is_alive() for child in children):
                return "failed", "a load process exited without a result"


def _in_process(spec: LoadSpec, on_progress: Callable[[int], None] | None) -> Outcome:
    counter = Counter()
    if on_progress is None:
        return run_load(spec, counter)
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(PROGRESS_INTERVAL_S):
            on_progress(counter.value)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        return run_load(spec, counter)
    finally:
        stop.set()
        poller.join()
        on_progress(counter.value)


# --------------------------------------------------------------------------------------------------- results


def summarize(outcome: Outcome, spec: LoadSpec, procs: int) -> dict[str, Any]:
    """The run as one JSON-ready object (latency percentiles over the OK requests)."""
    lat = np.asarray(outcome.latencies_ms, dtype=np.float64)
    pct: dict[str, float | None] = dict.fromkeys(("p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms"))
    if lat.size:
        p50, p90, p99, p999 = np.percentile(lat, [50, 90, 99, 99.9])
        pct.update(p50_ms=p50, p90_ms=p90, p99_ms=p99, p999_ms=p999, max_ms=lat.max(), mean_ms=lat.mean())
    elapsed = outcome.elapsed_s
    return {
        "mode": "open" if spec.rate_rps is not None else "closed",
        "concurrency": None if spec.rate_rps is not None else spec.concurrency,
        "rate_rps": spec.rate_rps,
        "procs": procs,
        "sent": outcome.sent,
        "ok": outcome.ok,
        "errors": outcome.errors,
        "lost": outcome.lost,
        "elapsed_s": elapsed,
        "throughput_rps": outcome.ok / elapsed if elapsed > 0 else 0.0,
        "offered_rps": outcome.sent / elapsed if elapsed > 0 else 0.0,
        **{k: None if v is None else float(v) for k, v in pct.items()},
        "error_kinds": dict(sorted(outcome.error_kinds.items())),
    }


@contextlib.contextmanager
def progress_bar(total: int | None, enabled: bool) -> Iterator[Callable[[int], None] | None]:
    """A tqdm bar fed with the count of finished requests; None when off or tqdm is missing."""
    if not enabled:
        yield None
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield None
        return
    bar = tqdm(total=total, unit="req", desc="bench", leave=False)
    try:
        yield lambda done: bar.update(done - bar.n)
    finally:
        bar.close()


def format_summary(result: Mapping[str, Any]) -> str:
    """One run as human-readable lines."""

    def ms(key: str) -> str:
        value = result.get(key)
        return "-" if value is None else f"{value:.2f}"

    load = f"rate {result['rate_rps']:g}/s" if result["mode"] == "open" else f"concurrency {result['concurrency']}"
    return (
        f"{result['mode']} loop, {load}, {result['procs']} process(es): {result['elapsed_s']:.2f} s\n"
        f"  sent {result['sent']}  ok {result['ok']}  errors {result['errors']}  lost {result['lost']}"
        f"{'  ' + str(result['error_kinds']) if result['error_kinds'] else ''}\n"
        f"  throughput {result['throughput_rps']:.0f} req/s (offered {result['offered_rps']:.0f})\n"
        f"  latency ms: p50 {ms('p50_ms')}  p90 {ms('p90_ms')}  p99 {ms('p99_ms')}  p99.9 {ms('p999_ms')}"
        f"  max {ms('max_ms')}"
    )


def measure(spec: LoadSpec, procs: int = 1, progress: bool = False) -> tuple[dict[str, Any], list[float]]:
    """Run one load and return its summary and the OK latencies (ms)."""
    with progress_bar(spec.count, progress) as on_progress:
        outcome = run_procs(spec, procs, on_progress)
    return summarize(outcome, spec, procs), outcome.latencies_ms
