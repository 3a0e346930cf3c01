"""worker.testing: the harness that starts Redis and worker processes for tests, benchmarks and the demo."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import redis

from worker.testing import HarnessError, WorkerPool, health_key, make_affine_model, redis_server, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STREAM = "infer:requests"


@pytest.fixture(scope="module")
def affine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_affine_model(tmp_path_factory.mktemp("models") / "affine.onnx")


def test_private_redis_server_runs_for_the_block_only() -> None:
    with redis_server() as url:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        assert client.ping()
        assert url.startswith("redis://127.0.0.1:") and not url.endswith(":6379/0")
    with pytest.raises(redis.ConnectionError):
        client.ping()
    client.close()


def test_pool_waits_for_the_worker_itself_and_stops_it_cleanly(
    redis_url: str, redis_client: redis.Redis, affine: Path, tmp_path: Path
) -> None:
    # A health hash left by an earlier process of the same name says "ready": it must not count.
    redis_client.hset(health_key(STREAM, "w1"), mapping={"status": "ready", "pid": "1"})
    with WorkerPool(affine, redis_url, consumers=["w1"], log_dir=tmp_path) as pool:
        pool.wait_ready()
        assert redis_client.hget(health_key(STREAM, "w1"), "pid") == str(pool.workers[0].proc.pid).encode()
    assert pool.exit_codes == {"w1": 0}
    assert all(not w.running for w in pool.workers)
    assert "serving model 'affine'" in (tmp_path / "w1.log").read_text()


def test_a_worker_that_exits_at_start_fails_the_wait_with_its_log(redis_url: str, tmp_path: Path) -> None:
    with WorkerPool(tmp_path / "missing.onnx", redis_url, count=1) as pool, pytest.raises(HarnessError) as info:
        pool.wait_ready()
    assert "worker failed to start" in str(info.value)
    assert "missing.onnx" in str(info.value)  # the tail of its output says why
    assert pool.exit_codes[pool.consumers[0]] != 0


def test_stop_kills_a_worker_that_ignores_sigterm_after_the_deadline(
    redis_url: str, affine: Path, tmp_path: Path
) -> None:
    pool = WorkerPool(affine, redis_url, consumers=["frozen"], stop_timeout_s=0.5, log_dir=tmp_path).start()
    try:
        pool.wait_ready()
        pool.workers[0].send_signal(signal.SIGSTOP)  # a stopped process cannot act on SIGTERM
    finally:
        codes = pool.stop()
    assert codes == {"frozen": -signal.SIGKILL}


def test_wait_until_names_what_it_waited_for() -> None:
    with pytest.raises(HarnessError, match=r"the moon: not true within 0\.05 s"):
        wait_until(lambda: False, timeout_s=0.05, what="the moon")
