"""Submit-only throughput under a published max_backlog: each client against its older self, in one run.

Builds the Go bench (clients/go/cmd/bench, ``-mode submit``) and takes the Node client from this tree and from
``--baseline`` (a git revision: by default main before the batched backlog script, one script call per
request), then runs all four in turns for ``--rounds`` rounds against one private redis-server whose
``<stream>:limits`` publishes a limit far above the run, so every request goes through the script. Each run
adds ``--n`` requests (FP32 [1, 16]) in windows of ``--window``; the stream and the script cache are emptied
between runs. Prints the medians as a Markdown table (the baseline: the older client of the same run) and
writes every row to ``--out``. Usage (from the repository root)::

    .venv/bin/python clients/bench_backlog.py --rounds 5 --n 20000 --out backlog-bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import TypedDict

import redis

from worker.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent
STREAM = "bench:requests"


class Row(TypedDict):
    round: int
    name: str
    rps: float
    p50_ms: float


GO_ENV = {**os.environ, "GOPROXY": "off", "GOTOOLCHAIN": "local", "GOFLAGS": "", "CGO_ENABLED": "0"}


def build(scratch: Path, baseline: str) -> dict[str, list[str]]:
    """The four commands (minus their arguments): Go and Node, baseline and this tree."""
    old = scratch / "baseline"
    old.mkdir()
    archive = subprocess.run(["git", "archive", baseline, "clients/go", "clients/node"], cwd=ROOT, capture_output=True,
                             check=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
    for name, tree in (("go-baseline", old), ("go", ROOT)):
        subprocess.run(["go", "build", "-o", str(scratch / name), "./cmd/bench"], cwd=tree / "clients" / "go",
                       env=GO_ENV, check=True)  # fmt: skip
    node = ["node", str(ROOT / "clients" / "node" / "bench" / "submit_only.mjs")]
    return {
        "go-baseline": [str(scratch / "go-baseline")], "go": [str(scratch / "go")],
        "node-baseline": [*node, str(old / "clients" / "node")], "node": [*node, str(ROOT / "clients" / "node")],
    }  # fmt: skip


def run_one(name: str, cmd: list[str], port: int, n: int, window: int) -> dict[str, float]:
    if name.startswith("go"):
        args = [*cmd, "-url", f"redis://127.0.0.1:{port}/0", "-stream", STREAM, "-mode", "submit", "-n", str(n),
                "-window", str(window), "-d", "16"]  # fmt: skip
    else:
        args = [*cmd, str(port), STREAM, str(n), str(window)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{name} printed nothing (rc {proc.returncode}): {proc.stderr[-2000:]}")
    row: dict[str, float] = json.loads(lines[-1])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="848d464", help="git revision of the older clients")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path("backlog-bench.json"))
    args = parser.parse_args()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as scratch, EmbeddedRedis() as server:
        cmds = build(Path(scratch), args.baseline)
        client = redis.Redis(port=server.port)
        client.hset(f"{STREAM}:limits", "max_backlog", 10**9)
        for round_ in range(args.rounds):
            for name, cmd in cmds.items():
                client.delete(STREAM)
                client.script_flush()
                row = run_one(name, cmd, server.port, args.n, args.window)
                if client.xlen(STREAM) != args.n:
                    raise RuntimeError(f"{name} added {client.xlen(STREAM)} of {args.n}")
                rows.append(Row(round=round_, name=name, rps=row["rps"], p50_ms=row["p50_ms"]))
    median = {name: statistics.median(r["rps"] for r in rows if r["name"] == name) for name in cmds}
    args.out.write_text(json.dumps({"baseline": args.baseline, "n": args.n, "window": args.window, "rows": rows,
                                    "median_rps": median}, indent=1))  # fmt: skip
    print("| client | baseline req/s | batched script req/s | ratio |\n| --- | --- | --- | --- |")
    for lang in ("go", "node"):
        old, new = median[f"{lang}-baseline"], median[lang]
        print(f"| {lang} | {old:,.0f} | {new:,.0f} | {new / old:.2f} |")


if __name__ == "__main__":
    main()
