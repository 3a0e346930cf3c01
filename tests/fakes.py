"""A scriptable engine for worker tests: y = 10x on FP32 [N, 2], one execution slot."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import numpy as np

from worker.engines.base import ExecutionSlot, ModelInfo, Shapes, TensorSpec
from worker.errors import EngineError

POISON = 666.0  # a batch holding this value fails


class TimesTen:
    """Model ``name`` (default "poison"): ``y = 10 * x``.

    Args:
        max_batch: the engine's largest batch.
        delay_s: time each batch takes (awaited, so the loop runs meanwhile).
        fatal: a poisoned batch raises a *fatal* engine error (a lost device) instead of a plain one.

    ``runs`` records every batch: (rows, first value of the batch), in execution order.
    """

    def __init__(self, *, name: str = "poison", max_batch: int = 16, delay_s: float = 0.0, fatal: bool = False):
        spec = TensorSpec("x", "FP32", (-1, 2))
        self._info = ModelInfo(name, (spec,), (TensorSpec("y", "FP32", (-1, 2)),), max_batch_size=max_batch)
        self.delay_s = delay_s
        self.fatal = fatal
        self.runs: list[tuple[int, float]] = []
        self._slots = [_Slot(self)]

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def slots(self) -> Sequence[ExecutionSlot]:
        return self._slots

    def close(self) -> None:
        pass


class _Slot:
    def __init__(self, engine: TimesTen) -> None:
        self.engine = engine
        self.x = np.empty((0, 2), np.float32)

    def stage(self, shapes: Shapes) -> dict[str, np.ndarray]:
        self.x = np.empty(shapes["x"], np.float32)
        return {"x": self.x}

    async def run(self) -> Mapping[str, np.ndarray]:  # type: ignore[override]
        self.engine.runs.append((len(self.x), float(self.x[0, 0])))
        await asyncio.sleep(self.engine.delay_s)
        if (self.x == POISON).any():
            raise EngineError("poisoned row", fatal=self.engine.fatal)
        return {"y": self.x * 10}
