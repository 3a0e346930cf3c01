"""Issue 12, point 1, against a real redis-server and worker: a request whose ``id`` is unreadable but whose
``reply_to`` is allowed is answered under its entry id (and dead-lettered); one whose ``reply_to`` cannot be
used is only dead-lettered; the worker keeps serving (protocol §9)."""

from __future__ import annotations

import numpy as np
import pytest
import redis

from redis_infer_protocol.codec import Reply, Status, encode_request
from tests.fakes import TimesTen
from tests.helpers import WorkerThread, collect, send
from worker.testing import wait_until

pytestmark = pytest.mark.integration

STREAM, GROUP, DEAD = "infer:requests", "workers", "infer:requests:dead"
REPLY_TO = "infer:reply:test"
LONG_REPLY_TO = "infer:reply:" + "r" * 245  # 257 bytes: nowhere a worker may write

# id as sent -> (status, the error's start)
UNREADABLE_IDS: dict[bytes | None, tuple[Status, str]] = {
    b"": (Status.MALFORMED, "field 'id' is empty"),
    b"i" * 129: (Status.TOO_LARGE, "field 'id' is longer than 128 bytes"),
    b"\xff\xfe": (Status.MALFORMED, "field 'id' is not UTF-8"),
    None: (Status.MALFORMED, "entry has no 'id' field"),
}


def x() -> np.ndarray:
    return np.ones((1, 2), np.float32)


def xadd(client: redis.Redis, request_id: bytes | None, reply_to: str = REPLY_TO) -> str:
    fields = encode_request("placeholder", reply_to, "slow", {"x": x()})
    if request_id is None:
        del fields["id"]
    else:
        fields["id"] = request_id
    return client.xadd(STREAM, fields).decode()  # type: ignore[arg-type, union-attr]


def dead_letters(client: redis.Redis) -> dict[str, dict[bytes, bytes]]:
    return {f[b"original_id"].decode(): f for _eid, f in client.xrange(DEAD)}  # type: ignore[union-attr]


def test_unreadable_ids_are_answered_under_the_entry_id(redis_url: str, redis_client: redis.Redis) -> None:
    with WorkerThread(redis_url, engine=TimesTen(name="slow"), model={"name": "slow"}) as wt:
        entry_ids = {xadd(redis_client, raw): raw for raw in UNREADABLE_IDS}
        send(redis_client, "slow", {"x": x()}, request_id="fine")  # served after them
        replies = collect(redis_client, len(entry_ids) + 1)
        wait_until(lambda: len(dead_letters(redis_client)) >= len(entry_ids), what="the dead letters")
        assert wt.worker is not None and not wt.worker.stopping
    assert set(replies) == {*entry_ids, "fine"}
    assert replies["fine"].status is Status.OK
    for entry_id, raw in entry_ids.items():
        reply: Reply = replies[entry_id]
        status, problem = UNREADABLE_IDS[raw]
        assert reply.status is status, (raw, reply)
        assert reply.error == f"{problem} (answered under the entry id {entry_id})"
    dead = dead_letters(redis_client)
    assert set(dead) == set(entry_ids)  # kept for a look too: the producer is broken
    for entry_id, raw in entry_ids.items():
        assert dead[entry_id].get(b"f:id") == raw
        assert dead[entry_id][b"reason"].startswith(UNREADABLE_IDS[raw][0].value.encode())
    assert int(redis_client.xpending(STREAM, GROUP)["pending"]) == 0


def test_a_257_byte_reply_to_is_only_dead_lettered(redis_url: str, redis_client: redis.Redis) -> None:
    with WorkerThread(redis_url, engine=TimesTen(name="slow"), model={"name": "slow"}) as wt:
        unanswerable = {xadd(redis_client, b"r1", LONG_REPLY_TO), xadd(redis_client, b"", LONG_REPLY_TO)}
        send(redis_client, "slow", {"x": x()}, request_id="fine")
        replies = collect(redis_client, 1)
        wait_until(lambda: len(dead_letters(redis_client)) >= 2, what="the dead letters")
        assert wt.worker is not None and not wt.worker.stopping
    assert set(replies) == {"fine"} and replies["fine"].status is Status.OK
    assert set(dead_letters(redis_client)) == unanswerable
    assert not redis_client.exists(LONG_REPLY_TO) and redis_client.keys("infer:reply:r*") == []
    assert int(redis_client.xpending(STREAM, GROUP)["pending"]) == 0
