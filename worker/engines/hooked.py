"""An engine wrapped in a Python hook: hook inputs -> preprocess -> model -> postprocess -> hook outputs.

The wrapper is itself an :class:`~worker.engines.base.Engine`, so the worker's dispatcher, batcher and
bisection are untouched: they see the hook's declared inputs and outputs as the model's. Each slot wraps
one slot of the inner engine; the hook runs in a thread pool (one thread per slot), never on the event
loop, so a slow hook delays its own batch, not the worker's reads or other slots.

Errors: :class:`~worker.hooks.HookInputError` becomes :class:`HookRejected` (answered INVALID_ARGUMENT),
anything else an :class:`~worker.errors.EngineError` (answered INTERNAL). The dispatcher bisects a
failing batch, so only the offending request gets the error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from redis_infer_protocol.codec import BYTES, DATATYPES, Status, Timing, datatype_of
from worker.engines.base import Engine, ExecutionSlot, ModelInfo, Shapes, TensorSpec
from worker.errors import ConfigError, EngineError
from worker.hooks import Arrays, HookInputError

log = logging.getLogger(__name__)

__all__ = ["HookRejected", "HookedEngine", "mark_hook_stages"]


class HookRejected(EngineError):
    """The hook refused a request's input (it raised HookInputError): the request is answered with ``status``."""

    status = Status.INVALID_ARGUMENT


def _dtype(datatype: str) -> np.dtype[Any]:
    return np.dtype(object) if datatype == BYTES else DATATYPES[datatype]


def _specs(declared: Iterable[Any] | None, default: tuple[TensorSpec, ...], what: str) -> tuple[TensorSpec, ...]:
    """The hook's declared specs (TensorSpec or ``(name, datatype, shape)``), checked; None: the model's."""
    if declared is None:
        return default
    specs: list[TensorSpec] = []
    for item in declared:
        spec = item if isinstance(item, TensorSpec) else TensorSpec(str(item[0]), str(item[1]), tuple(item[2]))
        if spec.datatype != BYTES and spec.datatype not in DATATYPES:
            raise ConfigError(f"hook {what} {spec.name!r}: unknown datatype {spec.datatype!r}")
        if not spec.shape or spec.shape[0] != -1 or any(d < -1 or d == 0 for d in spec.shape):
            raise ConfigError(f"hook {what} {spec.name!r}: shape {list(spec.shape)} needs a dynamic batch (-1) first")
        specs.append(TensorSpec(spec.name, spec.datatype, tuple(int(d) for d in spec.shape)))
    if not specs or len({s.name for s in specs}) != len(specs):
        raise ConfigError(f"hook {what}: at least one, with distinct names")
    return tuple(specs)


class HookedEngine:
    """``inner`` served through ``hook`` (see :mod:`worker.hooks`).

    Args:
        inner: the model's engine; closed with this one.
        hook: the hook instance; its ``setup(model, options)`` is called here when it has one.
        options: the hook's options from the model's config.

    Raises:
        ConfigError: the hook's declared inputs or outputs are invalid, or its ``setup`` failed.
    """

    def __init__(self, inner: Engine, hook: Any, options: Mapping[str, Any] | None = None) -> None:
        self.inner, self.hook = inner, hook
        model = inner.info
        setup = getattr(hook, "setup", None)
        if setup is not None:
            try:
                setup(model, dict(options or {}))
            except Exception as exc:
                raise ConfigError(f"hook of model {model.name!r}: setup failed: {type(exc).__name__}: {exc}") from exc
        inputs = _specs(getattr(hook, "inputs", None), model.inputs, "input")
        outputs = _specs(getattr(hook, "outputs", None), model.outputs, "output")
        self._info = ModelInfo(model.name, inputs, outputs, model.max_batch_size, model.metadata)
        self.dtypes = {spec.name: _dtype(spec.datatype) for spec in inputs}
        self.executor = ThreadPoolExecutor(max_workers=len(inner.slots), thread_name_prefix="hook")
        self._slots = [HookedSlot(self, slot) for slot in inner.slots]

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def slots(self) -> Sequence[ExecutionSlot]:
        return self._slots

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.inner.close()

    def call(self, stage: str, arrays: Arrays) -> Arrays:
        """Run the hook's ``preprocess`` or ``postprocess`` (identity when it has none); wrap its errors."""
        method = getattr(self.hook, stage, None)
        if method is None:
            return arrays
        try:
            result = method(arrays)
        except HookInputError as exc:
            raise HookRejected(f"{stage}: {exc}") from exc
        except EngineError:  # a hook may declare the device lost: EngineError(..., fatal=True) stops the worker
            raise
        except Exception as exc:
            raise EngineError(f"hook {stage} failed: {type(exc).__name__}: {exc}") from exc
        if not isinstance(result, Mapping):
            raise EngineError(f"hook {stage} returned {type(result).__name__}, not a dict of arrays")
        return {str(name): np.asarray(arr) for name, arr in result.items()}


def _check(arrays: Arrays, specs: Sequence[TensorSpec], rows: int, what: str, strict_types: bool) -> Arrays:
    checked: Arrays = {}
    for spec in specs:
        arr = arrays.get(spec.name)
        if arr is None:
            raise EngineError(f"{what} has no {spec.name!r} (has {sorted(arrays)})")
        if arr.ndim == 0 or arr.shape[0] != rows:
            raise EngineError(f"{what} {spec.name!r} has shape {list(arr.shape)}, expected batch {rows} first")
        if strict_types and datatype_of(arr.dtype) != spec.datatype:
            raise EngineError(f"{what} {spec.name!r} is {datatype_of(arr.dtype)}, declared {spec.datatype}")
        checked[spec.name] = arr
    return checked


class HookedSlot:
    """One inner slot with the hook around it. ``hook_marks``: the last run's (preprocess end, postprocess
    start) wall-clock nanoseconds, copied into each request's timing by the dispatcher."""

    def __init__(self, engine: HookedEngine, inner: ExecutionSlot) -> None:
        self._engine, self._inner = engine, inner
        self._staged: Arrays = {}
        self.hook_marks: tuple[int, int] = (0, 0)

    def stage(self, shapes: Shapes) -> Arrays:
        staged: Arrays = {}
        for spec in self._engine.info.inputs:
            buf = self._staged.get(spec.name)
            if buf is None or buf.shape != tuple(shapes[spec.name]):
                buf = np.empty(shapes[spec.name], dtype=self._engine.dtypes[spec.name])
            staged[spec.name] = buf
        self._staged = staged
        return staged

    async def run(self) -> Arrays:
        loop = asyncio.get_running_loop()
        engine = self._engine
        rows = next(iter(self._staged.values())).shape[0]
        model_inputs = await loop.run_in_executor(engine.executor, engine.call, "preprocess", self._staged)
        preprocess_end_ns = time.time_ns()
        model = engine.inner.info
        model_inputs = _check(model_inputs, model.inputs, rows, "hook preprocess output", strict_types=False)
        staged = self._inner.stage({name: arr.shape for name, arr in model_inputs.items()})
        try:
            for name, arr in model_inputs.items():
                staged[name][...] = arr
        except (TypeError, ValueError) as exc:
            raise EngineError(f"hook preprocess output does not fit the model's inputs: {exc}") from exc
        raw = await self._inner.run()
        postprocess_start_ns = time.time_ns()
        outputs = await loop.run_in_executor(engine.executor, engine.call, "postprocess", raw)
        outputs = _check(outputs, engine.info.outputs, rows, "hook postprocess output", strict_types=True)
        self.hook_marks = (preprocess_end_ns, postprocess_start_ns)
        return outputs


def mark_hook_stages(slot: ExecutionSlot, timings: Iterable[Timing]) -> None:
    """Copy a hooked slot's stage marks into the timing trace of the requests of its last batch."""
    marks = getattr(slot, "hook_marks", None)
    if marks is None:
        return
    for timing in timings:
        timing.preprocess_end_ns, timing.postprocess_start_ns = marks
