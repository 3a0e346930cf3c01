"""The measurements ``benchmarks.suite`` runs: processes, Redis CPU, and each loop under the same load.

Payload float32[1, 512] (2 KB); the project's worker serves y = 2x + 1 (an ONNX model, engine nearly
free), the featureless loop y = 2x. Workers are paused with SIGSTOP to measure enqueue alone, and
resumed with SIGCONT to measure the drain of the backlog they find.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis

ROOT = Path(__file__).resolve().parent.parent
DIM = 512
CHUNK = 100  # requests per pipelined submit, as the featureless producer does
READY_TIMEOUT_S = 90.0
WAIT_TIMEOUT_S = 300.0
PROJECT_ENV = {
    "WORKER_BATCH__MAX_SIZE": "256",
    "WORKER_STREAMS__READ_COUNT": "256",
    "WORKER_STREAMS__REPLY_MAXLEN": "10000000",
    "WORKER_ONNX__INTRA_OP_THREADS": "1",
    "WORKER_LOG_LEVEL": "WARNING",
}


def start_process(argv: Sequence[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start one worker process (the one place to swap for a shared test harness)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, *argv], env={**os.environ, **env}, cwd=ROOT,
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of a process so far (Linux /proc), or None."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(slots=True)
class Figure:
    """One measured number with the context needed to read it."""

    rps: float
    elapsed_s: float
    count: int
    answered: int
    redis_cpu_pct: float | None = None  # of one core, during the measurement
    p50_ms: float | None = None
    p99_ms: float | None = None


@contextmanager
def redis_cpu(pid: int | None, out: dict[str, float | None]) -> Iterator[None]:
    """Put redis-server's CPU use (percent of one core) over the block into ``out['pct']``."""
    before, t0 = cpu_s(pid), time.perf_counter()
    yield
    after, elapsed = cpu_s(pid), time.perf_counter() - t0
    out["pct"] = None if before is None or after is None or elapsed <= 0 else 100 * (after - before) / elapsed


class Workers:
    """N worker processes of one kind on one stream; paused and resumed with SIGSTOP/SIGCONT."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], url: str, stream: str, n: int, log_dir: Path):
        self.url, self.stream = url, stream
        self.consumers = [f"bench-{stream.rsplit(':', 1)[-1]}-{i}" for i in range(n)]
        self.procs = [
            start_process([*argv, "--consumer", c], {**env, "WORKER_CONSUMER": c}, log_dir / f"{c}.log")
            for c in self.consumers
        ]
        self.log_dir = log_dir

    def wait_ready(self) -> None:
        r = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + READY_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                if any(p.poll() is not None for p in self.procs):
                    raise RuntimeError(f"a worker exited early; logs in {self.log_dir}")
                if all(r.hget(f"{self.stream}:worker:{c}", "status") == b"ready" for c in self.consumers):
                    return
                time.sleep(0.05)
        finally:
            r.close()
        raise RuntimeError(f"workers not ready in {READY_TIMEOUT_S} s; logs in {self.log_dir}")

    def signal(self, sig: int) -> None:
        for p in self.procs:
            p.send_signal(sig)

    def stop(self) -> None:
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def ideal_workers(url: str, stream: str, n: int, log_dir: Path) -> Workers:
    return Workers(["-m", "benchmarks.ideal", "worker", "--url", url, "--stream", stream], {}, url, stream, n, log_dir)


def project_workers(url: str, stream: str, n: int, log_dir: Path, model: Path, max_delay_ms: float = 2.0) -> Workers:
    env = {
        **PROJECT_ENV,
        "WORKER_REDIS__URL": url,
        "WORKER_STREAM": stream,
        "WORKER_BATCH__MAX_DELAY_MS": str(max_delay_ms),
    }
    return Workers(["-m", "worker", "run", "--model", str(model)], env, url, stream, n, log_dir)


# --------------------------------------------------------------------------------------------------- drivers


class IdealDriver:
    """The featureless producer (raw redis-py, pipelined XADDs, one reply stream)."""

    def __init__(self, url: str, stream: str) -> None:
        from benchmarks.ideal import Producer

        self.p = Producer(url, stream, DIM, model="affine")

    def burst(self, n: int) -> tuple[int, float]:
        r = self.p.burst(n, WAIT_TIMEOUT_S)
        return r.received, r.elapsed_s

    def closed(self, n: int, in_flight: int) -> Figure:
        r = self.p.closed_loop(n, in_flight, WAIT_TIMEOUT_S)
        return Figure(r.throughput_rps, r.elapsed_s, r.sent, r.received, p50_ms=r.p50_ms, p99_ms=r.p99_ms)

    def enqueue(self, n: int) -> Callable[[], int]:
        self.p.enqueue(n)
        return lambda: self.p.wait_for(n, WAIT_TIMEOUT_S)

    def close(self) -> None:
        self.p.close()


class SdkDriver:
    """The project's SDK: ``Client.submit_many`` in chunks of 100; closed loop via ``producer.bench``."""

    def __init__(self, url: str, stream: str) -> None:
        from producer import Client

        self.url, self.stream = url, stream
        self.client = Client(url, model="affine", stream=stream, default_timeout_s=WAIT_TIMEOUT_S)
        self.x = np.random.default_rng(0).standard_normal((1, DIM)).astype(np.float32)

    def _send(self, n: int) -> list[concurrent.futures.Future[Any]]:
        futures: list[concurrent.futures.Future[Any]] = []
        for start in range(0, n, CHUNK):
            futures += self.client.submit_many([{"x": self.x}] * min(CHUNK, n - start))
        return futures

    @staticmethod
    def _answered(futures: list[concurrent.futures.Future[Any]]) -> int:
        concurrent.futures.wait(futures, WAIT_TIMEOUT_S)
        return sum(1 for f in futures if f.done() and not f.cancelled() and f.exception() is None)

    def burst(self, n: int) -> tuple[int, float]:
        t0 = time.perf_counter()
        answered = self._answered(self._send(n))
        return answered, time.perf_counter() - t0

    def closed(self, n: int, in_flight: int) -> Figure:
        from producer.bench import LoadSpec, run_procs, summarize

        spec = LoadSpec(self.url, self.stream, "affine", {"x": self.x}, concurrency=in_flight, count=n, warmup=50)
        s = summarize(run_procs(spec, 1), spec, 1)
        return Figure(s["throughput_rps"], s["elapsed_s"], s["sent"], s["ok"], p50_ms=s["p50_ms"], p99_ms=s["p99_ms"])

    def enqueue(self, n: int) -> Callable[[], int]:
        futures = self._send(n)
        return lambda: self._answered(futures)

    def close(self) -> None:
        self.client.close()


def measure_loop(driver: Any, workers: Workers, redis_pid: int | None, sizes: Mapping[str, int]) -> dict[str, Any]:
    """Burst, closed loop (8 in flight), enqueue alone (workers paused), drain alone (resumed)."""
    out: dict[str, Any] = {}
    cpu: dict[str, float | None] = {}
    driver.burst(min(500, sizes["burst"]))  # warm-up: connections, imports, first batches
    with redis_cpu(redis_pid, cpu):
        answered, elapsed = driver.burst(sizes["burst"])
    out["burst"] = Figure(answered / elapsed, elapsed, sizes["burst"], answered, cpu["pct"])
    with redis_cpu(redis_pid, cpu):
        closed = driver.closed(sizes["closed"], 8)
    closed.redis_cpu_pct = cpu["pct"]
    out["closed8"] = closed
    workers.signal(signal.SIGSTOP)
    n = sizes["backlog"]
    with redis_cpu(redis_pid, cpu):
        t0 = time.perf_counter()
        wait = driver.enqueue(n)
        elapsed = time.perf_counter() - t0
    out["enqueue"] = Figure(n / elapsed, elapsed, n, n, cpu["pct"])
    with redis_cpu(redis_pid, cpu):
        t0 = time.perf_counter()
        workers.signal(signal.SIGCONT)
        answered = wait()
        elapsed = time.perf_counter() - t0
    out["drain"] = Figure(answered / elapsed, elapsed, n, answered, cpu["pct"])
    return {k: asdict(v) for k, v in out.items()}


def redis_ceiling(port: int, n: int) -> dict[str, Any] | None:
    """``redis-benchmark`` XADD of a 2 KB field, pipelined 100 deep: what Redis alone takes in."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return None
    value = "x" * (4 * DIM)
    argv = [binary, "-p", str(port), "-n", str(n), "-P", "100", "-c", "4", "--csv", "XADD", "bench:ceiling", "*"]
    done = subprocess.run([*argv, "body", value], capture_output=True, text=True, timeout=300, check=False)
    for line in done.stdout.splitlines():
        parts = [p.strip('"') for p in line.split(",")]
        if len(parts) > 1 and parts[0].upper().startswith("XADD"):
            return {"rps": float(parts[1]), "count": n, "tool": binary}
    return {"rps": None, "count": n, "tool": binary, "error": (done.stderr or done.stdout)[-300:]}
