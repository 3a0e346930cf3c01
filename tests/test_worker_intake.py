"""Intake alone (no Redis): model name and version, reply streams, deadlines, entry times, signatures."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from redis_infer_protocol.codec import Status, encode_request
from worker.engines.base import ModelInfo, TensorSpec
from worker.intake import Intake, Rejection, WorkItem, entry_time_ns

INFO = ModelInfo("m", (TensorSpec("x", "FP32", (-1, -1)),), (TensorSpec("y", "FP32", (-1, -1)),), max_batch_size=8)


def intake(**kw: Any) -> Intake:
    return Intake(INFO, reply_prefix="infer:reply:", **kw)


def entry(reply_to: str = "infer:reply:a", **kw: Any) -> dict[str, bytes]:
    return encode_request("r1", reply_to, kw.pop("model", "m"), {"x": np.ones((2, 3), np.float32)}, **kw)


def rejected(result: WorkItem | Rejection) -> Rejection:
    assert isinstance(result, Rejection), result
    return result


def test_entry_time_is_the_millisecond_part_of_the_id() -> None:
    assert entry_time_ns("1700000000123-7") == 1_700_000_000_123_000_000
    assert entry_time_ns("1700000000123") == 1_700_000_000_123_000_000
    assert entry_time_ns("junk-1") == 0  # not an id: no time rather than a wrong one


def test_accepted_request_carries_rows_signature_times_and_deadline() -> None:
    item = intake(default_timeout_ms=5000).admit("1000-0", entry(timeout_ms=200), read_ns=42)
    assert isinstance(item, WorkItem)
    assert item.rows == 2 and item.signature == ((3,),)
    assert item.timing.enqueued_ns == 1_000_000_000 and item.timing.read_ns == 42
    assert item.deadline_ns == 1_000_000_000 + 200 * 1_000_000  # the shorter of the two timeouts


def test_read_time_defaults_to_now() -> None:
    item = intake().admit("1000-0", entry())
    assert isinstance(item, WorkItem) and item.timing.read_ns > 1_000_000_000_000_000_000


def test_reply_outside_the_prefix_is_refused_and_not_answered_there() -> None:
    r = rejected(intake().admit("1-0", entry(reply_to="users:1")))
    assert r.status is Status.INVALID_ARGUMENT
    assert r.error == "reply_to 'users:1' is not a reply stream"
    assert r.reply_to is None and r.request_id == "r1"


@pytest.mark.parametrize(
    ("served", "asked", "ok"),
    [(None, None, True), (None, "2", True), ("1", None, True), ("1", "1", True), ("1", "2", False)],
)
def test_model_version_is_checked_only_when_both_sides_name_one(
    served: str | None, asked: str | None, ok: bool
) -> None:
    result = intake(version=served).admit("1-0", entry(model_version=asked))
    if ok:
        assert isinstance(result, WorkItem)
    else:
        r = rejected(result)
        assert r.status is Status.MODEL_NOT_FOUND
        assert r.error == "model 'm' version '2' is not served (this is '1')"


TWO = ModelInfo(
    "two",
    (TensorSpec("a", "FP32", (-1, 3)), TensorSpec("b", "INT64", (-1,))),
    (TensorSpec("y", "FP32", (-1, 3)),),
    max_batch_size=8,
)


def two(a: np.ndarray, b: np.ndarray) -> WorkItem | Rejection:
    fields = encode_request("r1", "infer:reply:a", "two", {"a": a, "b": b})
    return Intake(TWO, reply_prefix="infer:reply:").admit("1-0", fields)


def test_fixed_dimension_must_match_and_the_error_names_it() -> None:
    r = rejected(two(np.ones((2, 4), np.float32), np.ones(2, np.int64)))
    assert r.status is Status.INVALID_ARGUMENT
    assert r.error == "input 'a' dimension 1 must be 3 (model shape [-1, 3]), got shape [2, 4]"


def test_inputs_must_agree_on_the_batch_dimension() -> None:
    r = rejected(two(np.ones((2, 3), np.float32), np.ones(3, np.int64)))
    assert r.status is Status.INVALID_ARGUMENT
    assert r.error == "inputs disagree on the batch dimension: [2, 3]"
    item = two(np.ones((2, 3), np.float32), np.ones(2, np.int64))
    assert isinstance(item, WorkItem) and item.rows == 2 and item.signature == ((3,), ())
