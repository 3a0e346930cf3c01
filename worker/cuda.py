"""The CUDA layer: the only module of the worker that touches CUDA.

Built on cuda-python (``cuda.bindings.runtime``), imported lazily by ``open_device`` so that the CPU
path never imports it. It offers what an engine needs to pipeline batches on one GPU:

* ``CudaDevice``: one GPU, chosen by ordinal (one worker process per GPU). It owns every stream,
  event and buffer it hands out and frees them on ``close`` (idempotent).
* ``Stream``: a non-blocking stream with async host<->device copies and ``signal()``, a future that
  completes on the asyncio loop when the stream reaches that point (``cudaLaunchHostFunc`` ->
  ``loop.call_soon_threadsafe``). ``wait()`` awaits it with a watchdog that queries the stream every
  ``poll_s`` so a device fault (host functions do not run after one) surfaces as a ``CudaError``
  instead of a hang. The event loop never blocks on the GPU.
* ``HostBuffer``: pinned host memory (``cudaHostAlloc``) exposed as numpy views, so requests can be
  decoded straight into the memory the GPU copies from.
* ``DeviceBuffer``, ``Event`` (timing), ``Graph`` (CUDA graph capture and replay).

Every CUDA status is checked; a failure raises ``CudaError``, with ``fatal=True`` for the sticky
errors that leave the CUDA context unusable (the worker must exit so the orchestrator restarts it).
All calls are made from the thread that runs the asyncio loop; ``CudaDevice.activate`` makes the
device current for the calling thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import logging
import threading
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from worker.errors import ConfigError, EngineError

log = logging.getLogger(__name__)

# Errors after which the CUDA context is unusable: every later call fails, so the worker must restart.
FATAL_ERRORS: Final = frozenset(
    {
        "cudaErrorIllegalAddress",
        "cudaErrorLaunchFailure",
        "cudaErrorLaunchTimeout",
        "cudaErrorHardwareStackError",
        "cudaErrorIllegalInstruction",
        "cudaErrorMisalignedAddress",
        "cudaErrorInvalidAddressSpace",
        "cudaErrorInvalidPc",
        "cudaErrorAssert",
        "cudaErrorECCUncorrectable",
        "cudaErrorContextIsDestroyed",
        "cudaErrorDevicesUnavailable",
        "cudaErrorNoDevice",
        "cudaErrorInitializationError",
        "cudaErrorCudartUnloading",
        "cudaErrorDeviceUninitialized",
        "cudaErrorUnknown",
        "cudaErrorExternalDevice",
        "cudaErrorContained",
        "cudaErrorTensorMemoryLeak",
    }
)
DEFAULT_POLL_S: Final = 1.0


class CudaError(EngineError):
    """A CUDA call failed. ``fatal`` (see ``FATAL_ERRORS``) means the device context is lost."""

    def __init__(self, call: str, name: str, code: int, description: str) -> None:
        super().__init__(f"{call} failed: {name} ({code}): {description}", fatal=name in FATAL_ERRORS)
        self.call = call
        self.name = name
        self.code = code


_rt: Any = None


def runtime() -> Any:
    """``cuda.bindings.runtime``, imported on first use. ``ConfigError`` when cuda-python is missing."""
    global _rt
    if _rt is None:
        try:
            from cuda.bindings import runtime as rt
        except ImportError as exc:
            raise ConfigError(
                "the GPU path needs cuda-python (`pip install 'cuda-python>=12.4'`, in the [gpu] extra); "
                f"import failed: {exc}"
            ) from None
        _rt = rt
    return _rt


def check(call: str, result: Any) -> Any:
    """Unpack a cuda-bindings result tuple ``(status, *values)``; raise ``CudaError`` unless success."""
    status = result[0]
    if int(status) != 0:
        rt = runtime()
        name = getattr(status, "name", None) or f"cudaError({int(status)})"
        err, text = rt.cudaGetErrorString(status)
        description = text.decode(errors="replace") if int(err) == 0 else "no description"
        raise CudaError(call, name, int(status), description)
    if len(result) == 1:
        return None
    return result[1] if len(result) == 2 else result[1:]


# -- completion delivery: cudaLaunchHostFunc -> loop.call_soon_threadsafe -----------------------------

_HostFnType = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class _Completions:
    """Routes host-function calls (made on a CUDA driver thread) to futures on their asyncio loops.

    One C trampoline serves every stream; its ``userData`` is an integer token naming the future.
    The trampoline only takes a lock and calls ``call_soon_threadsafe``: host functions must not
    call CUDA, and anything slow would stall the stream behind it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = {}
        self._tokens = itertools.count(1)
        self._trampoline = _HostFnType(self._fire)  # kept alive for the life of the process
        self._fn_ptr: Any = None

    def fn(self) -> Any:
        if self._fn_ptr is None:
            address = ctypes.cast(self._trampoline, ctypes.c_void_p).value
            self._fn_ptr = runtime().cudaHostFn_t(init_value=address)
        return self._fn_ptr

    def register(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> int:
        token = next(self._tokens)
        with self._lock:
            self._pending[token] = (loop, future)
        return token

    def forget(self, token: int) -> None:
        with self._lock:
            self._pending.pop(token, None)

    def _fire(self, user_data: int | None) -> None:
        with self._lock:
            entry = self._pending.pop(user_data or 0, None)
        if entry is None:
            return
        loop, future = entry
        with contextlib.suppress(RuntimeError):  # the loop was closed while the GPU was still working
            loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_completions = _Completions()


# -- resources ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceProperties:
    index: int
    name: str
    compute_capability: tuple[int, int]
    total_memory_bytes: int
    multiprocessors: int
    async_engines: int  # copy engines: 2 means H2D and D2H can overlap each other and compute

    @property
    def compute_capability_str(self) -> str:
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"


class HostBuffer:
    """Pinned (page-locked) host memory. ``array`` returns numpy views; they dangle after ``close``."""

    def __init__(self, ptr: int, nbytes: int) -> None:
        self.ptr = ptr
        self.nbytes = nbytes
        raw = memoryview((ctypes.c_uint8 * nbytes).from_address(ptr)).cast("B")
        self._bytes: np.ndarray[Any, np.dtype[np.uint8]] | None = np.frombuffer(raw, dtype=np.uint8)

    def array(self, dtype: np.dtype[Any] | type, shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
        """A writable view of the first ``prod(shape)`` elements, C-contiguous."""
        if self._bytes is None:
            raise EngineError("host buffer used after close", fatal=True)
        dt = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        if count * dt.itemsize > self.nbytes:
            raise ValueError(f"shape {shape} of {dt} needs {count * dt.itemsize} bytes; buffer has {self.nbytes}")
        return self._bytes[: count * dt.itemsize].view(dt).reshape(shape)

    def close(self) -> None:
        if self._bytes is not None:
            self._bytes = None
            check("cudaFreeHost", runtime().cudaFreeHost(self.ptr))


class DeviceBuffer:
    """Device memory (``cudaMalloc``)."""

    def __init__(self, ptr: int, nbytes: int) -> None:
        self.ptr = ptr
        self.nbytes = nbytes
        self._open = True

    def close(self) -> None:
        if self._open:
            self._open = False
            check("cudaFree", runtime().cudaFree(self.ptr))


class Event:
    """A CUDA event; with ``timing=True`` usable for ``elapsed_ms``."""

    def __init__(self, *, timing: bool = False) -> None:
        rt = runtime()
        flags = rt.cudaEventDefault if timing else rt.cudaEventDisableTiming
        self.handle: Any = check("cudaEventCreateWithFlags", rt.cudaEventCreateWithFlags(flags))

    def record(self, stream: Stream) -> None:
        check("cudaEventRecord", runtime().cudaEventRecord(self.handle, stream.handle))

    def synchronize(self) -> None:
        check("cudaEventSynchronize", runtime().cudaEventSynchronize(self.handle))

    def elapsed_ms(self, end: Event) -> float:
        return float(check("cudaEventElapsedTime", runtime().cudaEventElapsedTime(self.handle, end.handle)))

    def close(self) -> None:
        if self.handle is not None:
            handle, self.handle = self.handle, None
            check("cudaEventDestroy", runtime().cudaEventDestroy(handle))


class Graph:
    """An instantiated CUDA graph, replayed with ``launch``."""

    def __init__(self, graph: Any, graph_exec: Any) -> None:
        self._graph = graph
        self._exec = graph_exec

    def launch(self, stream: Stream) -> None:
        check("cudaGraphLaunch", runtime().cudaGraphLaunch(self._exec, stream.handle))

    def close(self) -> None:
        if self._exec is not None:
            rt = runtime()
            graph_exec, graph, self._exec, self._graph = self._exec, self._graph, None, None
            check("cudaGraphExecDestroy", rt.cudaGraphExecDestroy(graph_exec))
            check("cudaGraphDestroy", rt.cudaGraphDestroy(graph))


class Stream:
    """A non-blocking CUDA stream. Work on it runs in order; work on different streams may overlap."""

    def __init__(self, poll_s: float = DEFAULT_POLL_S) -> None:
        rt = runtime()
        self.handle: Any = check("cudaStreamCreateWithFlags", rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking))
        self.poll_s = poll_s

    @property
    def handle_int(self) -> int:
        """The raw ``cudaStream_t`` value, as TensorRT's ``execute_async_v3`` and cupy take it."""
        return _native_handle(self.handle)

    def copy(self, dst_ptr: int, src_ptr: int, nbytes: int, kind: str) -> None:
        """``cudaMemcpyAsync``; ``kind`` is ``h2d``, ``d2h``, ``d2d`` or ``default`` (inferred)."""
        rt = runtime()
        kinds = {
            "h2d": rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
            "d2h": rt.cudaMemcpyKind.cudaMemcpyDeviceToHost,
            "d2d": rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice,
            "default": rt.cudaMemcpyKind.cudaMemcpyDefault,
        }
        if nbytes:
            check("cudaMemcpyAsync", rt.cudaMemcpyAsync(dst_ptr, src_ptr, nbytes, kinds[kind], self.handle))

    def copy_h2d(self, dst: DeviceBuffer, src: HostBuffer, nbytes: int) -> None:
        _check_size(nbytes, dst.nbytes, src.nbytes)
        self.copy(dst.ptr, src.ptr, nbytes, "h2d")

    def copy_d2h(self, dst: HostBuffer, src: DeviceBuffer, nbytes: int) -> None:
        _check_size(nbytes, dst.nbytes, src.nbytes)
        self.copy(dst.ptr, src.ptr, nbytes, "d2h")

    def signal(self) -> asyncio.Future[None]:
        """A future on the running loop that completes when the stream reaches this point."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        token = _completions.register(loop, future)
        try:
            check("cudaLaunchHostFunc", runtime().cudaLaunchHostFunc(self.handle, _completions.fn(), token))
        except BaseException:
            _completions.forget(token)
            raise
        return future

    async def wait(self, future: asyncio.Future[None] | None = None) -> None:
        """Await ``future`` (default: a new ``signal()``) without blocking the loop.

        Every ``poll_s`` without completion the stream is queried, so a device fault (after which host
        functions never run) raises ``CudaError`` instead of waiting forever. Cancelling the waiter
        leaves ``future`` alone: it still completes when the GPU gets there.
        """
        if future is None:
            future = self.signal()
        while True:
            done, _ = await asyncio.wait({future}, timeout=self.poll_s)
            if done:
                return future.result()
            if self.query():
                # the stream finished but the callback is late; give it one more poll period
                await asyncio.wait({future}, timeout=self.poll_s)
                if not future.done():
                    raise EngineError("CUDA stream completed but its host function never ran", fatal=True)

    def query(self) -> bool:
        """True when all work on the stream has finished; raises ``CudaError`` if it failed."""
        status = runtime().cudaStreamQuery(self.handle)
        if int(status[0]) == 600:  # cudaErrorNotReady
            return False
        check("cudaStreamQuery", status)
        return True

    def synchronize(self) -> None:
        """Block the calling thread until the stream is idle (shutdown and tests only)."""
        check("cudaStreamSynchronize", runtime().cudaStreamSynchronize(self.handle))

    def begin_capture(self) -> None:
        rt = runtime()
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        check("cudaStreamBeginCapture", rt.cudaStreamBeginCapture(self.handle, mode))

    def end_capture(self) -> Graph:
        rt = runtime()
        graph = check("cudaStreamEndCapture", rt.cudaStreamEndCapture(self.handle))
        try:
            graph_exec = check("cudaGraphInstantiate", rt.cudaGraphInstantiate(graph, 0))
        except CudaError:
            rt.cudaGraphDestroy(graph)
            raise
        return Graph(graph, graph_exec)

    def close(self) -> None:
        if self.handle is not None:
            handle, self.handle = self.handle, None
            rt = runtime()
            check("cudaStreamSynchronize", rt.cudaStreamSynchronize(handle))
            check("cudaStreamDestroy", rt.cudaStreamDestroy(handle))


def _check_size(nbytes: int, *capacities: int) -> None:
    if nbytes < 0 or any(nbytes > capacity for capacity in capacities):
        raise ValueError(f"copy of {nbytes} bytes exceeds a buffer of {min(capacities)} bytes")


def _native_handle(obj: Any) -> int:
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:  # older cuda-bindings
        return int(obj)
    return int(get_cuda_native_handle(obj))


class CudaDevice:
    """One GPU and everything allocated on it through this object.

    Args:
        index: the CUDA device ordinal (after ``CUDA_VISIBLE_DEVICES``).
        poll_s: how often a waiting stream is queried for errors.
    """

    def __init__(self, index: int = 0, *, poll_s: float = DEFAULT_POLL_S) -> None:
        rt = runtime()
        status, count = rt.cudaGetDeviceCount()
        if int(status) != 0 or count == 0:
            reason = "no CUDA device" if int(status) == 0 else f"{getattr(status, 'name', status)}"
            raise ConfigError(f"CUDA is not usable here ({reason}): the tensorrt backend needs an NVIDIA GPU")
        if not 0 <= index < count:
            raise ConfigError(f"CUDA device {index} does not exist: {count} visible (WORKER_TENSORRT__DEVICE)")
        self.index = index
        self.poll_s = poll_s
        self.activate()
        prop = check("cudaGetDeviceProperties", rt.cudaGetDeviceProperties(index))
        raw_name = prop.name
        name = raw_name.split(b"\0")[0].decode() if isinstance(raw_name, bytes) else str(raw_name)
        self.properties = DeviceProperties(
            index=index,
            name=name,
            compute_capability=(int(prop.major), int(prop.minor)),
            total_memory_bytes=int(prop.totalGlobalMem),
            multiprocessors=int(prop.multiProcessorCount),
            async_engines=int(prop.asyncEngineCount),
        )
        self._owned: list[HostBuffer | DeviceBuffer | Stream | Event | Graph] = []
        self._closed = False

    def activate(self) -> None:
        """Make this device current for the calling thread (cheap; called before enqueuing work)."""
        check("cudaSetDevice", runtime().cudaSetDevice(self.index))

    def _own(self, resource: Any) -> Any:
        if self._closed:
            resource.close()
            raise EngineError("CUDA device already closed", fatal=True)
        self._owned.append(resource)
        return resource

    def stream(self) -> Stream:
        self.activate()
        stream: Stream = self._own(Stream(self.poll_s))
        return stream

    def event(self, *, timing: bool = False) -> Event:
        event: Event = self._own(Event(timing=timing))
        return event

    def host_buffer(self, nbytes: int) -> HostBuffer:
        """Pinned host memory of at least ``nbytes`` (page-aligned)."""
        size = max(int(nbytes), 1)
        ptr = check("cudaHostAlloc", runtime().cudaHostAlloc(size, runtime().cudaHostAllocDefault))
        buffer: HostBuffer = self._own(HostBuffer(int(ptr), size))
        return buffer

    def device_buffer(self, nbytes: int) -> DeviceBuffer:
        self.activate()
        size = max(int(nbytes), 1)
        ptr = check("cudaMalloc", runtime().cudaMalloc(size))
        buffer: DeviceBuffer = self._own(DeviceBuffer(int(ptr), size))
        return buffer

    def adopt(self, graph: Graph) -> Graph:
        """Free ``graph`` with the device."""
        adopted: Graph = self._own(graph)
        return adopted

    def synchronize(self) -> None:
        check("cudaDeviceSynchronize", runtime().cudaDeviceSynchronize())

    def close(self) -> None:
        """Wait for outstanding work, then free everything in reverse order. Idempotent; a fatal error
        on the way is logged and the remaining resources are still released where CUDA allows."""
        if self._closed:
            return
        self._closed = True
        errors: list[CudaError] = []
        try:
            self.activate()
            self.synchronize()
        except CudaError as exc:
            errors.append(exc)
        for resource in reversed(self._owned):
            try:
                resource.close()
            except CudaError as exc:
                errors.append(exc)
        self._owned.clear()
        if errors:
            log.warning("CUDA device %d closed with %d error(s); first: %s", self.index, len(errors), errors[0])


def open_device(index: int = 0, *, poll_s: float = DEFAULT_POLL_S) -> CudaDevice:
    """Open CUDA device ``index``. ``ConfigError`` if cuda-python, a driver or the device is missing."""
    return CudaDevice(index, poll_s=poll_s)
