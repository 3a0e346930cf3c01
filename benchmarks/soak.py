"""Soak: one worker process held at a fraction of its top rate for minutes, its memory sampled throughout.

The issue's target: the worker's RSS stays flat within 5% over an 8-minute soak at 80% of its top rate.
One private redis-server, one worker process serving y = 2x + 1 (engine nearly free, so the worker's own
path is what runs), and the SDK's load generator (``producer.bench``) in separate processes:

1. the top rate: a closed loop with many requests in flight for ``--probe-s`` seconds;
2. the soak: an open loop at ``--fraction`` of that rate for ``--duration-s`` seconds, while a thread
   reads the worker's RSS from ``/proc/PID/status`` every ``--sample-s`` seconds.

The growth is the mean RSS of the last minute against the mean of the first minute after ``--settle-s``
(allocator pools, caches and the reply streams' first fills settle there). Reply streams are trimmed by
the worker (``reply_maxlen``), so Redis's memory is bounded too; its ``used_memory`` is sampled alongside.

Usage::

    python -m benchmarks.soak --out bench-results/soak            # 8 minutes at 80%
    python -m benchmarks.soak --duration-s 60 --out /tmp/soak     # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import redis

from producer.bench import LoadSpec, measure
from redis_infer_protocol import keys
from worker.testing import make_affine_model, redis_server, start_worker, wait_ready

STREAM = "soak:requests"
DIM = 512
WORKER_ENV = {
    "WORKER_BATCH__MAX_SIZE": "256",
    "WORKER_BATCH__MAX_DELAY_MS": "2",
    "WORKER_STREAMS__READ_COUNT": "256",
    "WORKER_STREAMS__REPLY_MAXLEN": "1000",
    "WORKER_ONNX__INTRA_OP_THREADS": "1",
    "WORKER_LOG_LEVEL": "WARNING",
}
TARGET_GROWTH_PCT = 5.0


def rss_bytes(pid: int) -> int | None:
    """Resident set size of a process (Linux), or None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass(slots=True)
class Sampler:
    """Samples the worker's RSS and Redis's used memory on a thread until stopped."""

    pid: int
    url: str
    every_s: float
    samples: list[dict[str, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        client = redis.Redis.from_url(self.url)
        t0 = time.monotonic()
        try:
            while not self._stop.is_set():
                rss = rss_bytes(self.pid)
                if rss is None:
                    return
                used = int(client.info("memory")["used_memory"])
                backlog = int(client.xlen(STREAM))
                self.samples.append({"t_s": time.monotonic() - t0, "rss": rss, "redis_used": used,
                                     "stream_len": backlog})  # fmt: skip
                self._stop.wait(self.every_s)
        finally:
            client.close()


def growth(samples: list[dict[str, float]], settle_s: float, window_s: float = 60.0) -> dict[str, Any]:
    """Mean RSS in the first window after ``settle_s`` against the last window; growth in percent."""
    if not samples:
        return {"first_mib": None, "last_mib": None, "growth_pct": None}
    end = samples[-1]["t_s"]
    first = [s["rss"] for s in samples if settle_s <= s["t_s"] < settle_s + window_s]
    last = [s["rss"] for s in samples if s["t_s"] > end - window_s]
    if not first or not last:
        return {"first_mib": None, "last_mib": None, "growth_pct": None}
    a, b = float(np.mean(first)), float(np.mean(last))
    return {"first_mib": a / 2**20, "last_mib": b / 2**20, "growth_pct": 100 * (b - a) / a,
            "max_mib": max(s["rss"] for s in samples) / 2**20}  # fmt: skip


def spec(url: str, **kwargs: Any) -> LoadSpec:
    x = np.random.default_rng(0).standard_normal((1, DIM)).astype(np.float32)
    return LoadSpec(url=url, stream=STREAM, model="affine", inputs={"x": x}, **kwargs)


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp, redis_server() as url:
        model = make_affine_model(Path(tmp) / "affine.onnx")
        worker = start_worker(model, url, consumer="soak-0", log_path=Path(tmp) / "worker.log", stream=STREAM,
                              env=WORKER_ENV)  # fmt: skip
        try:
            wait_ready(url, [worker], stream=STREAM, timeout_s=90)
            probe, _ = measure(spec(url, concurrency=args.probe_concurrency, duration_s=args.probe_s, warmup=200),
                               args.procs)  # fmt: skip
            top = probe["throughput_rps"]
            rate = top * args.fraction
            print(f"top rate {top:.0f} req/s (closed loop, {args.probe_concurrency} in flight); soaking at {rate:.0f}",
                  flush=True)  # fmt: skip
            sampler = Sampler(worker.proc.pid, url, args.sample_s).start()
            try:
                soak, _ = measure(spec(url, rate_rps=rate, duration_s=args.duration_s), args.procs)
            finally:
                sampler.stop()
            pending = redis.Redis.from_url(url).xpending(STREAM, keys.DEFAULT_GROUP)["pending"]
        finally:
            worker.stop()
    return {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.processor()},
        "probe": probe,
        "soak": soak,
        "fraction": args.fraction,
        "rss": growth(sampler.samples, args.settle_s),
        "target_growth_pct": TARGET_GROWTH_PCT,
        "pending_at_end": int(pending),
        "samples": sampler.samples,
    }


def markdown(result: dict[str, Any]) -> str:
    rss, soak = result["rss"], result["soak"]
    verdict = (
        "n/a"
        if rss["growth_pct"] is None
        else ("flat (met)" if abs(rss["growth_pct"]) <= TARGET_GROWTH_PCT else "NOT flat (missed)")
    )
    return "\n".join([
        f"# Soak: one worker at {result['fraction']:.0%} of its top rate",
        "",
        f"{result['when']} · {result['host']['cpus']} CPUs · Python {result['host']['python']}",
        "",
        "| | value |",
        "|---|---:|",
        f"| top rate (closed loop probe), req/s | {result['probe']['throughput_rps']:,.0f} |",
        f"| soak: offered / served, req/s | {soak['offered_rps']:,.0f} / {soak['throughput_rps']:,.0f} |",
        f"| soak: duration, s | {soak['elapsed_s']:.0f} |",
        f"| soak: sent / ok / errors / lost | {soak['sent']} / {soak['ok']} / {soak['errors']} / {soak['lost']} |",
        f"| soak: p50 / p99 latency, ms | {soak['p50_ms']:.2f} / {soak['p99_ms']:.2f} |",
        f"| worker RSS, first minute (after settling), MiB | {rss['first_mib']:.1f} |",
        f"| worker RSS, last minute, MiB | {rss['last_mib']:.1f} |",
        f"| worker RSS growth | {rss['growth_pct']:+.2f}% ({verdict}; target within {TARGET_GROWTH_PCT:g}%) |",
        f"| pending entries at the end | {result['pending_at_end']} |",
        "",
    ])  # fmt: skip


def plot(result: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    t = [s["t_s"] for s in result["samples"]]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(t, [s["rss"] / 2**20 for s in result["samples"]], label="worker RSS, MiB")
    ax.plot(t, [s["redis_used"] / 2**20 for s in result["samples"]], label="redis used_memory, MiB")
    ax.set_xlabel("seconds into the soak")
    ax.set_ylabel("MiB")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.set_title(f"soak at {result['fraction']:.0%} of top rate: RSS growth {result['rss']['growth_pct']:+.2f}%")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench-results/soak"))
    parser.add_argument("--duration-s", type=float, default=480.0)
    parser.add_argument("--fraction", type=float, default=0.8, help="of the probed top rate")
    parser.add_argument("--probe-s", type=float, default=10.0)
    parser.add_argument("--probe-concurrency", type=int, default=256)
    parser.add_argument("--procs", type=int, default=2, help="producer processes")
    parser.add_argument("--sample-s", type=float, default=2.0)
    parser.add_argument("--settle-s", type=float, default=30.0)
    args = parser.parse_args(argv)
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(result, indent=1))
    text = markdown(result)
    if plot(result, args.out / "soak.png"):
        text += "\n![soak](soak.png)\n"
    (args.out / "soak.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
