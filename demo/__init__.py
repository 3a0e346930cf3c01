"""Self-contained demo of redis-infer: the real text-orientation model, real Redis, real worker processes.

Shared by ``python -m demo`` and ``benchmarks.e2e``: ``WorkerPool`` runs worker processes and waits for
their health keys, ``run_load`` drives a ``producer.Client`` with a bounded number of requests in flight
and records client- and server-side timings, ``summarize`` turns those into numbers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import redis

from redis_infer_protocol import keys

DEFAULT_STREAM = keys.DEFAULT_STREAM
READY_STATUS = b"ready"
LOG_TAIL_LINES = 40


class DemoError(RuntimeError):
    """The demo or benchmark cannot go on (worker failed to start, requests failed...)."""


# ------------------------------------------------------------------------------------- worker processes


@dataclass(slots=True)
class WorkerProcess:
    consumer: str
    proc: subprocess.Popen[bytes]
    log_path: Path


class WorkerPool:
    """Runs ``count`` worker processes (``python -m worker run``) against one Redis and stream.

    Workers run in their own session, so a Ctrl-C in the terminal reaches only us and we stop them in
    order (SIGTERM, then SIGKILL after ``stop_timeout_s``). Their output goes to one log file each.

    Args:
        model: the ONNX model file.
        redis_url: where the workers connect.
        count: number of worker processes.
        stream: request stream key.
        env: extra ``WORKER_*`` settings (they override the inherited environment).
        name: prefix of the consumer names.
    """

    def __init__(
        self,
        model: Path,
        redis_url: str,
        *,
        count: int,
        stream: str = DEFAULT_STREAM,
        env: Mapping[str, str] | None = None,
        name: str = "demo",
        stop_timeout_s: float = 20.0,
    ) -> None:
        self.model = Path(model)
        self.redis_url = redis_url
        self.count = count
        self.stream = stream
        self.extra_env = dict(env or {})
        self.name = name
        self.stop_timeout_s = stop_timeout_s
        self.workers: list[WorkerProcess] = []
        self._log_dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def consumers(self) -> list[str]:
        return [w.consumer for w in self.workers]

    def health_key(self, consumer: str) -> str:
        return keys.health_key(self.stream, consumer)

    def start(self) -> WorkerPool:
        self._log_dir = tempfile.TemporaryDirectory(prefix="redis-infer-workers-")
        for i in range(1, self.count + 1):
            consumer = f"{self.name}-{os.getpid()}-w{i}"
            env = {
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                "WORKER_REDIS__URL": self.redis_url,
                "WORKER_STREAM": self.stream,
                "WORKER_CONSUMER": consumer,
                **self.extra_env,
            }
            log_path = Path(self._log_dir.name) / f"{consumer}.log"
            with log_path.open("wb") as log_file:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "worker", "run", "--model", str(self.model)],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.workers.append(WorkerProcess(consumer, proc, log_path))
        return self

    def wait_ready(self, timeout_s: float = 60.0, poll_s: float = 0.1) -> None:
        """Block until every worker's health hash says ``status: ready``.

        Raises:
            DemoError: a worker exited, or not all were ready in time; the message holds their logs.
        """
        client = redis.Redis.from_url(self.redis_url)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                dead = [w for w in self.workers if w.proc.poll() is not None]
                if dead:
                    codes = ", ".join(f"{w.consumer} exited with {w.proc.returncode}" for w in dead)
                    raise DemoError(f"worker failed to start ({codes})\n{self.logs()}")
                ready = self._ready(client)
                if len(ready) == len(self.workers):
                    return
                if time.monotonic() >= deadline:
                    waiting = sorted(set(self.consumers) - ready)
                    raise DemoError(
                        f"workers not ready after {timeout_s:g} s (no '{self.stream}:worker:<consumer>' hash with"
                        f" status=ready for {waiting})\n{self.logs()}"
                    )
                time.sleep(poll_s)
        finally:
            client.close()

    def _ready(self, client: redis.Redis) -> set[str]:
        prefix = keys.health_key(self.stream, "")
        ready: set[str] = set()
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            consumer = key.decode()[len(prefix) :]
            if consumer in self.consumers and client.hget(key, "status") == READY_STATUS:
                ready.add(consumer)
        return ready

    def logs(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of each worker's output."""
        parts = []
        for w in self.workers:
            try:
                text = w.log_path.read_text(errors="replace").splitlines()
            except OSError:
                text = ["<no log>"]
            state = "running" if w.proc.poll() is None else f"exit code {w.proc.returncode}"
            parts.append(f"----- {w.consumer} ({state}), last {lines} lines of output -----")
            parts.extend(text[-lines:])
        return "\n".join(parts)

    def stop(self) -> dict[str, int | None]:
        """SIGTERM every worker, wait up to ``stop_timeout_s`` in all, SIGKILL the rest. Returns exit codes.

        A second Ctrl-C while waiting kills them at once.
        """
        for w in self.workers:
            if w.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        try:
            for w in self.workers:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    w.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        finally:
            for w in self.workers:
                if w.proc.poll() is None:
                    w.proc.kill()
                    w.proc.wait()
        return {w.consumer: w.proc.returncode for w in self.workers}

    def cleanup(self) -> None:
        if self._log_dir is not None:
            self._log_dir.cleanup()
            self._log_dir = None

    def __enter__(self) -> WorkerPool:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.stop()
        finally:
            self.cleanup()


# ------------------------------------------------------------------------------------------------ load


@dataclass(slots=True)
class Sample:
    """One request as the client saw it, plus the reply's server-side trace."""

    label: Any  # what was sent (e.g. the rotation)
    submit_wall_ns: int
    submit_mono_ns: int
    done_wall_ns: int = 0
    done_mono_ns: int = 0
    reply: Any = None  # redis_infer_protocol.codec.Reply when it succeeded
    error: BaseException | None = None

    @property
    def latency_s(self) -> float:
        return (self.done_mono_ns - self.submit_mono_ns) / 1e9


@dataclass(slots=True)
class LoadResult:
    samples: list[Sample] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.reply is not None]

    @property
    def failed(self) -> list[Sample]:
        return [s for s in self.samples if s.reply is None]


def run_load(
    client: Any,
    requests: Iterable[tuple[Any, Mapping[str, np.ndarray]]],
    *,
    concurrency: int,
    timeout_s: float = 60.0,
    on_done: Callable[[Sample], None] | None = None,
) -> LoadResult:
    """Submit every ``(label, inputs)`` through ``client.submit`` with at most ``concurrency`` in flight.

    ``on_done`` runs in the client's reply thread, so keep it short (a progress bar update).
    """
    slots = threading.BoundedSemaphore(concurrency)
    result = LoadResult()
    pending: list[Future[Any]] = []

    def finish(sample: Sample, future: Future[Any]) -> None:
        sample.done_mono_ns = time.perf_counter_ns()
        sample.done_wall_ns = time.time_ns()
        try:
            sample.reply = future.result()
        except BaseException as exc:
            sample.error = exc
        slots.release()
        if on_done is not None:
            on_done(sample)

    start = time.perf_counter()
    for label, inputs in requests:
        slots.acquire()
        sample = Sample(label, time.time_ns(), time.perf_counter_ns())
        result.samples.append(sample)
        try:
            future = client.submit(dict(inputs), timeout=timeout_s)
        except BaseException:
            slots.release()
            raise
        future.add_done_callback(lambda f, s=sample: finish(s, f))
        pending.append(future)
    for future in pending:
        with contextlib.suppress(BaseException):
            future.result(timeout=timeout_s + 5)
    result.elapsed_s = time.perf_counter() - start
    return result


# ------------------------------------------------------------------------------------------- summaries

# (name, from-field, to-field) of the reply's timing trace (wall-clock ns)
STAGES: tuple[tuple[str, str, str], ...] = (
    ("in stream (enqueued -> read)", "enqueued_ns", "read_ns"),
    ("in worker: batching + slot wait (read -> batched)", "read_ns", "batched_ns"),
    ("staging copy (batched -> compute start)", "batched_ns", "compute_start_ns"),
    ("compute (engine run)", "compute_start_ns", "compute_end_ns"),
    ("reply encode (compute end -> published)", "compute_end_ns", "published_ns"),
)


def percentiles_ms(values_s: Sequence[float], points: Sequence[float] = (50, 90, 99)) -> dict[str, float]:
    """``{"p50": ms, ..., "max": ms, "mean": ms}`` of latencies given in seconds."""
    if not values_s:
        return {}
    arr = np.asarray(values_s, dtype=np.float64) * 1e3
    out = {f"p{p:g}": float(np.percentile(arr, p)) for p in points}
    out["max"] = float(arr.max())
    out["mean"] = float(arr.mean())
    return out


def server_breakdown_ms(samples: Sequence[Sample]) -> dict[str, float]:
    """Mean milliseconds of each server-side stage, plus the client-side remainder.

    ``enqueued_ns`` comes from the stream entry id (Redis clock, millisecond resolution), so the queue
    wait is only good to about a millisecond; every clock here is this machine's.
    """
    replies = [s for s in samples if s.reply is not None]
    if not replies:
        return {}
    out: dict[str, float] = {}
    for name, start, end in STAGES:
        deltas = [getattr(s.reply.timing, end) - getattr(s.reply.timing, start) for s in replies]
        out[name] = float(np.mean(deltas)) / 1e6
    out["client encode + XADD (submit -> enqueued)"] = (
        float(np.mean([s.reply.timing.enqueued_ns - s.submit_wall_ns for s in replies])) / 1e6
    )
    out["reply XADD + client read (published -> done)"] = (
        float(np.mean([s.done_wall_ns - s.reply.timing.published_ns for s in replies])) / 1e6
    )
    return out


def batch_stats(samples: Sequence[Sample]) -> tuple[float, float, Counter[str]]:
    """(mean batch size per batch, mean batch size per request, requests per worker).

    Replies carry the size of their batch, not its identity: a batch of size b is seen by b requests,
    so the number of batches is the sum of 1/b over requests (every request here is one row).
    """
    replies = [s.reply for s in samples if s.reply is not None]
    sizes = [r.batch_size for r in replies if r.batch_size > 0]
    if not sizes:
        return 0.0, 0.0, Counter(r.worker or "?" for r in replies)
    per_batch = len(sizes) / sum(1.0 / b for b in sizes)
    return per_batch, float(np.mean(sizes)), Counter(r.worker or "?" for r in replies)


def interrupt_on_signals() -> None:
    """Turn SIGTERM (and SIGINT, even where a shell started us with it ignored) into KeyboardInterrupt,
    so that ``finally`` blocks stop the worker processes and Redis instead of orphaning them."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


def scratch_stream(prefix: str) -> str:
    """A request stream of our own, so that a shared Redis's real streams and workers are never touched."""
    return f"redis-infer-{prefix}:{os.getpid()}:requests"


def drop_stream(url: str, stream: str) -> None:
    """Delete a scratch stream and the keys derived from it (acked entries stay in a stream until deleted)."""
    client = redis.Redis.from_url(url)
    try:
        client.delete(*keys.stream_keys(stream), *client.scan_iter(match=keys.health_pattern(stream), count=1000))
    finally:
        client.close()


def wait_for_redis(url: str, timeout_s: float = 10.0) -> None:
    """Ping until Redis answers (a URL given by the user may point at a server still starting)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=1.0)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError as exc:
                if time.monotonic() >= deadline:
                    raise DemoError(f"cannot reach Redis at {url}: {exc}") from None
                time.sleep(0.2)
    finally:
        client.close()
