"""Worker overhead per request: this tree against a baseline git ref, measured in the same run.

A tiny model (y = 2x + 1 on a few floats) makes the engine nearly free, so what is measured is the
worker's own path: XREADGROUP, decode, validate, batch, stage, reply encode, XADD, XACK. Each round
starts a private redis-server and one worker process per variant, drives it with the same producer
load (``submit_many`` pipelines, a bounded number in flight) and records requests per second. Variants
alternate within each round so that drift on a noisy machine hits all of them alike; medians are reported.

Usage::

    python -m benchmarks.overhead --baseline HEAD~3 --rounds 3 --out bench-results/overhead.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from producer import Client
from worker.testing import WorkerPool, make_affine_model, redis_server

ROOT = Path(__file__).resolve().parent.parent

WORKER_ENV = {
    "WORKER_BATCH__MAX_SIZE": "64",
    "WORKER_BATCH__MAX_DELAY_MS": "2",
    "WORKER_STREAMS__READ_COUNT": "256",
    "WORKER_BATCH__MAX_QUEUED": "1024",
    "WORKER_ONNX__INTRA_OP_THREADS": "1",
}


@contextmanager
def worktree(ref: str) -> Iterator[Path]:
    """A temporary checkout of ``ref``."""
    path = Path(tempfile.mkdtemp(prefix="overhead-baseline-"))
    subprocess.run(["git", "worktree", "add", "--detach", str(path), ref], cwd=ROOT, check=True, capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False)


def measure(tree: Path, model: Path, env: dict[str, str], requests: int, dim: int) -> float:
    """Requests per second of one worker process running the code in ``tree``."""
    with (
        redis_server() as url,
        WorkerPool(model, url, consumers=["bench"], env={**WORKER_ENV, **env}, cwd=tree) as pool,
    ):
        pool.wait_ready()
        return drive(url, model.stem, requests, dim)


def drive(url: str, model: str, requests: int, dim: int) -> float:
    x = np.random.default_rng(0).standard_normal((1, dim), dtype=np.float32)
    with Client(url, model=model) as client:
        client.infer({"x": x}, timeout=30)  # warm-up
        inflight: list = []
        t0 = time.perf_counter()
        sent = 0
        while sent < requests:
            k = min(256, requests - sent)
            inflight += client.submit_many([{"x": x}] * k, timeout=120)
            sent += k
            while len(inflight) > 1024:
                inflight.pop(0).result()
        for future in inflight:
            future.result()
        return requests / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="git ref of the baseline worker")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=256, help="floats per request")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench-results/overhead.json"))
    args = parser.parse_args(argv)

    results: dict[str, list[float]] = {"baseline": [], "current": []}
    with tempfile.TemporaryDirectory() as tmp, worktree(args.baseline) as base:
        model = make_affine_model(Path(tmp) / "affine.onnx")
        variants: list[tuple[str, Path, dict[str, str]]] = [("baseline", base, {}), ("current", ROOT, {})]
        for round_no in range(args.rounds):
            for name, tree, env in variants:
                rate = measure(tree, model, env, args.requests, args.dim)
                results[name].append(rate)
                print(f"round {round_no + 1}: {name:24} {rate:8.0f} req/s", flush=True)
    medians = {name: statistics.median(rates) for name, rates in results.items()}
    base_rate = medians["baseline"]
    rows = [
        {"variant": name, "median_req_s": round(m, 1), "vs_baseline": round(m / base_rate, 3), "runs": results[name]}
        for name, m in medians.items()
    ]
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "baseline": args.baseline,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "config": {"requests": args.requests, "dim": args.dim, "rounds": args.rounds, "worker_env": WORKER_ENV},
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    table = ["| variant | median req/s | vs baseline |", "| --- | ---: | ---: |"]
    table += [f"| {r['variant']} | {r['median_req_s']:.0f} | {r['vs_baseline']:.2f}x |" for r in rows]
    args.out.with_suffix(".md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
