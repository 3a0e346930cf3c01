"""The yardstick speaks wire v1: the SDK's requests are answered by it and its replies decode in the SDK."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import redis

from benchmarks.ideal import GROUP, Producer, handle
from benchmarks.suite_report import markdown
from producer import Client

pytestmark = pytest.mark.integration


def _serve_once(r: redis.Redis, stream: str, expect: int) -> None:
    r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    got = 0
    while got < expect:
        for _key, entries in r.xreadgroup(GROUP, "t", {stream: ">"}, count=256, block=1000) or ():
            handle(r, stream, entries)
            got += len(entries)


def test_sdk_requests_answered_by_the_yardstick(redis_url: str, redis_client: redis.Redis) -> None:
    x = np.arange(6, dtype=np.float32).reshape(1, 6)
    with Client(redis_url, model="any", stream="ideal:s") as client:
        futures = client.submit_many([{"x": x}, {"x": x + 1}])
        redis_client.xadd("ideal:s", {"v": b"1", "id": b"bad", "reply_to": client.reply_stream, "body": b"\xc1"})
        _serve_once(redis_client, "ideal:s", 3)
        replies = [f.result(10) for f in futures]
    np.testing.assert_array_equal(replies[0].outputs["y"], 2 * x)
    np.testing.assert_array_equal(replies[1].outputs["y"], 2 * (x + 1))
    assert redis_client.xpending("ideal:s", GROUP)["pending"] == 0  # every entry acked, the bad one too


def test_yardstick_producer_burst_and_closed_loop(redis_url: str, redis_client: redis.Redis) -> None:
    producer = Producer(redis_url, "ideal:p", dim=8)
    try:
        producer.enqueue(300)
        _serve_once(redis_client, "ideal:p", 300)
        assert producer.wait_for(300, timeout_s=10) == 300
    finally:
        producer.close()


def test_report_survives_partial_results() -> None:
    figure: dict[str, Any] = {"rps": 100.0, "count": 10, "answered": 9, "redis_cpu_pct": None}
    text = markdown({"ideal": {"burst": figure}, "project1": {"workers": 1, "burst": {**figure, "rps": 50.0}}})
    assert "| burst, producer waits for all, req/s | 100 (1 unanswered) | 50 (1 unanswered) (0.50x) |" in text
