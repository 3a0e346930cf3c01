"""Regression tests for faults found in review: refused writes, expiry with a full queue, foreign reply
keys, oversized requests for the batch, the worker's own entries, invalid combinations of settings."""

from __future__ import annotations

import numpy as np
import pytest
import redis

from redis_infer_protocol.codec import CodecError, Status, decode_request, encode_request
from tests.fakes import TimesTen
from tests.helpers import WorkerThread, collect, send
from worker.config import load_settings
from worker.errors import ConfigError
from worker.testing import wait_until

pytestmark = pytest.mark.integration

STREAM, GROUP = "infer:requests", "workers"


def x(value: float = 1.0) -> np.ndarray:
    return np.full((1, 2), value, np.float32)


def oom_errors(client: redis.Redis) -> int:
    """Commands the server refused for lack of memory so far."""
    return int(client.info("errorstats").get("errorstat_OOM", {}).get("count", 0))


def test_no_ack_while_redis_refuses_the_reply(redis_url: str, redis_client: redis.Redis) -> None:
    engine = TimesTen(name="slow", delay_s=0.5)
    with WorkerThread(redis_url, engine=engine, model={"name": "slow"}) as wt:
        send(redis_client, "slow", {"x": x()}, request_id="r1")
        wait_until(lambda: engine.runs, what="the batch started")
        redis_client.config_set("maxmemory", 1)  # every write is refused with OOM; XACK is not
        try:
            wait_until(lambda: oom_errors(redis_client) >= 2, what="the reply refused, then tried again")
            assert int(redis_client.xpending(STREAM, GROUP)["pending"]) == 1  # not acked without its reply
            assert not redis_client.exists("infer:reply:test")
        finally:
            redis_client.config_set("maxmemory", 0)
        reply = collect(redis_client, 1)["r1"]
        assert wt.worker is not None and not wt.worker.stopping
    assert reply.status is Status.OK
    assert int(redis_client.xpending(STREAM, GROUP)["pending"]) == 0


def test_reader_resumes_when_expiry_empties_a_full_queue(redis_url: str, redis_client: redis.Redis) -> None:
    engine = TimesTen(name="slow", max_batch=2, delay_s=1.0)
    with WorkerThread(redis_url, engine=engine, model={"name": "slow"}, batch={"max_size": 2, "max_queued": 4}):
        for i in range(2):
            send(redis_client, "slow", {"x": x()}, request_id=f"slow{i}")
        wait_until(lambda: engine.runs, what="the only slot busy for a second")
        for i in range(4):  # fill the queue with requests that expire while they wait
            send(redis_client, "slow", {"x": x()}, request_id=f"short{i}", timeout_ms=300)
        shorts = {f"short{i}" for i in range(4)}
        collect(redis_client, 4, until=lambda got: shorts <= set(got))  # expired: the queue is empty again
        for i in range(2):
            send(redis_client, "slow", {"x": x()}, request_id=f"late{i}")
        replies = collect(redis_client, 8, timeout_s=10)
    assert [replies[f"short{i}"].status for i in range(4)] == [Status.EXPIRED] * 4
    assert replies["late0"].status is Status.OK and replies["late1"].status is Status.OK


def test_replies_never_go_outside_the_reply_prefix(redis_url: str, redis_client: redis.Redis) -> None:
    redis_client.hset("users:1", "name", "ada")
    redis_client.xadd("other-app:events", {"k": "v"})
    with WorkerThread(redis_url, engine=TimesTen(name="slow"), model={"name": "slow"}):
        for key in ("users:1", "other-app:events", f"{STREAM}:limits"):
            send(redis_client, "slow", {"x": x()}, request_id=f"to-{key}", reply_to=key)
        send(redis_client, "slow", {"x": x()}, request_id="fine")
        collect(redis_client, 1)
        wait_until(lambda: redis_client.xlen(f"{STREAM}:dead") >= 3, what="three dead letters")
    assert redis_client.xlen(f"{STREAM}:dead") == 3
    assert redis_client.ttl("users:1") == -1 and redis_client.ttl("other-app:events") == -1
    assert redis_client.xlen("other-app:events") == 1


def test_request_larger_than_the_configured_batch_is_refused_not_fatal(
    redis_url: str, redis_client: redis.Redis
) -> None:
    engine = TimesTen(name="slow", max_batch=64)  # the engine takes 64 rows, the worker batches at most 4
    with WorkerThread(redis_url, engine=engine, model={"name": "slow"}, batch={"max_size": 4}) as wt:
        send(redis_client, "slow", {"x": np.ones((8, 2), np.float32)}, request_id="eight")
        send(redis_client, "slow", {"x": np.ones((4, 2), np.float32)}, request_id="four")
        replies = collect(redis_client, 2)
        assert wt.worker is not None and not wt.worker.stopping
    assert replies["eight"].status is Status.INVALID_ARGUMENT and "1..4 rows" in (replies["eight"].error or "")
    assert replies["four"].status is Status.OK


def test_the_claimer_leaves_this_workers_own_entries_alone(redis_url: str, redis_client: redis.Redis) -> None:
    engine = TimesTen(name="slow", delay_s=1.0)
    # stuck_ms = min_idle_ms: an entry idle that long is claimed whoever owns it, so only the rule "never
    # claim your own" keeps the claimer off the entry this worker is computing.
    recovery = {"interval_s": 0.1, "min_idle_ms": 300, "stuck_ms": 300}
    with WorkerThread(redis_url, engine=engine, model={"name": "slow"}, batch={"max_delay_ms": 10},
                      recovery=recovery) as wt:  # fmt: skip
        send(redis_client, "slow", {"x": x()}, request_id="once")
        wait_until(lambda: engine.runs, what="the batch started")
        # A canary left pending by a consumer that is gone: once recovery answers it, a round ran in
        # which "once" (delivered earlier, so idle for longer) was a candidate too.
        canary = redis_client.pipeline(transaction=True)  # one MULTI: the worker's blocked read cannot take it
        canary.xadd(STREAM, encode_request("canary", "infer:reply:test", "slow", {"x": x(2.0)}))
        canary.xreadgroup(GROUP, "gone", {STREAM: ">"}, count=1)
        canary.execute()
        replies = collect(redis_client, 2)
        assert wt.worker is not None and wt.worker.stats.recovered == 1
    assert set(replies) == {"once", "canary"}
    assert [first for _rows, first in engine.runs] == [1.0, 2.0]
    assert redis_client.xlen("infer:reply:test") == 2


def test_msgpack_bomb_is_refused_without_building_it() -> None:
    body = b"\x81\xa6inputs\xdc\x04\x00" + b"\x90" * 8_000_000  # a map holding 1024 empty arrays, then junk
    with pytest.raises(CodecError) as info:
        decode_request({b"v": b"1", b"id": b"bomb", b"reply_to": b"infer:reply:x", b"body": body})
    assert info.value.status is Status.TOO_LARGE


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"streams": {"max_backlog": 10}, "recovery": {"trim": False}}, "max_backlog needs"),
        ({"recovery": {"min_idle_ms": 30_000, "stuck_ms": 1_000}}, "stuck_ms"),
    ],
)
def test_inconsistent_settings_are_refused(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(**overrides)
