"""The SDK's hot path against the featureless producer, and one SDK tree against another, in one run.

Only the producer side is measured: the requests go to a featureless worker (``benchmarks.ideal``) or to no
worker at all, so the figures say what the SDK costs, not what a worker does. Measures:

- ``enqueue``: N requests added to a stream nobody reads, 100 per call (``submit_many``; the featureless
  producer pipelines 100 XADDs), timed until the last call returns. ``enqueue_limited``: the same with a
  backlog limit published (far above N), so the SDK goes through its backpressure script.
- ``closed``: 8 requests in flight against the featureless worker: the featureless producer, the
  ``AsyncClient`` through ``producer.bench`` (``infer``), and the sync ``Client.infer`` from 8 threads.

Each SDK tree runs in its own process with ``PYTHONPATH=<tree>``, so a baseline commit checked out elsewhere
(``git worktree add /tmp/base <commit>``) is measured in the same run as this one. Rounds interleave every
contestant, each round starting with another one, so that drift of a noisy machine and order effects hit
all alike; the report gives medians and ratios to the featureless producer of the same run.

Usage::

    python benchmarks/sdk_hotpath.py --tree new=. --tree base=/tmp/base --rounds 3 --out /tmp/sdk-bench
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STREAM_IDEAL = "bench:ideal"
STREAM_ENQUEUE = "bench:enqueue"
CHUNK = 100
IN_FLIGHT = 8
DIM = 512
CHILD_TIMEOUT_S = 300.0
SDK_KINDS = {
    "enqueue": ("sync", "async"),
    "enqueue_limited": ("sync",),
    "closed": ("async", "sync"),
    "stages": ("sync",),
}


# ------------------------------------------------------------------------------------------------ children


def _x() -> Any:
    import numpy as np

    return np.random.default_rng(0).standard_normal((1, DIM)).astype(np.float32)


def _enqueue_sdk(url: str, impl: str, count: int) -> dict[str, Any]:
    import asyncio

    from producer import AsyncClient, Client

    x = _x()
    if impl == "sync":
        with Client(url, model="ideal", stream=STREAM_ENQUEUE, default_timeout_s=600) as client:
            for _ in range(10):  # warm-up: connections, the published limit, the script
                client.submit_many([{"x": x}] * CHUNK)
            t0, cpu0 = time.perf_counter(), _cpu_s()
            for start in range(0, count, CHUNK):
                client.submit_many([{"x": x}] * min(CHUNK, count - start))
            return _timed(count, t0, cpu0)

    async def run() -> dict[str, Any]:
        async with AsyncClient(url, model="ideal", stream=STREAM_ENQUEUE, default_timeout_s=600) as client:
            for _ in range(10):
                await client.submit_many([{"x": x}] * CHUNK)
            t0, cpu0 = time.perf_counter(), _cpu_s()
            for start in range(0, count, CHUNK):
                await client.submit_many([{"x": x}] * min(CHUNK, count - start))
            return _timed(count, t0, cpu0)

    return asyncio.run(run())


def _enqueue_ideal(url: str, count: int) -> dict[str, Any]:
    from benchmarks.ideal import Producer

    producer = Producer(url, STREAM_ENQUEUE, DIM)
    try:
        producer.enqueue(1000)
        t0, cpu0 = time.perf_counter(), _cpu_s()
        producer.enqueue(count)
        return _timed(count, t0, cpu0)
    finally:
        producer.close()


def _closed_sync(url: str, count: int) -> dict[str, Any]:
    import threading

    import numpy as np

    from producer import Client

    x = _x()
    latencies: list[float] = []
    left = [count]
    lock = threading.Lock()

    def user(client: Client) -> None:
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            t0 = time.perf_counter()
            client.infer({"x": x}, timeout=30)
            latencies.append(time.perf_counter() - t0)

    with Client(url, model="ideal", stream=STREAM_IDEAL) as client:
        for _ in range(200):
            client.infer({"x": x}, timeout=30)
        threads = [threading.Thread(target=user, args=(client,)) for _ in range(IN_FLIGHT)]
        t0, cpu0 = time.perf_counter(), _cpu_s()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    lat = np.asarray(latencies) * 1e3
    return {"rps": len(lat) / elapsed, "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "cpu_us_per_request": cpu / count * 1e6}  # fmt: skip


def _closed(url: str, impl: str, count: int) -> dict[str, Any]:
    if impl == "ideal":
        from benchmarks.ideal import Producer

        producer = Producer(url, STREAM_IDEAL, DIM)
        try:
            producer.closed_loop(200, IN_FLIGHT)
            cpu0 = _cpu_s()
            r = producer.closed_loop(count, IN_FLIGHT)
            cpu = _cpu_s() - cpu0
        finally:
            producer.close()
        cpu_us = cpu / count * 1e6
        return {"rps": r.throughput_rps, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "cpu_us_per_request": cpu_us}
    if impl == "sync":
        return _closed_sync(url, count)
    from producer.bench import LoadSpec, run_load, summarize

    spec = LoadSpec(url, STREAM_IDEAL, "ideal", {"x": _x()}, concurrency=IN_FLIGHT, count=count, warmup=200)
    cpu0 = _cpu_s()  # the 200 warm-up requests (and the client's set-up) are in, as 200 more requests
    s = summarize(run_load(spec), spec, 1)
    cpu = _cpu_s() - cpu0
    return {"rps": s["throughput_rps"], "p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"],
            "cpu_us_per_request": cpu / (count + spec.warmup) * 1e6}  # fmt: skip


def _cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _stages(url: str, repeats: int = 5) -> dict[str, Any]:
    """µs per request of each stage of a sync ``submit_many`` of 100, and of decoding one reply (no profiler)."""
    import timeit
    from concurrent.futures import Future

    from producer import Client
    from redis_infer_protocol.codec import Status, Timing, decode_reply, encode_reply

    def per_request(fn: Any, number: int = 50) -> float:
        return statistics.median(timeit.repeat(fn, number=number, repeat=repeats)) / number / CHUNK * 1e6

    x, opts = _x(), {"timeout": None, "priority": 0, "parameters": None, "outputs": None, "request_ids": None}
    out: dict[str, Any] = {}
    with Client(url, model="ideal", stream=STREAM_ENQUEUE, default_timeout_s=600) as client:
        core = client._core
        out["prepare"] = per_request(lambda: core.prepare_many([{"x": x}] * CHUNK, **opts))
        prepared = core.prepare_many([{"x": x}] * CHUNK, **opts)
        out["futures"] = per_request(lambda: type(core)(core.config).register(prepared, [Future() for _ in prepared]))
        out.update(_stages_io(client, prepared, per_request))
    reply = encode_reply("a" * 32, Status.OK, outputs={"y": x}, model="m", timing=Timing(1, 2, 3, 4, 5, 6), worker="w")
    fields = {k.encode(): v for k, v in reply.items()}
    try:
        from redis_infer_protocol.replies import decode_reply_fields
    except ImportError:
        out["decode"] = per_request(lambda: [decode_reply(fields) for _ in range(CHUNK)])
    else:
        flat = [item for pair in fields.items() for item in pair]
        out["decode"] = per_request(lambda: [decode_reply_fields(flat) for _ in range(CHUNK)])
    return out


def _stages_io(client: Any, prepared: list[Any], per_request: Any) -> dict[str, float]:
    """Packing, and one round trip of the round (before the change: redis-py's pipeline, packing included)."""
    pool = client._redis.connection_pool
    try:
        from producer.client import exchange
        from producer.submission import SendRound
    except ImportError:  # the SDK before the bulk path: redis-py's pipeline queues and packs each command

        def queue() -> Any:
            pipe = client._redis.pipeline(transaction=False)
            for p in prepared:
                pipe.xadd(STREAM_ENQUEUE, p.fields)
            return pipe

        conn = pool.get_connection()
        packing = per_request(lambda: conn.pack_commands([args for args, _ in queue().command_stack]))
        pool.release(conn)
        return {"packing": packing, "round_trip": per_request(lambda: queue().execute(), number=20) - packing}
    action = SendRound(STREAM_ENQUEUE, prepared, 0)
    payload = client._round_bytes(action)
    conn = pool.get_connection()
    try:
        return {
            "packing": per_request(lambda: client._round_bytes(action)),
            "round_trip": per_request(lambda: exchange(conn, payload, CHUNK), number=20),
        }
    finally:
        pool.release(conn)


def _timed(count: int, t0: float, cpu0: float) -> dict[str, Any]:
    return {"rps": count / (time.perf_counter() - t0), "cpu_us_per_request": (_cpu_s() - cpu0) / count * 1e6}


def child(argv: Sequence[str]) -> int:
    measure, impl, url, count = argv[0], argv[1], argv[2], int(argv[3])
    if measure == "stages":
        result = _stages(url)
    elif measure.startswith("enqueue"):
        result = _enqueue_ideal(url, count) if impl == "ideal" else _enqueue_sdk(url, impl, count)
    else:
        result = _closed(url, impl, count)
    print(json.dumps(result))
    return 0


# -------------------------------------------------------------------------------------------------- parent


def _run_child(tree: Path, measure: str, impl: str, url: str, count: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    argv = [sys.executable, str(Path(__file__).resolve()), "child", measure, impl, url, str(count)]
    done = subprocess.run(argv, env=env, cwd=tree, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{measure}/{impl} in {tree} failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _reset(url: str, limited: bool) -> None:
    import redis

    r = redis.Redis.from_url(url)
    r.delete(STREAM_ENQUEUE, f"{STREAM_ENQUEUE}:limits")
    r.xtrim(STREAM_IDEAL, maxlen=0)  # acknowledged by the featureless worker: keep the stream small
    if limited:
        r.hset(f"{STREAM_ENQUEUE}:limits", "max_backlog", 10**9)
    r.close()


def contestants(trees: dict[str, Path], measure: str) -> list[tuple[str, Path, str]]:
    """(label, tree, impl) of every run of one measure: the featureless producer first."""
    out = [] if measure in ("enqueue_limited", "stages") else [("ideal", ROOT, "ideal")]
    for name, tree in trees.items():
        out += [(f"{name}:{impl}", tree, impl) for impl in SDK_KINDS[measure]]
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from worker.embedded import EmbeddedRedis
    from worker.testing import wait_until

    trees = dict(t.split("=", 1) for t in args.tree)
    tree_paths = {name: Path(path).resolve() for name, path in trees.items()}
    counts = {"enqueue": args.count, "enqueue_limited": args.count, "closed": args.closed, "stages": 1}
    counts = {m: n for m, n in counts.items() if m in args.measures.split(",")}
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {m: {} for m in counts}
    with EmbeddedRedis() as server:
        import redis

        worker = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.ideal", "worker", "--url", server.url, "--stream", STREAM_IDEAL],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        r = redis.Redis.from_url(server.url)
        try:
            wait_until(lambda: r.hget(f"{STREAM_IDEAL}:worker:ideal-1", "status") == b"ready", timeout_s=60)
            for rnd in range(args.rounds):
                for measure, count in counts.items():
                    runs = contestants(tree_paths, measure)
                    shift = rnd % len(runs)  # each round starts with another contestant: order effects even out
                    for label, tree, impl in runs[shift:] + runs[:shift]:
                        _reset(server.url, measure == "enqueue_limited")
                        result = _run_child(tree, measure, impl, server.url, count)
                        raw[measure].setdefault(label, []).append(result)
                        print(f"round {rnd + 1} {measure:16} {label:14} {json.dumps(result)}", flush=True)
        finally:
            worker.terminate()
            worker.wait(30)
            r.close()
    return {"trees": trees, "counts": counts, "rounds": args.rounds, "raw": raw, "machine": _machine()}


def _machine() -> dict[str, Any]:
    import platform

    load = os.getloadavg()
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg_at_end": load}


def markdown(results: dict[str, Any]) -> str:
    """Medians per contestant, with the ratio to the featureless producer's median of the same run."""
    lines = ["| measure | contestant | req/s (median) | vs featureless | p50 ms | p50 vs featureless | p99 ms | "
             "producer CPU µs/request |", "|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for measure, by_label in results["raw"].items():
        if measure == "stages":
            continue
        ideal = by_label.get("ideal")
        base_rps = statistics.median(r["rps"] for r in ideal) if ideal else None
        base_p50 = statistics.median(r["p50_ms"] for r in ideal) if ideal and "p50_ms" in ideal[0] else None
        for label, runs in by_label.items():
            rps = statistics.median(r["rps"] for r in runs)
            p50 = statistics.median(r["p50_ms"] for r in runs) if "p50_ms" in runs[0] else None
            p99 = statistics.median(r["p99_ms"] for r in runs) if "p99_ms" in runs[0] else None
            cpu = statistics.median(r["cpu_us_per_request"] for r in runs) if "cpu_us_per_request" in runs[0] else None
            lines.append(
                f"| {measure} | {label} | {rps:,.0f} | {_ratio(rps, base_rps)} | {_num(p50)} | "
                f"{_ratio(p50, base_p50)} | {_num(p99)} | {_num(cpu, '.0f')} |"
            )
    return "\n".join(lines) + "\n" + _stage_table(results["raw"].get("stages", {}))


STAGES = {
    "prepare": "prepare: validate and encode",
    "futures": "future and pending-table entry",
    "packing": "packing the round's commands",
    "round_trip": "writing the round, Redis's XADDs, reading the replies",
    "decode": "decoding one reply",
}


def _stage_table(by_label: dict[str, list[dict[str, Any]]]) -> str:
    """Median µs per request of each stage, one column per SDK tree."""
    if not by_label:
        return ""
    lines = ["", "| stage, µs per request | " + " | ".join(by_label) + " |", "|---|" + "---:|" * len(by_label)]
    for key, name in STAGES.items():
        cells = [f"{statistics.median(r[key] for r in runs):.2f}" for runs in by_label.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _ratio(value: float | None, base: float | None) -> str:
    return "" if value is None or not base else f"{value / base:.2f}x"


def _num(value: float | None, spec: str = ".2f") -> str:
    return "" if value is None else format(value, spec)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "child":
        sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
        return child(argv[1:])
    sys.path.insert(0, str(ROOT))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tree", action="append", default=[], help="NAME=PATH of an SDK tree (repeatable)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--count", type=int, default=20_000, help="requests per enqueue measurement")
    p.add_argument("--closed", type=int, default=5_000, help="requests per closed-loop measurement")
    p.add_argument("--measures", default="enqueue,enqueue_limited,closed,stages", help="comma-separated, default all")
    p.add_argument("--out", type=Path, default=Path("bench-results"))
    args = p.parse_args(argv)
    if not args.tree:
        args.tree = [f"this={ROOT}"]
    results = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(results)
    (args.out / "sdk_hotpath.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (args.out / "sdk_hotpath.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
