"""``python -m demo``: classify rotated pages of text through Redis Streams and real worker processes.

Fetches the model if needed, starts a private redis-server (unless ``--url``), starts ``--workers``
worker processes, waits until they are ready, sends ``--requests`` requests (the four rotations in
turn) with at most ``--concurrency`` in flight, and prints what came back: the predicted orientation
of each rotation, throughput, latency percentiles, where the time went on the server, and how the
requests spread over batches and workers. Exit code 1 if any prediction is wrong or any request failed.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from demo import images
from demo import model as demo_model
from demo.errors import DemoError
from demo.load import LoadResult, run_load
from demo.signals import interrupt_on_signals
from demo.streams import drop_stream, scratch_stream
from demo.summary import batch_stats, percentiles_ms, server_breakdown_ms
from worker.testing import HarnessError, WorkerPool
from worker.testing import redis_server as private_or_given_redis

log = logging.getLogger("demo")

OUTPUT = "fetch_name_0"
INPUT = "x"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=400, help="requests to send (default 400)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--url", help="Redis URL to use (default: start a private redis-server)")
    p.add_argument("--concurrency", type=int, default=32, help="requests in flight at most (default 32)")
    p.add_argument("--batch", type=int, default=8, help="worker max batch size (default 8)")
    p.add_argument("--max-delay-ms", type=float, default=2.0, help="worker batching delay (default 2 ms)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads per worker (default 1)")
    p.add_argument("--model", type=Path, default=None, help="model file (default: models/, fetched if missing)")
    p.add_argument(
        "--stream",
        default=None,
        help="request stream (default: a private 'redis-infer-demo:<pid>:requests', deleted at the end)",
    )
    p.add_argument("--ready-timeout", type=float, default=60.0, help="seconds to wait for workers (default 60)")
    p.add_argument("--timeout", type=float, default=60.0, help="per-request timeout in seconds (default 60)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    for name in ("requests", "workers", "concurrency", "batch", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    return args


@contextlib.contextmanager
def redis_server(url: str | None) -> Iterator[str]:
    """The given Redis URL (once it answers), or a private redis-server for the duration of the block."""
    with private_or_given_redis(url) as served:
        if not url:
            log.info("started a private redis-server at %s", served)
        yield served


def requests_cycle(inputs: dict[int, np.ndarray], count: int) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    rotations = list(inputs)
    for i in range(count):
        degrees = rotations[i % len(rotations)]
        yield degrees, {INPUT: inputs[degrees][None]}  # one row: [1, 3, 224, 224]


def send(args: argparse.Namespace, url: str, stream: str, model_name: str, inputs: dict[int, np.ndarray]) -> LoadResult:
    from producer import Client

    with Client(url, model=model_name, stream=stream) as client:
        # Warm-up, not counted: the first runs of each worker's session are slow.
        warm = run_load(client, requests_cycle(inputs, 4 * args.workers), concurrency=args.concurrency)
        if warm.failed:
            raise DemoError(f"warm-up request failed: {warm.failed[0].error!r}")
        bar = _progress(args.requests, disable=args.no_progress)
        try:
            return run_load(
                client,
                requests_cycle(inputs, args.requests),
                concurrency=args.concurrency,
                timeout_s=args.timeout,
                on_done=lambda _sample: bar.update(1),
            )
        finally:
            bar.close()


def _progress(total: int, *, disable: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="req", desc="requests", disable=disable, file=sys.stderr)


def report(result: LoadResult, labels: list[str], workers: int) -> bool:
    """Print the results; True when every request succeeded and was classified correctly."""
    predicted: dict[int, Counter[str]] = defaultdict(Counter)
    for sample in result.ok:
        probs = np.asarray(sample.reply.outputs[OUTPUT]).reshape(-1)
        predicted[sample.label][labels[int(probs.argmax())]] += 1
    all_right = not result.failed
    print()
    print(f"{'rotation (cw)':>14} | {'predicted':<22} | {'count':>5} | correct")
    print(f"{'-' * 14}-+-{'-' * 22}-+-{'-' * 5}-+--------")
    for degrees in images.ROTATIONS:
        counts = predicted.get(degrees, Counter())
        right = bool(counts) and set(counts) == {str(degrees)}
        all_right &= right
        shown = ", ".join(f"{label} x{n}" for label, n in counts.most_common()) or "-"
        print(f"{degrees:>14} | {shown:<22} | {sum(counts.values()):>5} | {'yes' if right else 'NO'}")
    if result.failed:
        errors = Counter(type(s.error).__name__ + ": " + str(s.error)[:120] for s in result.failed)
        print(f"\n{len(result.failed)} requests FAILED:")
        for text, n in errors.most_common(5):
            print(f"  {n} x {text}")
    _print_timings(result, workers)
    print("\nresult:", "all predictions correct" if all_right else "FAILED")
    return all_right


def _print_timings(result: LoadResult, workers: int) -> None:
    ok = result.ok
    if not ok:
        return
    lat = percentiles_ms([s.latency_s for s in ok])
    print(f"\nthroughput: {len(ok) / result.elapsed_s:.1f} req/s ({len(ok)} requests in {result.elapsed_s:.2f} s)")
    print(
        "latency (client-observed): "
        + ", ".join(f"{k} {lat[k]:.1f} ms" for k in ("p50", "p90", "p99", "max"))
        + f" (mean {lat['mean']:.1f} ms)"
    )
    print("mean server-side breakdown:")
    for name, ms in server_breakdown_ms(ok).items():
        print(f"  {name:<50} {ms:8.2f} ms")
    per_batch, per_request, by_worker = batch_stats(ok)
    print(f"mean batch size: {per_batch:.2f} per batch ({per_request:.2f} as seen by a request)")
    split = ", ".join(f"{worker}: {n} ({100 * n / len(ok):.0f}%)" for worker, n in sorted(by_worker.items()))
    print(f"requests per worker ({workers} started): {split}")


def worker_env(args: argparse.Namespace) -> dict[str, str]:
    return {
        "WORKER_BATCH__MAX_SIZE": str(args.batch),
        "WORKER_BATCH__MAX_DELAY_MS": str(args.max_delay_ms),
        "WORKER_ONNX__INTRA_OP_THREADS": str(args.threads),
    }


def run(args: argparse.Namespace) -> int:
    model_path = args.model or demo_model.fetch(demo_model.DEFAULT_DEST)
    labels = demo_model.labels(model_path)
    inputs = images.rotated_inputs(seed=0)
    stream = args.stream or scratch_stream("demo")
    started = time.monotonic()
    with redis_server(args.url) as url:
        try:
            pool = WorkerPool(model_path, url, count=args.workers, stream=stream, env=worker_env(args), name="demo")
            with pool:
                log.info(
                    "starting %d worker(s) on stream %s (max batch %d, %d thread(s) each)",
                    args.workers, stream, args.batch, args.threads,
                )  # fmt: skip
                pool.wait_ready(args.ready_timeout)
                log.info("workers ready after %.1f s: %s", time.monotonic() - started, ", ".join(pool.consumers))
                result = send(args, url, stream, model_path.stem, inputs)
                ok = report(result, labels, args.workers)
                codes = pool.stop()
                if any(code != 0 for code in codes.values()):
                    log.warning("worker exit codes: %s\n%s", codes, pool.logs(10))
                else:
                    log.info("workers stopped cleanly (SIGTERM, exit code 0)")
        finally:
            if args.url and not args.stream:
                drop_stream(url, stream)
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    if given[:1] == ["hooks"]:  # issue 13: the same pages sent as float32, uint8 and PNG to hooked models
        from demo.hooks_demo import main as hooks_main

        return hooks_main(given[1:])
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    interrupt_on_signals()
    try:
        return run(args)
    except KeyboardInterrupt:
        print("\ninterrupted: workers and Redis stopped", file=sys.stderr)
        return 130
    except (DemoError, HarnessError, demo_model.FetchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
