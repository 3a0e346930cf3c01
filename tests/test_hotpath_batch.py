"""The batch path end to end on a real redis-server: one read holding several kinds of entries, each
answered as it should be, and the one-round-trip settle script under refusals and a flushed script cache."""

from __future__ import annotations

import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import redis

from redis_infer_protocol.codec import Status, encode_request
from tests.helpers import WorkerThread, collect, make_affine_model, rand, send
from worker.testing import wait_until

STREAM = "infer:requests"
DEAD = f"{STREAM}:dead"
GROUP = "workers"
REPLY = "infer:reply:test"


@pytest.fixture(scope="module")
def affine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_affine_model(tmp_path_factory.mktemp("models") / "affine.onnx")


def pending(client: redis.Redis) -> int:
    return int(client.xpending(STREAM, GROUP)["pending"])


def one_read(**overrides: object) -> dict[str, object]:
    """Settings so that a waiting backlog is taken in one read and one batch."""
    return {"streams": {"block_ms": 100, "read_count": 256}, "batch": {"max_size": 64, "max_delay_ms": 50}, **overrides}


def test_one_read_of_mixed_signatures_and_bad_entries_answers_each(
    redis_url: str, redis_client: redis.Redis, affine: Path
) -> None:
    redis_client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    inputs = {f"w{i}": rand(1 + i % 3, 4 if i % 2 else 3, seed=i) for i in range(12)}  # two widths, 1-3 rows
    for rid, x in list(inputs.items())[:6]:
        send(redis_client, "affine", {"x": x}, request_id=rid)
    send(redis_client, "affine", {"x": rand(1, 4).astype(np.float64)}, request_id="dtype")
    send(redis_client, "other", {"x": rand(1, 4)}, request_id="model")
    redis_client.xadd(STREAM, {"v": b"1", "id": b"garbage", "reply_to": REPLY.encode(), "body": b"\xc1"})
    short = {"model": "affine", "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": bytes(12)}]}
    redis_client.xadd(STREAM, {"v": b"1", "id": b"short", "reply_to": REPLY.encode(), "body": msgpack.packb(short)})
    for rid, x in list(inputs.items())[6:]:
        send(redis_client, "affine", {"x": x}, request_id=rid)
    with WorkerThread(redis_url, affine, **one_read()) as wt:
        replies = collect(redis_client, len(inputs) + 4)
        wait_until(lambda: pending(redis_client) == 0, what="every entry acknowledged")
        assert wt.worker is not None and wt.worker.stats.ok == len(inputs)
    for rid, x in inputs.items():
        assert replies[rid].status is Status.OK, replies[rid].error
        np.testing.assert_allclose(replies[rid].outputs["y"], 2 * x + 1, rtol=1e-6)
        assert replies[rid].outputs["s"].shape == (len(x),)
    assert replies["dtype"].status is Status.INVALID_ARGUMENT and "must be FP32" in str(replies["dtype"].error)
    assert replies["model"].status is Status.MODEL_NOT_FOUND
    assert replies["garbage"].status is Status.MALFORMED
    assert replies["short"].status is Status.INVALID_ARGUMENT and "needs 16 bytes" in str(replies["short"].error)


def test_deadlines_inside_one_read(redis_url: str, redis_client: redis.Redis, affine: Path) -> None:
    redis_client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    old_ms = int(time.time() * 1000) - 60_000  # entries added a minute ago, with explicit ids
    for i in range(8):
        timeout = {"timeout_ms": 1000} if i % 2 else {"timeout_ms": 600_000}
        fields = encode_request(f"d{i}", REPLY, "affine", {"x": rand(1, 4, seed=i)}, **timeout)
        redis_client.xadd(STREAM, fields, id=f"{old_ms}-{i}")  # type: ignore[arg-type]
    send(redis_client, "affine", {"x": rand(1, 4)}, request_id="fresh", timeout_ms=1000)
    with WorkerThread(redis_url, affine, **one_read()):
        replies = collect(redis_client, 9)
        wait_until(lambda: pending(redis_client) == 0, what="every entry acknowledged")
    for i in range(8):
        assert replies[f"d{i}"].status is (Status.EXPIRED if i % 2 else Status.OK), i
    assert replies["fresh"].status is Status.OK


def test_a_reply_key_of_the_wrong_type_fails_alone_in_its_batch(
    redis_url: str, redis_client: redis.Redis, affine: Path
) -> None:
    redis_client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    redis_client.hset("infer:reply:hash", "a", "b")
    for i in range(5):
        send(redis_client, "affine", {"x": rand(1, 4)}, request_id=f"g{i}")
    send(redis_client, "affine", {"x": rand(1, 4)}, request_id="wrongtype", reply_to="infer:reply:hash")
    for i in range(5, 10):
        send(redis_client, "affine", {"x": rand(1, 4)}, request_id=f"g{i}")
    with WorkerThread(redis_url, affine, **one_read()) as wt:
        replies = collect(redis_client, 10)
        wait_until(lambda: pending(redis_client) == 0, what="every entry acknowledged")
        worker = wt.worker
        assert worker is not None
        wait_until(lambda: worker.stats.dead_lettered == 1, what="the dead letter counted")  # after the settle
    assert all(r.status is Status.OK for r in replies.values())
    (dead,) = redis_client.xrange(DEAD)
    assert b"WRONGTYPE" in dead[1][b"reason"] and dead[1][b"f:id"] == b"wrongtype"
    assert redis_client.type("infer:reply:hash") == b"hash"


def test_a_refused_batch_is_acked_only_once_written(redis_url: str, redis_client: redis.Redis, affine: Path) -> None:
    redis_client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    redis_client.hset(f"{STREAM}:limits", "max_backlog", "0")  # the worker's start-up write is already done
    for i in range(20):
        send(redis_client, "affine", {"x": rand(1, 4)}, request_id=f"o{i}")
    redis_client.config_set("maxmemory", "1")
    try:
        with WorkerThread(redis_url, affine, **one_read()) as wt:
            worker = wt.worker
            assert worker is not None
            wait_until(lambda: worker.stats.refused_writes >= 3, what="the batch's writes refused, retried")
            assert pending(redis_client) == 20 and redis_client.xlen(REPLY) == 0  # nothing acked unwritten
            redis_client.config_set("maxmemory", "0")
            replies = collect(redis_client, 20)
            wait_until(lambda: pending(redis_client) == 0, what="every entry acknowledged")
    finally:
        redis_client.config_set("maxmemory", "0")
    assert len(replies) == 20 and all(r.status is Status.OK for r in replies.values())
    assert redis_client.xlen(REPLY) == 20  # each written once: a refused script wrote nothing


def test_the_settle_script_is_loaded_again_after_script_flush(
    redis_url: str, redis_client: redis.Redis, affine: Path
) -> None:
    with WorkerThread(redis_url, affine):
        send(redis_client, "affine", {"x": rand(1, 4)}, request_id="before")
        collect(redis_client, 1)
        loaded = redis_client.script_exists(_settle_sha())
        redis_client.script_flush()
        send(redis_client, "affine", {"x": rand(1, 4)}, request_id="after")
        replies = collect(redis_client, 2)
        wait_until(lambda: pending(redis_client) == 0, what="every entry acknowledged")
    assert loaded == [True] and replies["after"].status is Status.OK
    assert redis_client.script_exists(_settle_sha()) == [True]


def _settle_sha() -> str:
    from worker.settle_script import SHA

    return SHA.decode()


def test_own_pending_entries_are_re_read_raw_even_with_their_data_deleted(
    redis_url: str, redis_client: redis.Redis, affine: Path
) -> None:
    redis_client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    ids = [send(redis_client, "affine", {"x": rand(1, 4)}, request_id=f"p{i}") for i in range(4)]
    redis_client.xreadgroup(GROUP, "w1", {STREAM: ">"})  # a previous life of w1 read them, then died
    redis_client.xdel(STREAM, ids[1])
    with WorkerThread(redis_url, affine, consumer="w1", **one_read()) as wt:
        replies = collect(redis_client, 3)
        wait_until(lambda: pending(redis_client) == 0, what="every entry acknowledged")
        worker = wt.worker
        assert worker is not None
        wait_until(lambda: worker.stats.dead_lettered == 1, what="the dead letter counted")  # after the settle
    assert sorted(replies) == ["p0", "p2", "p3"] and all(r.status is Status.OK for r in replies.values())
    (dead,) = redis_client.xrange(DEAD)
    assert dead[1][b"original_id"].decode() == ids[1] and b"entry data was deleted" in dead[1][b"reason"]
