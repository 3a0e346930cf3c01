"""Closed-loop latency by stage: where one request's time goes, one worker tree against another, same run.

A private redis-server, one worker process (the affine model of ``worker.testing.make_affine_model``, batch
max delay 0, one ONNX Runtime thread), and 8 requests in flight from the ``AsyncClient`` (its lean ``infer``
path: concurrent requests go out in one round trip per turn of the loop). Each reply's timing trace plus the
client's own send and receive times (the same machine, so the same wall clock) split the round trip into:

- ``send_to_read``: client send -> the worker has the entry from XREADGROUP (SDK XADD, Redis, the read);
- ``read_to_batched``: admission (decode, validate, batcher) and the dispatcher's wake-up;
- ``batched_to_compute``: staging the batch into the slot's buffers;
- ``compute``: ``slot.run`` (the engine, plus any thread hop);
- ``compute_to_published``: splitting outputs, encoding replies;
- ``published_to_received``: the settle round trip (replies + acks) and the SDK's reply wake-up.

Each tree's worker runs with ``PYTHONPATH=<tree>`` (a baseline commit checked out with ``git worktree add``),
the client is this tree's. Rounds alternate the trees; medians over rounds of each stage's median.

Usage::

    python -m benchmarks.latency_stages --tree new=. --tree base=/tmp/lat-base --ideal --rounds 3 --seconds 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.suite_parts import cpu_s
from producer import AsyncClient
from redis_infer_protocol.codec import Timing
from worker.testing import make_affine_model, redis_server, start_worker, wait_ready

ROOT = Path(__file__).resolve().parent.parent
IN_FLIGHT = 8
DIM = 512
STREAM = "bench:latency"
WARMUP = 200
STAGES = (
    "send_to_read",
    "read_to_batched",
    "batched_to_compute",
    "compute",
    "compute_to_published",
    "published_to_received",
    "total",
)
WORKER_ENV = {
    "WORKER_BATCH__MAX_SIZE": "256",
    "WORKER_BATCH__MAX_DELAY_MS": "0",
    "WORKER_STREAMS__READ_COUNT": "256",
    "WORKER_STREAMS__REPLY_MAXLEN": "10000000",
    "WORKER_ONNX__INTRA_OP_THREADS": "1",
    "WORKER_LOG_LEVEL": "WARNING",
}


async def _one(client: AsyncClient, x: np.ndarray[Any, Any], rows: list[dict[str, float]], record: bool) -> None:
    # The lean path of ``AsyncClient.infer``, with the reply (and its timing trace) kept.
    prepared = client._core.prepare({"x": x}, timeout=30.0, priority=0, parameters=None, outputs=None, request_id=None)
    future = client._start_reader().create_future()
    sent_ns = time.time_ns()
    client._enqueue(prepared, future)
    reply = await future
    received_ns = time.time_ns()
    if not record:
        return
    rows.append(stages(sent_ns, reply.timing, received_ns))


def stages(sent_ns: int, t: Timing, received_ns: int) -> dict[str, float]:
    """One request's stages in ms, from the client's send and receive times and the reply's timing trace;
    only ``total`` when there is no trace (the featureless worker sends none)."""
    total = {"total": (received_ns - sent_ns) / 1e6}
    if not t.read_ns:
        return total
    marks = (sent_ns, t.read_ns, t.batched_ns, t.compute_start_ns, t.compute_end_ns, t.published_ns, received_ns)
    return {**{name: (marks[i + 1] - marks[i]) / 1e6 for i, name in enumerate(STAGES[:-1])}, **total}


async def closed_loop(url: str, seconds: float, worker_pid: int | None = None) -> dict[str, Any]:
    """8 in flight for ``seconds`` after a warm-up; the median of each stage, in ms, the throughput, and the
    worker process's CPU per request (user + system)."""
    x = np.random.default_rng(0).standard_normal((1, DIM)).astype(np.float32)
    rows: list[dict[str, float]] = []
    async with AsyncClient(url, model="affine", stream=STREAM) as client:
        for _ in range(WARMUP // IN_FLIGHT):
            await asyncio.gather(*(_one(client, x, rows, False) for _ in range(IN_FLIGHT)))
        stop_at = time.monotonic() + seconds

        async def lane() -> None:
            while time.monotonic() < stop_at:
                await _one(client, x, rows, True)

        t0, cpu0 = time.perf_counter(), cpu_s(worker_pid)
        await asyncio.gather(*(lane() for _ in range(IN_FLIGHT)))
        elapsed, cpu1 = time.perf_counter() - t0, cpu_s(worker_pid)
    out: dict[str, Any] = {f"{s}_ms": statistics.median(r[s] for r in rows) if s in rows[0] else None for s in STAGES}
    out["p99_ms"] = float(np.percentile([r["total"] for r in rows], 99))
    out["throughput_rps"] = len(rows) / elapsed
    out["requests"] = len(rows)
    out["worker_cpu_us_per_request"] = None if cpu0 is None or cpu1 is None else (cpu1 - cpu0) / len(rows) * 1e6
    return out


def one_round(
    url: str, tree: Path | None, model: Path, log_dir: Path, seconds: float, label: str, profile: Path | None = None
) -> dict[str, Any]:
    """One worker process (``tree`` None: the featureless one of ``benchmarks.ideal``), the SDK's closed loop
    against it, and, against the featureless worker, the featureless producer's closed loop too."""
    consumer = f"lat-{label}-{time.monotonic_ns()}"
    argv = None
    if tree is None:
        argv = [sys.executable, "-m", "benchmarks.ideal", "worker", "--url", url, "--stream", STREAM,
                "--consumer", consumer]  # fmt: skip
    elif profile is not None:  # cProfile writes its stats when the worker exits (SIGTERM: a clean stop)
        argv = [sys.executable, "-m", "cProfile", "-o", str(profile / f"{label}.prof"), "-m", "worker", "run",
                "--model", str(model)]  # fmt: skip
    worker = start_worker(model, url, consumer=consumer, log_path=log_dir / f"{consumer}.log", stream=STREAM,
                          env={**WORKER_ENV, **_extra_env()}, cwd=tree or ROOT, argv=argv)  # fmt: skip
    try:
        wait_ready(url, [worker], stream=STREAM)
        out = asyncio.run(closed_loop(url, seconds, worker.proc.pid))
        if tree is None:
            out["featureless_producer_p50_ms"] = _featureless_p50_ms(url, out["requests"])
        return out
    finally:
        worker.stop()


def _featureless_p50_ms(url: str, count: int) -> float:
    from benchmarks.ideal import Producer

    producer = Producer(url, STREAM, DIM, model="affine")
    try:
        producer.closed_loop(WARMUP, IN_FLIGHT)
        return producer.closed_loop(count, IN_FLIGHT).p50_ms
    finally:
        producer.close()


def _extra_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("WORKER_") and k not in WORKER_ENV}


def _median(values: list[Any]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def markdown(medians: dict[str, dict[str, float | None]]) -> str:
    """The stage table, one column per contestant, then each total as a ratio to every other's."""
    labels = list(medians)
    keys = [f"{s}_ms" for s in STAGES]
    keys += ["p99_ms", "featureless_producer_p50_ms", "throughput_rps", "worker_cpu_us_per_request"]
    lines = [f"| median of {len(labels)} contestants | {' | '.join(labels)} |", "|---|" + "---|" * len(labels)]
    for key in keys:
        values = [medians[label].get(key) for label in labels]
        if all(v is None for v in values):
            continue
        spec = ".3f" if key.endswith("_ms") else ".0f"
        lines.append(f"| {key} | {' | '.join('' if v is None else format(v, spec) for v in values)} |")
    lines.append("")
    for a in labels:
        for b in labels:
            ta, tb = medians[a]["total_ms"], medians[b]["total_ms"]
            if a != b and ta and tb:
                lines.append(f"- total p50 {a} / {b}: {ta / tb:.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", default=[], help="LABEL=PATH of a worker tree (repeat)")
    parser.add_argument("--ideal", action="store_true", help="also the featureless worker (benchmarks.ideal)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--url", default=None, help="a Redis to use (default: a private redis-server)")
    parser.add_argument("--profile", type=Path, default=None, help="cProfile each worker into DIR/LABEL.prof")
    parser.add_argument("--json", type=Path, default=None, help="write every round and the medians here")
    args = parser.parse_args(argv)
    trees: dict[str, str | None] = dict(t.split("=", 1) for t in args.tree) or {"this": "."}
    if args.ideal:
        trees["featureless"] = None
    results: dict[str, list[dict[str, Any]]] = {label: [] for label in trees}
    with tempfile.TemporaryDirectory() as tmp, redis_server(args.url) as url:
        model = make_affine_model(Path(tmp) / "affine.onnx")
        for rnd in range(args.rounds):
            order = list(trees.items())
            order = order[rnd % len(order) :] + order[: rnd % len(order)]
            for label, tree in order:
                path = Path(tree).resolve() if tree else None
                res = one_round(url, path, model, Path(tmp), args.seconds, label, args.profile)
                results[label].append(res)
                print(f"round {rnd} {label}: total p50 {res['total_ms']:.3f} ms, {res['throughput_rps']:.0f} req/s",
                      flush=True)  # fmt: skip
    medians = {label: {k: _median([r.get(k) for r in rs]) for k in rs[0]} for label, rs in results.items()}
    print(markdown(medians))
    if args.json:
        args.json.write_text(json.dumps({"rounds": results, "medians": medians, "cpus": os.cpu_count()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
