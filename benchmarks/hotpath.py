"""The worker's hot path alone: drain a waiting backlog in-process, optionally under cProfile.

A private redis-server gets N request entries (float32[1, D], written by a raw pipeline so that the
producer costs nothing while the worker runs); then one ``Worker`` in this process, serving a numpy
engine (y = 2x, free next to the worker's own work), drains them. The figure is requests/s from the
worker's start until every entry is acknowledged. With ``--profile FILE`` the worker's event loop runs
under cProfile and the top functions are printed (cumulative and own time), for the cost by stage.

Usage::

    python -m benchmarks.hotpath --requests 20000 --rounds 3 [--profile /tmp/hot.prof] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import redis

from redis_infer_protocol.codec import encode_request
from worker.config import load_settings
from worker.engines.base import ExecutionSlot, ModelInfo, Shapes, TensorSpec
from worker.runner import serve
from worker.service import Worker
from worker.settle_script import Write, command
from worker.testing import redis_server
from worker.transport import Outcome, Transport


class Doubler:
    """y = 2x on FP32 [N, D]: an engine that costs next to nothing, so the worker's path is what is timed."""

    def __init__(self, dim: int, max_batch: int) -> None:
        spec = TensorSpec("x", "FP32", (-1, dim))
        self._info = ModelInfo("bench", (spec,), (TensorSpec("y", "FP32", (-1, dim)),), max_batch_size=max_batch)
        self._slots = [_DoublerSlot()]

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def slots(self) -> Sequence[ExecutionSlot]:
        return self._slots

    def close(self) -> None:
        pass


class _DoublerSlot:
    def __init__(self) -> None:
        self.x = np.empty((0, 0), np.float32)

    def stage(self, shapes: Shapes) -> dict[str, np.ndarray[Any, Any]]:
        self.x = np.empty(shapes["x"], np.float32)
        return {"x": self.x}

    async def run(self) -> Mapping[str, np.ndarray[Any, Any]]:
        return {"y": self.x * 2}


async def _pipeline_settle(self: Transport, todo: Sequence[Outcome], writes: list[Write]) -> dict[int, str]:
    """Candidate (b) for the settle, for comparison only (``--settle pipeline``): the settle script's
    writes as a hand-packed pipeline of XADDs, then a second round trip with the EXPIREs and the XACK of
    the entries whose writes all succeeded (a pipeline carrying the XACK with the XADDs would ack an
    entry whose XADD failed)."""
    first = []
    for w in writes:
        if w.dead:
            bound = (b"MAXLEN", b"%d" % self.dead_letters.maxlen) if self.dead_letters.maxlen else ()
            first.append(command((b"XADD", self.dead_letter_stream.encode(), *bound, b"*", *w.fields)))
        else:
            first.append(command((b"XADD", w.key.encode(), b"MAXLEN", b"~", b"%d" % self.reply_maxlen, b"*",
                                  *w.fields)))  # fmt: skip
    answers = await _call_many(self, first)
    failed = {i: str(a) for i, a in enumerate(answers) if isinstance(a, Exception)}
    unacked = {writes[i].entry for i in failed}
    streams = {w.key for i, w in enumerate(writes) if not w.dead and i not in failed}
    acks = [o.entry_id.encode() for index, o in enumerate(todo, start=1) if index not in unacked]
    second = [command((b"EXPIRE", key.encode(), b"%d" % self.reply_ttl_s)) for key in streams]
    if acks:
        second.append(command((b"XACK", self.stream.encode(), self.group.encode(), *acks)))
    await _call_many(self, second)
    return failed


async def _call_many(transport: Transport, commands: list[bytes]) -> list[Any]:
    pool = transport.client.connection_pool
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    answers: list[Any] = []
    try:
        await conn.send_packed_command(b"".join(commands))
        for _ in commands:
            try:
                answers.append(await conn.read_response())
            except redis.ResponseError as exc:
                answers.append(exc)
    except BaseException:
        await conn.disconnect()
        raise
    finally:
        await pool.release(conn)
    return answers


def fill(url: str, requests: int, dim: int) -> None:
    """Write ``requests`` entries to the default request stream."""
    client = redis.Redis.from_url(url)
    x = np.ones((1, dim), np.float32)
    for start in range(0, requests, 500):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(requests, start + 500)):
            pipe.xadd("infer:requests", encode_request(f"r{i}", "infer:reply:bench", "bench", {"x": x}))  # type: ignore[arg-type]
        pipe.execute()
    client.close()


def redis_cpu_s(url: str) -> float:
    """CPU seconds redis-server has used so far (user + system, from /proc)."""
    client = redis.Redis.from_url(url)
    pid = int(client.info("server")["process_id"])
    client.close()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drain(url: str, requests: int, dim: int, batch: int, profiler: cProfile.Profile | None) -> dict[str, float]:
    """One in-process worker answers and acknowledges ``requests`` waiting entries: seconds it took, and
    the CPU seconds of this process and of redis-server meanwhile."""
    settings = load_settings(
        check_env=False,
        redis={"url": url},
        model={"path": "unused.onnx"},
        streams={"block_ms": 50, "read_count": batch},
        batch={"max_size": batch, "max_delay_ms": 2},
        recovery={"enabled": False},
    )
    holder: list[Worker] = []
    task = asyncio.create_task(serve(settings, url, Doubler(dim, batch), install_signals=False,
                                     on_ready=holder.append))  # fmt: skip
    while not holder:
        await asyncio.sleep(0.001)
    worker = holder[0]
    start, cpu, server_cpu = time.perf_counter(), time.process_time(), redis_cpu_s(url)
    if profiler is not None:
        profiler.enable()
    while worker.stats.ok < requests and not task.done():
        await asyncio.sleep(0.002)
    while worker.reader.room() < worker.max_queued and not task.done():  # the last acks
        await asyncio.sleep(0.001)
    result = {"seconds": time.perf_counter() - start, "worker_cpu_s": time.process_time() - cpu,
              "redis_cpu_s": redis_cpu_s(url) - server_cpu}  # fmt: skip
    if profiler is not None:
        profiler.disable()
    worker.stop()
    await task
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", help="write a cProfile of the last round here and print its top")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--settle", choices=("script", "pipeline"), default="script",
                        help="pipeline: a hand-packed two-round-trip pipeline instead of the script")  # fmt: skip
    args = parser.parse_args(argv)
    if args.settle == "pipeline":
        Transport._run_script = _pipeline_settle  # type: ignore[method-assign]
    rates, runs = [], []
    for round_ in range(args.rounds):
        with redis_server() as url:
            fill(url, args.requests, args.dim)
            profiler = cProfile.Profile() if args.profile and round_ == args.rounds - 1 else None
            run = asyncio.run(drain(url, args.requests, args.dim, args.batch, profiler))
        runs.append(run)
        rates.append(args.requests / run["seconds"])
        print(f"round {round_ + 1}: {rates[-1]:,.0f} req/s; per request: worker CPU "
              f"{run['worker_cpu_s'] / args.requests * 1e6:.1f} us, redis-server CPU "
              f"{run['redis_cpu_s'] / args.requests * 1e6:.1f} us")  # fmt: skip
        if profiler is not None:
            profiler.dump_stats(args.profile)
            stats = pstats.Stats(profiler).sort_stats("tottime")
            stats.print_stats(25)
    print(f"median {statistics.median(rates):,.0f} req/s")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                {
                    "requests": args.requests,
                    "dim": args.dim,
                    "batch": args.batch,
                    "settle": args.settle,
                    "rates": rates,
                    "runs": runs,
                },
                out,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
