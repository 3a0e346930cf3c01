"""Real worker processes: load sharing in one consumer group, SIGTERM drain."""

from __future__ import annotations

import collections
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from redis_infer_protocol.codec import Status, encode_request
from tests.helpers import collect, make_affine_model, rand
from worker.testing import start_worker, wait_ready, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STREAM = "infer:requests"


@pytest.fixture(scope="module")
def affine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_affine_model(tmp_path_factory.mktemp("models") / "affine.onnx")


@pytest.fixture
def logs(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    for log in tmp_path.glob("*.log"):  # shown by pytest on failure
        print(f"--- {log.name}\n{log.read_text()[-4000:]}")


def test_two_workers_share_the_load_and_process_each_request_once(
    redis_url: str, redis_client: redis.Redis, affine: Path, logs: Path
) -> None:
    names = ["w1", "w2"]
    env = {"WORKER_BATCH__MAX_SIZE": "4", "WORKER_BATCH__MAX_DELAY_MS": "2", "WORKER_STREAMS__BLOCK_MS": "200"}
    workers = [start_worker(affine, redis_url, consumer=n, log_path=logs / f"{n}.log", env=env) for n in names]
    try:
        wait_ready(redis_url, workers)
        xs = {f"r{i}": rand(1, 16, seed=i) for i in range(400)}
        pipe = redis_client.pipeline()
        for rid, x in xs.items():
            pipe.xadd(STREAM, encode_request(rid, "infer:reply:test", "affine", {"x": x}))
        pipe.execute()
        replies = collect(redis_client, len(xs))
        entries = redis_client.xrange("infer:reply:test")
    finally:
        codes = [w.stop() for w in workers]
    assert codes == [0, 0]
    assert len(entries) == len(xs)  # exactly one reply per request: nothing processed twice
    for rid, x in xs.items():
        assert replies[rid].status is Status.OK
        np.testing.assert_allclose(replies[rid].outputs["y"], 2 * x + 1, rtol=1e-6)
    by_worker = collections.Counter(r.worker for r in replies.values())
    assert set(by_worker) == set(names), by_worker
    assert min(by_worker.values()) >= 40, by_worker  # both took a real share
    assert int(redis_client.xpending(STREAM, "workers")["pending"]) == 0


def test_sigterm_finishes_queued_work_before_exit(
    redis_url: str, redis_client: redis.Redis, affine: Path, logs: Path
) -> None:
    # A long batch delay keeps requests queued inside the worker when SIGTERM arrives.
    env = {
        "WORKER_BATCH__MAX_SIZE": "64",
        "WORKER_BATCH__MAX_DELAY_MS": "20000",
        "WORKER_RECOVERY__MIN_IDLE_MS": "300000",
        "WORKER_STREAMS__BLOCK_MS": "200",
    }
    worker = start_worker(affine, redis_url, consumer="w", log_path=logs / "w.log", env=env)
    try:
        wait_ready(redis_url, [worker])
        for i in range(10):
            redis_client.xadd(STREAM, encode_request(f"q{i}", "infer:reply:test", "affine", {"x": rand(1, 4)}))
        wait_until(lambda: int(redis_client.xpending(STREAM, "workers")["pending"]) >= 10, what="10 entries read")
        assert redis_client.xlen("infer:reply:test") == 0  # read, queued, not yet answered
        t0 = time.monotonic()
        code = worker.stop(signal.SIGTERM)
        took = time.monotonic() - t0
    finally:
        worker.stop(signal.SIGKILL)
    assert code == 0
    assert took < 5
    replies = collect(redis_client, 10, timeout_s=1)
    assert all(r.status is Status.OK for r in replies.values())
    assert int(redis_client.xpending(STREAM, "workers")["pending"]) == 0
    assert not redis_client.exists(f"{STREAM}:worker:w")  # health key removed on clean exit


def test_binary_field_names_are_dead_lettered_and_do_not_stop_the_worker(
    redis_url: str, redis_client: redis.Redis, affine: Path, logs: Path
) -> None:
    worker = start_worker(affine, redis_url, consumer="w", log_path=logs / "w.log")
    try:
        wait_ready(redis_url, [worker])
        redis_client.xadd(STREAM, {b"v": b"1", b"id": b"bad", b"\xff": b"x"})
        good = encode_request("good", "infer:reply:test", "affine", {"x": np.ones((1, 4), np.float32)})
        redis_client.xadd(STREAM, good)  # type: ignore[arg-type]
        wait_until(lambda: redis_client.xlen("infer:reply:test") and redis_client.xlen(f"{STREAM}:dead"),
                   what="a reply and a dead letter")  # fmt: skip
        assert worker.running
    finally:
        code = worker.stop()
    assert code == 0  # a clean exit on SIGTERM: nothing crashed it
    assert redis_client.xlen(f"{STREAM}:dead") == 1
    assert redis_client.xlen("infer:reply:test") == 1
