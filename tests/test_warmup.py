"""Warm-up before ready (worker/warmup.py): /readyz says 503 until every slot ran every warm-up shape."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import redis

from redis_infer_protocol import keys
from tests.helpers import WorkerThread, collect, make_affine_model, send
from worker.config import load_settings
from worker.embedded import free_port
from worker.engines.base import ExecutionSlot, ModelInfo, Shapes, TensorSpec
from worker.errors import ConfigError, EngineError
from worker.testing import wait_until
from worker.warmup import default_shapes, warmup_shapes

pytestmark = pytest.mark.integration


class SlowFirstRun:
    """y = x + 1 on FP32 [N, 2], ``slots`` slots; each slot's first run waits for ``release`` (a cold start)."""

    def __init__(self, slots: int = 2, *, fail: bool = False) -> None:
        spec = TensorSpec("x", "FP32", (-1, 2))
        self._info = ModelInfo("cold", (spec,), (TensorSpec("y", "FP32", (-1, 2)),), max_batch_size=8)
        self.release = threading.Event()
        self.fail = fail
        self.seen: list[list[tuple[int, ...]]] = [[] for _ in range(slots)]
        self._slots = [_Slot(self, i) for i in range(slots)]

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def slots(self) -> Sequence[ExecutionSlot]:
        return self._slots

    def close(self) -> None:
        pass


class _Slot:
    def __init__(self, engine: SlowFirstRun, index: int) -> None:
        self.engine, self.index = engine, index
        self.fatal = True
        self.x = np.empty((0, 2), np.float32)

    def stage(self, shapes: Shapes) -> dict[str, np.ndarray]:
        self.x = np.full(shapes["x"], np.nan, np.float32)  # not zeroed: the warm-up must fill it
        return {"x": self.x}

    async def run(self) -> Mapping[str, np.ndarray]:  # type: ignore[override]
        seen = self.engine.seen[self.index]
        if not seen:
            await asyncio.to_thread(self.engine.release.wait, 30)
        seen.append(tuple(self.x.shape) if not np.isnan(self.x).any() else (-1,))
        if self.engine.fail:
            raise EngineError("the device is gone", fatal=self.fatal)
        return {"y": self.x + 1}


def _get(port: int, path: str) -> tuple[int, dict[str, object]] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
    except (urllib.error.URLError, ConnectionError):
        return None  # not listening (yet, or between the warm-up server and the worker's)


WARMUP = [{"x": [4, 2]}, {"x": [1, 2]}]


def test_not_ready_until_warm_up_ran_on_every_slot(redis_url: str, redis_client: redis.Redis) -> None:
    engine = SlowFirstRun(slots=2)
    port = free_port()
    wt = WorkerThread(redis_url, engine=engine, model={"warmup": WARMUP}, http={"host": "127.0.0.1", "port": port})
    with ThreadPoolExecutor(1) as pool:
        started = pool.submit(wt.start)  # returns once the worker serves, i.e. after the warm-up
        try:
            answers: list[tuple[int, dict[str, object]] | None] = [None]
            wait_until(lambda: answers.__setitem__(0, _get(port, "/readyz")) or answers[0], what="/readyz answers")
            status, body = answers[0]  # type: ignore[misc]
            assert (status, body["status"]) == (503, "warming up")
            assert _get(port, "/livez")[0] == 200  # type: ignore[index]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                assert 'redis_infer_redis_up{model="cold",version=""} 1.0' in resp.read().decode()  # labelled already
            assert not redis_client.exists(keys.health_key("infer:requests", wt.settings.consumer))  # not joined
            assert not started.done()
        finally:
            engine.release.set()
        started.result(30)
    try:
        wait_until(lambda: (_get(port, "/readyz") or (0,))[0] == 200, what="ready after the warm-up")
        assert engine.seen == [[(4, 2), (1, 2)], [(4, 2), (1, 2)]]  # every shape, on every slot, zero-filled
        send(redis_client, "cold", {"x": np.ones((1, 2), np.float32)}, request_id="after")
        assert collect(redis_client, 1)["after"].status == "OK"
    finally:
        wt.stop()


def test_a_failing_warm_up_does_not_start_the_worker(redis_url: str, redis_client: redis.Redis) -> None:
    engine = SlowFirstRun(slots=1, fail=True)
    engine.release.set()
    with pytest.raises(EngineError, match="device is gone"):
        WorkerThread(redis_url, engine=engine, model={"warmup": [{"x": [2, 2]}]}).start()
    assert not redis_client.exists("infer:requests")  # it never joined the group (created with MKSTREAM)


def test_default_warm_up_when_the_worker_loads_its_model(
    redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = make_affine_model(tmp_path / "affine.onnx")
    caplog.set_level(logging.INFO, logger="worker.warmup")
    with WorkerThread(redis_url, model, batch={"max_size": 8, "preferred_sizes": [2]}):
        pass
    (record,) = [r for r in caplog.records if r.name == "worker.warmup"]
    assert "[{'x': [2, 1]}, {'x': [8, 1]}]" in record.getMessage()  # preferred size, largest batch; D=1


def test_default_shapes_and_checked_configured_shapes() -> None:
    info = ModelInfo("m", (TensorSpec("img", "FP32", (-1, 3, -1)), TensorSpec("k", "INT64", (-1,))), (), 8)
    assert default_shapes(info, [2, 8]) == [{"img": (2, 3, 1), "k": (2,)}, {"img": (8, 3, 1), "k": (8,)}]
    settings = load_settings(check_env=False, batch={"max_size": 16, "preferred_sizes": [4, 12]})
    assert [s["k"] for s in warmup_shapes(settings, info)] == [(4,), (8,)]  # capped by the engine's 8
    ok = load_settings(check_env=False, model={"warmup": '[{"img": [1, 3, 5], "k": [1]}]'})  # as a flag gives it
    assert warmup_shapes(ok, info) == [{"img": (1, 3, 5), "k": (1,)}]
    assert warmup_shapes(load_settings(check_env=False, model={"warmup": []}), info) == []
    for bad in ([{"img": [1, 3, 5]}], [{"img": [1, 4, 5], "k": [1]}], [{"img": [9, 3, 5], "k": [9]}],
                [{"img": [1, 3], "k": [1]}], [{"img": [0, 3, 5], "k": [0]}]):  # fmt: skip
        with pytest.raises(ConfigError, match="WORKER_MODEL__WARMUP"):
            warmup_shapes(load_settings(check_env=False, model={"warmup": bad}), info)


def test_default_shapes_the_engine_refuses_are_skipped_configured_ones_are_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from worker.warmup import warm_up_before_serving

    refusing = SlowFirstRun(slots=2, fail=True)
    refusing.release.set()
    for slot in refusing._slots:  # a plain refusal (a shape outside a profile), not a lost device
        slot.fatal = False
    caplog.set_level(logging.WARNING, logger="worker.warmup")
    asyncio.run(warm_up_before_serving(load_settings(check_env=False), refusing))  # defaults: starts anyway
    skipped = [r for r in caplog.records if "skipped on slot" in r.getMessage()]
    assert len(skipped) == 2 and "WORKER_MODEL__WARMUP" in skipped[0].getMessage()  # one per slot
    configured = load_settings(check_env=False, model={"warmup": [{"x": [2, 2]}]})
    with pytest.raises(EngineError, match="device is gone"):
        asyncio.run(warm_up_before_serving(configured, refusing))
