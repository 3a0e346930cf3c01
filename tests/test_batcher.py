"""Batcher rules with a fake clock: delay, max size, preferred sizes, shape grouping, deadlines, priority."""

from __future__ import annotations

import pytest

from worker.batcher import Batcher


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def payloads(batch: list | None) -> list:
    assert batch is not None
    return [item.payload for item in batch]


def test_waits_for_max_delay_then_sends_what_it_has(clock: Clock) -> None:
    b: Batcher[str] = Batcher(max_size=8, max_delay_s=0.010, clock=clock)
    b.add("a", "sig")
    clock.advance(0.004)
    b.add("b", "sig")
    assert b.next_batch() is None
    assert b.wait_time() == pytest.approx(0.006)
    clock.advance(0.006)
    assert payloads(b.next_batch()) == ["a", "b"]
    assert len(b) == 0
    assert b.wait_time() is None


def test_full_batch_goes_at_once_and_rest_waits(clock: Clock) -> None:
    b: Batcher[int] = Batcher(max_size=4, max_delay_s=1.0, clock=clock)
    for i in range(6):
        b.add(i, "sig")
    assert payloads(b.next_batch()) == [0, 1, 2, 3]
    assert b.next_batch() is None  # two left, not yet due
    clock.advance(1.0)
    assert payloads(b.next_batch()) == [4, 5]


def test_zero_delay_sends_immediately(clock: Clock) -> None:
    b: Batcher[int] = Batcher(max_size=4, max_delay_s=0.0, clock=clock)
    b.add(1, "sig")
    b.add(2, "sig")
    assert payloads(b.next_batch()) == [1, 2]


def test_rows_count_toward_size_and_requests_are_never_split(clock: Clock) -> None:
    b: Batcher[str] = Batcher(max_size=8, max_delay_s=1.0, clock=clock)
    b.add("three", "sig", rows=3)
    b.add("four", "sig", rows=4)
    assert b.next_batch() is None  # 7 rows < 8
    b.add("two", "sig", rows=2)  # 9 rows >= 8: dispatch what fits in 8 without splitting
    assert payloads(b.next_batch()) == ["three", "four"]
    assert [it.payload for it in b] == ["two"]
    with pytest.raises(ValueError):
        b.add("too-big", "sig", rows=9)


def test_preferred_size_goes_without_waiting(clock: Clock) -> None:
    b: Batcher[int] = Batcher(max_size=16, max_delay_s=1.0, preferred_sizes=[4, 8], clock=clock)
    for i in range(3):
        b.add(i, "sig")
    assert b.next_batch() is None
    b.add(3, "sig")
    assert payloads(b.next_batch()) == [0, 1, 2, 3]  # 4 reached: sent at once
    for i in range(10):
        b.add(i, "sig")
    assert len(payloads(b.next_batch())) == 8  # largest preferred size that fits
    assert b.next_batch() is None  # 2 left wait for the delay


def test_shapes_batch_only_with_their_own_kind(clock: Clock) -> None:
    b: Batcher[str] = Batcher(max_size=2, max_delay_s=1.0, clock=clock)
    b.add("small-1", ("x", "float32", (3, 8)))
    b.add("big-1", ("x", "float32", (3, 16)))
    b.add("small-2", ("x", "float32", (3, 8)))
    assert payloads(b.next_batch()) == ["small-1", "small-2"]
    assert b.next_batch() is None
    clock.advance(1.0)
    assert payloads(b.next_batch()) == ["big-1"]


def test_oldest_ready_group_goes_first(clock: Clock) -> None:
    b: Batcher[str] = Batcher(max_size=8, max_delay_s=0.5, clock=clock)
    b.add("a1", "A")
    clock.advance(0.1)
    b.add("b1", "B")
    clock.advance(0.5)
    assert payloads(b.next_batch()) == ["a1"]
    assert payloads(b.next_batch()) == ["b1"]


def test_expired_requests_are_removed_and_never_dispatched(clock: Clock) -> None:
    b: Batcher[str] = Batcher(max_size=8, max_delay_s=1.0, clock=clock)
    b.add("soon", "sig", deadline_s=clock.now + 0.2)
    b.add("later", "sig", deadline_s=clock.now + 5)
    b.add("never", "sig")
    assert b.wait_time() == pytest.approx(0.2)  # the first deadline wakes the dispatcher
    clock.advance(0.2)
    assert [it.payload for it in b.pop_expired()] == ["soon"]
    assert b.pop_expired() == []
    clock.advance(0.8)
    assert payloads(b.next_batch()) == ["later", "never"]


def test_priority_orders_inside_a_group(clock: Clock) -> None:
    b: Batcher[str] = Batcher(max_size=2, max_delay_s=1.0, clock=clock)
    b.add("low", "sig")
    b.add("high", "sig", priority=5)
    b.add("mid", "sig", priority=1)
    assert payloads(b.next_batch()) == ["high", "mid"]


def test_flushing_makes_everything_ready(clock: Clock) -> None:
    b: Batcher[int] = Batcher(max_size=4, max_delay_s=60.0, clock=clock)
    b.add(1, "A")
    b.add(2, "B")
    assert b.next_batch() is None
    b.flushing = True
    got = [payloads(b.next_batch()), payloads(b.next_batch())]
    assert sorted(got) == [[1], [2]]
    assert b.next_batch() is None


def test_invalid_configuration_is_refused() -> None:
    with pytest.raises(ValueError):
        Batcher(max_size=0, max_delay_s=0.1)
    with pytest.raises(ValueError):
        Batcher(max_size=4, max_delay_s=-1)


# ----------------------------------------------------- found by mutation testing (see docs/testing.md)


def test_settings_are_validated_with_a_message_naming_them() -> None:
    assert Batcher(max_size=1, max_delay_s=0).max_size == 1  # the smallest valid values
    with pytest.raises(ValueError, match=r"^max_size must be >= 1$"):
        Batcher(max_size=0, max_delay_s=0.01)
    with pytest.raises(ValueError, match=r"^max_delay_s must be >= 0$"):
        Batcher(max_size=4, max_delay_s=-0.001)


def test_a_request_of_exactly_max_size_rows_is_accepted_and_more_is_refused(clock: Clock) -> None:
    b: Batcher[str] = Batcher(max_size=4, max_delay_s=1.0, clock=clock)
    item = b.add("full", "sig", rows=4)
    assert item.signature == "sig" and item.rows == 4
    with pytest.raises(ValueError, match=r"^rows must be in 1\.\.4, got 5$"):
        b.add("too-big", "sig", rows=5)
    assert payloads(b.next_batch()) == ["full"]


def test_preferred_size_one_and_max_size_are_kept(clock: Clock) -> None:
    b: Batcher[str] = Batcher(max_size=4, max_delay_s=1.0, preferred_sizes=[0, 1, 4, 5], clock=clock)
    assert b.preferred_sizes == [4, 1]  # out-of-range sizes dropped, largest first
    b.add("a", "sig")
    assert payloads(b.next_batch()) == ["a"]  # one row is a preferred size: sent without waiting


def test_preferred_size_that_cannot_be_filled_exactly_waits(clock: Clock) -> None:
    b: Batcher[str] = Batcher(max_size=8, max_delay_s=1.0, preferred_sizes=[4], clock=clock)
    b.add("a", "sig", rows=3)
    b.add("b", "sig", rows=3)  # 6 rows >= 4, but requests are never split: 3 or 6, never exactly 4
    assert b.next_batch() is None
    clock.advance(1.0)
    assert payloads(b.next_batch()) == ["a", "b"]  # at the delay, all 6 rows (max 8) go together


def test_equal_priorities_keep_arrival_order(clock: Clock) -> None:
    b: Batcher[str] = Batcher(max_size=3, max_delay_s=0.0, clock=clock)
    for name in ("a", "b", "c"):
        b.add(name, "sig", priority=2)
    assert payloads(b.next_batch()) == ["a", "b", "c"]


def test_an_explicit_now_is_used_instead_of_the_clock(clock: Clock) -> None:
    b: Batcher[str] = Batcher(max_size=8, max_delay_s=0.010, clock=clock)
    b.add("a", "sig", deadline_s=clock.now + 0.005)
    b.add("b", "sig")
    assert b.wait_time(now=clock.now + 0.002) == pytest.approx(0.003)
    assert b.pop_expired(now=clock.now + 0.004) == []
    assert payloads(b.pop_expired(now=clock.now + 0.005)) == ["a"]
    assert b.next_batch(now=clock.now + 0.009) is None
    assert payloads(b.next_batch(now=clock.now + 0.010)) == ["b"]


def test_pop_all_empties_the_batcher(clock: Clock) -> None:
    b: Batcher[str] = Batcher(max_size=8, max_delay_s=1.0, clock=clock)
    b.add("a", "s1")
    b.add("b", "s2", rows=2)
    b.add("c", "s1")
    assert sorted(it.payload for it in b.pop_all()) == ["a", "b", "c"]
    assert len(b) == 0 and list(b) == [] and b.next_batch() is None
    b.add("d", "s1")
    assert len(b) == 1


def test_across_signatures_the_oldest_waiting_request_goes_first(clock: Clock) -> None:
    b: Batcher[str] = Batcher(max_size=1, max_delay_s=0.0, clock=clock)
    b.add("a", "s1")
    b.add("b", "s2")
    b.add("c", "s1")
    # s1's group was made first, but once "a" is gone its head ("c") is younger than s2's ("b")
    assert [payloads(b.next_batch()) for _ in range(3)] == [["a"], ["b"], ["c"]]
