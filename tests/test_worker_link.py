"""Unit tests (no Redis) of worker/link.py: the one jittered backoff and the Redis up/down book."""

from __future__ import annotations

import asyncio

import pytest

from worker.errors import RedisUnavailable
from worker.link import Backoff, RedisLink
from worker.observability import Metrics, Stats


def test_backoff_grows_within_its_cap_and_starts_again_after_reset() -> None:
    backoff = Backoff(base_s=0.01, cap_s=0.08)
    for attempt in range(10):
        assert 0 <= backoff.next_delay() <= min(0.08, 0.01 * 2**attempt)
    assert backoff.attempt == 10
    backoff.reset()
    assert backoff.attempt == 0 and backoff.next_delay() <= 0.01


def _link(give_up: bool = False, ttl_s: float = 60.0) -> RedisLink:
    return RedisLink(Stats(), Metrics(), ttl_s, lambda: give_up)


def test_with_retry_retries_through_failures_then_marks_redis_up_and_pauses_claims() -> None:
    link = _link()
    calls = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RedisUnavailable("down", reason="LOADING")
        return "done"

    assert asyncio.run(link.with_retry(flaky)) == "done"
    assert len(calls) == 3 and link.stats.redis_errors == 2
    assert link.down_since is None
    assert not link.may_claim()  # other workers get one health TTL to write their keys again


def test_with_retry_raises_when_told_to_give_up() -> None:
    link = _link(give_up=True)

    async def down() -> None:
        raise RedisUnavailable("down", reason="LOADING")

    with pytest.raises(RedisUnavailable):
        asyncio.run(link.with_retry(down))
    assert link.down_since is not None and not link.may_claim()


def test_a_refused_write_keeps_redis_marked_down_and_a_read_does_not_mark_it_up() -> None:
    link = _link(ttl_s=0.0)

    async def refused() -> str:
        return "OOM"

    asyncio.run(link.with_retry(refused, refused=lambda reason: reason))
    assert link.down_since is not None

    async def read() -> str:
        return "ok"

    asyncio.run(link.with_retry(read, writes=False))
    assert link.down_since is not None
    asyncio.run(link.with_retry(read))
    assert link.down_since is None and link.may_claim()
