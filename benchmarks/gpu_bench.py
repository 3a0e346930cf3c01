"""GPU benchmark of the TensorRT backend's CUDA path, for the device machine.

Measures, in one process on one GPU:

* copy ceilings: pinned vs pageable H2D and D2H, and device-to-device (read + write bytes), with
  CUDA events, median of repeats;
* the test engine alone on one stream (cupy MLP y = relu(x @ W1) @ W2, float32) at the batch size;
* the backend (``TensorRTEngine`` with the real ``worker.cuda`` and the TensorRT test double whose
  kernels run on each context's stream) driving batches through 1, 2 and 4 contexts, with separate
  and shared optimization profiles, with and without filling the pinned staging buffer per batch;
* the completion latency from a stream's host function to the awaiting coroutine.

The MLP is sized so that one batch's H2D copy takes about as long as its compute, which is where
several contexts (copies of one batch under the compute of another) pay. Usage::

    python -m benchmarks.gpu_bench --out bench-results/gpu.json [--batch 512 --d-in 4096 ...]

No real TensorRT engine runs here (none can on this GPU; see docs/tensorrt.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def timed_ms(device: Any, stream: Any, fn: Callable[[], None], reps: int) -> float:
    start, end = device.event(timing=True), device.event(timing=True)
    for _ in range(2):
        fn()
    stream.synchronize()
    times = []
    for _ in range(reps):
        start.record(stream)
        fn()
        end.record(stream)
        end.synchronize()
        times.append(start.elapsed_ms(end))
    return statistics.median(times)


def bandwidth(device: Any, mib: int, reps: int) -> dict[str, float]:
    nbytes = mib << 20
    pinned = device.host_buffer(nbytes)
    pinned.array(np.uint8, (nbytes,))[...] = 1
    pageable = np.ones(nbytes, np.uint8)  # touched, so no page faults are timed
    d1, d2 = device.device_buffer(nbytes), device.device_buffer(nbytes)
    s = device.stream()
    ms = {
        "h2d_pinned": timed_ms(device, s, lambda: s.copy(d1.ptr, pinned.ptr, nbytes, "h2d"), reps),
        "h2d_pageable": timed_ms(device, s, lambda: s.copy(d1.ptr, pageable.ctypes.data, nbytes, "h2d"), reps),
        "d2h_pinned": timed_ms(device, s, lambda: s.copy(pinned.ptr, d1.ptr, nbytes, "d2h"), reps),
        "d2h_pageable": timed_ms(device, s, lambda: s.copy(pageable.ctypes.data, d1.ptr, nbytes, "d2h"), reps),
        "d2d": timed_ms(device, s, lambda: s.copy(d2.ptr, d1.ptr, nbytes, "d2d"), reps),
    }
    gbps = {f"{k}_gbps": (2 if k == "d2d" else 1) * nbytes / v / 1e6 for k, v in ms.items()}
    return {"bytes": nbytes, **{f"{k}_ms": v for k, v in ms.items()}, **gbps}


def compute_only(device: Any, spec: dict[str, Any], batch: int, reps: int) -> dict[str, float]:
    import cupy as cp

    from worker.doubles.trt_double import cupy_stream, mlp_weights

    m = spec["model"]
    s = device.stream()
    with cupy_stream(s.handle_int):
        w1, w2 = (cp.asarray(w) for w in mlp_weights(m["d_in"], m["hidden"], m["d_out"], m["seed"]))
        x = cp.random.standard_normal((batch, m["d_in"]), dtype=cp.float32)
        h = cp.empty((batch, m["hidden"]), cp.float32)
        y = cp.empty((batch, m["d_out"]), cp.float32)

        def mlp() -> None:
            cp.matmul(x, w1, out=h)
            cp.maximum(h, 0, out=h)
            cp.matmul(h, w2, out=y)

        ms = timed_ms(device, s, mlp, reps)
    flops = 2.0 * batch * (m["d_in"] * m["hidden"] + m["hidden"] * m["d_out"])
    return {"ms": ms, "tflops": flops / ms / 1e9, "gflop_per_batch": flops / 1e9}


async def drive(engine: Any, batch: int, d_in: int, batches: int, fill: bool, src: np.ndarray) -> float:
    """Push ``batches`` batches through all slots at once; return the wall time in seconds."""
    left = batches

    async def lane(slot: Any) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            staged = slot.stage({"x": (batch, d_in)})
            if fill:
                np.copyto(staged["x"], src)  # what decoding requests into pinned memory costs
            outputs = await slot.run()
            if fill:
                outputs["y"].copy()  # what copying results into replies costs

    start = time.perf_counter()
    await asyncio.gather(*(lane(slot) for slot in engine.slots))
    return time.perf_counter() - start


async def check_correct(engine: Any, spec: dict[str, Any], batch: int) -> float:
    from worker.doubles.trt_double import reference

    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, spec["model"]["d_in"]), dtype=np.float32)
    slot = engine.slots[-1]
    slot.stage({"x": x.shape})["x"][...] = x
    y = (await slot.run())["y"].copy()
    want = reference(spec, {"x": x})["y"]
    return float(np.linalg.norm(y - want) / np.linalg.norm(want))


def engine_rows(args: argparse.Namespace, workdir: Path, props: Any) -> list[dict[str, Any]]:
    kw = {"d_in": args.d_in, "hidden": args.hidden, "d_out": args.d_out}
    configs = [(c, c, False) for c in args.contexts] + [(c, 1, False) for c in args.contexts if c > 1]
    src = np.random.default_rng(1).standard_normal((args.batch, args.d_in), dtype=np.float32)
    rows = []
    for contexts, profiles, graphs in configs:
        engine, spec = make_engine(workdir, kw, args.batch, props, contexts=contexts, profiles=profiles, graphs=graphs)
        try:
            rel_err = asyncio.run(check_correct(engine, spec, args.batch))
            for fill in (False, True):
                asyncio.run(drive(engine, args.batch, args.d_in, args.warmup, fill, src))
                seconds = asyncio.run(drive(engine, args.batch, args.d_in, args.batches, fill, src))
                rows.append(
                    {
                        "contexts": contexts,
                        "profiles": profiles,
                        "cuda_graphs": graphs,
                        "host_fill": fill,
                        "batches": args.batches,
                        "batch": args.batch,
                        "seconds": seconds,
                        "ms_per_batch": seconds / args.batches * 1e3,
                        "rows_per_s": args.batches * args.batch / seconds,
                        "rel_err_vs_fp64": rel_err,
                    }
                )
                ms = rows[-1]["ms_per_batch"]
                print(f"  {contexts} ctx / {profiles} prof graphs={graphs} fill={fill}: {ms:.3f} ms/batch", flush=True)
        finally:
            engine.close()
    return rows


def make_engine(
    workdir: Path, kw: dict[str, Any], batch: int, props: Any, *, contexts: int, profiles: int, graphs: bool
) -> Any:
    from worker.doubles.trt_double import CupyCompute, FakeTensorRT, mlp_spec
    from worker.engines.tensorrt import TensorRTEngine
    from worker.engines.trt_meta import EngineMetadata, sha256_file, write_metadata

    spec = mlp_spec(**kw, profiles=[(1, batch, batch)] * profiles)
    path = workdir / f"mlp-{contexts}-{profiles}-{int(graphs)}.engine"
    path.write_text(json.dumps(spec))
    meta = EngineMetadata("11.4.0.106", props.name, props.compute_capability_str, sha256_file(path))
    write_metadata(path, meta)
    trt = FakeTensorRT(CupyCompute(poison=False))
    return TensorRTEngine(path, name="mlp", contexts=contexts, cuda_graphs=graphs, runtime_module=trt), spec


async def completion_latency_us(device: Any, reps: int) -> dict[str, float]:
    stream = device.stream()
    await stream.wait()
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        await stream.wait()
        samples.append((time.perf_counter() - start) * 1e6)
    return {"median_us": statistics.median(samples), "p99_us": float(np.percentile(samples, 99))}


def yes(flag: bool) -> str:
    return "yes" if flag else "no"


def table(result: dict[str, Any]) -> str:
    bw, comp, lat = result["bandwidth"], result["compute_only"], result["completion"]
    lines = [
        f"device: {result['device']['name']} (sm {result['device']['compute_capability']}), {result['date']}",
        f"copies of {bw['bytes'] >> 20} MiB: H2D pinned {bw['h2d_pinned_gbps']:.1f} GB/s, pageable "
        f"{bw['h2d_pageable_gbps']:.1f} GB/s; D2H pinned {bw['d2h_pinned_gbps']:.1f}, pageable "
        f"{bw['d2h_pageable_gbps']:.1f}; D2D {bw['d2d_gbps']:.0f} GB/s (read+write)",
        f"test engine alone (1 stream, batch {result['config']['batch']}): {comp['ms']:.3f} ms = "
        f"{comp['tflops']:.1f} TFLOP/s; one batch's H2D at the pinned rate {result['h2d_batch_ms']:.3f} ms, "
        f"D2H {result['d2h_batch_ms']:.3f} ms",
        f"per batch: copies + compute in series {result['bounds']['serial_ms']:.3f} ms; fully overlapped "
        f"{result['bounds']['overlap_ms']:.3f} ms",
        f"completion latency: median {lat['median_us']:.0f} us, p99 {lat['p99_us']:.0f} us",
        "",
        "| contexts | profiles | graphs | host fill | ms/batch | rows/s | vs 1 ctx |",
        "|---:|---:|:---:|:---:|---:|---:|---:|",
    ]
    base = {r["host_fill"]: r["ms_per_batch"] for r in result["engine"] if r["contexts"] == 1}
    for r in result["engine"]:
        lines.append(
            f"| {r['contexts']} | {r['profiles']} | {yes(r['cuda_graphs'])} | {yes(r['host_fill'])} "
            f"| {r['ms_per_batch']:.3f} | {r['rows_per_s']:,.0f} | {base[r['host_fill']] / r['ms_per_batch']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="write the JSON results here")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--d-in", type=int, default=4096)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--d-out", type=int, default=1024)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--contexts", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--copy-mib", type=int, default=256)
    args = parser.parse_args(argv)

    from worker.cuda import open_device, runtime

    device = open_device(0)
    props = device.properties
    rt = runtime()
    _, driver = rt.cudaDriverGetVersion()
    _, rt_version = rt.cudaRuntimeGetVersion()
    from worker.doubles.trt_double import mlp_spec

    spec = mlp_spec(d_in=args.d_in, hidden=args.hidden, d_out=args.d_out)
    result: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": {
            "name": props.name,
            "compute_capability": props.compute_capability_str,
            "multiprocessors": props.multiprocessors,
            "copy_engines": props.async_engines,
            "memory_mib": props.total_memory_bytes >> 20,
            "cuda_driver": driver,
            "cuda_runtime": rt_version,
        },
        "host": {"python": platform.python_version(), "numpy": np.__version__},
        "config": {k: v for k, v in vars(args).items() if k != "out"},
    }
    print("measuring copies ...", flush=True)
    result["bandwidth"] = bandwidth(device, args.copy_mib, reps=10)
    print("measuring the test engine alone ...", flush=True)
    result["compute_only"] = compute_only(device, spec, args.batch, reps=30)
    result["h2d_batch_ms"] = args.batch * args.d_in * 4 / result["bandwidth"]["h2d_pinned_gbps"] / 1e6
    result["d2h_batch_ms"] = args.batch * args.d_out * 4 / result["bandwidth"]["d2h_pinned_gbps"] / 1e6
    result["bounds"] = {
        "serial_ms": result["h2d_batch_ms"] + result["compute_only"]["ms"] + result["d2h_batch_ms"],
        "overlap_ms": max(result["h2d_batch_ms"], result["compute_only"]["ms"], result["d2h_batch_ms"]),
    }
    result["completion"] = asyncio.run(completion_latency_us(device, reps=500))
    print("driving the backend ...", flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        result["engine"] = engine_rows(args, Path(workdir), props)
    device.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
