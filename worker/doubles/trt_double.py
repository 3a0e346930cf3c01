"""Test doubles for the TensorRT backend: a TensorRT runtime that enforces TensorRT's rules, and a
host-memory CUDA layer, so the backend's logic runs on a CPU.

``FakeTensorRT`` stands in for the ``tensorrt`` module. Its engines are JSON descriptions (IO
tensors, optimization profiles, a small model); its execution contexts enforce what real TensorRT
requires or leaves undefined:

* ``set_optimization_profile_async`` before any shape is set, on the stream later used to execute;
* every input shape set, within the context's profile, before ``execute_async_v3``;
* every IO tensor address set, to a buffer large enough for the current shapes;
* no two contexts on one optimization profile running at the same time;
* under CUDA graph capture, a plain execution with the same shapes first.

A breach raises ``TrtRuleViolation``. Every public TensorRT name the backend touches must be listed
in ``worker.engines.tensorrt.TRT_API_USED``: the double refuses any other, so the list (checked
against the real lean runtime by test_trt_api_surface) cannot drift from the code.

The compute is pluggable: ``HostCompute`` runs the model with numpy on ``FakeCuda`` memory, inside
the fake stream's queue; the GPU tests plug in ``CupyCompute``, which launches real kernels with
cupy on the raw CUDA stream it is given (so the same double drives the real ``worker.cuda``).

The host-memory CUDA layer it computes on is ``FakeCuda`` (tests/cuda_double.py).
"""

from __future__ import annotations

import asyncio
import enum
import functools
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from worker.doubles.cuda_double import CudaRuleViolation, FakeCuda
from worker.engines.tensorrt import TRT_API_USED

FAKE_MAGIC = "fake-tensorrt-engine"


def aio(test: Callable[..., Any]) -> Callable[..., Any]:
    """Run an ``async def`` test on a fresh event loop (the project uses no pytest asyncio plugin)."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return asyncio.run(test(*args, **kwargs))

    return wrapper


__all__ = ["CudaRuleViolation", "CupyCompute", "FakeCuda", "FakeTensorRT", "HostCompute", "TrtRuleViolation"]


class TrtRuleViolation(AssertionError):
    """The backend did something real TensorRT forbids or leaves undefined."""


class _Guarded:
    """Refuses public attributes not listed in TRT_API_USED[_api]."""

    _api = ""

    def __getattribute__(self, name: str) -> Any:
        if not name.startswith("_"):
            allowed = TRT_API_USED.get(object.__getattribute__(self, "_api"), ())
            if name not in allowed:
                raise TrtRuleViolation(
                    f"backend used {object.__getattribute__(self, '_api')}.{name}, not in TRT_API_USED"
                )
        return object.__getattribute__(self, name)


class _GuardedEnumMeta(enum.EnumMeta):
    def __getattribute__(cls, name: str) -> Any:
        if not name.startswith("_") and name.isupper():
            api = type.__getattribute__(cls, "__name__")
            if name not in TRT_API_USED.get(api, ()):
                raise TrtRuleViolation(f"backend used {api}.{name}, not in TRT_API_USED")
        return super().__getattribute__(name)


class TensorIOMode(enum.Enum, metaclass=_GuardedEnumMeta):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class TensorLocation(enum.Enum, metaclass=_GuardedEnumMeta):
    DEVICE = 0
    HOST = 1


class DataType(enum.Enum, metaclass=_GuardedEnumMeta):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    INT64 = 8
    BF16 = 7


_NP = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
    "UINT8": np.uint8,
}


class Severity(enum.Enum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class ILogger:
    def __init__(self) -> None:
        pass

    def log(self, severity: Any, msg: str) -> None:
        pass


# -- models the double runs ------------------------------------------------------------------------


def mlp_weights(d_in: int, hidden: int, d_out: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((d_in, hidden)) / np.sqrt(d_in)).astype(np.float32)
    w2 = (rng.standard_normal((hidden, d_out)) / np.sqrt(hidden)).astype(np.float32)
    return w1, w2


def reference(spec: dict[str, Any], inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model's outputs in float64 (what the tests check against)."""
    model = spec["model"]
    if model["kind"] == "mlp":
        w1, w2 = mlp_weights(model["d_in"], model["hidden"], model["d_out"], model["seed"])
        x = inputs[spec["inputs"][0]["name"]].astype(np.float64)
        return {spec["outputs"][0]["name"]: np.maximum(x @ w1, 0.0) @ w2}
    x, y = (inputs[t["name"]].astype(np.float64) for t in spec["inputs"])
    return {"z": x + 2.0 * y, "n": (x * y).sum(axis=1, keepdims=True)}


def output_shapes(spec: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    model = spec["model"]
    first = shapes[spec["inputs"][0]["name"]]
    if model["kind"] == "mlp":
        return {spec["outputs"][0]["name"]: (first[0], model["d_out"])}
    return {"z": first, "n": (first[0], 1)}


def mlp_spec(
    *,
    d_in: int = 8,
    hidden: int = 16,
    d_out: int = 4,
    profiles: list[tuple[int, int, int]] | None = None,
    seed: int = 7,
    static_batch: int | None = None,
) -> dict[str, Any]:
    """An engine with input x [B, d_in] and output y [B, d_out]; one profile per (min, opt, max)."""
    profiles = profiles or [(1, 4, 8)]
    batch = -1 if static_batch is None else static_batch
    return {
        "magic": FAKE_MAGIC,
        "inputs": [{"name": "x", "dtype": "FLOAT", "shape": [batch, d_in]}],
        "outputs": [{"name": "y", "dtype": "FLOAT", "shape": [batch, d_out]}],
        "profiles": [] if static_batch else [{"x": [[lo, d_in], [opt, d_in], [hi, d_in]]} for lo, opt, hi in profiles],
        "model": {"kind": "mlp", "d_in": d_in, "hidden": hidden, "d_out": d_out, "seed": seed},
    }


def sum_spec(*, profiles: list[tuple[int, int, int]] | None = None, max_len: int = 6) -> dict[str, Any]:
    """Two inputs x, y [B, L] (L dynamic, 2..max_len), outputs z = x + 2y [B, L] and n = sum(x*y) [B, 1]."""
    profiles = profiles or [(1, 2, 4)]
    return {
        "magic": FAKE_MAGIC,
        "inputs": [{"name": n, "dtype": "FLOAT", "shape": [-1, -1]} for n in ("x", "y")],
        "outputs": [
            {"name": "z", "dtype": "FLOAT", "shape": [-1, -1]},
            {"name": "n", "dtype": "FLOAT", "shape": [-1, 1]},
        ],
        "profiles": [{n: [[lo, 2], [opt, 4], [hi, max_len]] for n in ("x", "y")} for lo, opt, hi in profiles],
        "model": {"kind": "sum"},
    }


# -- compute backends ------------------------------------------------------------------------------


@dataclass
class Binding:
    ptr: int
    shape: tuple[int, ...]
    dtype: np.dtype


class HostCompute:
    """Runs the model with numpy on FakeCuda memory, as an op in the stream's queue."""

    def __init__(self, cuda: FakeCuda) -> None:
        self.cuda = cuda

    def check_buffer(self, binding: Binding) -> None:
        self.cuda.view(binding.ptr, binding.dtype, binding.shape)

    def capturing(self, stream: int) -> bool:
        return self.cuda.capturing(stream)

    def launch(
        self,
        stream: int,
        spec: dict[str, Any],
        ins: dict[str, Binding],
        outs: dict[str, Binding],
        state: dict[str, Any],
    ) -> Callable[[], bool]:
        def run() -> None:
            arrays = {n: self.cuda.view(b.ptr, b.dtype, b.shape).copy() for n, b in ins.items()}
            for name, value in reference(spec, arrays).items():
                self.cuda.view(outs[name].ptr, outs[name].dtype, outs[name].shape)[...] = value

        op = self.cuda.enqueue(stream, run, "execute")
        return lambda: op.done


_SGEMM = r"""
extern "C" __global__ void sgemm(const float* a, const float* b, float* c, int m, int n, int k, int relu) {
    __shared__ float sa[16][16];
    __shared__ float sb[16][16];
    int ty = threadIdx.y, tx = threadIdx.x;
    int row = blockIdx.y * 16 + ty, col = blockIdx.x * 16 + tx;
    float acc = 0.0f;
    for (int t = 0; t < k; t += 16) {
        sa[ty][tx] = (row < m && t + tx < k) ? a[(long long)row * k + t + tx] : 0.0f;
        sb[ty][tx] = (col < n && t + ty < k) ? b[(long long)(t + ty) * n + col] : 0.0f;
        __syncthreads();
        for (int i = 0; i < 16; ++i) acc += sa[ty][i] * sb[i][tx];
        __syncthreads();
    }
    if (row < m && col < n) c[(long long)row * n + col] = relu ? fmaxf(acc, 0.0f) : acc;
}
"""


def cupy_stream(handle: int) -> Any:
    """A cupy stream object (usable as a context manager) for a raw ``cudaStream_t`` value."""
    import cupy as cp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # cupy 14 prefers Stream.from_external
        return cp.cuda.ExternalStream(handle)


class CupyCompute:
    """Real kernels: y = relu(x @ W1) @ W2 with cupy on the raw stream handle it is given.

    ``kernels="cublas"`` uses cupy's matmul (cuBLAS; cupy refuses cuBLAS calls under stream capture);
    ``kernels="raw"`` uses a tiled SGEMM RawKernel that CUDA graphs can capture.
    """

    def __init__(self, poison: bool = True, kernels: str = "cublas") -> None:
        import cupy

        self.cp = cupy
        self.poison = poison
        self.kernels = kernels
        self._sgemm = cupy.RawKernel(_SGEMM, "sgemm") if kernels == "raw" else None
        self._weights: dict[tuple[Any, ...], tuple[Any, Any]] = {}

    def _array(self, binding: Binding) -> Any:
        cp = self.cp
        nbytes = int(np.prod(binding.shape)) * binding.dtype.itemsize
        mem = cp.cuda.UnownedMemory(binding.ptr, nbytes, owner=None, device_id=cp.cuda.Device().id)
        return cp.ndarray(binding.shape, dtype=binding.dtype, memptr=cp.cuda.MemoryPointer(mem, 0))

    def check_buffer(self, binding: Binding) -> None:
        pass  # real device memory: sizes are the backend's responsibility, checked by poisoned outputs

    def capturing(self, stream: int) -> bool:
        from cuda.bindings import runtime as rt

        err, status = rt.cudaStreamIsCapturing(stream)
        assert int(err) == 0, err
        return bool(status == rt.cudaStreamCaptureStatus.cudaStreamCaptureStatusActive)

    def _matmul(self, a: Any, b: Any, out: Any, relu: bool) -> None:
        cp = self.cp
        if self._sgemm is None:
            cp.matmul(a, b, out=out)
            if relu:
                cp.maximum(out, 0, out=out)
            return
        m, k = a.shape
        n = b.shape[1]
        grid = ((n + 15) // 16, (m + 15) // 16)
        self._sgemm(grid, (16, 16), (a, b, out, np.int32(m), np.int32(n), np.int32(k), np.int32(relu)))

    def launch(
        self,
        stream: int,
        spec: dict[str, Any],
        ins: dict[str, Binding],
        outs: dict[str, Binding],
        state: dict[str, Any],
    ) -> Callable[[], bool]:
        cp, model = self.cp, spec["model"]
        key = (model["d_in"], model["hidden"], model["d_out"], model["seed"])
        ext = cupy_stream(stream)
        with ext:
            if key not in self._weights:
                self._weights[key] = tuple(cp.asarray(w) for w in mlp_weights(*key))  # type: ignore[assignment]
            w1, w2 = self._weights[key]
            x = self._array(next(iter(ins.values())))
            y = self._array(next(iter(outs.values())))
            batch = x.shape[0]
            hidden = state.get("hidden")
            if hidden is None:  # the context's activation memory, sized for its profile's max batch
                hidden = state["hidden"] = cp.empty((state["rows"], model["hidden"]), cp.float32)
            h = hidden[:batch]
            if self.poison:
                y.fill(np.nan)
            self._matmul(x, w1, h, relu=True)
            self._matmul(h, w2, y, relu=False)
            if self.capturing(stream):
                return lambda: True
            event = cp.cuda.Event(disable_timing=True)
            event.record(ext)
        return lambda: bool(event.done)


# -- the TensorRT double ---------------------------------------------------------------------------


class FakeTensorRT(_Guarded):
    """Module-like stand-in for ``tensorrt``."""

    _api = "module"

    def __init__(self, compute: Any, *, version: str = "11.4.0.106", name: str = "tensorrt") -> None:
        self.__version__ = version
        self.__name__ = name
        self._compute = compute
        self._engines: list[FakeEngine] = []
        self.ILogger = ILogger
        self.TensorIOMode = TensorIOMode
        self.TensorLocation = TensorLocation
        self.DataType = DataType
        double = self

        class Runtime(_Guarded):
            _api = "Runtime"

            def __init__(self, logger: Any) -> None:
                self._logger = logger
                self.engine_host_code_allowed = False

            def deserialize_cuda_engine(self, data: bytes) -> FakeEngine | None:
                try:
                    spec = json.loads(bytes(data))
                    assert spec["magic"] == FAKE_MAGIC
                except Exception:
                    self._logger.log(Severity.ERROR, "deserialization failed: not an engine")
                    return None
                engine = FakeEngine(spec, double._compute)
                double._engines.append(engine)
                return engine

        self.Runtime = Runtime


class FakeEngine(_Guarded):
    _api = "ICudaEngine"

    def __init__(self, spec: dict[str, Any], compute: Any) -> None:
        self._spec = spec
        self._compute = compute
        self._io = [(t, True) for t in spec["inputs"]] + [(t, False) for t in spec["outputs"]]
        self._by_name = {t["name"]: (t, is_input) for t, is_input in self._io}
        self._contexts: list[FakeContext] = []
        self.num_io_tensors = len(self._io)
        self.num_optimization_profiles = max(1, len(spec["profiles"]))

    def get_tensor_name(self, index: int) -> str:
        return str(self._io[index][0]["name"])

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode.INPUT if self._by_name[name][1] else TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str) -> DataType:
        return DataType[self._by_name[name][0]["dtype"]]

    # A spec's tensor may say "location": "HOST", "shape_tensor": true or "vectorized_dim": 1 to model
    # the IO tensors the backend cannot serve.
    def get_tensor_location(self, name: str) -> TensorLocation:
        return TensorLocation[self._by_name[name][0].get("location", "DEVICE")]

    def is_shape_inference_io(self, name: str) -> bool:
        return bool(self._by_name[name][0].get("shape_tensor", False))

    def get_tensor_vectorized_dim(self, name: str) -> int:
        return int(self._by_name[name][0].get("vectorized_dim", -1))

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._by_name[name][0]["shape"])

    def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple[int, ...]]:
        tensor, is_input = self._by_name[name]
        if not is_input or -1 not in tensor["shape"] or not 0 <= profile < len(self._spec["profiles"]):
            raise TrtRuleViolation(f"get_tensor_profile_shape({name!r}, {profile}) is invalid")
        return [tuple(dims) for dims in self._spec["profiles"][profile][name]]

    def create_execution_context(self) -> FakeContext:
        context = FakeContext(self)
        self._contexts.append(context)
        return context

    def _profile_bounds(self, profile: int, name: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        shape = tuple(self._by_name[name][0]["shape"])
        if -1 not in shape:
            return shape, shape
        low, _, high = self._spec["profiles"][profile][name]
        return tuple(low), tuple(high)


class FakeContext(_Guarded):
    _api = "IExecutionContext"

    def __init__(self, engine: FakeEngine) -> None:
        self._engine = engine
        self._profile: int | None = None
        self._profile_stream: int | None = None
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._addresses: dict[str, int] = {}
        self._done: Callable[[], bool] = lambda: True  # probe of the last execution
        self._state: dict[str, Any] = {}
        self._executed_shapes: set[tuple[Any, ...]] = set()
        self._executions = 0
        self._max_concurrent_seen = 0

    def set_optimization_profile_async(self, profile: int, stream: int) -> bool:
        if not 0 <= profile < self._engine.num_optimization_profiles:
            return False
        if not self._done():
            raise TrtRuleViolation("profile switched while the context is running")
        self._profile, self._profile_stream = profile, stream
        self._shapes.clear()
        first_input = self._engine._spec["inputs"][0]["name"]
        self._state["rows"] = self._engine._profile_bounds(profile, first_input)[1][0]
        return True

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        if self._profile is None:
            raise TrtRuleViolation("set_input_shape before set_optimization_profile_async")
        _tensor, is_input = self._engine._by_name[name]
        low, high = self._engine._profile_bounds(self._profile, name)
        shape = tuple(int(d) for d in shape)
        if not is_input or len(shape) != len(high):
            return False
        if any(not lo <= d <= hi for lo, d, hi in zip(low, shape, high, strict=True)):
            return False
        self._shapes[name] = shape
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        spec = self._engine._spec
        if self._engine._by_name[name][1]:
            return self._shapes.get(name, tuple(self._engine._by_name[name][0]["shape"]))
        if len(self._shapes) < len(spec["inputs"]):
            return tuple(self._engine._by_name[name][0]["shape"])
        return output_shapes(spec, self._shapes)[name]

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        if name not in self._engine._by_name:
            return False
        self._addresses[name] = int(ptr)
        return True

    def execute_async_v3(self, stream: int) -> bool:
        engine, spec = self._engine, self._engine._spec
        if self._profile is None:
            raise TrtRuleViolation("execute_async_v3 before set_optimization_profile_async")
        if stream != self._profile_stream:
            raise TrtRuleViolation("executed on another stream than the profile was set on, without synchronization")
        missing = [t["name"] for t in spec["inputs"] if t["name"] not in self._shapes]
        if missing:
            raise TrtRuleViolation(f"execute_async_v3 with input shapes not set: {missing}")
        unaddressed = [name for name in engine._by_name if name not in self._addresses]
        if unaddressed:
            raise TrtRuleViolation(f"execute_async_v3 with tensor addresses not set: {unaddressed}")
        # TensorRT: with dynamic shapes, each context in concurrent use needs its own profile; contexts of
        # a static-shape engine may run at once ("the same ICudaEngine used for multiple batches
        # simultaneously", IExecutionContext docs).
        dynamic = any(-1 in t["shape"] for t in (*spec["inputs"], *spec["outputs"]))
        for other in engine._contexts:
            if dynamic and other is not self and other._profile == self._profile and not other._done():
                raise TrtRuleViolation(f"two contexts running at once on optimization profile {self._profile}")
        key = tuple(sorted(self._shapes.items()))
        capturing = engine._compute.capturing(stream)
        if capturing and key not in self._executed_shapes:
            raise TrtRuleViolation("captured into a CUDA graph before one plain execution with these shapes")
        outs_shapes = output_shapes(spec, self._shapes)
        ins = {
            t["name"]: Binding(self._addresses[t["name"]], self._shapes[t["name"]], np.dtype(_NP[t["dtype"]]))
            for t in spec["inputs"]
        }
        outs = {
            t["name"]: Binding(self._addresses[t["name"]], outs_shapes[t["name"]], np.dtype(_NP[t["dtype"]]))
            for t in spec["outputs"]
        }
        for binding in (*ins.values(), *outs.values()):
            engine._compute.check_buffer(binding)
        done = engine._compute.launch(stream, spec, ins, outs, self._state)
        if not capturing:
            self._executed_shapes.add(key)
            self._done = done
            self._executions += 1
        return True
