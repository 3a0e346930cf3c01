"""The Go client next to the Python client, in one run against one worker process (the affine model).

Usage (from the repository root, with .venv and go):
    .venv/bin/python clients/go/cmd/bench/compare.py [--n 2000] [--rounds 3] [--out go-bench.json]

Both clients run as their own processes and take turns, round after round, so that the noisy machine
affects both alike. Each measures pipelined submits (windows of 256, one pipeline each) and sequential
round trips with the same request (FP32 [1, 16]), and how fast it only adds requests (a stream no worker
reads), small ones and image-sized ones (FP32 [1, 150528], 588 KiB). The Python client is the baseline: the ratios are
Go / Python of the median rounds. The worker is the same for both, so these numbers say how much each
client adds to what the worker takes, not how fast the worker is; the submit-only cases are the clients
alone (encoding, the script, Redis).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT))

import redis as redis_lib  # noqa: E402

from worker.embedded import EmbeddedRedis  # noqa: E402
from worker.testing import WorkerPool, make_affine_model  # noqa: E402

STREAM = "bench-go:requests"
IDLE = "bench-go:idle"  # no worker reads it: submit-only cases
PYTHON_CLIENT = """
import json, sys, time
import numpy as np
from producer import Client
url, stream, mode = sys.argv[1:4]
n, window, d = (int(a) for a in sys.argv[4:7])
x = np.zeros((1, d), np.float32)
lat = []
with Client(url, model="affine", stream=stream) as c:
    start = time.perf_counter()
    if mode == "sequential":
        for _ in range(n):
            t0 = time.perf_counter(); c.infer({"x": x}, timeout=60); lat.append(time.perf_counter() - t0)
    elif mode == "submit":
        for sent in range(0, n, window):
            t0 = time.perf_counter()
            c.submit_many([{"x": x}] * min(window, n - sent), timeout=60)
            lat.append(time.perf_counter() - t0)
    else:
        for sent in range(0, n, window):
            t0 = time.perf_counter()
            for f in c.submit_many([{"x": x}] * min(window, n - sent), timeout=60):
                f.result(); lat.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
lat.sort()
pct = lambda p: lat[int(p * (len(lat) - 1))] * 1000
print(json.dumps({"client": "python", "mode": f"{mode} d={d}", "requests": n, "seconds": elapsed, "rps": n / elapsed,
                  "p50_ms": pct(0.5), "p99_ms": pct(0.99)}))
"""


def run_json(cmd: list[str]) -> dict[str, Any]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def measure(binary: Path, url: str, n: int, rounds: int) -> list[dict[str, Any]]:
    """Each case: both clients, ``rounds`` times, taking turns. ``submit`` goes to a stream no worker reads."""
    cases = [("pipelined", STREAM, n, 16), ("sequential", STREAM, n // 4, 16), ("submit", IDLE, n, 16),
             ("submit", IDLE, max(n // 20, 50), 150528)]  # fmt: skip
    idle = redis_lib.Redis.from_url(url)
    rows: list[dict[str, Any]] = []
    for mode, stream, count, d in cases:
        for _ in range(rounds):
            for client in ("go", "python"):
                idle.delete(IDLE)
                if client == "go":
                    cmd = [str(binary), "-url", url, "-stream", stream, "-mode", mode, "-n", str(count), "-d", str(d)]
                else:
                    cmd = [sys.executable, "-c", PYTHON_CLIENT, url, stream, mode, str(count), "256", str(d)]
                row = run_json(cmd)
                row["mode"] = f"{mode} d={d}"
                rows.append(row)
    idle.close()
    return rows


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for mode in dict.fromkeys(r["mode"] for r in rows):
        med = {
            client: {k: statistics.median(r[k] for r in rows if r["client"] == client and r["mode"] == mode)
                     for k in ("rps", "p50_ms", "p99_ms")}
            for client in ("go", "python")
        }  # fmt: skip
        out.append({"mode": mode, "go": med["go"], "python": med["python"],
                    "rps_ratio_go_over_python": med["go"]["rps"] / med["python"]["rps"],
                    "p50_ratio_go_over_python": med["go"]["p50_ms"] / med["python"]["p50_ms"]})  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("go-bench.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis() as redis:
        binary = Path(tmp) / "bench"
        subprocess.run(["go", "build", "-o", str(binary), "./cmd/bench"], cwd=ROOT / "clients" / "go", check=True)
        model = make_affine_model(Path(tmp) / "affine.onnx")
        pool = WorkerPool(model, redis.url, stream=STREAM).start()
        try:
            pool.wait_ready()
            rows = measure(binary, redis.url, args.n, args.rounds)
        finally:
            pool.stop()
    result = {"rows": rows, "summary": summary(rows)}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("| mode | Go req/s | Python req/s | Go/Python | Go p50 ms | Python p50 ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    for s in result["summary"]:
        print(
            f"| {s['mode']} | {s['go']['rps']:.0f} | {s['python']['rps']:.0f} | {s['rps_ratio_go_over_python']:.2f} "
            f"| {s['go']['p50_ms']:.2f} | {s['python']['p50_ms']:.2f} |"
        )


if __name__ == "__main__":
    main()
