"""The ``bench`` subcommand of ``python -m producer``: arguments, inputs, output and plots.

The load itself is in :mod:`producer.bench`. Plots need matplotlib (``pip install 'redis-infer[bench]'``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Final

import numpy as np

from producer.bench import LoadSpec, format_summary, measure

EXIT_OK: Final = 0
EXIT_INCOMPLETE: Final = 1  # some request was answered with an error or lost
EXIT_USAGE: Final = 2


class BenchUsageError(ValueError):
    """Bad bench arguments or inputs (exit code 2)."""


def add_parser(commands: Any, add_connection_args: Any) -> None:
    """Add ``bench`` to the ``python -m producer`` subcommands."""
    bench = commands.add_parser("bench", help="load a deployment and report throughput and latency")
    add_connection_args(bench)
    bench.add_argument("--model", required=True, help="model name the requests carry")
    load = bench.add_mutually_exclusive_group()
    load.add_argument("--concurrency", type=int, default=8, help="closed loop: requests in flight (default 8)")
    load.add_argument("--rate", type=float, help="open loop: requests scheduled per second, latency from schedule")
    load.add_argument("--sweep", type=_rates, help="open loop at each of these rates, e.g. 500,1000,2000")
    size = bench.add_mutually_exclusive_group()
    size.add_argument("--count", type=int, help="requests to measure (default 1000 unless --duration)")
    size.add_argument("--duration", type=float, help="seconds to measure (per rate with --sweep)")
    bench.add_argument("--warmup", type=int, default=100, help="requests sent first and not counted (default 100)")
    bench.add_argument("--procs", type=int, default=1, help="producer processes; load is split, results merged")
    bench.add_argument("--shape", default="1,512", help="input shape, comma-separated (default 1,512)")
    bench.add_argument("--dtype", default="float32", help="input numpy dtype (default float32)")
    bench.add_argument("--input-name", default="x", help="input name for --shape/--dtype (default x)")
    bench.add_argument(
        "--input", dest="inputs", action="append", metavar="NAME=FILE.npy", help="send this array instead; repeatable"
    )
    bench.add_argument("--timeout", type=float, default=30.0, help="per-request deadline, s (default 30)")
    bench.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    bench.add_argument("--plot", type=Path, help="write a PNG: latency histogram, or throughput vs latency (--sweep)")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    bench.set_defaults(func=run_bench)


def _rates(text: str) -> list[float]:
    try:
        rates = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected rates like 500,1000,2000, got {text!r}") from None
    if not rates or any(not r > 0 for r in rates):
        raise argparse.ArgumentTypeError(f"rates must be positive numbers, got {text!r}")
    return rates


def make_inputs(args: argparse.Namespace) -> dict[str, np.ndarray[Any, Any]]:
    """The request's inputs: ``--input`` files, else a random array of ``--shape`` and ``--dtype``."""
    if args.inputs:
        inputs: dict[str, np.ndarray[Any, Any]] = {}
        for spec in args.inputs:
            name, sep, path = spec.partition("=")
            if not sep or not name or not path:
                raise BenchUsageError(f"expected NAME=FILE.npy, got {spec!r}")
            try:
                inputs[name] = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise BenchUsageError(f"cannot load input {name!r} from {path}: {exc}") from exc
        return inputs
    try:
        shape = tuple(int(dim) for dim in args.shape.split(","))
        dtype = np.dtype(args.dtype)
    except (ValueError, TypeError) as exc:
        raise BenchUsageError(f"bad --shape {args.shape!r} or --dtype {args.dtype!r}: {exc}") from None
    if any(dim < 0 for dim in shape):
        raise BenchUsageError(f"--shape {args.shape!r} has a negative dimension")
    rng = np.random.default_rng(0)
    if dtype.kind == "f":
        return {args.input_name: rng.standard_normal(shape).astype(dtype)}
    if dtype.kind in "iub":
        return {args.input_name: rng.integers(0, 2 if dtype.kind == "b" else 100, shape).astype(dtype)}
    raise BenchUsageError(f"--dtype {args.dtype!r}: use a numeric dtype, or --input for anything else")


def _spec(args: argparse.Namespace, rate: float | None) -> LoadSpec:
    count = args.count if args.count is not None or args.duration is not None else 1000
    try:
        return LoadSpec(
            url=args.url, stream=args.stream, model=args.model, inputs=make_inputs(args),
            concurrency=args.concurrency, rate_rps=rate, count=count, duration_s=args.duration,
            warmup=args.warmup, timeout_s=args.timeout,
        )  # fmt: skip
    except ValueError as exc:
        raise BenchUsageError(str(exc)) from exc


def _need_matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise BenchUsageError("--plot needs matplotlib: pip install 'redis-infer[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_histogram(path: Path, latencies_ms: list[float], result: dict[str, Any]) -> None:
    """A latency histogram with p50 and p99 marked."""
    plt = _need_matplotlib()
    fig, ax = plt.subplots(figsize=(7, 4))
    if latencies_ms:
        ax.hist(latencies_ms, bins=100, color="tab:blue", alpha=0.8)
        for key, colour in (("p50_ms", "tab:green"), ("p99_ms", "tab:red")):
            ax.axvline(result[key], color=colour, linestyle="--", label=f"{key[:-3]} {result[key]:.2f} ms")
        ax.legend()
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("requests")
    ax.set_title(f"{result['mode']} loop: {result['throughput_rps']:.0f} req/s, {result['ok']} ok")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_sweep(path: Path, runs: list[dict[str, Any]]) -> None:
    """Throughput achieved against p50/p99 latency, one point per offered rate."""
    plt = _need_matplotlib()
    fig, ax = plt.subplots(figsize=(7, 4))
    x = [r["throughput_rps"] for r in runs]
    for key, colour in (("p50_ms", "tab:green"), ("p99_ms", "tab:red")):
        ax.plot(x, [r[key] or float("nan") for r in runs], marker="o", color=colour, label=key[:-3])
    ax.set_xlabel("throughput (req/s)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("open loop sweep: " + ", ".join(f"{r['rate_rps']:g}" for r in runs) + " req/s offered")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_bench(args: argparse.Namespace) -> int:
    """The ``bench`` command; returns the exit code."""
    if args.plot is not None:
        _need_matplotlib()  # fail before the load, not after
    progress = not args.no_progress and sys.stderr.isatty()
    try:
        result, text = _measure_all(args, progress)
    except RuntimeError as exc:  # a load process failed
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INCOMPLETE
    print(json.dumps(result) if args.json else text)
    return EXIT_OK if result["ok"] == result["sent"] else EXIT_INCOMPLETE


def _measure_all(args: argparse.Namespace, progress: bool) -> tuple[dict[str, Any], str]:
    if args.sweep:
        runs = [measure(_spec(args, rate), args.procs, progress)[0] for rate in args.sweep]
        totals = {k: sum(r[k] for r in runs) for k in ("sent", "ok", "errors", "lost")}
        best = max(runs, key=lambda r: r["throughput_rps"])
        result: dict[str, Any] = {**best, **totals, "mode": "sweep", "runs": runs}
        if args.plot is not None:
            plot_sweep(args.plot, runs)
        text = "\n".join(format_summary(r) for r in runs)
    else:
        result, latencies = measure(_spec(args, args.rate), args.procs, progress)
        if args.plot is not None:
            plot_histogram(args.plot, latencies, result)
        text = format_summary(result)
    return result, text
