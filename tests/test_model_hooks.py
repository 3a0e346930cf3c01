"""Python hooks around a model (issue 13): errors per request, the worker keeps serving, slow hooks traced."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from producer import Client, Reply, ServerError, Status
from producer.__main__ import timing_ms
from redis_infer_protocol import keys
from tests.fleet_helpers import FleetThread, write_model
from tests.helpers import make_affine_model
from worker.engines.base import infer_once
from worker.engines.hooked import HookedEngine
from worker.errors import ConfigError, EngineError
from worker.hooks import Hook, TensorSpec

pytestmark = pytest.mark.integration

# x < 0 anywhere in a row: refused (INVALID_ARGUMENT); x == 13: the hook breaks (INTERNAL); x == 7: slow.
HOOK = """
import time
import numpy as np
from worker.hooks import Hook, HookInputError, TensorSpec

class Picky(Hook):
    outputs = (TensorSpec("total", "FP64", (-1,)),)

    def setup(self, model, options):
        self.slow_s = float(options["slow_s"])

    def preprocess(self, batch):
        x = batch["x"]
        if (x < 0).any():
            raise HookInputError("negative values are not allowed")
        if (x == 13).any():
            raise RuntimeError("unlucky")
        if (x == 7).any():
            time.sleep(self.slow_s)
        return batch

    def postprocess(self, outputs):
        return {"total": outputs["s"].astype(np.float64)}
"""

CONFIG = """
file = "affine.onnx"
instances = 1
[batching]
max_size = 8
max_delay_ms = 20
[hook]
class = "hook.py:Picky"
options = { slow_s = 0.3 }
"""


def _reply(future: Any) -> Reply:
    try:
        return future.result(35)  # type: ignore[no-any-return]
    except ServerError as exc:
        assert exc.reply is not None
        return exc.reply


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    folder = write_model(tmp_path / "repo", "picky", CONFIG, HOOK)
    make_affine_model(folder / "affine.onnx")
    return tmp_path / "repo"


def test_hook_errors_answer_each_request_and_the_worker_keeps_serving(
    repository: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    values = {"ok1": 1.0, "bad": -1.0, "ok2": 2.0, "broken": 13.0, "ok3": 3.0}
    with FleetThread(redis_url, repository) as fleet, Client(redis_url, model="picky", stream=None) as client:
        assert client.stream == keys.model_stream("picky") == fleet.streams["picky"]
        # Sent together, so they share batches: bisection must isolate the two bad requests.
        futures = {k: client.submit({"x": np.full((1, 4), v, np.float32)}, timeout=30) for k, v in values.items()}
        replies = {k: _reply(f) for k, f in futures.items()}
        assert replies["bad"].status == Status.INVALID_ARGUMENT
        assert "negative values are not allowed" in (replies["bad"].error or "")
        assert replies["broken"].status == Status.INTERNAL
        assert "RuntimeError: unlucky" in (replies["broken"].error or "")
        for key in ("ok1", "ok2", "ok3"):
            assert replies[key].status == Status.OK, replies[key].error
            np.testing.assert_allclose(replies[key].outputs["total"], [4 * values[key]])
            assert set(replies[key].outputs) == {"total"}
        after = client.infer({"x": np.ones((2, 4), np.float32)}, timeout=30)  # still serving
        np.testing.assert_allclose(after["total"], [4.0, 4.0])
        # The broken request is dead-lettered as any engine failure; the refused one is only answered.
        dead = redis_client.xrange(keys.dead_letter_stream(fleet.streams["picky"]))
        assert len(dead) == 1 and b"unlucky" in b"".join(dead[0][1].values()), dead


def test_a_slow_hook_shows_as_its_own_stage_in_the_timing_trace(repository: Path, redis_url: str) -> None:
    with FleetThread(redis_url, repository) as _fleet, Client(redis_url, model="picky", stream=None) as client:
        fast = client.submit({"x": np.ones((1, 4), np.float32)}, timeout=30).result(35)
        slow = client.submit({"x": np.full((1, 4), 7, np.float32)}, timeout=30).result(35)
    for reply in (fast, slow):
        t = reply.timing
        assert reply.status == Status.OK
        assert t.compute_start_ns <= t.preprocess_end_ns <= t.postprocess_start_ns <= t.compute_end_ns
    preprocess_s = (slow.timing.preprocess_end_ns - slow.timing.compute_start_ns) / 1e9
    model_s = (slow.timing.postprocess_start_ns - slow.timing.preprocess_end_ns) / 1e9
    assert preprocess_s >= 0.3  # the hook slept 0.3 s: charged to preprocess, not to the model
    assert model_s < preprocess_s
    assert (fast.timing.preprocess_end_ns - fast.timing.compute_start_ns) / 1e9 < 0.3
    shown = timing_ms(slow.timing)  # the CLI's `infer` shows the hook stages too
    assert shown["postprocess_start"] - shown["preprocess_end"] < shown["preprocess_end"] - shown["compute_start"]


class _Declared(Hook):
    inputs = (TensorSpec("image", "UINT8", (-1, 2)),)


class _Bad(Hook):
    outputs = (TensorSpec("y", "FP99", (-1,)),)


def _affine(tmp_path: Path) -> Any:
    from worker.engines.onnx import OnnxEngine

    return OnnxEngine(make_affine_model(tmp_path / "a.onnx"), name="a", max_batch_size=8)


def test_hooked_engine_serves_the_declared_inputs_and_checks_what_the_hook_returns(tmp_path: Path) -> None:
    import asyncio

    engine = HookedEngine(_affine(tmp_path), _Declared())
    try:
        assert [(s.name, s.datatype, s.shape) for s in engine.info.inputs] == [("image", "UINT8", (-1, 2))]
        assert [s.name for s in engine.info.outputs] == ["y", "s"]  # undeclared: the model's
        # The default preprocess passes "image" through: the model has no such input -> INTERNAL, named.
        with pytest.raises(EngineError, match="hook preprocess output has no 'x'"):
            asyncio.run(infer_once(engine, {"image": np.ones((1, 2), np.uint8)}))
    finally:
        engine.close()
    with pytest.raises(ConfigError, match="unknown datatype 'FP99'"):
        HookedEngine(_affine(tmp_path), _Bad())
