"""``python -m demo hooks``: one worker process, three ways to send the same pages, bytes and throughput.

The PP-LCNet model is served three times from a model repository (worker/repository.py), each with a
hook (demo/hook.py) that returns the orientation label and score:

- ``orientation-f32``: the producer sends the model's input, float32 ``[1,3,224,224]`` (602 KB);
- ``orientation-u8``: uint8 pixels ``[1,224,224,3]``, resized and cropped (150 KB, 4x fewer);
- ``orientation-png``: the whole page as PNG bytes; the worker decodes, resizes, crops, normalises.

Prints, for each, the bytes of one request entry in Redis, the throughput (median of interleaved
rounds, float32 the baseline of the same run) and the predictions (which must agree with the page's
rotation). Exit code 1 if a prediction is wrong or a request failed.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from demo import images
from demo import model as demo_model
from demo.load import run_load
from redis_infer_protocol import keys
from redis_infer_protocol.codec import encode_request
from worker.testing import redis_server, start_worker, wait_ready

log = logging.getLogger("demo.hooks")

WAYS: Mapping[str, str] = {
    "orientation-f32": "demo.hook:Labels",
    "orientation-u8": "demo.hook:UInt8Pixels",
    "orientation-png": "demo.hook:PngImages",
}


def write_repository(root: Path, model_path: Path, *, max_batch: int = 8, max_delay_ms: float = 2.0) -> Path:
    """A model repository serving the model three ways (one folder each); returns ``root``."""
    for name, hook in WAYS.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.toml").write_text(
            f'file = {json.dumps(str(model_path.resolve()))}\nversion = "1"\n'
            f"[batching]\nmax_size = {max_batch}\nmax_delay_ms = {max_delay_ms}\n"
            f'[hook]\nclass = "{hook}"\n',
            encoding="utf-8",
        )
    return root


def png_bytes(image: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def page_inputs(seed: int = 0) -> dict[str, dict[int, dict[str, np.ndarray]]]:
    """``{model: {degrees_cw: inputs}}``: the same rotated page as each model takes it."""
    page = images.render_page(seed)
    out: dict[str, dict[int, dict[str, np.ndarray]]] = {name: {} for name in WAYS}
    for degrees in images.ROTATIONS:
        rotated = images.rotate(page, degrees)
        out["orientation-f32"][degrees] = {"x": images.preprocess(rotated)[None]}
        out["orientation-u8"][degrees] = {"image": images.crop(rotated)[None]}
        out["orientation-png"][degrees] = {"png": np.array([[png_bytes(rotated)]], dtype=object)}
    return out


def entry_bytes(model: str, inputs: Mapping[str, np.ndarray]) -> int:
    """Bytes of one request's stream entry (field names and values), as XADD stores it."""
    fields = encode_request("0" * 32, keys.DEFAULT_REPLY_PREFIX + "0" * 32, model, inputs, model_version="1")
    return sum(len(k) + len(v) for k, v in fields.items())


def _cycle(inputs: Mapping[int, Mapping[str, np.ndarray]], count: int) -> Iterator[tuple[int, Mapping[str, Any]]]:
    for i in range(count):
        degrees = images.ROTATIONS[i % len(images.ROTATIONS)]
        yield degrees, inputs[degrees]


def measure(
    url: str, model: str, inputs: Mapping[int, Mapping[str, np.ndarray]], count: int, args: Any
) -> dict[str, Any]:
    """Send ``count`` requests to ``model``; bytes per request, throughput, predictions."""
    from producer import Client

    with Client(url, model=model, stream=None, model_version="1") as client:
        run_load(client, _cycle(inputs, 4), concurrency=4, timeout_s=args.timeout)  # warm-up
        result = run_load(client, _cycle(inputs, count), concurrency=args.concurrency, timeout_s=args.timeout)
    wrong = [s for s in result.ok if s.reply.outputs["label"][0, 0].decode() != str(s.label)]
    return {
        "model": model,
        "bytes_per_request": entry_bytes(model, inputs[0]),
        "requests": len(result.samples),
        "failed": len(result.failed),
        "wrong": len(wrong),
        "throughput_rps": len(result.ok) / result.elapsed_s if result.elapsed_s else 0.0,
        "p50_ms": float(np.percentile([s.latency_s for s in result.ok], 50) * 1000) if result.ok else None,
    }


def measure_rounds(url: str, inputs: Mapping[str, Mapping[int, Mapping[str, np.ndarray]]], args: Any) -> list[Any]:
    """The three ways in turn, ``args.rounds`` times (a noisy machine drifts: interleaving shares the drift);
    per way the median throughput and p50 over the rounds, the failures and wrong labels summed."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in WAYS}
    count = max(4, args.requests // args.rounds)
    for _ in range(args.rounds):
        for name in WAYS:
            runs[name].append(measure(url, name, inputs[name], count, args))
    rows = []
    for done in runs.values():
        row = dict(done[0])
        row.update(
            requests=sum(r["requests"] for r in done), failed=sum(r["failed"] for r in done),
            wrong=sum(r["wrong"] for r in done), rounds=len(done),
            throughput_rps=float(np.median([r["throughput_rps"] for r in done])),
            p50_ms=float(np.median([r["p50_ms"] or 0.0 for r in done])),
        )  # fmt: skip
        rows.append(row)
    return rows


def run(args: argparse.Namespace) -> int:
    model_path = args.model or demo_model.fetch(demo_model.DEFAULT_DEST)
    inputs = page_inputs(seed=0)
    with tempfile.TemporaryDirectory(prefix="redis-infer-repo-") as tmp, redis_server(args.url) as url:
        repo = write_repository(Path(tmp) / "repo", model_path, max_batch=args.batch)
        argv = [sys.executable, "-m", "worker", "run", "--model-repository", str(repo)]
        worker = start_worker(model_path, url, consumer="demo-hooks", log_path=Path(tmp) / "worker.log", argv=argv,
                              env={"WORKER_ONNX__INTRA_OP_THREADS": str(args.threads)})  # fmt: skip
        try:
            for name in WAYS:
                wait_ready(url, [worker], stream=keys.model_stream(name, "1"), timeout_s=args.ready_timeout)
            rows = measure_rounds(url, inputs, args)
        finally:
            code = worker.stop()
    report(rows)
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    ok = code == 0 and all(r["failed"] == 0 and r["wrong"] == 0 for r in rows)
    return 0 if ok else 1


def report(rows: list[dict[str, Any]]) -> None:
    base = rows[0]
    print(f"\n{'model':<18}{'bytes/request':>15}{'vs float32':>12}{'requests/s':>12}{'vs float32':>12}{'p50 ms':>9}"
          f"{'wrong':>7}{'failed':>8}")  # fmt: skip
    for r in rows:
        size_ratio = r["bytes_per_request"] / base["bytes_per_request"]
        speed_ratio = r["throughput_rps"] / base["throughput_rps"] if base["throughput_rps"] else 0.0
        print(f"{r['model']:<18}{r['bytes_per_request']:>15,}{size_ratio:>11.2f}x{r['throughput_rps']:>12.1f}"
              f"{speed_ratio:>11.2f}x{r['p50_ms'] or 0:>9.1f}{r['wrong']:>7}{r['failed']:>8}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m demo hooks", description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=240, help="requests per way (default 240)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the three ways (default 3)")
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight at most (default 16)")
    p.add_argument("--batch", type=int, default=8, help="max batch size (default 8)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default 1)")
    p.add_argument("--url", help="Redis URL (default: a private redis-server)")
    p.add_argument("--model", type=Path, help="model file (default: models/, fetched if missing)")
    p.add_argument("--timeout", type=float, default=60.0, help="per-request timeout in seconds (default 60)")
    p.add_argument("--ready-timeout", type=float, default=120.0, help="seconds to wait for the worker")
    p.add_argument("--json-out", type=Path, help="also write the numbers as JSON here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    started = time.monotonic()
    code = run(args)
    log.info("done in %.1f s", time.monotonic() - started)
    return code
