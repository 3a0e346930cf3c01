"""arq as the peer queue: the same float32[1, 512] payload and y = 2x, enqueue alone, drain alone, burst.

arq is a general job queue (a sorted set, one key per job and per result, pickle), not a Streams
inference loop; it is here as the Python queue a user would otherwise pick. Needs the ``peers`` extra.

The worker settings below are what ``python -m arq benchmarks.suite_arq.WorkerSettings`` runs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.suite_parts import DIM, WAIT_TIMEOUT_S, cpu_s, start_process

ENV_URL = "BENCH_ARQ_URL"
ENQUEUE_CHUNK = 100


async def infer(ctx: dict[str, Any], data: bytes) -> bytes:
    """The job: y = 2x on one request's bytes."""
    return (np.frombuffer(data, "<f4") * np.float32(2)).tobytes()


try:
    from arq.connections import RedisSettings

    class WorkerSettings:
        functions = [infer]
        redis_settings = RedisSettings.from_dsn(os.environ.get(ENV_URL, "redis://127.0.0.1:6379/0"))
        max_jobs = 256
        poll_delay = 0.01
        keep_result = 3600

except ImportError:  # arq absent: run_arq reports it
    pass


async def _results(pool: Any) -> int:
    return len(await pool.keys("arq:result:*"))


async def _wait_results(pool: Any, n: int) -> int:
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    done = await _results(pool)
    while done < n and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        done = await _results(pool)
    return done


async def _enqueue(pool: Any, n: int, data: bytes) -> None:
    for start in range(0, n, ENQUEUE_CHUNK):
        await asyncio.gather(*(pool.enqueue_job("infer", data) for _ in range(min(ENQUEUE_CHUNK, n - start))))


async def _measure(url: str, n: int, redis_pid: int | None, worker: Any) -> dict[str, Any]:
    from arq import create_pool
    from arq.connections import RedisSettings

    pool = await create_pool(RedisSettings.from_dsn(url))
    data = np.random.default_rng(0).standard_normal(DIM).astype("<f4").tobytes()
    out: dict[str, Any] = {"workers": 1}
    try:
        await _enqueue(pool, 50, data)  # warm-up; also proves the worker runs
        if await _wait_results(pool, 50) < 50:
            raise RuntimeError("arq worker answered no warm-up job")
        await pool.flushdb()
        t0, c0 = time.perf_counter(), cpu_s(redis_pid)
        await _enqueue(pool, n, data)
        done = await _wait_results(pool, n)
        out["burst"] = _figure(n, done, time.perf_counter() - t0, c0, redis_pid)
        await pool.flushdb()
        worker.send_signal(signal.SIGSTOP)
        t0, c0 = time.perf_counter(), cpu_s(redis_pid)
        await _enqueue(pool, n, data)
        out["enqueue"] = _figure(n, n, time.perf_counter() - t0, c0, redis_pid)
        t0, c0 = time.perf_counter(), cpu_s(redis_pid)
        worker.send_signal(signal.SIGCONT)
        done = await _wait_results(pool, n)
        out["drain"] = _figure(n, done, time.perf_counter() - t0, c0, redis_pid)
    finally:
        await pool.aclose()
    return out


def _figure(n: int, done: int, elapsed: float, cpu0: float | None, pid: int | None) -> dict[str, Any]:
    cpu1 = cpu_s(pid)
    pct = None if cpu0 is None or cpu1 is None else 100 * (cpu1 - cpu0) / elapsed
    return {"rps": done / elapsed, "elapsed_s": elapsed, "count": n, "answered": done, "redis_cpu_pct": pct}


def run_arq(url: str, n: int, redis_pid: int | None, logs: Path) -> dict[str, Any] | None:
    """Burst, enqueue alone and drain alone through arq with one worker process; None if arq is absent."""
    try:
        import arq  # noqa: F401
    except ImportError:
        return None
    argv = ["-m", "arq", "benchmarks.suite_arq.WorkerSettings"]
    worker = start_process(argv, {ENV_URL: url}, logs / "arq.log")
    try:
        return asyncio.run(_measure(url, n, redis_pid, worker))
    finally:
        worker.send_signal(signal.SIGCONT)
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()


if __name__ == "__main__":
    print("run through python -m benchmarks.suite", file=sys.stderr)
    sys.exit(2)
