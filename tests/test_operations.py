"""Health, metrics and Redis outages, against real redis-server processes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import redis

from redis_infer_protocol.codec import Status
from tests.helpers import WorkerThread, collect, make_affine_model, rand, send
from worker.embedded import EmbeddedRedis
from worker.testing import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def affine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_affine_model(tmp_path_factory.mktemp("models") / "affine.onnx")


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_health_and_metrics_endpoints(redis_url: str, redis_client: redis.Redis, affine: Path) -> None:
    with WorkerThread(redis_url, affine, http={"host": "127.0.0.1", "port": 0}) as wt:
        assert wt.worker is not None
        wait_until(lambda: wt.worker.http_port is not None, what="http port")  # type: ignore[union-attr]
        port = wt.worker.http_port
        assert port
        for i in range(6):
            send(redis_client, "affine", {"x": rand(2, 3)}, request_id=f"m{i}")
        send(redis_client, "affine", {"x": rand(2, 3).astype(np.float64)}, request_id="bad")
        collect(redis_client, 7)
        status, body = get(port, "/readyz")
        assert status == 200 and json.loads(body)["ready"] is True
        assert get(port, "/livez")[0] == 200
        status, metrics = get(port, "/metrics")
        text = metrics.decode()
        assert get(port, "/nope")[0] == 404
    assert status == 200
    assert 'redis_infer_replies_total{model="affine",status="OK",version=""} 6.0' in text
    assert 'redis_infer_replies_total{model="affine",status="INVALID_ARGUMENT",version=""} 1.0' in text
    assert 'nv_inference_count{model="affine",version=""} 12.0' in text  # rows; tests/test_metrics.py parses all
    assert 'redis_infer_redis_up{model="affine",version=""} 1.0' in text


def test_worker_rides_out_a_redis_restart(tmp_path: Path, affine: Path) -> None:
    server = EmbeddedRedis(appendonly=True).start()
    try:
        client = redis.Redis.from_url(server.url)
        with WorkerThread(server.url, affine, http={"host": "127.0.0.1", "port": 0}) as wt:
            worker = wt.worker
            assert worker is not None
            for i in range(5):
                send(client, "affine", {"x": rand(1, 4, seed=i)}, request_id=f"before{i}")
            assert all(r.status is Status.OK for r in collect(client, 5).values())

            server.stop(cleanup=False)  # outage: the data directory (AOF) is kept
            wait_until(lambda: worker.redis_down_since is not None, what="outage noticed")
            errors = worker.stats.redis_errors
            status, body = get(worker.http_port or 0, "/readyz")
            assert status == 503
            assert json.loads(body)["redis"] == "down"
            # the worker keeps retrying with backoff, it does not crash
            wait_until(lambda: worker.stats.redis_errors >= errors + 3, what="three more failed tries")
            assert wt.error is None and not worker.stopping

            server.start()
            client = redis.Redis.from_url(server.url)
            xs = {f"after{i}": rand(1, 4, seed=100 + i) for i in range(5)}
            for rid, x in xs.items():
                send(client, "affine", {"x": x}, request_id=rid)
            replies = collect(client, 10, until=lambda got: all(rid in got for rid in xs))
            wait_until(lambda: worker.redis_down_since is None, what="Redis back", timeout_s=15)
            assert get(worker.http_port or 0, "/readyz")[0] == 200
            assert worker.stats.redis_errors > 0
        for rid, x in xs.items():
            np.testing.assert_allclose(replies[rid].outputs["y"], 2 * x + 1, rtol=1e-6)
    finally:
        server.stop()


def test_worker_recreates_a_lost_consumer_group(redis_url: str, redis_client: redis.Redis, affine: Path) -> None:
    with WorkerThread(redis_url, affine) as wt:
        send(redis_client, "affine", {"x": rand(1, 4)}, request_id="before")
        collect(redis_client, 1)
        redis_client.flushall()  # what a Redis restart without persistence, or a bad failover, looks like
        x = rand(1, 4)
        # the worker notices NOGROUP and creates the group (and stream) again
        wait_until(lambda: redis_client.exists("infer:requests"), what="group created again", timeout_s=15)
        send(redis_client, "affine", {"x": x}, request_id="after")
        reply = collect(redis_client, 1)["after"]
        assert wt.error is None and wt.worker is not None and not wt.worker.stopping
    np.testing.assert_allclose(reply.outputs["y"], 2 * x + 1, rtol=1e-6)
