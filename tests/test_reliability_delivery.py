"""Delivery guarantees, round two (issue 7: C1, H1, H4, M1, M3, M4), against a real redis-server."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import redis
import redis.asyncio as aioredis

from redis_infer_protocol.codec import CodecError, Status, decode_reply, decode_tensor, encode_request
from tests.helpers import WorkerThread, collect, make_affine_model, rand, send
from worker.errors import RedisUnavailable
from worker.intake import Intake, entry_time_ns
from worker.testing import wait_until
from worker.transport import DeadLetterPolicy, Outcome, OutgoingReply, Transport

pytestmark = pytest.mark.integration

STREAM = "infer:requests"
DEAD = f"{STREAM}:dead"
GROUP = "workers"
# Claims after 300 ms idle (the floor the settings allow with the default 2 ms batch delay is 20 ms).
FAST_RECOVERY = {"min_idle_ms": 300, "stuck_ms": 600_000, "interval_s": 0.1, "max_deliveries": 3}


@pytest.fixture(scope="module")
def affine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_affine_model(tmp_path_factory.mktemp("models") / "affine.onnx")


def wait_for(predicate: Callable[[], object], timeout_s: float = 20) -> None:
    wait_until(predicate, timeout_s=timeout_s)


def pending(client: redis.Redis) -> int:
    return int(client.xpending(STREAM, GROUP)["pending"])


def deliver_to(client: redis.Redis, consumer: str, entries: list[dict[str, bytes]], *, times: int = 1) -> list[str]:
    """XADD ``entries`` and deliver them to ``consumer`` in one transaction (no worker can read them
    first); ``times`` > 1 sets their delivery count as if delivered that often."""
    pipe = client.pipeline(transaction=True)
    for fields in entries:
        pipe.xadd(STREAM, fields)  # type: ignore[arg-type]
    pipe.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=len(entries))
    ids = [i.decode() for i in pipe.execute()[: len(entries)]]
    if times > 1:
        client.xclaim(STREAM, GROUP, consumer, 0, ids, retrycount=times)
    return ids


def request(rid: str, reply_to: str = "infer:reply:test", **kw: object) -> dict[str, bytes]:
    return encode_request(rid, reply_to, "affine", {"x": rand(1, 4, seed=len(rid))}, **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ C1: reply_to on every path


def test_poison_entry_cannot_reply_into_or_expire_a_foreign_key(
    redis_url: str, redis_client: redis.Redis, affine: Path, caplog: pytest.LogCaptureFixture
) -> None:
    redis_client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    redis_client.xadd("app:other", {"mine": "1"})
    ids = deliver_to(redis_client, "ghost", [request("into-requests", STREAM), request("into-app", "app:other"),
                                             request("fine", "infer:reply:test")], times=5)  # fmt: skip
    with WorkerThread(redis_url, affine, recovery=FAST_RECOVERY) as wt:
        replies = collect(redis_client, 1)
        wait_for(lambda: pending(redis_client) == 0)
        send(redis_client, "affine", {"x": rand(1, 4)}, request_id="after")  # the queue still works
        assert collect(redis_client, 2)["after"].status is Status.OK
        assert wt.worker is not None and wt.worker.stats.dead_lettered == 3
    assert replies["fine"].status is Status.INTERNAL and "delivered 6 times" in (replies["fine"].error or "")
    assert redis_client.ttl(STREAM) == -1  # the request stream got no TTL
    assert redis_client.ttl("app:other") == -1 and redis_client.xlen("app:other") == 1  # nothing written there
    assert sorted(d[1][b"original_id"].decode() for d in redis_client.xrange(DEAD)) == sorted(ids)
    # The poison path itself applied the rule: the transport's last gate never had to.
    assert not [r for r in caplog.records if "refused at the transport" in r.getMessage()]


def test_transport_refuses_a_reply_the_rule_does_not_allow(redis_url: str, redis_client: redis.Redis) -> None:
    """The last gate: whatever path built the outcome, a reply to a disallowed key is dead-lettered."""
    redis_client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    (entry_id,) = deliver_to(redis_client, "me", [request("r", STREAM)])

    async def go() -> list[Outcome]:
        client = aioredis.Redis.from_url(redis_url)
        t = Transport(client, stream=STREAM, group=GROUP, consumer="me", dead_letter_stream=DEAD,
                      reply_maxlen=100, reply_ttl_s=60)  # fmt: skip
        t.apply_policy(reply_allowed=lambda key: key.startswith("infer:reply:"), dead_letters=DeadLetterPolicy())
        outcome = Outcome(entry_id, OutgoingReply(STREAM, {"id": b"r"}, entry_id, {b"id": b"r"}))
        try:
            return await t.settle([outcome])
        finally:
            await client.aclose()

    assert asyncio.run(go()) == []
    assert redis_client.xlen(STREAM) == 1 and redis_client.ttl(STREAM) == -1
    (dead,) = redis_client.xrange(DEAD)
    assert b"is not a reply stream" in dead[1][b"reason"]
    assert pending(redis_client) == 0


# ----------------------------------------------------------------- H1: own entries a lost read delivered


def test_own_entries_whose_read_reply_was_lost_are_recovered_on_a_live_worker(
    redis_url: str, redis_client: redis.Redis, affine: Path
) -> None:
    with WorkerThread(redis_url, affine, consumer="solo", recovery=FAST_RECOVERY) as wt:
        send(redis_client, "affine", {"x": rand(1, 4)}, request_id="warm")
        collect(redis_client, 1)
        # Delivered to this worker's name, but the reply went elsewhere: as if the read had timed out.
        deliver_to(redis_client, "solo", [request(f"lost{i}") for i in range(5)])
        replies = collect(redis_client, 6)
        wait_for(lambda: pending(redis_client) == 0)
        assert wt.worker is not None and wt.worker.stats.recovered == 5
    assert all(replies[f"lost{i}"].status is Status.OK for i in range(5))


# ------------------------------------------------------------------- H4: max_deliveries on a restart


def test_restart_under_the_same_name_enforces_max_deliveries(
    redis_url: str, redis_client: redis.Redis, affine: Path
) -> None:
    redis_client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    deliver_to(redis_client, "same", [request("crashed-often")], times=5)
    deliver_to(redis_client, "same", [request("crashed-once")])
    # Recovery off: only the restart's own-PEL re-read may see these entries.
    with WorkerThread(redis_url, affine, consumer="same", recovery={"enabled": False}) as wt:
        replies = collect(redis_client, 2)
        wait_for(lambda: pending(redis_client) == 0)
        assert wt.worker is not None
    assert replies["crashed-once"].status is Status.OK
    assert replies["crashed-often"].status is Status.INTERNAL
    assert "max 3" in (replies["crashed-often"].error or "")
    assert redis_client.xlen(DEAD) == 1


# ------------------------------------------------------------------------- M1, M3: bounded entries


def test_foreign_fields_are_dropped_and_dead_letters_are_bounded(
    redis_url: str, redis_client: redis.Redis, affine: Path
) -> None:
    extra = {f"extra{i}": b"z" * 10_000 for i in range(20)}
    streams = {"dead_letter_maxlen": 5, "dead_letter_max_field_bytes": 1024, "block_ms": 100}
    with WorkerThread(redis_url, affine, streams=streams):
        redis_client.xadd(STREAM, {**request("with-extras"), **extra})
        for i in range(12):  # no reply_to: dead-lettered
            redis_client.xadd(STREAM, {"v": "1", "id": f"junk{i}", "body": b"\x00" * 5000, **extra})
        replies = collect(redis_client, 1)
        wait_for(lambda: pending(redis_client) == 0)
    assert replies["with-extras"].status is Status.OK
    dead = redis_client.xrange(DEAD)
    assert len(dead) == 5  # capped by MAXLEN
    for _id, fields in dead:
        assert not any(k.startswith(b"f:extra") for k in fields)
        assert fields[b"dropped_fields"].startswith(b"b'extra0'(10000B)")
        assert len(fields[b"f:body"]) == 1024 and fields[b"truncated"] == b"body=5000"


# -------------------------------------------------------------------------- M4: explicit entry ids


def test_a_future_entry_id_does_not_push_the_deadline_away(
    redis_url: str, redis_client: redis.Redis, affine: Path
) -> None:
    future_ms = int(time.time() * 1000) + 3_600_000
    with WorkerThread(redis_url, affine):
        redis_client.xadd(STREAM, request("future", timeout_ms=60_000), id=f"{future_ms}-0")
        reply = collect(redis_client, 1)["future"]
    assert reply.status is Status.OK
    assert reply.timing.enqueued_ns <= reply.timing.published_ns  # clamped to the server's clock at read
    assert entry_time_ns(f"{future_ms}-0", server_now_ns=5) == 5
    assert entry_time_ns("1000-0", server_now_ns=5) == 1000 * 1_000_000  # a past id is kept as it is


def test_poison_and_good_entries_are_answered_exactly_once(
    redis_url: str, redis_client: redis.Redis, affine: Path
) -> None:
    """No duplicate replies when own re-reads, claims and fresh reads all run together."""
    redis_client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    deliver_to(redis_client, "dup", [request(f"old{i}") for i in range(10)])
    with WorkerThread(redis_url, affine, consumer="dup", recovery=FAST_RECOVERY):
        for i in range(30):
            send(redis_client, "affine", {"x": rand(1, 4, seed=i)}, request_id=f"new{i}")
        collect(redis_client, 40)
        wait_for(lambda: pending(redis_client) == 0)
    ids = [decode_reply(f).id for _i, f in redis_client.xrange("infer:reply:test")]
    assert len(ids) == len(set(ids)) == 40


# ------------------------------------------------------------------------- M2: BYTES bodies


def test_bytes_tensors_are_checked_against_the_model_before_decoding(
    redis_url: str, redis_client: redis.Redis, affine: Path
) -> None:
    many = np.array([b""] * (1024 * 1024 + 1), dtype=object).reshape(1, -1)
    with WorkerThread(redis_url, affine) as wt:
        redis_client.xadd(STREAM, encode_request("bytes-for-fp32", "infer:reply:test", "affine", {"x": many}))
        reply = collect(redis_client, 1)["bytes-for-fp32"]
        assert wt.worker is not None and not wt.worker.stopping
    assert reply.status is Status.INVALID_ARGUMENT and "must be FP32, got BYTES" in (reply.error or "")
    with pytest.raises(CodecError, match="more than 1048576") as err:
        decode_tensor(
            {"name": "s", "datatype": "BYTES", "shape": [1024 * 1024 + 1], "data": bytes(4 * 1024 * 1024 + 4)}
        )
    assert err.value.status is Status.TOO_LARGE


# ----------------------------------------------------------------------- suspected races, now closed


def _transport(client: aioredis.Redis, consumer: str = "me") -> Transport:
    return Transport(client, stream=STREAM, group=GROUP, consumer=consumer, dead_letter_stream=DEAD,
                     reply_maxlen=100, reply_ttl_s=60)  # fmt: skip


def test_an_idle_consumer_is_deleted_only_if_still_idle_empty_and_dead(
    redis_url: str, redis_client: redis.Redis
) -> None:
    redis_client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    for name in ("gone", "alive", "busy"):
        redis_client.xgroup_createconsumer(STREAM, GROUP, name)
    redis_client.hset(f"{STREAM}:worker:alive", "status", "ready")
    deliver_to(redis_client, "busy", [request("held")])

    async def go() -> dict[str, bool]:
        client = aioredis.Redis.from_url(redis_url)
        try:
            m = _transport(client).maintenance()
            return {name: await m.delete_idle_consumer(name, 0) for name in ("gone", "alive", "busy", "nobody")}
        finally:
            await client.aclose()

    assert asyncio.run(go()) == {"gone": True, "alive": False, "busy": False, "nobody": False}
    names = {c["name"] for c in redis_client.xinfo_consumers(STREAM, GROUP)}
    assert names == {b"alive", b"busy"}


def test_a_settle_retried_after_a_lost_answer_still_sets_the_reply_ttl(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis_client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    (entry_id,) = deliver_to(redis_client, "me", [request("r")])

    async def go() -> None:
        client = aioredis.Redis.from_url(redis_url)
        t = _transport(client)
        real, calls = t._call, []

        async def call(packed: bytes) -> object:
            calls.append(packed)
            answer = await real(packed)
            if len(calls) == 1:  # the settle script ran (written, acked), but its answer is lost
                raise redis.ConnectionError("connection lost")
            return answer

        monkeypatch.setattr(t, "_call", call)
        outcome = Outcome(entry_id, OutgoingReply("infer:reply:new", {"id": b"r"}, entry_id, {}))
        try:
            with pytest.raises(RedisUnavailable):
                await t.settle([outcome])
            assert await t.settle([outcome]) == []  # at-least-once: written again, acked again
        finally:
            await client.aclose()

    asyncio.run(go())
    assert 0 < redis_client.ttl("infer:reply:new") <= 60
    assert redis_client.xlen("infer:reply:new") == 2 and pending(redis_client) == 0


def test_a_large_body_is_decoded_off_the_event_loop(
    redis_url: str, redis_client: redis.Redis, affine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: dict[str, str] = {}
    real = Intake.admit

    def admit(self: Intake, entry_id: str, fields: dict[bytes, bytes], *args: object) -> object:
        threads[fields[b"id"].decode()] = threading.current_thread().name
        return real(self, entry_id, fields, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Intake, "admit", admit)
    with WorkerThread(redis_url, affine) as wt:
        send(redis_client, "affine", {"x": rand(1, 4)}, request_id="small")
        send(redis_client, "affine", {"x": rand(1, 300_000)}, request_id="large")  # 1.2 MB body
        replies = collect(redis_client, 2)
        loop_thread = wt._thread.name
    assert replies["large"].status is Status.OK and replies["small"].status is Status.OK
    assert threads["small"] == loop_thread
    assert threads["large"] != loop_thread
