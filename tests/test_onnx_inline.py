"""The ONNX engine's inline runs: a row count that last ran within ``inline_max_us`` skips the thread hop."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from worker.engines.onnx import OnnxEngine, OnnxSlot
from worker.errors import EngineError
from worker.testing import make_affine_model


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_affine_model(tmp_path_factory.mktemp("models") / "affine.onnx")


def _run(slot: OnnxSlot, x: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
    slot.stage({"x": x.shape})["x"][...] = x

    async def go() -> dict[str, np.ndarray[Any, Any]]:
        return {name: arr.copy() for name, arr in (await slot.run()).items()}

    return asyncio.run(go())


def _engine(model: Path, inline_max_us: float) -> tuple[OnnxEngine, OnnxSlot]:
    engine = OnnxEngine(model, name="affine", max_batch_size=64, intra_op_threads=1, inline_max_us=inline_max_us)
    slot = engine.slots[0]
    assert isinstance(slot, OnnxSlot)
    return engine, slot


def test_a_row_count_measured_fast_runs_inline_and_gives_the_same_outputs(model: Path) -> None:
    engine, slot = _engine(model, inline_max_us=10_000)
    try:
        x = np.arange(12, dtype=np.float32).reshape(4, 3)
        first = _run(slot, x)  # not measured yet: in the thread pool
        assert slot.inline_runs == 0
        second = _run(slot, x)  # measured well within the bound: on the event loop
        assert slot.inline_runs == 1
        for out in (first, second):
            np.testing.assert_array_equal(out["y"], 2 * x + 1)
            np.testing.assert_array_equal(out["s"], x.sum(axis=1))
        _run(slot, np.ones((5, 3), np.float32))  # another row count: measured first, in the pool
        assert slot.inline_runs == 1
    finally:
        engine.close()


def test_a_run_slower_than_the_bound_stays_in_the_thread_pool(model: Path) -> None:
    for bound_us in (0.0, 0.001):  # off; and a bound no run can meet (1 ns)
        engine, slot = _engine(model, inline_max_us=bound_us)
        try:
            for _ in range(3):
                _run(slot, np.ones((2, 3), np.float32))
            assert slot.inline_runs == 0
        finally:
            engine.close()


def test_an_inline_run_that_fails_raises_the_engine_error(model: Path) -> None:
    engine, slot = _engine(model, inline_max_us=10_000)
    try:
        _run(slot, np.ones((4, 3), np.float32))
        slot.stage({"x": (4,)})  # same row count, so inline; but a rank the model refuses
        with pytest.raises(EngineError, match="ONNX Runtime failed"):
            asyncio.run(slot.run())
        assert slot.inline_runs == 1
        np.testing.assert_array_equal(_run(slot, np.zeros((4, 3), np.float32))["y"], np.ones((4, 3)))
    finally:
        engine.close()
