"""A host-memory double of ``worker.cuda``, so the TensorRT backend's logic runs on a CPU.

Device buffers are numpy byte arrays behind fake addresses (poisoned with 0xFF); streams are FIFO
queues that a scheduler drains one op at a time on the running event loop, picking streams in a
seeded random order so that cross-stream races show up; host functions (``signal``) resolve their
futures in stream order. ``hold()`` stops the "GPU" so a test can see several slots in flight,
``release()`` lets it go on. Graph capture records ops instead of queueing them; ``FakeGraph``
replays them.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from worker.cuda import DeviceProperties


class CudaRuleViolation(AssertionError):
    """The code under test misused device memory."""


@dataclass
class Op:
    fn: Callable[[], None]
    kind: str
    done: bool = False


@dataclass
class FakeStream:
    cuda: FakeCuda
    handle_int: int
    queue: list[Op] = field(default_factory=list)
    capture: list[Op] | None = None
    closed: bool = False

    def copy_h2d(self, dst: FakeDeviceBuffer, src: FakeHostBuffer, nbytes: int) -> None:
        assert isinstance(dst, FakeDeviceBuffer) and isinstance(src, FakeHostBuffer) and src.pinned
        assert 0 <= nbytes <= min(dst.nbytes, src.nbytes)
        self.cuda.enqueue(self.handle_int, lambda: dst.data.__setitem__(slice(0, nbytes), src.data[:nbytes]), "h2d")

    def copy_d2h(self, dst: FakeHostBuffer, src: FakeDeviceBuffer, nbytes: int) -> None:
        assert isinstance(dst, FakeHostBuffer) and isinstance(src, FakeDeviceBuffer) and dst.pinned
        assert 0 <= nbytes <= min(dst.nbytes, src.nbytes)
        self.cuda.enqueue(self.handle_int, lambda: dst.data.__setitem__(slice(0, nbytes), src.data[:nbytes]), "d2h")

    def signal(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def resolve() -> None:
            if not future.done():
                future.set_result(None)

        self.cuda.enqueue(self.handle_int, resolve, "signal")
        return future

    async def wait(self, future: asyncio.Future[None] | None = None) -> None:
        future = future if future is not None else self.signal()
        await asyncio.wait({future})  # like worker.cuda: cancelling the waiter leaves the future alone
        future.result()

    def begin_capture(self) -> None:
        assert self.capture is None, "nested capture"
        self.capture = []

    def end_capture(self) -> FakeGraph:
        ops, self.capture = self.capture, None
        assert ops is not None, "end_capture without begin_capture"
        self.cuda.graphs_captured += 1
        return FakeGraph(self.cuda, [op.fn for op in ops])

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeGraph:
    cuda: FakeCuda
    fns: list[Callable[[], None]]
    closed: bool = False

    def launch(self, stream: FakeStream) -> None:
        assert not self.closed
        self.cuda.graph_launches += 1
        for fn in self.fns:
            self.cuda.enqueue(stream.handle_int, fn, "graph")

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeHostBuffer:
    ptr: int
    data: np.ndarray
    pinned: bool = True

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    def array(self, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
        dt = np.dtype(dtype)
        count = int(np.prod(shape)) * dt.itemsize
        if count > self.nbytes:
            raise ValueError(f"shape {shape} does not fit {self.nbytes} bytes")
        view: np.ndarray = self.data[:count].view(dt).reshape(shape)
        return view

    def close(self) -> None:
        pass


@dataclass
class FakeDeviceBuffer:
    ptr: int
    data: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    def close(self) -> None:
        pass


class FakeDevice:
    def __init__(self, cuda: FakeCuda, index: int) -> None:
        self.cuda = cuda
        self.index = index
        self.properties = DeviceProperties(index, cuda.gpu_name, cuda.compute_capability, 80 << 30, 132, 2)
        self.owned: list[Any] = []
        self.closed = 0

    def activate(self) -> None:
        assert not self.closed, "device used after close"

    def stream(self) -> FakeStream:
        stream = FakeStream(self.cuda, next(self.cuda.addresses))
        self.cuda.streams[stream.handle_int] = stream
        self.owned.append(stream)
        return stream

    def host_buffer(self, nbytes: int) -> FakeHostBuffer:
        buffer = FakeHostBuffer(next(self.cuda.addresses), np.full(max(nbytes, 1), 0xFF, np.uint8))
        self.owned.append(buffer)
        return buffer

    def device_buffer(self, nbytes: int) -> FakeDeviceBuffer:
        buffer = FakeDeviceBuffer(next(self.cuda.addresses), np.full(max(nbytes, 1), 0xFF, np.uint8))
        self.cuda.memory[buffer.ptr] = buffer
        self.owned.append(buffer)
        return buffer

    def adopt(self, graph: FakeGraph) -> FakeGraph:
        self.owned.append(graph)
        return graph

    def synchronize(self) -> None:
        self.cuda.drain()

    def close(self) -> None:
        self.closed += 1
        if self.closed == 1:
            self.cuda.drain()
            for resource in reversed(self.owned):
                resource.close()
                if isinstance(resource, FakeDeviceBuffer):
                    del self.cuda.memory[resource.ptr]
            self.owned.clear()


class FakeCuda:
    """Module-like stand-in for ``worker.cuda`` (``open_device``) backed by host memory."""

    def __init__(
        self, *, seed: int = 0, gpu_name: str = "Fake H100", compute_capability: tuple[int, int] = (9, 0)
    ) -> None:
        self.gpu_name = gpu_name
        self.compute_capability = compute_capability
        self.addresses = itertools.count(0x7F0000000000, 0x100000)
        self.memory: dict[int, FakeDeviceBuffer] = {}
        self.streams: dict[int, FakeStream] = {}
        self.devices: list[FakeDevice] = []
        self.rng = random.Random(seed)
        self.held = False
        self.graphs_captured = 0
        self.graph_launches = 0
        self.log: list[tuple[int, str]] = []  # (stream, kind) in execution order
        self._scheduled = False
        self._changed: asyncio.Event | None = None

    def open_device(self, index: int = 0) -> FakeDevice:
        device = FakeDevice(self, index)
        self.devices.append(device)
        return device

    def view(self, ptr: int, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        buffer = self.memory.get(ptr)
        if buffer is None:
            raise CudaRuleViolation(f"address {ptr:#x} is not a live device allocation")
        count = int(np.prod(shape)) * dtype.itemsize
        if count > buffer.nbytes:
            raise CudaRuleViolation(f"tensor of shape {shape} overruns its {buffer.nbytes}-byte buffer")
        return buffer.data[:count].view(dtype).reshape(shape)

    def capturing(self, stream: int) -> bool:
        return self.streams[stream].capture is not None

    def enqueue(self, stream: int, fn: Callable[[], None], kind: str) -> Op:
        op = Op(fn, kind)
        target = self.streams[stream]
        assert not target.closed, "work enqueued on a closed stream"
        if target.capture is not None:
            if kind == "signal":
                raise CudaRuleViolation("host function enqueued inside a graph capture")
            target.capture.append(op)
            return op
        target.queue.append(op)
        self._schedule()
        return op

    def pending(self, kind: str | None = None) -> dict[int, int]:
        """Ops not yet run, per stream (optionally of one kind)."""
        return {h: n for h, s in self.streams.items() if (n := sum(kind in (None, op.kind) for op in s.queue))}

    def hold(self) -> None:
        self.held = True

    def release(self) -> None:
        self.held = False
        self._schedule()

    async def wait_pending(self, kind: str, streams: int) -> None:
        """Wait (on events, not sleeps) until ``streams`` streams have ``kind`` work queued."""
        while len(self.pending(kind)) < streams:
            self._changed = self._changed or asyncio.Event()
            await self._changed.wait()
            self._changed.clear()

    def _schedule(self) -> None:
        if self._changed is not None:
            self._changed.set()
        if self._scheduled or self.held:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: work runs at synchronize()
        self._scheduled = True
        loop.call_soon(self._step)

    def _step(self) -> None:
        self._scheduled = False
        if self.held:
            return
        busy = [s for s in self.streams.values() if s.queue]
        if not busy:
            return
        self._run_one(self.rng.choice(busy))
        self._schedule()

    def _run_one(self, stream: FakeStream) -> None:
        op = stream.queue.pop(0)
        op.fn()
        op.done = True
        self.log.append((stream.handle_int, op.kind))

    def drain(self) -> None:
        while busy := [s for s in self.streams.values() if s.queue]:
            self._run_one(self.rng.choice(busy))
