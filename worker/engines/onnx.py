"""ONNX Runtime engine on the CPU: the embedded default backend."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from redis_infer_protocol.codec import DATATYPES
from worker.engines.base import ExecutionSlot, ModelInfo, Shapes, TensorSpec
from worker.errors import ConfigError, EngineError, ModelError

log = logging.getLogger(__name__)

# ONNX Runtime type strings -> wire datatype names
ORT_TYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
}


def _spec(arg: Any) -> TensorSpec:
    datatype = ORT_TYPES.get(arg.type)
    if datatype is None:
        raise ModelError(f"model tensor {arg.name!r} has unsupported type {arg.type}")
    shape = tuple(dim if isinstance(dim, int) and dim >= 0 else -1 for dim in arg.shape)
    return TensorSpec(arg.name, datatype, shape)


class OnnxSlot:
    """One concurrent ``session.run`` lane. Buffers are reused while the batch shapes stay the same.

    A run goes to the engine's thread pool, so the event loop keeps reading and publishing while it
    computes; but a handful of rows through a small model takes a few tens of microseconds, less than
    the hop to a thread and back (a few hundred on a busy machine). So a batch whose row count last ran
    in at most ``inline_max_us`` is run on the event loop itself: the loop is blocked no longer than that
    bound (plus drift, which the next measurement catches, every run being timed). A row count not seen
    yet goes to the pool.
    """

    def __init__(self, engine: OnnxEngine) -> None:
        self._engine = engine
        self._staged: dict[str, np.ndarray[Any, Any]] = {}
        self._last_run_ns: dict[int, int] = {}  # rows -> duration of the last run of that many rows
        self.inline_runs = 0  # runs made on the event loop (tests, benchmarks)

    def stage(self, shapes: Shapes) -> dict[str, np.ndarray[Any, Any]]:
        staged: dict[str, np.ndarray[Any, Any]] = {}
        for spec in self._engine.info.inputs:
            shape = shapes[spec.name]
            buf = self._staged.get(spec.name)
            if buf is None or buf.shape != shape:
                buf = np.empty(shape, dtype=self._engine.dtypes[spec.name])
            staged[spec.name] = buf
        self._staged = staged
        return staged

    async def run(self) -> dict[str, np.ndarray[Any, Any]]:
        engine, staged = self._engine, self._staged
        rows = next(iter(staged.values())).shape[0] if staged else 0
        last_ns = self._last_run_ns.get(rows)
        if last_ns is not None and last_ns <= engine.inline_max_ns:
            self.inline_runs += 1
            return self._timed(rows, staged)
        return await asyncio.get_running_loop().run_in_executor(engine.executor, self._timed, rows, staged)

    def _timed(self, rows: int, staged: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        start_ns = time.perf_counter_ns()
        try:
            return self._engine.run_sync(staged)
        finally:
            self._last_run_ns[rows] = time.perf_counter_ns() - start_ns


class OnnxEngine:
    """An ONNX model in ONNX Runtime (CPU execution provider).

    Args:
        path: the ``.onnx`` file.
        name: the model name requests must carry.
        max_batch_size: the largest batch (the model's batch dimension must be dynamic, or 1).
        sessions: concurrent runs (execution slots) sharing one session.
        intra_op_threads: ONNX Runtime threads per run (0: its default).
        allow_spinning: let idle ONNX Runtime threads spin.
        inline_max_us: run a batch on the event loop (no thread hop) when its row count last ran in at
            most this many microseconds (0: always in the thread pool).
    """

    def __init__(
        self,
        path: Path,
        *,
        name: str,
        max_batch_size: int,
        sessions: int = 1,
        intra_op_threads: int = 0,
        allow_spinning: bool = False,
        inline_max_us: float = 0.0,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError("the onnxruntime backend needs `pip install onnxruntime` (extra 'cpu')") from None
        if not path.is_file():
            raise ModelError(f"model file {path} does not exist")
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        # Spinning threads burn the cores the event loop and Redis need between runs: off by default.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelError(f"ONNX Runtime cannot load {path}: {exc}") from exc
        inputs = tuple(_spec(arg) for arg in self._session.get_inputs())
        outputs = tuple(_spec(arg) for arg in self._session.get_outputs())
        max_batch = _batch_limit(inputs + outputs, max_batch_size)
        meta = self._session.get_modelmeta().custom_metadata_map
        self._info = ModelInfo(name, inputs, outputs, max_batch, dict(meta))
        self.dtypes = {spec.name: DATATYPES[spec.datatype] for spec in inputs}
        self._output_names = [spec.name for spec in outputs]
        self.inline_max_ns = int(inline_max_us * 1000)
        self.executor = ThreadPoolExecutor(max_workers=sessions, thread_name_prefix="onnxruntime")
        self._slots = [OnnxSlot(self) for _ in range(sessions)]
        log.info("loaded %s: inputs %s, outputs %s, max batch %d", path, inputs, outputs, max_batch)

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def slots(self) -> Sequence[ExecutionSlot]:
        return self._slots

    def run_sync(self, inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        try:
            results = self._session.run(self._output_names, inputs)
        except Exception as exc:
            raise EngineError(f"ONNX Runtime failed: {exc}") from exc
        return dict(zip(self._output_names, results, strict=True))

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


def _batch_limit(specs: tuple[TensorSpec, ...], configured: int) -> int:
    """Max batch: the configured one for a dynamic batch dimension; 1 for a model fixed at batch 1."""
    first_dims = {spec.shape[0] if spec.shape else None for spec in specs}
    if first_dims == {-1}:
        return configured
    if first_dims == {1}:
        return 1
    raise ModelError(
        f"every model input and output needs a batch dimension first (dynamic, or fixed at 1); got {specs}"
    )
