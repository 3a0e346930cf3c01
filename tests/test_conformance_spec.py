"""Spec rules of issue 12 that the worker decides at intake (no Redis): an unreadable
``id`` is answered under the entry id; ``v`` is compared byte for byte; nil handling; the map bound."""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
import pytest

from redis_infer_protocol.codec import Status, Timing, encode_request
from worker.engines.base import ModelInfo, TensorSpec
from worker.intake import Intake, Rejection, WorkItem

INFO = ModelInfo("m", (TensorSpec("x", "FP32", (-1, -1)),), (TensorSpec("y", "FP32", (-1, -1)),), max_batch_size=8)
TENSOR = {"name": "x", "datatype": "FP32", "shape": [1, 1], "data": b"\0\0\0\0"}


def admit(fields: dict[bytes, bytes]) -> WorkItem | Rejection:
    return Intake(INFO, reply_prefix="infer:reply:").admit("1700000000000-3", fields, read_ns=1)


def fields_with(body: dict[str, Any], **over: bytes) -> dict[bytes, bytes]:
    fields = {b"v": b"1", b"id": b"r1", b"reply_to": b"infer:reply:a", b"body": msgpack.packb(body)}
    fields.update({k.encode(): v for k, v in over.items()})
    return fields


def rejected(result: WorkItem | Rejection) -> Rejection:
    assert isinstance(result, Rejection), result
    return result


@pytest.mark.parametrize(
    ("raw_id", "status", "problem"),
    [
        (b"", Status.MALFORMED, "field 'id' is empty"),
        (b"\xff\xfe", Status.MALFORMED, "field 'id' is not UTF-8"),
        (b"i" * 129, Status.TOO_LARGE, "field 'id' is longer than 128 bytes"),
        (None, Status.MALFORMED, "entry has no 'id' field"),
    ],
)
def test_unreadable_id_is_answered_under_the_entry_id(raw_id: bytes | None, status: Status, problem: str) -> None:
    # Protocol §9: a readable, allowed reply_to is answered, under the entry id when the id is unreadable; the
    # entry is dead-lettered as well (a broken producer leaves a record).
    fields = fields_with({"model": "m", "inputs": [TENSOR]})
    if raw_id is None:
        del fields[b"id"]
    else:
        fields[b"id"] = raw_id
    r = rejected(admit(fields))
    assert (r.request_id, r.reply_to, r.status, r.dead_letter) == ("1700000000000-3", "infer:reply:a", status, True)
    assert r.error == f"{problem} (answered under the entry id 1700000000000-3)"


def test_unreadable_id_names_the_id_problem_beside_another() -> None:
    # The version is checked first: the status is that one, the error names the id problem too.
    r = rejected(admit(fields_with({"model": "m", "inputs": [TENSOR]}, v=b"2", id=b"")))
    assert (r.status, r.request_id, r.dead_letter) == (Status.UNSUPPORTED_VERSION, "1700000000000-3", True)
    assert "field 'id' is empty" in r.error and "version" in r.error


def test_a_readable_id_is_answered_under_it_and_not_dead_lettered() -> None:
    r = rejected(admit(fields_with({"model": 1, "inputs": [TENSOR]})))
    assert (r.request_id, r.status, r.dead_letter) == ("r1", Status.MALFORMED, False)


def test_the_rule_holds_on_the_other_rejection_paths() -> None:
    # Poison and a bug in intake (INTERNAL, dead-lettered anyway) follow the same rule; a deleted entry has nobody.
    intake = Intake(INFO, reply_prefix="infer:reply:")
    fields = fields_with({"model": "m", "inputs": [TENSOR]}, id=b"i" * 129)
    r = intake.reject("5-1", fields, Status.INTERNAL, "delivered 6 times", Timing(), dead_letter=True)
    assert (r.request_id, r.reply_to, r.status, r.dead_letter) == ("5-1", "infer:reply:a", Status.INTERNAL, True)
    assert r.error == "delivered 6 times; field 'id' is longer than 128 bytes (answered under the entry id 5-1)"
    r = intake.reject("5-2", {}, Status.MALFORMED, "entry data was deleted", Timing())
    assert (r.request_id, r.reply_to, r.error) == (None, None, "entry data was deleted")


@pytest.mark.parametrize("reply_to", [b"r" * 257, b"infer:reply:", b"infer:reply:" + b"r" * 245, b"other:a"])
def test_unreadable_id_without_an_allowed_reply_to_is_not_answered(reply_to: bytes) -> None:
    r = rejected(admit(fields_with({"model": "m", "inputs": [TENSOR]}, id=b"", reply_to=reply_to)))
    assert (r.request_id, r.reply_to) == (None, None)


@pytest.mark.parametrize("v", [b"01", b" 1", b"1 ", b"abc", b"2"])
def test_version_is_compared_byte_for_byte(v: bytes) -> None:
    r = rejected(admit(fields_with({"model": "m", "inputs": [TENSOR]}, v=v)))
    assert (r.status, r.request_id) == (Status.UNSUPPORTED_VERSION, "r1")


@pytest.mark.parametrize("key", ["timeout_ms", "model_version", "outputs", "parameters"])
def test_nil_is_absent_for_these_keys(key: str) -> None:
    assert isinstance(admit(fields_with({"model": "m", "inputs": [TENSOR], key: None})), WorkItem)


@pytest.mark.parametrize("body", [{"priority": None}, {"parameters": {"a": None}}, {"outputs": [None]}])
def test_nil_elsewhere_is_malformed(body: dict[str, Any]) -> None:
    r = rejected(admit(fields_with({"model": "m", "inputs": [TENSOR], **body})))
    assert r.status is Status.MALFORMED


@pytest.mark.parametrize(("entries", "status"), [(64, None), (65, Status.TOO_LARGE), (256, Status.TOO_LARGE),
                                                 (257, Status.MALFORMED)])  # fmt: skip
def test_parameters_map_bound(entries: int, status: Status | None) -> None:
    params = {f"p{i}": i for i in range(entries)}
    result = admit(fields_with({"model": "m", "inputs": [TENSOR], "parameters": params}))
    assert (result.status if isinstance(result, Rejection) else None) is status


def test_map_under_an_unknown_key_up_to_the_bound_is_ignored() -> None:
    body = {"model": "m", "inputs": [TENSOR], "extra": {f"k{i}": i for i in range(256)}}
    assert isinstance(admit(fields_with(body)), WorkItem)
    body["extra"] = {f"k{i}": i for i in range(257)}
    assert rejected(admit(fields_with(body))).status is Status.MALFORMED


def test_duplicate_input_names_are_invalid_argument() -> None:
    fields = encode_request("r1", "infer:reply:a", "m", {"x": np.ones((1, 1), np.float32)})
    body = msgpack.unpackb(fields[b"body"] if b"body" in fields else fields["body"])
    body["inputs"] = body["inputs"] * 2
    r = rejected(admit(fields_with(body)))
    assert r.status is Status.INVALID_ARGUMENT
