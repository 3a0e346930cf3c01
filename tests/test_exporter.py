"""``redis-infer exporter``: the group-level series scraped from a real redis-server in a known state."""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
import redis
from prometheus_client import generate_latest

from producer.exporter import registry_for
from redis_infer_protocol import keys
from tests.helpers import ROOT, metric_samples, metric_value, stop_process
from tests.test_monitor import DEAD, STREAM, _major, _prepare
from worker.embedded import free_port
from worker.testing import wait_until

pytestmark = pytest.mark.integration


def _scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return resp.read().decode()  # type: ignore[no-any-return]
    except (urllib.error.URLError, ConnectionError):
        return None


def test_exporter_serves_the_known_state(redis_url: str, redis_client: redis.Redis) -> None:
    ids = _prepare(redis_client)  # 5 entries; alive holds 2 pending, ghost 1; 2 undelivered; 2 dead letters
    redis_client.hset(keys.health_key(STREAM, "alive"), "model", "orient")
    port = free_port()
    command = [sys.executable, "-m", "producer", "exporter", "--url", redis_url, "--stream", STREAM,
               "--host", "127.0.0.1", "--port", str(port), "--stale-ms", "0"]  # fmt: skip
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        text: list[str] = []
        wait_until(lambda: text.append(_scrape(port) or "") or text[-1], timeout_s=30, what="exporter answers")
        samples = metric_samples(text[-1])
    finally:
        assert stop_process(proc, signal.SIGTERM) == 0
    group = {"stream": STREAM, "group": "workers", "model": "orient"}
    assert metric_value(samples, "redis_infer_group_pending", **group) == 3
    assert metric_value(samples, "redis_infer_group_consumers", **group) == 2
    assert metric_value(samples, "redis_infer_group_stale_consumers", **group) == 1  # ghost: no heartbeat
    oldest_age_s = metric_value(samples, "redis_infer_group_oldest_pending_age_seconds", **group)
    server_s, _ = redis_client.time()  # type: ignore[misc]
    assert 0 <= oldest_age_s <= server_s - int(ids[0].split(b"-")[0]) / 1000 + 1
    assert metric_value(samples, "redis_infer_workers", stream=STREAM, model="orient", status="ready") == 1
    assert metric_value(samples, "redis_infer_stream_length", stream=STREAM, model="orient") == 5
    assert metric_value(samples, "redis_infer_dead_letter_length", stream=STREAM, dead_letter_stream=DEAD) == 2
    assert metric_value(samples, "redis_infer_exporter_redis_up") == 1
    if _major(redis_client) >= 7:
        assert metric_value(samples, "redis_infer_group_lag", **group) == 2
    else:  # Redis 6 does not know the lag: the series is absent, never 0
        assert not [k for k in samples if k[0] == "redis_infer_group_lag"]
    assert not [k for k in samples if k[0].endswith("_created")]


def test_unknown_lag_is_absent_and_model_comes_from_the_flag(redis_url: str, redis_client: redis.Redis) -> None:
    ids = _prepare(redis_client)
    redis_client.xdel(STREAM, ids[4])  # an undelivered entry deleted: Redis 7 cannot count the lag any more
    samples = metric_samples(generate_latest(registry_for(redis_client, [STREAM], model="given")).decode())
    assert not [k for k in samples if k[0] == "redis_infer_group_lag"]
    assert metric_value(samples, "redis_infer_group_pending", stream=STREAM, model="given") == 3
    assert metric_value(samples, "redis_infer_stream_length", stream=STREAM, model="given") == 4


def test_several_streams_and_a_missing_one(redis_url: str, redis_client: redis.Redis) -> None:
    _prepare(redis_client)
    samples = metric_samples(generate_latest(registry_for(redis_client, [STREAM, "other:requests"])).decode())
    assert metric_value(samples, "redis_infer_stream_length", stream="other:requests") == 0
    assert metric_value(samples, "redis_infer_dead_letter_length", stream="other:requests") == 0
    assert metric_value(samples, "redis_infer_stream_length", stream=STREAM, model="") == 5  # no worker says its model
    assert not [k for k in samples if k[0] == "redis_infer_group_pending" and ("stream", "other:requests") in k[1]]


def test_redis_down_is_said_and_no_group_series_is_made_up() -> None:
    client = redis.Redis(port=free_port(), socket_connect_timeout=1)
    try:
        samples = metric_samples(generate_latest(registry_for(client, [STREAM])).decode())
    finally:
        client.close()
    assert metric_value(samples, "redis_infer_exporter_redis_up") == 0
    assert {k[0] for k in samples} == {"redis_infer_exporter_redis_up", "redis_infer_exporter_scrape_duration_seconds"}
