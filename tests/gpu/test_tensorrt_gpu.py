"""The TensorRT backend on a real GPU: real worker.cuda streams, pinned buffers and completion, and a
test engine with TensorRT's IExecutionContext interface whose kernels (cupy) run on the stream it is
given. Run with ``pytest -m gpu`` on the device machine. No TensorRT engine runs here (see GPU.md)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from worker.doubles.trt_double import CupyCompute, FakeTensorRT, aio, mlp_spec, reference
from worker.engines.tensorrt import TensorRTEngine
from worker.engines.trt_meta import EngineMetadata, sha256_file, write_metadata

pytestmark = pytest.mark.gpu


def build(
    tmp_path: Path,
    *,
    contexts: int,
    profiles: int,
    min_batch: int = 1,
    max_batch: int = 64,
    cuda_graphs: bool = False,
    kernels: str = "cublas",
    d_in: int = 256,
    hidden: int = 512,
    d_out: int = 128,
) -> tuple[TensorRTEngine, dict[str, Any]]:
    from worker.cuda import open_device

    spec = mlp_spec(d_in=d_in, hidden=hidden, d_out=d_out, profiles=[(min_batch, max_batch // 2, max_batch)] * profiles)
    path = tmp_path / "mlp.engine"
    path.write_text(json.dumps(spec))
    probe = open_device(0)
    props = probe.properties
    probe.close()
    write_metadata(
        path,
        EngineMetadata(
            tensorrt_version="11.4.0.106",
            gpu_name=props.name,
            compute_capability=props.compute_capability_str,
            engine_sha256=sha256_file(path),
        ),
    )
    trt = FakeTensorRT(CupyCompute(poison=True, kernels=kernels))
    engine = TensorRTEngine(path, name="mlp", contexts=contexts, cuda_graphs=cuda_graphs, runtime_module=trt)
    return engine, spec


async def run_checked(slot: Any, spec: dict[str, Any], rng: np.random.Generator, batch: int) -> None:
    x = rng.standard_normal((batch, spec["model"]["d_in"]), dtype=np.float32)
    staged = slot.stage({"x": x.shape})
    staged["x"][...] = x
    outputs = await slot.run()
    y = outputs["y"]
    want = reference(spec, {"x": x})["y"]
    assert y.shape == want.shape and np.isfinite(y).all(), "unwritten (poisoned) output elements"
    rel = np.linalg.norm(y - want) / np.linalg.norm(want)
    assert rel < 1e-5, rel  # float32 (cupy's default: no TF32) against float64
    y[...] = np.nan  # poison the pinned output for the next run of this slot


@aio
async def test_correct_against_float64_at_every_size(tmp_path: Path) -> None:
    engine, spec = build(tmp_path, contexts=1, profiles=1, min_batch=4)
    rng = np.random.default_rng(0)
    try:
        assert engine.info.max_batch_size == 64
        for batch in (1, 3, 4, 17, 64, 2, 64):
            await run_checked(engine.slots[0], spec, rng, batch)
    finally:
        engine.close()


@pytest.mark.parametrize(("contexts", "profiles"), [(4, 4), (4, 1), (3, 2)])
@aio
async def test_contexts_in_flight_at_once_without_cross_talk(tmp_path: Path, contexts: int, profiles: int) -> None:
    engine, spec = build(tmp_path, contexts=contexts, profiles=profiles)
    rng = np.random.default_rng(contexts * 10 + profiles)
    try:
        for _ in range(20):
            sizes = rng.integers(1, 65, size=contexts)
            await asyncio.gather(*(run_checked(s, spec, rng, int(n)) for s, n in zip(engine.slots, sizes, strict=True)))
    finally:
        engine.close()


@aio
async def test_pool_under_load(tmp_path: Path) -> None:
    engine, spec = build(tmp_path, contexts=4, profiles=2)
    rng = np.random.default_rng(1)
    free: asyncio.Queue[Any] = asyncio.Queue()
    for slot in engine.slots:
        free.put_nowait(slot)

    async def one() -> None:
        slot = await free.get()
        try:
            await run_checked(slot, spec, rng, int(rng.integers(1, 65)))
        finally:
            free.put_nowait(slot)

    try:
        await asyncio.gather(*(one() for _ in range(200)))
    finally:
        engine.close()


@aio
async def test_cuda_graphs_with_the_test_engine(tmp_path: Path) -> None:
    # cupy refuses cuBLAS calls under stream capture, so the engine uses its capturable SGEMM kernel
    engine, spec = build(tmp_path, contexts=2, profiles=2, cuda_graphs=True, kernels="raw")
    rng = np.random.default_rng(2)
    try:
        for batch in (8, 8, 8, 33, 33, 8):
            for slot in engine.slots:
                await run_checked(slot, spec, rng, batch)
        captured = [len(slot._graphs) for slot in engine.slots]
        print(f"\ngraphs captured per slot: {captured}")
        assert captured == [2, 2]
    finally:
        engine.close()


def test_close_returns_device_memory(tmp_path: Path) -> None:
    import cupy as cp

    from worker.cuda import runtime

    def free_bytes() -> int:
        cp.get_default_memory_pool().free_all_blocks()
        _err, free, _ = runtime().cudaMemGetInfo()
        return int(free)

    before = free_bytes()
    engine, _ = build(tmp_path, contexts=4, profiles=4, d_in=4096, hidden=1024, d_out=1024, max_batch=512)
    during = free_bytes()
    engine.close()
    engine.close()
    after = free_bytes()
    print(f"\nfree device memory: before {before >> 20} MiB, open {during >> 20} MiB, after close {after >> 20} MiB")
    assert before - during > 4 * 512 * 4096 * 4  # the input buffers alone
    assert abs(before - after) < 64 << 20


def test_real_tensorrt_lean_runtime_refuses_a_non_engine(tmp_path: Path) -> None:
    """The only real TensorRT code that can run here: the lean runtime deserializing on the GPU.
    In a subprocess, so a crash inside TensorRT cannot take the test session down."""
    pytest.importorskip("tensorrt_lean_bindings")
    path = tmp_path / "garbage.engine"
    path.write_bytes(b"not a TensorRT plan" * 100)
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from worker.engines.tensorrt import TensorRTEngine\n"
        "from worker.errors import ModelError\n"
        "try:\n"
        f"    TensorRTEngine(Path({str(path)!r}), name='m')\n"
        "except ModelError as exc:\n"
        "    print('MODEL_ERROR', exc)\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    print(f"\nreal lean runtime: rc={result.returncode} {result.stdout.strip()} {result.stderr[-1500:]}")
    assert "MODEL_ERROR" in result.stdout and "could not deserialize" in result.stdout
