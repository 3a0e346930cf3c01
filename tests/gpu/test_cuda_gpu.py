"""The real CUDA layer (worker/cuda.py) on a real GPU: run with ``pytest -m gpu`` on the device machine."""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from worker.cuda import CudaDevice, CudaError, open_device
from worker.doubles.trt_double import aio, cupy_stream
from worker.errors import ConfigError

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def device() -> Iterator[CudaDevice]:
    dev = open_device(0)
    yield dev
    dev.close()


def test_device_properties(device: CudaDevice) -> None:
    props = device.properties
    print(
        f"\nDEVICE {props.name} sm_{props.compute_capability_str} {props.total_memory_bytes >> 20} MiB "
        f"{props.multiprocessors} SMs, {props.async_engines} copy engines"
    )
    assert props.name and props.compute_capability >= (7, 0) and props.async_engines >= 1


def test_missing_device_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        open_device(99)


@aio
async def test_pinned_round_trip_is_exact(device: CudaDevice) -> None:
    rng = np.random.default_rng(0)
    count = 3_000_001  # odd size: no accidental alignment
    host_in, host_out = device.host_buffer(count * 4), device.host_buffer(count * 4)
    dev = device.device_buffer(count * 4)
    stream = device.stream()
    src = host_in.array(np.float32, (count,))
    src[...] = rng.standard_normal(count, dtype=np.float32)
    dst = host_out.array(np.float32, (count,))
    dst[...] = np.nan
    stream.copy_h2d(dev, host_in, count * 4)
    stream.copy_d2h(host_out, dev, count * 4)
    await stream.wait()
    np.testing.assert_array_equal(dst, src)


@aio
async def test_completion_reaches_the_loop_without_blocking_it(device: CudaDevice) -> None:
    import cupy as cp

    stream = device.stream()
    ext = cupy_stream(stream.handle_int)
    with ext:
        a = cp.random.standard_normal((4096, 4096), dtype=cp.float32)
        cp.matmul(a, a)  # warm up cuBLAS
    ext.synchronize()
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    start = time.perf_counter()
    with ext:
        for _ in range(40):
            a = cp.matmul(a, a) / 64.0
    future = stream.signal()
    await stream.wait(future)
    elapsed_s = time.perf_counter() - start
    done.set()
    await task
    print(f"\nGPU work {elapsed_s * 1e3:.1f} ms; event loop ticked {ticks} times while waiting")
    assert elapsed_s > 0.01 and ticks > 100  # the loop kept running while the GPU worked

    latencies = []
    for _ in range(300):  # host-function completion latency on an idle stream
        t0 = time.perf_counter()
        await stream.wait()
        latencies.append(time.perf_counter() - t0)
    print(
        f"completion latency (idle stream, signal -> awaiting coroutine): median "
        f"{statistics.median(latencies) * 1e6:.1f} us, p99 {np.percentile(latencies, 99) * 1e6:.1f} us"
    )


def test_errors_are_typed_and_close_is_idempotent() -> None:
    dev = open_device(0)
    with pytest.raises(CudaError) as info:
        dev.device_buffer(1 << 50)  # 1 PiB
    assert info.value.name == "cudaErrorMemoryAllocation" and not info.value.fatal
    buf = dev.host_buffer(1024)
    dev.close()
    dev.close()
    with pytest.raises(Exception, match="after close"):
        buf.array(np.uint8, (16,))


@aio
async def test_graph_capture_and_replay(device: CudaDevice) -> None:
    import cupy as cp

    stream = device.stream()
    ext = cupy_stream(stream.handle_int)
    with ext:
        x = cp.arange(1 << 20, dtype=cp.float32)
        y = cp.empty_like(x)
        cp.multiply(x, 3.0, out=y)  # compile outside the capture
    stream.synchronize()
    stream.begin_capture()
    with ext:
        cp.multiply(x, 3.0, out=y)
        cp.add(y, 1.0, out=y)
    graph = device.adopt(stream.end_capture())
    with ext:
        y.fill(cp.nan)
    for _ in range(3):
        graph.launch(stream)
    await stream.wait()
    np.testing.assert_array_equal(cp.asnumpy(y), np.arange(1 << 20, dtype=np.float32) * 3 + 1)


def test_device_fault_raises_a_fatal_error_instead_of_hanging() -> None:
    """A kernel that writes through a null pointer: host functions never run after the fault, so the
    watchdog's stream query must turn it into a fatal CudaError (in a subprocess: the context dies)."""
    code = r'''
import asyncio, cupy as cp
from worker.cuda import open_device, CudaError
dev = open_device(0, poll_s=0.2)
stream = dev.stream()
kernel = cp.RawKernel(r"""extern "C" __global__ void boom(float* p) { p[threadIdx.x] = 1.0f; }""", "boom")
with cp.cuda.ExternalStream(stream.handle_int):
    kernel((1,), (32,), (cp.uint64(0),))
try:
    asyncio.run(asyncio.wait_for(stream.wait(), 30))
except CudaError as exc:
    print("FAULT", exc.name, exc.fatal)
'''
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    print(result.stdout, result.stderr[-2000:])
    assert "FAULT cudaErrorIllegalAddress True" in result.stdout


@aio
async def test_events_time_device_work(device: CudaDevice) -> None:
    host = device.host_buffer(64 << 20)
    dev = device.device_buffer(64 << 20)
    stream = device.stream()
    start, end = device.event(timing=True), device.event(timing=True)
    start.record(stream)
    stream.copy_h2d(dev, host, 64 << 20)
    end.record(stream)
    await stream.wait()
    ms = start.elapsed_ms(end)
    print(f"\n64 MiB pinned H2D: {ms:.3f} ms = {(64 << 20) / ms / 1e6:.1f} GB/s")
    assert 0 < ms < 1000
