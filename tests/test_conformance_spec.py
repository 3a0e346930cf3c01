"""Spec rules of issue 12 that the worker decides at intake (no Redis): an unreadable
``id`` is not answered; ``v`` is compared byte for byte; nil handling; the map bound."""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
import pytest

from redis_infer_protocol.codec import Status, encode_request
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


@pytest.mark.parametrize("raw_id", [b"", b"\xff\xfe", b"i" * 129])
def test_unreadable_id_is_dead_lettered_not_answered(raw_id: bytes) -> None:
    # The rule today (protocol §9): no readable id, no reply, even with a valid reply_to.
    r = rejected(admit(fields_with({"model": "m", "inputs": [TENSOR]}, id=raw_id)))
    assert r.request_id is None and r.status in (Status.MALFORMED, Status.TOO_LARGE)


def test_unreadable_id_without_a_reply_to_is_not_answered() -> None:
    r = rejected(admit(fields_with({"model": "m", "inputs": [TENSOR]}, id=b"", reply_to=b"r" * 257)))
    assert r.reply_to is None


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
