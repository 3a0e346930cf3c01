"""The sans-IO client core, without Redis: the send state machine, backoff, request preparation."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import numpy as np
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from producer.backpressure import ADD_SCRIPT, ADD_SCRIPT_SHA, Backpressure, OnBusy
from producer.core import BACKOFF_MAX_S, ClientConfig, ClientCore, PreparedRequest, backoff_s
from producer.errors import Busy, InvalidInput
from producer.submission import FetchLimits, LoadScript, SendRound, Sleep, Submission
from redis_infer_protocol import keys
from redis_infer_protocol.codec import Reply, decode_request
from redis_infer_protocol.limits import DEFAULT_LIMITS, MAX_REQUEST_ID_BYTES, PRIORITY_MAX, PRIORITY_MIN

STREAM = "s"


def new_core(retries: int = 0) -> ClientCore[Future[Reply]]:
    return ClientCore(ClientConfig("m", STREAM, None, 30.0, keys.DEFAULT_REPLY_PREFIX, DEFAULT_LIMITS, retries))


def start(
    n: int, *, on_busy: OnBusy = "raise", retries: int = 0, raise_errors: bool = False, max_backlog: int | None = None
) -> tuple[Submission[Future[Reply]], ClientCore[Future[Reply]], list[Future[Reply]]]:
    core = new_core(retries)
    prepared = [core.prepare({"x": np.ones(1)}, timeout=None, priority=0, parameters=None, outputs=None,
                             request_id=f"r{i}") for i in range(n)]  # fmt: skip
    futures: list[Future[Reply]] = [Future() for _ in prepared]
    core.register(prepared, futures)
    bp = Backpressure(STREAM, on_busy)
    if max_backlog is not None:
        bp.update(str(max_backlog).encode())
    return Submission(core, bp, prepared, futures, raise_errors=raise_errors), core, futures


def send_round(sub: Submission[Any]) -> SendRound:
    action = sub.next_action()
    assert isinstance(action, SendRound), action
    return action


def test_first_action_reads_the_published_limit_then_sends_plain_xadds() -> None:
    sub, core, futures = start(2)
    action = sub.next_action()
    assert action == FetchLimits(keys.limits_key(STREAM))
    sub.done(action, None)  # no limit published
    round_ = send_round(sub)
    assert round_.stream == STREAM
    assert not round_.scripted and round_.commands == 2
    assert [decode_request(p.fields).id for p in round_.requests] == ["r0", "r1"]
    sub.done(round_, [b"1-0", b"1-1"])
    assert sub.next_action() is None
    assert core.pending_count == 2 and not any(f.done() for f in futures)


def test_a_published_limit_sends_through_the_script_by_sha() -> None:
    sub, _, _ = start(1, max_backlog=5)
    round_ = send_round(sub)
    assert round_.sha == ADD_SCRIPT_SHA
    assert round_.scripted and round_.max_backlog == 5 and round_.commands == 1


def test_noscript_loads_the_script_and_sends_the_round_again() -> None:
    sub, core, _ = start(2, max_backlog=5)
    round_ = send_round(sub)
    sub.done(round_, [NoScriptError("NOSCRIPT")])  # one script call carries both requests
    load = sub.next_action()
    assert load == LoadScript(ADD_SCRIPT)
    sub.done(load, ADD_SCRIPT_SHA)
    again = send_round(sub)
    assert len(again.requests) == 2
    sub.done(again, [[2, [b"1-0", b"1-1"]]])
    assert sub.next_action() is None and core.pending_count == 2


def test_busy_in_raise_mode_fails_only_the_busy_future() -> None:
    sub, core, futures = start(2, max_backlog=5)
    sub.done(send_round(sub), [[5, [b"1-0"]]])  # the script added the first, then the stream was full
    assert sub.next_action() is None
    assert not futures[0].done()
    assert isinstance(futures[1].exception(0), Busy)
    assert core.pending_count == 1


def test_busy_in_raise_mode_raises_from_a_single_submit() -> None:
    sub, core, _ = start(1, max_backlog=5, raise_errors=True)
    sub.done(send_round(sub), [[5, []]])
    with pytest.raises(Busy, match="BACKLOG s holds 5 entries, the limit is 5"):
        sub.next_action()
    assert core.pending_count == 0


def test_busy_in_wait_mode_sleeps_then_resends_only_the_busy_ones() -> None:
    sub, _, futures = start(3, on_busy="wait", max_backlog=5)
    sub.done(send_round(sub), [[5, [b"1-0"]]])
    wait = sub.next_action()
    assert isinstance(wait, Sleep) and 0 < wait.seconds <= 1.0
    again = send_round(sub)
    assert [decode_request(p.fields).id for p in again.requests] == ["r1", "r2"]
    sub.done(again, [[4, [b"1-3", b"1-4"]]])
    assert sub.next_action() is None
    assert not any(f.done() for f in futures)


def test_failed_xadd_fails_its_future_with_the_redis_error() -> None:
    sub, core, futures = start(2)
    sub.done(sub.next_action(), None)  # type: ignore[arg-type]
    error = ResponseError("WRONGTYPE")
    sub.done(send_round(sub), [error, b"1-1"])
    assert futures[0].exception(0) is error
    assert sub.next_action() is None and core.pending_count == 1


def test_connection_errors_are_resent_up_to_retries_then_raised() -> None:
    sub, core, futures = start(1, retries=1, max_backlog=0)
    round_ = send_round(sub)
    sub.failed(RedisConnectionError("reset"))
    assert isinstance(sub.next_action(), Sleep)
    assert send_round(sub).requests == round_.requests  # same request, same id
    with pytest.raises(RedisConnectionError):
        sub.failed(RedisConnectionError("reset again"))
    sub.abandon()
    assert core.pending_count == 0 and futures[0].cancelled()


def test_other_errors_are_not_retried() -> None:
    sub, _, _ = start(1, retries=5, max_backlog=0)
    send_round(sub)
    with pytest.raises(ValueError, match="bug"):
        sub.failed(ValueError("bug"))


@pytest.mark.parametrize("attempt", [0, 1, 3, 10, 100])
def test_backoff_is_jittered_within_half_and_all_of_its_cap(attempt: int) -> None:
    cap = min(BACKOFF_MAX_S, 0.05 * 2**attempt)
    delays = {backoff_s(attempt) for _ in range(50)}
    assert all(cap / 2 <= d <= cap for d in delays)
    assert len(delays) > 1


def test_prepare_uses_the_protocol_limits() -> None:
    core = new_core()
    options: dict[str, Any] = dict(timeout=None, parameters=None, outputs=None)
    ok = core.prepare({"x": np.ones(1)}, priority=PRIORITY_MAX, request_id="r" * MAX_REQUEST_ID_BYTES, **options)
    assert isinstance(ok, PreparedRequest)
    core.prepare({"x": np.ones(1)}, priority=PRIORITY_MIN, request_id=None, **options)
    with pytest.raises(InvalidInput, match="request_id"):
        core.prepare({"x": np.ones(1)}, priority=0, request_id="r" * (MAX_REQUEST_ID_BYTES + 1), **options)
    with pytest.raises(InvalidInput, match="priority"):
        core.prepare({"x": np.ones(1)}, priority=PRIORITY_MAX + 1, request_id=None, **options)
    with pytest.raises(InvalidInput, match="priority"):
        core.prepare({"x": np.ones(1)}, priority=PRIORITY_MIN - 1, request_id=None, **options)
