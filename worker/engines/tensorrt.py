"""TensorRT backend: N execution contexts, each on its own CUDA stream with pinned staging buffers.

One slot = one ``IExecutionContext`` + one CUDA stream + pinned host and device buffers for every
input and output, sized for the slot's optimization profile at its largest batch. A batch goes:

    stage()  -> numpy views of the slot's pinned input buffers (requests decode straight into them)
    run()    -> pad up to the profile's min batch, H2D async, [profile lock], set shapes,
                execute_async_v3 (or a captured CUDA graph), D2H async, await completion on the loop

Completion reaches asyncio through ``worker.cuda`` (a host function on the stream resolves a future
with ``call_soon_threadsafe``), so several slots are in flight at once and the copies of one batch
overlap the compute of another. Slot ``i`` uses optimization profile ``i % num_profiles``. Contexts
that share a profile never execute at the same time: a per-profile lock is taken before
``execute_async_v3`` and released by the stream itself once the execution finished, while their
H2D/D2H copies still overlap. Build engines with ``--profiles N`` for N fully concurrent contexts.

TensorRT (full ``tensorrt`` or the lean runtime) and cuda-python are imported only when an engine
is constructed; without them the constructor raises one ``ConfigError``. The TensorRT API this
module touches is listed once, in ``TRT_API_USED``; the tests check every name against the real
TensorRT 11 lean classes, and the test double refuses any name not listed.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from worker.engines.base import ModelInfo, Shapes, TensorSpec
from worker.engines.trt_layout import EngineLayout, SlotPlan, output_bytes, read_layout
from worker.engines.trt_meta import check_compatible, read_metadata
from worker.errors import ConfigError, EngineError, ModelError

log = logging.getLogger(__name__)

# Every TensorRT name this backend uses: module attributes, then class -> members. Keep in sync by
# construction: the contract tests' double rejects any other name, and test_trt_api_surface checks
# each one against the real TensorRT 11 lean runtime classes.
TRT_API_USED: Final[dict[str, tuple[str, ...]]] = {
    "module": ("__version__", "ILogger", "Runtime", "TensorIOMode", "TensorLocation", "DataType"),
    "ILogger": ("log",),
    "Runtime": ("deserialize_cuda_engine", "engine_host_code_allowed"),
    "ICudaEngine": (
        "num_io_tensors",
        "num_optimization_profiles",
        "get_tensor_name",
        "get_tensor_mode",
        "get_tensor_dtype",
        "get_tensor_shape",
        "get_tensor_profile_shape",
        "get_tensor_location",
        "is_shape_inference_io",
        "get_tensor_vectorized_dim",
        "create_execution_context",
    ),
    "IExecutionContext": (
        "set_optimization_profile_async",
        "set_input_shape",
        "get_tensor_shape",
        "set_tensor_address",
        "execute_async_v3",
    ),
    "TensorIOMode": ("INPUT", "OUTPUT"),
    "TensorLocation": ("DEVICE",),
    "DataType": ("FLOAT", "HALF", "INT8", "INT32", "INT64", "BOOL", "UINT8"),
}
RUNTIME_MODULES: Final = ("tensorrt", "tensorrt_lean", "tensorrt_lean_bindings")  # in order of preference
MAX_GRAPHS_PER_SLOT: Final = 32


def import_tensorrt() -> tuple[Any, bool]:
    """The TensorRT Python module and whether it is the lean runtime. ``ConfigError`` if none imports."""
    reasons = []
    for name in RUNTIME_MODULES:
        try:
            return importlib.import_module(name), name != "tensorrt"
        except (ImportError, OSError) as exc:
            reasons.append(f"{name}: {exc}")
    raise ConfigError(
        "the tensorrt backend needs TensorRT: `pip install 'redis-infer[gpu]'` (full tensorrt) or "
        "`pip install 'redis-infer[gpu-lean]'` (lean runtime, version-compatible engines only); " + "; ".join(reasons)
    )


def _load_backends(runtime_module: Any | None, cuda: Any | None) -> tuple[Any, bool, Any]:
    """TensorRT module, lean flag and CUDA layer; one ``ConfigError`` naming everything missing."""
    problems: list[str] = []
    trt, lean = runtime_module, False
    if trt is None:
        try:
            trt, lean = import_tensorrt()
        except ConfigError as exc:
            problems.append(str(exc))
    else:
        lean = str(getattr(trt, "__name__", "")).startswith("tensorrt_lean")
    if cuda is None:
        from worker import cuda as cuda_layer

        try:
            cuda_layer.runtime()
            cuda = cuda_layer
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError(" | ".join(problems))
    return trt, lean, cuda


def _make_logger(trt: Any) -> Any:
    """A TensorRT logger that forwards to ``logging`` and keeps the last errors for our messages."""
    base = trt.ILogger

    class _Logger(base):  # type: ignore[misc,valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.errors: deque[str] = deque(maxlen=8)

        def log(self, severity: Any, msg: str) -> None:
            level = str(getattr(severity, "name", severity))
            if "ERROR" in level:
                self.errors.append(msg)
                log.error("TensorRT: %s", msg)
            elif "WARNING" in level:
                log.warning("TensorRT: %s", msg)
            else:
                log.debug("TensorRT: %s", msg)

    return _Logger()


class ProfileGate:
    """Lets one of the contexts sharing an optimization profile execute at a time: an ``asyncio.Lock``
    (FIFO), made anew when the engine is used from another event loop."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()

    def lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._lock = loop, asyncio.Lock()
        return self._lock


class TensorRTSlot:
    """One execution context on its own stream, with pinned staging and device buffers."""

    def __init__(self, engine: TensorRTEngine, index: int, plan: SlotPlan, context: Any, rows: int) -> None:
        self._engine = engine
        self.index = index
        self.plan = plan
        self._context = context
        layout, device = engine.layout, engine.device
        self._stream = device.stream()
        if not context.set_optimization_profile_async(plan.profile, self._stream.handle_int):
            raise ModelError(f"TensorRT refused optimization profile {plan.profile} for context {index}")
        self._set_shapes: dict[str, tuple[int, ...]] = {}
        largest = {name: plan.buffer_shape(name, rows) for name in layout.input_names}
        self._set_input_shapes(largest)
        out_shapes = {name: tuple(context.get_tensor_shape(name)) for name in layout.output_names}
        for name, shape in out_shapes.items():
            if not shape or shape[0] != rows:
                raise ModelError(f"output {name!r} has shape {shape} for a batch of {rows}: dim 0 must be the batch")
        sizes = {name: int(np.prod(shape)) * layout.tensors[name].dtype.itemsize for name, shape in largest.items()}
        sizes.update(output_bytes(layout, out_shapes))
        self._host = {name: device.host_buffer(nbytes) for name, nbytes in sizes.items()}
        self._dev = {name: device.device_buffer(nbytes) for name, nbytes in sizes.items()}
        for name, buffer in self._dev.items():
            if not context.set_tensor_address(name, buffer.ptr):
                raise ModelError(f"TensorRT refused the address of tensor {name!r}")
        self._out_shapes: dict[tuple[tuple[int, ...], ...], dict[str, tuple[int, ...]]] = {}
        self._graphs: dict[tuple[tuple[int, ...], ...], Any] = {}
        self._graphs_ok = engine.cuda_graphs
        self._staged: tuple[int, dict[str, tuple[int, ...]]] | None = None
        self._pending: asyncio.Future[None] | None = None
        self.profile_lock: ProfileGate | None = None  # set by the engine when contexts share the profile
        self._last_key: tuple[tuple[int, ...], ...] | None = None  # input shapes of the last execution

    def _check_open(self) -> None:
        if self._engine.closed:  # its buffers are freed: touching them would read freed memory
            raise EngineError(f"slot {self.index}: the engine is closed", fatal=True)

    def stage(self, shapes: Shapes) -> dict[str, np.ndarray[Any, Any]]:
        self._check_open()
        if self._pending is not None and not self._pending.done():
            raise EngineError(f"slot {self.index} is still busy with a cancelled batch")
        batch = self.plan.validate(shapes, self._engine.info.max_batch_size)
        layout = self._engine.layout
        views = {
            name: self._host[name].array(layout.tensors[name].dtype, tuple(shapes[name])) for name in layout.input_names
        }
        self._staged = (batch, {name: tuple(shapes[name]) for name in layout.input_names})
        return views

    async def run(self) -> dict[str, np.ndarray[Any, Any]]:
        if self._staged is None:
            raise EngineError("run() without stage()")
        batch, shapes = self._staged
        self._staged = None
        layout, stream = self._engine.layout, self._stream
        exec_batch = max(batch, self.plan.min_batch)
        exec_shapes = {name: (exec_batch, *shape[1:]) for name, shape in shapes.items()}
        self._engine.device.activate()
        for name in layout.input_names:
            host = self._host[name].array(layout.tensors[name].dtype, exec_shapes[name])
            if exec_batch > batch:  # pad with copies of the last real row: zeros can make NaN in some models
                host[batch:] = host[batch - 1]
            stream.copy_h2d(self._dev[name], self._host[name], host.nbytes)
        out_shapes = await self._execute(exec_shapes)
        outputs = {}
        for name in layout.output_names:
            host = self._host[name].array(layout.tensors[name].dtype, out_shapes[name])
            stream.copy_d2h(self._host[name], self._dev[name], host.nbytes)
            outputs[name] = host[:batch]
        self._pending = stream.signal()
        await stream.wait(self._pending)
        self._check_open()  # closed while the batch ran: the views above point at freed memory
        return outputs

    async def _execute(self, exec_shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        """Set shapes and enqueue the execution, holding the profile lock if the profile is shared."""
        lock = self.profile_lock.lock() if self.profile_lock is not None else None
        if lock is not None:
            await lock.acquire()
        try:
            self._check_open()
            out_shapes = self._prepare(exec_shapes)
            self._enqueue(exec_shapes)
            if lock is not None:  # the stream releases the profile once this execution has finished
                held, lock = lock, None
                self._stream.signal().add_done_callback(lambda _: held.release())
        finally:
            if lock is not None:
                lock.release()
        return out_shapes

    def _set_input_shapes(self, shapes: dict[str, tuple[int, ...]]) -> None:
        for name, shape in shapes.items():
            if self._set_shapes.get(name) != shape:
                if not self._context.set_input_shape(name, shape):
                    raise EngineError(f"TensorRT refused input shape {shape} for {name!r}{self._engine.last_error()}")
                self._set_shapes[name] = shape

    def _prepare(self, exec_shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        """Set the input shapes (when they changed) and return the output shapes they give."""
        self._set_input_shapes(exec_shapes)
        layout = self._engine.layout
        key = tuple(exec_shapes[name] for name in layout.input_names)
        out_shapes = self._out_shapes.get(key)
        if out_shapes is None:
            out_shapes = {name: tuple(self._context.get_tensor_shape(name)) for name in layout.output_names}
            batch = next(iter(exec_shapes.values()))[0]
            for name, nbytes in output_bytes(layout, out_shapes).items():
                if out_shapes[name][0] != batch or nbytes > self._host[name].nbytes:
                    raise EngineError(f"output {name!r} shape {out_shapes[name]} does not fit its buffer")
            self._out_shapes[key] = out_shapes
        return out_shapes

    def _enqueue(self, exec_shapes: dict[str, tuple[int, ...]]) -> None:
        key = tuple(exec_shapes[name] for name in self._engine.layout.input_names)
        # A graph replays what the context recorded for its shapes; replay it only when the context's
        # last execution had those same shapes, so no state of another shape can be baked in.
        graph = self._graphs.get(key) if key == self._last_key else None
        if graph is not None:
            graph.launch(self._stream)
            return
        self._execute_direct()
        self._last_key = key
        if self._graphs_ok and key not in self._graphs and len(self._graphs) < MAX_GRAPHS_PER_SLOT:
            self._capture(key)

    def _execute_direct(self) -> None:
        if not self._context.execute_async_v3(self._stream.handle_int):
            raise EngineError(f"TensorRT execute_async_v3 failed on context {self.index}{self._engine.last_error()}")

    def _capture(self, key: tuple[tuple[int, ...], ...]) -> None:
        """Capture the execution for these shapes into a CUDA graph (after one plain run, as TensorRT
        requires after a shape change). Any failure but a fatal CUDA error ends the capture, drops
        the partial graph and disables graphs for this slot, with a warning: plain execution works."""
        stream = self._stream
        graph: Any = None
        try:
            stream.begin_capture()
        except EngineError as exc:
            self._give_up_graphs(exc)
            return
        problem: BaseException | None = None
        try:
            if not self._context.execute_async_v3(stream.handle_int):
                problem = EngineError(f"execute_async_v3 failed under stream capture{self._engine.last_error()}")
        except Exception as exc:  # whatever the enqueue raised, the stream must leave capture mode
            problem = exc
        finally:
            try:
                graph = stream.end_capture()
            except EngineError as exc:
                if exc.fatal:
                    raise
                problem = problem or exc
        if problem is not None:
            if graph is not None:
                graph.close()
            self._give_up_graphs(problem)
            return
        self._graphs[key] = self._engine.device.adopt(graph)

    def _give_up_graphs(self, problem: BaseException) -> None:
        if getattr(problem, "fatal", False):
            raise problem
        self._graphs_ok = False
        log.warning("CUDA graph capture failed on context %d, running without graphs: %s", self.index, problem)

    def release(self) -> None:
        self._context = None
        self._graphs.clear()


class TensorRTEngine:
    """A serialized TensorRT engine served by ``contexts`` concurrent execution slots on one GPU.

    Args:
        path: the serialized engine (``build-engine`` writes ``<path>.json`` beside it).
        name: the model name requests must carry.
        contexts: execution contexts (slots), each with its own CUDA stream and buffers.
        device: CUDA device ordinal; run one worker process per GPU.
        cuda_graphs: capture a CUDA graph per batch shape and replay it (not run on real TensorRT here).
        runtime_module: the TensorRT Python module to use (tests inject a double); default: import it.
        cuda: the CUDA layer (``worker.cuda`` or a test double with ``open_device``).

    Raises:
        ConfigError: TensorRT, cuda-python or a GPU is missing, or the file does not exist.
        ModelError: the engine cannot be loaded here or does not fit the worker.
    """

    def __init__(
        self,
        path: Path,
        *,
        name: str,
        contexts: int = 2,
        device: int = 0,
        cuda_graphs: bool = False,
        runtime_module: Any | None = None,
        cuda: Any | None = None,
    ) -> None:
        path = Path(path)
        if contexts < 1:
            raise ConfigError(f"contexts must be at least 1, got {contexts}")
        if not path.is_file():
            raise ConfigError(f"TensorRT engine {path} does not exist")
        self.path = path
        self.cuda_graphs = cuda_graphs
        self._closed = False
        self._slots: list[TensorRTSlot] = []
        self._trt_engine: Any = None
        self._runtime: Any = None
        trt, lean, cuda_layer = _load_backends(runtime_module, cuda)
        self.trt = trt
        self.device = cuda_layer.open_device(device)
        try:
            self._load(path, name, contexts, lean)
        except BaseException:
            self.close()
            raise

    def _load(self, path: Path, name: str, contexts: int, lean: bool) -> None:
        trt, props = self.trt, self.device.properties
        version = str(trt.__version__)
        meta = read_metadata(path)
        check_compatible(
            path,
            meta,
            runtime_version=version,
            lean=lean,
            gpu_name=props.name,
            compute_capability=f"{props.compute_capability[0]}.{props.compute_capability[1]}",
        )
        self._logger = _make_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        if meta is not None and meta.version_compatible and not lean:
            self._runtime.engine_host_code_allowed = True  # the plan embeds its own lean runtime
        self._trt_engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self._trt_engine is None:
            raise ModelError(f"TensorRT could not deserialize {path}{self.last_error()}")
        self.layout: EngineLayout = read_layout(trt, self._trt_engine)
        plans = self.layout.plan_slots(contexts)
        max_batch = min(plan.max_batch for plan in plans)  # the batcher never exceeds any slot's profile
        self.info = ModelInfo(
            name=name,
            inputs=tuple(
                TensorSpec(n, self.layout.tensors[n].datatype, self.layout.spec_shape(n))
                for n in self.layout.input_names
            ),
            outputs=tuple(
                TensorSpec(n, self.layout.tensors[n].datatype, self.layout.spec_shape(n))
                for n in self.layout.output_names
            ),
            max_batch_size=max_batch,
            metadata={
                "backend": "tensorrt",
                "tensorrt_version": version,
                "tensorrt_runtime": "lean" if lean else "full",
                "device": props.name,
                "compute_capability": f"{props.compute_capability[0]}.{props.compute_capability[1]}",
                "contexts": str(contexts),
                "profiles": str(self.layout.num_profiles),
                "cuda_graphs": str(self.cuda_graphs).lower(),
            },
        )
        for index, plan in enumerate(plans):
            context = self._trt_engine.create_execution_context()
            if context is None:
                raise ModelError(f"TensorRT could not create execution context {index}{self.last_error()}")
            self._slots.append(TensorRTSlot(self, index, plan, context, rows=max(max_batch, plan.min_batch)))
        by_profile: dict[int, list[TensorRTSlot]] = {}
        for slot in self._slots:
            by_profile.setdefault(slot.plan.profile, []).append(slot)
        # TensorRT's rule (one profile per concurrently running context) concerns dynamic shapes only.
        dynamic = any(-1 in info.shape for info in self.layout.tensors.values())
        for sharing in by_profile.values():
            if len(sharing) > 1 and dynamic:
                gate = ProfileGate()
                for slot in sharing:
                    slot.profile_lock = gate
        if len(by_profile) < len(self._slots):
            log.info(
                "%d contexts share %d optimization profile(s): their executions take turns, their copies overlap; "
                "build the engine with --profiles %d for fully concurrent contexts",
                len(self._slots),
                len(by_profile),
                len(self._slots),
            )

    def last_error(self) -> str:
        errors = getattr(getattr(self, "_logger", None), "errors", None)
        return f": {errors[-1]}" if errors else ""

    @property
    def slots(self) -> Sequence[TensorRTSlot]:
        return self._slots

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Wait for the GPU, destroy contexts before the engine before the runtime, free all buffers."""
        if self._closed:
            return
        self._closed = True
        device = getattr(self, "device", None)
        if device is not None:
            try:
                device.synchronize()
            except EngineError as exc:
                log.warning("GPU not idle at close: %s", exc)
        for slot in self._slots:
            slot.release()
        self._slots = []
        self._trt_engine = None
        self._runtime = None
        if device is not None:
            device.close()
