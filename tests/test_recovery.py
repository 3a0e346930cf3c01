"""Recovery against a real redis-server: claiming from dead consumers, poison, trimming, clean-up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import numpy as np
import pytest
import redis

from redis_infer_protocol.codec import Status
from tests.helpers import WorkerThread, collect, make_affine_model, rand, send
from worker.maintenance import PendingEntry
from worker.recovery import Recovered, Recovery, run_forever
from worker.testing import wait_until

pytestmark = pytest.mark.integration

STREAM, GROUP = "infer:requests", "workers"
FAST = {"enabled": True, "interval_s": 0.1, "min_idle_ms": 300, "stuck_ms": 60_000, "max_deliveries": 3}


@pytest.fixture(scope="module")
def affine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_affine_model(tmp_path_factory.mktemp("models") / "affine.onnx")


def orphan(client: redis.Redis, consumer: str, count: int) -> list[str]:
    """Deliver ``count`` entries to ``consumer`` and never ack them: what a crashed worker leaves."""
    with contextlib.suppress(redis.ResponseError):  # BUSYGROUP
        client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    got = client.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=count)
    return [eid.decode() for eid in (e for _s, items in got for e, _f in items)]


def test_entries_of_a_dead_consumer_are_recovered_and_the_consumer_removed(
    redis_url: str, redis_client: redis.Redis, affine: Path
) -> None:
    xs = {f"r{i}": rand(1, 4, seed=i) for i in range(5)}
    for rid, x in xs.items():
        send(redis_client, "affine", {"x": x}, request_id=rid)
    assert len(orphan(redis_client, "crashed", 5)) == 5
    with WorkerThread(redis_url, affine, recovery=FAST) as wt:
        replies = collect(redis_client, 5, timeout_s=15)
        wait_until(lambda: b"crashed" not in consumers(redis_client), what="the dead consumer deleted")
        assert wt.worker is not None and wt.worker.stats.recovered == 5
    for rid, x in xs.items():
        assert replies[rid].status is Status.OK
        np.testing.assert_allclose(replies[rid].outputs["y"], 2 * x + 1, rtol=1e-6)
    assert int(redis_client.xpending(STREAM, GROUP)["pending"]) == 0


def consumers(client: redis.Redis) -> set[bytes]:
    return {c["name"] for c in client.xinfo_consumers(STREAM, GROUP)}


def idle_ms(client: redis.Redis, entry_id: str) -> int:
    return int(client.xpending_range(STREAM, GROUP, entry_id, entry_id, 1)[0]["time_since_delivered"])


def test_entries_of_a_live_consumer_are_left_alone(redis_url: str, redis_client: redis.Redis, affine: Path) -> None:
    send(redis_client, "affine", {"x": rand(1, 4)}, request_id="busy")
    (held,) = orphan(redis_client, "slow-but-alive", 1)
    redis_client.hset(f"{STREAM}:worker:slow-but-alive", "status", "ready")  # its health key
    # A canary delivered later to a consumer without a health key: once recovery answers it, a round ran
    # in which the live consumer's entry (idle for longer) was a candidate too, and was passed over.
    send(redis_client, "affine", {"x": rand(1, 4)}, request_id="canary")
    orphan(redis_client, "dead", 1)
    with WorkerThread(redis_url, affine, recovery=FAST) as wt:
        replies = collect(redis_client, 1, timeout_s=15)
        owner = redis_client.xpending_range(STREAM, GROUP, "-", "+", 10)[0]["consumer"]
        assert wt.worker is not None and wt.worker.stats.recovered == 1
    assert set(replies) == {"canary"}
    assert owner == b"slow-but-alive"
    assert idle_ms(redis_client, held) >= FAST["min_idle_ms"]
    assert redis_client.xlen("infer:reply:test") == 1


def test_entry_over_max_deliveries_is_dead_lettered_and_answered(
    redis_url: str, redis_client: redis.Redis, affine: Path
) -> None:
    send(redis_client, "affine", {"x": rand(1, 4)}, request_id="poison")
    (entry_id,) = orphan(redis_client, "crash-1", 1)
    for i in (2, 3):  # two more workers took it and crashed: delivered 3 times
        redis_client.xclaim(STREAM, GROUP, f"crash-{i}", 0, [entry_id])
    with WorkerThread(redis_url, affine, recovery=FAST):
        reply = collect(redis_client, 1, timeout_s=15)["poison"]
    assert reply.status is Status.INTERNAL
    assert "delivered 4 times" in (reply.error or "")
    dead = redis_client.xrange(f"{STREAM}:dead")
    assert len(dead) == 1 and dead[0][1][b"original_id"] == entry_id.encode()
    assert b"f:body" in dead[0][1]  # the original fields are kept
    assert int(redis_client.xpending(STREAM, GROUP)["pending"]) == 0


def test_trimming_removes_acknowledged_entries_only(redis_url: str, redis_client: redis.Redis, affine: Path) -> None:
    redis_client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    done = [send(redis_client, "affine", {"x": rand(1, 4)}, request_id=f"d{i}") for i in range(20)]
    redis_client.xreadgroup(GROUP, "finished", {STREAM: ">"}, count=20)
    redis_client.xack(STREAM, GROUP, *done)  # processed and acknowledged earlier
    held = send(redis_client, "affine", {"x": rand(1, 4)}, request_id="held")
    orphan(redis_client, "alive", 1)  # delivered to a live consumer, not yet acknowledged
    redis_client.hset(f"{STREAM}:worker:alive", "status", "ready")
    later = [send(redis_client, "affine", {"x": rand(1, 4)}, request_id=f"l{i}") for i in range(5)]
    with WorkerThread(redis_url, affine, recovery=FAST):
        collect(redis_client, 5)
        wait_until(lambda: redis_client.xlen(STREAM) <= 6, what="acknowledged entries trimmed")
        remaining = [eid.decode() for eid, _f in redis_client.xrange(STREAM)]
    # Acknowledged entries below the oldest unacknowledged one are gone; that one and what follows stay
    # (MINID trimming cannot skip over a pending entry).
    assert remaining == [held, *later]
    assert redis_client.xpending_range(STREAM, GROUP, "-", "+", 10)[0]["message_id"].decode() == held


def test_limits_are_published_for_producers(redis_url: str, redis_client: redis.Redis, affine: Path) -> None:
    with WorkerThread(redis_url, affine, streams={"block_ms": 100, "max_backlog": 500}):
        pass
    assert redis_client.hget(f"{STREAM}:limits", "max_backlog") == b"500"


def test_restart_under_the_same_name_drains_its_own_pending_entries_once(
    redis_url: str, redis_client: redis.Redis, affine: Path
) -> None:
    for i in range(100):
        send(redis_client, "affine", {"x": rand(1, 4, seed=i)}, request_id=f"p{i}")
    own = orphan(redis_client, "pod-0", 100)  # the previous process of "pod-0" died
    # A canary held by a consumer without a health key, delivered after pod-0's entries.
    send(redis_client, "affine", {"x": rand(1, 4)}, request_id="canary")
    orphan(redis_client, "dead", 1)
    # Every entry is past min_idle and stuck_ms (claimable whatever its owner's health key says) before
    # the worker starts, so its first recovery round, which runs alongside the reader's re-read of its
    # own pending entries, could claim all of them: it must take only the canary and leave pod-0's to
    # the reader. One entry per read keeps most of pod-0's entries waiting to be re-read while it runs.
    recovery = {**FAST, "stuck_ms": FAST["min_idle_ms"]}
    wait_until(lambda: idle_ms(redis_client, own[-1]) > FAST["min_idle_ms"], what="entries idle past min_idle")
    with WorkerThread(redis_url, affine, consumer="pod-0", recovery=recovery,
                      streams={"block_ms": 100, "read_count": 1}) as wt:  # fmt: skip
        replies = collect(redis_client, 101)
        wait_until(lambda: int(redis_client.xpending(STREAM, GROUP)["pending"]) == 0, what="all acknowledged")
        assert wt.worker is not None and wt.worker.stats.recovered == 1  # the canary, and nothing of its own
    assert all(r.status is Status.OK for r in replies.values())
    assert redis_client.xlen("infer:reply:test") == 101  # each entry processed exactly once


# ------------------------------------------- the policy alone, over a scripted GroupMaintenance (no Redis)


class ScriptedGroup:
    """What ``Recovery`` asks of ``GroupMaintenance``, answered from lists; records the calls."""

    def __init__(self, me: str, pending: list[PendingEntry], alive: set[str], idle_consumers: list[str] = ()) -> None:
        self.consumer = me
        self.pending, self.alive_set, self.idle = pending, alive, list(idle_consumers)
        self.calls: list[tuple[str, object]] = []

    async def idle_pending(self, min_idle_ms: int, count: int) -> list[PendingEntry]:
        self.calls.append(("idle_pending", (min_idle_ms, count)))
        return [p for p in self.pending if p.idle_ms >= min_idle_ms][:count]

    async def alive(self, consumers: list[str]) -> dict[str, bool]:
        self.calls.append(("alive", list(consumers)))
        return {c: c in self.alive_set for c in consumers}

    async def claim(self, entry_ids: list[str], min_idle_ms: int) -> tuple[list[tuple[str, dict]], list[str]]:
        self.calls.append(("claim", (list(entry_ids), min_idle_ms)))
        return [(eid, {b"id": eid.encode()}) for eid in entry_ids], []

    async def trim_acknowledged(self) -> int:
        return 0

    async def idle_consumers(self, min_idle_ms: int) -> list[str]:
        return self.idle

    async def delete_idle_consumer(self, consumer: str, min_idle_ms: int) -> bool:
        """The real one re-checks in one script: no health key (alive), still idle and empty."""
        self.calls.append(("delete_idle_consumer", (consumer, min_idle_ms)))
        return consumer not in self.alive_set


def policy(group: ScriptedGroup) -> Recovery:
    return Recovery(group, min_idle_ms=300, stuck_ms=1000, max_deliveries=3)  # type: ignore[arg-type]


def claimed(group: ScriptedGroup) -> list[str]:
    return [eid for name, args in group.calls if name == "claim" for eid in args[0]]  # type: ignore[index]


def test_policy_claims_from_dead_owners_and_stuck_entries_only() -> None:
    group = ScriptedGroup("me", [
        PendingEntry("1-0", "dead", 400, 1),      # owner gone: claimed
        PendingEntry("2-0", "alive", 999, 1),     # owner alive, not stuck: left alone
        PendingEntry("3-0", "alive", 1000, 1),    # owner alive but idle for stuck_ms exactly: claimed
        PendingEntry("4-0", "me", 5000, 1),       # this worker's own, held in memory: never
        PendingEntry("5-0", "dead", 100, 1),      # not idle long enough
    ], alive={"alive", "me"})  # fmt: skip
    result = asyncio.run(policy(group).round(room=1, held={"4-0"}))
    assert ("idle_pending", (300, 1)) in group.calls  # min_idle_ms, and no more than there is room for
    assert claimed(group) == ["1-0"]
    group.calls.clear()
    result = asyncio.run(policy(group).round(room=10, held={"4-0"}))
    assert claimed(group) == ["1-0", "3-0"]
    assert [e[0] for e in result.entries] == ["1-0", "3-0"] and result.poison == []
    assert ("alive", ["alive", "dead"]) in group.calls  # its own name is never asked about


def test_policy_takes_back_own_entries_it_does_not_hold() -> None:
    """Entries delivered to this worker by a read whose reply never arrived: nobody works on them."""
    group = ScriptedGroup("me", [PendingEntry("1-0", "me", 400, 1), PendingEntry("2-0", "me", 400, 1)], {"me"})
    result = asyncio.run(policy(group).round(room=10, held={"2-0"}))
    assert claimed(group) == ["1-0"]
    assert [e[0] for e in result.entries] == ["1-0"]


def test_policy_sets_aside_entries_delivered_too_often() -> None:
    group = ScriptedGroup("me", [PendingEntry("1-0", "dead", 400, 2), PendingEntry("2-0", "dead", 400, 3)], set())
    result = asyncio.run(policy(group).round(room=10))
    assert [e[0] for e in result.entries] == ["1-0"]  # its 3rd delivery: max_deliveries allows it
    assert [(e[0], count) for e, count in result.poison] == [("2-0", 4)]


def test_policy_claims_nothing_without_room() -> None:
    group = ScriptedGroup("me", [PendingEntry("1-0", "dead", 400, 1)], set())
    asyncio.run(policy(group).round(room=0))
    assert claimed(group) == []


def test_policy_deletes_idle_dead_consumers_only() -> None:
    group = ScriptedGroup("me", [], alive={"alive"}, idle_consumers=["gone", "alive"])
    result = asyncio.run(policy(group).round(room=10))
    assert result.consumers_deleted == ["gone"]
    assert ("delete_idle_consumer", ("gone", 300)) in group.calls  # re-checked with min_idle_ms


def test_policy_logs_what_it_recovered(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="worker.recovery")
    group = ScriptedGroup("me", [PendingEntry("1-0", "dead", 400, 1), PendingEntry("2-0", "dead", 400, 3)], set())
    asyncio.run(policy(group).round(room=10))
    assert "recovered 2 entries from ['dead'] (1 over max deliveries, 0 deleted)" in caplog.text


def test_recovery_loop_carries_on_after_a_failed_round(caplog: pytest.LogCaptureFixture) -> None:
    rounds: list[int] = []
    errors: list[Exception] = []
    handled: list[Recovered] = []
    naps: list[float] = []

    class Flaky:
        async def round(self, room: int, held: object = frozenset()) -> Recovered:
            rounds.append(room)
            if len(rounds) == 1:
                raise ConnectionError("boom")
            return Recovered()

    async def handle(result: Recovered) -> None:
        handled.append(result)

    async def nap(seconds: float) -> None:
        naps.append(seconds)

    asyncio.run(run_forever(Flaky(), interval_s=0.5, room=lambda: 7, handle=handle,  # type: ignore[arg-type]
                            stopping=lambda: len(rounds) >= 3, sleep=nap, on_error=errors.append))  # fmt: skip
    assert rounds == [7, 7, 7] and len(handled) == 2 and naps == [0.5, 0.5, 0.5]
    assert [str(e) for e in errors] == ["boom"]
    assert "recovery round failed (boom); retrying in 0.5s" in caplog.text
