"""Warm-up before ready: run the engine on zero inputs on every execution slot before the worker reads.

The first run of a model is slow (ONNX Runtime plans its memory, TensorRT sizes each context for its
shapes, CUDA loads kernels lazily): without a warm-up, the first requests after a start (scale-from-zero,
a restarted pod) pay for it and may expire. So the worker runs one batch of zeros per configured shape on
every slot first, and only then joins the group; while it warms up, ``/readyz`` answers 503 (``/livez``
200), so no orchestrator routes or counts on it yet.

Shapes (``WORKER_MODEL__WARMUP``, a JSON list of ``{input: shape}``, dim 0 = batch): by default one batch
per preferred batch size and one of the largest batch, each input at the model's per-sample shape with
dynamic dimensions set to 1; ``[]`` turns the warm-up off. Configured shapes must all run, or the worker
does not start; a default shape the engine refuses (a TensorRT profile whose dimensions start above 1) is
logged and skipped, and a fatal engine error (a lost device) stops the start either way. An engine handed
to ``serve`` by its caller (tests, benchmarks) is warmed only when shapes are configured explicitly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from worker.config import Settings
from worker.engines.base import Engine, ExecutionSlot, ModelInfo, Shapes
from worker.errors import ConfigError, EngineError
from worker.observability import HealthServer, Metrics

log = logging.getLogger(__name__)

SETTING = "WORKER_MODEL__WARMUP"


def default_shapes(info: ModelInfo, batch_sizes: Sequence[int]) -> list[dict[str, tuple[int, ...]]]:
    """One shape set per batch size: each input at its per-sample shape, dynamic dimensions 1."""
    return [
        {spec.name: (size, *(dim if dim > 0 else 1 for dim in spec.sample_shape)) for spec in info.inputs}
        for size in batch_sizes
    ]


def default_batch_sizes(settings: Settings, info: ModelInfo) -> list[int]:
    """Each preferred batch size and the largest batch, as the batcher will form them (capped by the engine)."""
    largest = min(settings.batch.max_size, info.max_batch_size)
    return sorted({*(min(size, largest) for size in settings.batch.preferred_sizes), largest})


def _fits(shape: tuple[int, ...], model_shape: tuple[int, ...], max_batch: int) -> bool:
    if len(shape) != len(model_shape) or min(shape, default=0) < 1 or shape[0] > max_batch:
        return False
    return all(m < 0 or m == d for m, d in zip(model_shape, shape, strict=True))


def warmup_shapes(settings: Settings, info: ModelInfo) -> list[dict[str, tuple[int, ...]]]:
    """The shapes to warm up with: the configured ones (checked against the model), else the defaults.

    Raises:
        ConfigError: a configured shape names an unknown input, misses one, or does not fit the model.
    """
    configured = settings.model.warmup
    if configured is None:
        return default_shapes(info, default_batch_sizes(settings, info))
    names = {spec.name for spec in info.inputs}
    plan = []
    for i, shapes in enumerate(configured):
        if set(shapes) != names:
            raise ConfigError(f"{SETTING}[{i}]: inputs {sorted(shapes)} are not the model's {sorted(names)}")
        for spec in info.inputs:
            shape = tuple(shapes[spec.name])
            if not _fits(shape, spec.shape, info.max_batch_size):
                raise ConfigError(f"{SETTING}[{i}]: {spec.name} {list(shape)} does not fit the model's "
                                  f"{list(spec.shape)} (batch 1..{info.max_batch_size})")  # fmt: skip
        plan.append({name: tuple(shape) for name, shape in shapes.items()})
    return plan


async def _warm_slot(index: int, slot: ExecutionSlot, plan: Sequence[Shapes], strict: bool) -> None:
    for shapes in plan:
        try:
            for array in slot.stage(shapes).values():
                array.fill(b"" if array.dtype == object else 0)  # staged buffers may hold anything (pinned memory)
            await slot.run()
        except Exception as exc:
            error = exc if isinstance(exc, EngineError) else EngineError(f"{type(exc).__name__}: {exc}")
            if strict or error.fatal:
                raise error from exc
            # A default shape the engine refuses (a TensorRT profile whose dims start above 1, say) is no
            # reason not to serve: the requests bring their own shapes.
            log.warning("warm-up of %s skipped on slot %d: %s (set %s to shapes the model accepts)",
                        dict(shapes), index, error, SETTING)  # fmt: skip


async def warm_up(engine: Engine, plan: Sequence[Shapes], *, strict: bool = True) -> float:
    """Run every shape set of ``plan`` on every slot (slots at once, shapes in order); returns the seconds taken.

    Args:
        engine: the engine.
        plan: the shape sets.
        strict: any failure raises; else only a fatal engine error does, and a refused shape set is logged
            and skipped (the default shapes are a guess; configured ones are not).

    Raises:
        EngineError: a warm-up run failed (the model cannot serve these shapes, or the device is unusable).
    """
    started = time.perf_counter()
    await asyncio.gather(*(_warm_slot(i, slot, plan, strict) for i, slot in enumerate(engine.slots)))
    return time.perf_counter() - started


@contextlib.asynccontextmanager
async def not_ready_while(settings: Settings, engine: Engine) -> AsyncIterator[None]:
    """Serve ``/livez`` 200 and ``/readyz`` 503 on the worker's health port for the duration (if it has one)."""
    port = settings.http.port
    if port is None:
        yield
        return
    started_ms = int(time.time() * 1000)

    def health() -> dict[str, Any]:
        return {"status": "warming up", "ready": False, "model": engine.info.name, "backend": settings.backend,
                "host": socket.gethostname(), "pid": os.getpid(), "started_ms": started_ms}  # fmt: skip

    server = HealthServer(
        settings.http.host, port, health, Metrics(model=engine.info.name, version=settings.model.version or "")
    )
    await server.start()
    try:
        yield
    finally:
        await server.close()


async def warm_up_before_serving(settings: Settings, engine: Engine, *, by_default: bool = True) -> None:
    """The worker's warm-up step (``runner.serve``): not ready until every slot ran every warm-up shape.

    Args:
        settings: the worker's settings (``model.warmup``, ``batch``, ``http``).
        engine: the loaded engine.
        by_default: warm up with the default shapes when none are configured (False for an engine the
            caller built: tests and benchmarks count its runs).

    Raises:
        ConfigError: configured shapes that do not fit the model.
        EngineError: a warm-up run of configured shapes failed, or any run failed fatally (a lost device); the
            worker does not start. In both cases the engine is closed. A default shape the engine refuses is
            logged and skipped.
    """
    if settings.model.warmup is None and not by_default:
        return
    try:
        plan = warmup_shapes(settings, engine.info)
        if not plan:
            log.info("warm-up off (%s=[])", SETTING)
            return
        async with not_ready_while(settings, engine):
            seconds = await warm_up(engine, plan, strict=settings.model.warmup is not None)
    except BaseException:
        engine.close()
        raise
    log.info("warm-up done in %.3fs: %d shape sets on %d slots: %s", seconds, len(plan), len(engine.slots),
             [{name: list(shape) for name, shape in shapes.items()} for shapes in plan])  # fmt: skip
