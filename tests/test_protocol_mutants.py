"""Boundaries, statuses and messages of the producer-side request checks and the limits.

Written against the mutants that survived the codec and client tests (docs/testing.md, "Mutation
testing"): those tests only saw that a check raised, not at which size, with which status or why.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from redis_infer_protocol.codec import CodecError, Status
from redis_infer_protocol.limits import (
    MAX_REPLY_TO_BYTES,
    MAX_REQUEST_ID_BYTES,
    PRIORITY_MAX,
    PRIORITY_MIN,
    Limits,
    in_int32,
)
from redis_infer_protocol.validation import (
    check_body_size,
    check_inputs,
    check_outputs,
    check_parameters,
    check_priority,
    check_reply_prefix,
    check_request_id,
)

SMALL = Limits(max_tensors=2, max_name_bytes=4, max_parameters=2, max_string_bytes=3, max_body_bytes=5)


def _error(call: Any, *args: Any) -> CodecError:
    with pytest.raises(CodecError) as caught:
        call(*args)
    return caught.value


def test_limits_must_be_positive_and_one_is_allowed() -> None:
    assert Limits(max_tensors=1).max_tensors == 1
    with pytest.raises(ValueError, match=r"Limits\.max_rank must be positive"):
        Limits(max_rank=0)


def test_in_int32_holds_both_ends() -> None:
    assert in_int32(PRIORITY_MIN) and in_int32(PRIORITY_MAX)
    assert not in_int32(PRIORITY_MIN - 1) and not in_int32(PRIORITY_MAX + 1)


def test_request_id_bounds_and_status() -> None:
    assert check_request_id("a" * MAX_REQUEST_ID_BYTES) == "a" * MAX_REQUEST_ID_BYTES
    too_long = _error(check_request_id, "a" * (MAX_REQUEST_ID_BYTES + 1))
    assert too_long.status is Status.TOO_LARGE
    assert str(too_long) == f"request_id is longer than {MAX_REQUEST_ID_BYTES} bytes"
    empty = _error(check_request_id, "")
    assert empty.status is Status.MALFORMED
    assert str(empty) == "request_id must be a non-empty string, got ''"
    assert "got 7" in str(_error(check_request_id, 7))


def test_reply_prefix_fits_exactly() -> None:
    check_reply_prefix("p" * (MAX_REPLY_TO_BYTES - 32), 32)
    with pytest.raises(ValueError, match="reply_prefix is too long"):
        check_reply_prefix("p" * (MAX_REPLY_TO_BYTES - 31), 32)
    with pytest.raises(ValueError, match="reply_prefix is too long"):
        check_reply_prefix("p" * MAX_REPLY_TO_BYTES, 1)


def test_priority_rejects_bool_and_out_of_range() -> None:
    assert check_priority(PRIORITY_MIN) == PRIORITY_MIN
    assert check_priority(PRIORITY_MAX) == PRIORITY_MAX
    for bad in (True, 1.0, PRIORITY_MAX + 1, PRIORITY_MIN - 1):
        assert "priority must be a 32-bit integer" in str(_error(check_priority, bad))


def test_inputs_bounds_and_messages() -> None:
    check_inputs({"a": 1, "bbbb": 2}, SMALL)
    over = _error(check_inputs, {"a": 1, "b": 2, "c": 3}, SMALL)
    assert over.status is Status.TOO_LARGE
    assert str(over) == "3 inputs exceed the limit of 2"
    assert str(_error(check_inputs, [1], SMALL)) == "inputs must be a mapping of name to array, got list"
    long_name = _error(check_inputs, {"abcde": 1}, SMALL)
    assert long_name.status is Status.TOO_LARGE
    assert str(long_name) == "input name 'abcde'... is longer than 4 characters"
    assert str(_error(check_inputs, {3: 1}, SMALL)) == "input name must be a string, got int"
    shown = "x" * 32  # a long name is cut to its first 32 characters in the message
    assert str(_error(check_inputs, {"x" * 40: 1}, SMALL)) == f"input name {shown!r}... is longer than 4 characters"


def test_outputs_bounds_and_messages() -> None:
    check_outputs(None, SMALL)
    check_outputs(["a", "bbbb"], SMALL)
    message = "outputs must be a sequence of at most 2 names"
    assert str(_error(check_outputs, ["a", "b", "c"], SMALL)) == message
    assert str(_error(check_outputs, "ab", SMALL)) == message
    assert str(_error(check_outputs, b"ab", SMALL)) == message
    assert str(_error(check_outputs, ["abcde"], SMALL)) == "output name 'abcde'... is longer than 4 characters"
    assert str(_error(check_outputs, [None], SMALL)) == "output name must be a string, got NoneType"


def test_parameters_bounds_and_messages() -> None:
    check_parameters(None, SMALL)
    check_parameters({"s": "abc", "f": 1.5}, SMALL)
    check_parameters({"i": 3, "b": True}, SMALL)
    message = "parameters must be a mapping of at most 2 entries"
    assert str(_error(check_parameters, {"a": 1, "b": 2, "c": 3}, SMALL)) == message
    assert str(_error(check_parameters, [("a", 1)], SMALL)) == message
    assert str(_error(check_parameters, {"s": "abcd"}, SMALL)) == "parameter 's' is longer than 3 characters"
    for value in (math.inf, -math.inf, math.nan):
        assert str(_error(check_parameters, {"f": value}, SMALL)) == f"parameter 'f' must be finite, got {value}"
    wrong = _error(check_parameters, {"x": [1]}, SMALL)
    assert str(wrong) == "parameter 'x' must be a str, int, float or bool, got list"
    assert str(_error(check_parameters, {"abcde": 1}, SMALL)) == "parameter name 'abcde'... is longer than 4 characters"
    assert str(_error(check_parameters, {1: 1}, SMALL)) == "parameter name must be a string, got int"


def test_body_size_fits_exactly() -> None:
    check_body_size(b"12345", SMALL)
    over = _error(check_body_size, b"123456", SMALL)
    assert over.status is Status.TOO_LARGE
    assert str(over) == "request body of 6 bytes exceeds the limit of 5"
