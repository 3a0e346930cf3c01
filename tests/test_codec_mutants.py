"""Found by mutation testing of ``redis_infer_protocol/codec.py`` (docs/testing.md): every refusal of the codec
with its exact status and message (a peer reads them to know which field is wrong), and the boundaries the
round-trip tests did not pin (a timeout of exactly 1 ms, the checked datatypes, a bounded echo of a version)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import pytest

from redis_infer_protocol.codec import (
    DEFAULT_LIMITS,
    PROTOCOL_VERSION,
    CodecError,
    Limits,
    Status,
    datatype_of,
    decode_reply,
    decode_request,
    dtype_of,
    encode_reply,
    encode_request,
    encode_tensor,
)

M, IA, TL = Status.MALFORMED, Status.INVALID_ARGUMENT, Status.TOO_LARGE
X = {"name": "x", "datatype": "FP32", "shape": [1, 2], "data": np.zeros(2, np.float32).tobytes()}
V = str(PROTOCOL_VERSION).encode()


def _refused(call: Callable[[], Any], status: Status, message: str) -> None:
    """``call`` raises CodecError with this status and message (a message ending in "..." is a prefix: the rest
    is msgpack's own text, which its versions word differently)."""
    with pytest.raises(CodecError) as caught:
        call()
    text = str(caught.value)
    if message.endswith("..."):
        text = text[: len(message) - 3] + "..."
    assert (caught.value.status, text) == (status, message)


def _request(**body: Any) -> dict[str, bytes]:
    return {
        "v": V,
        "id": b"r",
        "reply_to": b"infer:reply:t",
        "body": msgpack.packb({"model": "m", "inputs": [X], **body}),
    }


def _bytes_tensor(count: int, data: bytes) -> dict[str, Any]:
    return {"name": "b", "datatype": "BYTES", "shape": [count], "data": data}


def _le(n: int) -> bytes:
    return n.to_bytes(4, "little")


REQUEST_REFUSALS = [
    ({"model": 5}, M, "model must be a string, got int"),
    ({"model_version": 5}, M, "model_version must be a string, got int"),
    ({"inputs": "x"}, M, "inputs must be an array of tensors"),
    ({"inputs": []}, IA, "request has no inputs"),
    ({"timeout_ms": "1"}, M, "timeout_ms must be an integer, got str"),
    ({"timeout_ms": 0}, M, "timeout_ms must be positive, got 0"),
    ({"timeout_ms": 2**31}, M, "timeout_ms 2147483648 is out of range"),
    ({"priority": True}, M, "priority must be an integer, got bool"),
    ({"outputs": "y"}, M, f"outputs must be an array of at most {DEFAULT_LIMITS.max_tensors} names"),
    ({"outputs": [7]}, M, "output name must be a string, got int"),
    ({"parameters": [1]}, M, "parameters must be a map"),
    ({"parameters": {f"k{i}": i for i in range(DEFAULT_LIMITS.max_parameters + 1)}}, TL,
     f"{DEFAULT_LIMITS.max_parameters + 1} parameters exceed max {DEFAULT_LIMITS.max_parameters}"),
    ({"parameters": {"k": "s" * (DEFAULT_LIMITS.max_string_bytes + 1)}}, TL,
     f"parameter 'k' is longer than {DEFAULT_LIMITS.max_string_bytes} bytes"),
    ({"parameters": {"k": float("nan")}}, M, "parameter 'k' must be finite"),
    ({"parameters": {"k": None}}, M, "parameter 'k' must be a string, number or boolean"),
    ({"inputs": [{**X, "shape": 2}]}, M, "shape of tensor 'x' must be an array"),
    ({"inputs": [{**X, "shape": [1] * 9}]}, TL, "tensor 'x' has rank 9 > max rank 8"),
    ({"inputs": [{**X, "shape": [-1, 2]}]}, M, "shape of tensor 'x' must hold non-negative integers, got [-1, 2]"),
    ({"inputs": [_bytes_tensor(3, b"\0" * 8)]}, IA, "BYTES tensor 'b' has 3 elements but only 8 bytes"),
    ({"inputs": [_bytes_tensor(2, _le(1) + b"a" + b"zzz")]}, IA, "BYTES tensor 'b' is truncated at element 1"),
    ({"inputs": [_bytes_tensor(1, _le(10) + b"abc")]}, IA, "BYTES tensor 'b' element 0 overruns the data"),
    ({"inputs": [_bytes_tensor(1, _le(1) + b"a" + b"zz")]}, IA, "BYTES tensor 'b' has 2 trailing bytes"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "status", "message"), REQUEST_REFUSALS, ids=[m for _, _, m in REQUEST_REFUSALS])
def test_request_refusals_name_the_field(body: dict[str, Any], status: Status, message: str) -> None:
    _refused(lambda: decode_request(_request(**body)), status, message)


def test_request_envelope_refusals() -> None:
    fields = _request()
    _refused(lambda: decode_request({k: v for k, v in fields.items() if k != "v"}), M,
             "entry has no 'v' (protocol version) field")  # fmt: skip
    _refused(lambda: decode_request({k: v for k, v in fields.items() if k != "body"}), M, "entry has no 'body' field")
    # a version is echoed cut to 16 bytes: a hostile field never fills the error reply
    _refused(lambda: decode_request({**fields, "v": b"9" * 40}), Status.UNSUPPORTED_VERSION,
             f"protocol version {b'9' * 16!r} is not supported (this worker speaks {PROTOCOL_VERSION})")  # fmt: skip


def test_request_boundaries_and_checked_datatypes() -> None:
    assert decode_request(_request(timeout_ms=1)).timeout_ms == 1  # the smallest positive timeout
    assert decode_request(_request(priority=-3)).priority == -3
    _refused(lambda: decode_request(_request(), datatypes={"x": "FP64"}), IA, "input 'x' must be FP64, got FP32")
    assert decode_request(_request(), datatypes={"x": "FP32"}).inputs["x"].dtype == np.float32


def test_encoder_refusals() -> None:
    _refused(lambda: datatype_of(np.dtype(np.complex64)), IA, "numpy dtype complex64 has no wire datatype")
    _refused(lambda: dtype_of("FP99"), IA, "unknown datatype 'FP99'")
    _refused(lambda: encode_tensor("b", np.array([b"a", 2], dtype=object)), IA, "BYTES elements must be bytes or str, "
             "got int")  # fmt: skip
    _refused(lambda: encode_request("r", "t", "m", {}), IA, "a request needs at least one input")
    _refused(lambda: encode_request("r", "t", "m", {"x": np.zeros(1)}, timeout_ms=0), IA, "timeout_ms must be positive")
    fields = encode_request("r", "t", "m", {"x": np.zeros(1)}, timeout_ms=1)
    assert decode_request(fields).timeout_ms == 1
    tensor = msgpack.unpackb(fields["body"])["inputs"][0]
    assert isinstance(tensor["name"], str) and isinstance(tensor["data"], bytes)  # str as str, data as bin


def _reply(**body: Any) -> dict[str, bytes]:
    return {"v": V, "id": b"r", "body": msgpack.packb({"status": "OK", **body})}


REPLY_REFUSALS = [
    ({"status": "NOPE"}, "reply has unknown status 'NOPE'"),
    ({"timing": [1]}, "reply timing must be a map"),
    ({"timing": {"read_ns": -1}}, "timing.read_ns must be a non-negative 64-bit integer"),
    ({"outputs": "y"}, "outputs must be an array of tensors"),
    ({"error": 5}, "error must be a string, got int"),
    ({"model": 5}, "model must be a string, got int"),
    ({"worker": 5}, "worker must be a string, got int"),
    ({"batch_size": "2"}, "batch_size must be an integer, got str"),
]


@pytest.mark.parametrize(("body", "message"), REPLY_REFUSALS, ids=[m for _, m in REPLY_REFUSALS])
def test_reply_refusals_name_the_field(body: dict[str, Any], message: str) -> None:
    _refused(lambda: decode_reply(_reply(**body)), M, message)


def test_reply_envelope_refusals() -> None:
    fields = encode_reply("r", Status.OK)
    _refused(lambda: decode_reply({k: v for k, v in fields.items() if k != "v"}), M,
             "reply has no 'v' (protocol version) field")  # fmt: skip
    _refused(lambda: decode_reply({k: v for k, v in fields.items() if k != "body"}), M, "reply has no 'body' field")
    _refused(lambda: decode_reply({**fields, "v": b"8" * 40}), Status.UNSUPPORTED_VERSION,
             f"reply has unsupported protocol version {b'8' * 16!r}")  # fmt: skip


def _raw(body: Any) -> dict[str, bytes]:
    """A request entry whose body is packed as given (maps, ext types, anything msgpack can carry)."""
    return {"v": V, "id": b"r", "reply_to": b"infer:reply:t", "body": msgpack.packb(body)}


MORE_REQUEST_REFUSALS = [
    ({"model": "m", "inputs": [5]}, M, "tensor must be a map, got int"),
    ({"model": "m", "inputs": [{**X, "name": None}]}, M, "tensor name must be a string, got NoneType"),
    ({"model": "m", "inputs": [{**X, "datatype": 5}]}, M, "datatype of 'x' must be a string, got int"),
    ({"model": "m", "inputs": [{**X, "data": "ab"}]}, M, "data of tensor 'x' must be bin, got str"),
    ({"model": "m", "inputs": [{**X, "data": b"\0" * 4}]}, IA, "tensor 'x': shape (1, 2) of FP32 needs 8 bytes, got 4"),
    ({"model": "m", "inputs": [X] * 65}, TL, "65 inputs exceed max 64"),
    ({"model": "m", "inputs": [X, X]}, IA, "tensor 'x' appears twice in inputs"),
    ({"model": "m" * 257, "inputs": [X]}, TL, "model is longer than 256 bytes"),
    ({"model": "m", "inputs": [X], "parameters": {1: 2}}, M,
     "body is not valid msgpack (ValueError: int is not allowed for map key..."),
    ({"model": "m", "inputs": [X], "parameters": {"k": msgpack.ExtType(1, b"x")}}, M,
     "body is not valid msgpack (ValueError: 2 exceeds max_ext_len(0)..."),
    ({"model": "m", "inputs": [X], "pad": list(range(1025))}, M,
     "body is not valid msgpack (ValueError: 1025 exceeds max_array_len(1024)..."),
    ([1], M, "body must be a msgpack map, got list"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "status", "message"), MORE_REQUEST_REFUSALS,
                         ids=[m[:60] for _, _, m in MORE_REQUEST_REFUSALS])  # fmt: skip
def test_more_request_refusals(body: Any, status: Status, message: str) -> None:
    _refused(lambda: decode_request(_raw(body)), status, message)


def test_text_field_refusals() -> None:
    fields = _request()
    _refused(lambda: decode_request({k: v for k, v in fields.items() if k != "id"}), M, "entry has no 'id' field")
    _refused(lambda: decode_request({**fields, "id": b""}), M, "field 'id' is empty")
    _refused(lambda: decode_request({**fields, "id": b"\xff"}), M, "field 'id' is not UTF-8")
    _refused(
        lambda: decode_request({**fields, "reply_to": b"r" * 257}), TL, "field 'reply_to' is longer than 256 bytes"
    )
    _refused(lambda: decode_request({**fields, "body": b"\xc1"}), M,
             "body is not valid msgpack (FormatError:...")  # fmt: skip
    small = Limits(max_body_bytes=8)
    _refused(lambda: decode_request(fields, small), TL, f"body of {len(fields['body'])} bytes exceeds max 8")


def test_container_budget_boundary() -> None:
    """At most 4 x max_tensors + max_parameters + 64 arrays and maps are built, and exactly that many are."""
    budget = 4 * DEFAULT_LIMITS.max_tensors + DEFAULT_LIMITS.max_parameters + 64
    fixed = 5  # the body map, the inputs array, the tensor map, its shape array, the pad array
    assert decode_request(_raw({"model": "m", "inputs": [X], "pad": [[]] * (budget - fixed)})).model == "m"
    _refused(lambda: decode_request(_raw({"model": "m", "inputs": [X], "pad": [[]] * (budget - fixed + 1)})), TL,
             "body holds more arrays and maps than any valid message")  # fmt: skip


def test_map_and_array_length_bounds_follow_the_limits() -> None:
    room = 4 * DEFAULT_LIMITS.max_parameters  # parameters up to 4x the limit still get a clear TOO_LARGE
    params = {f"k{i}": i for i in range(room)}
    _refused(lambda: decode_request(_request(parameters=params)), TL, f"{room} parameters exceed max 64")
    _refused(lambda: decode_request(_request(parameters={**params, "one": 1})), M,
             f"body is not valid msgpack (ValueError: {room + 1} exceeds max_map_len({room})...")  # fmt: skip
    wide = Limits(max_tensors=1100, max_parameters=1100)  # limits above msgpack's floor of 1024 raise the bound
    assert decode_request(_request(pad=list(range(1050))), wide).model == "m"
    inputs = [{**X, "name": f"x{i}"} for i in range(1050)]
    assert len(decode_request(_raw({"model": "m", "inputs": inputs}), wide).inputs) == 1050
    assert len(decode_request(_request(parameters={f"k{i}": i for i in range(1050)}), wide).parameters) == 1050


def test_element_bounds() -> None:
    four = Limits(max_elements=4)
    wide = {**X, "shape": [1, 4], "data": np.zeros(4, np.float32).tobytes()}
    assert decode_request(_raw({"model": "m", "inputs": [wide]}), four).inputs["x"].shape == (1, 4)
    _refused(lambda: decode_request(_raw({"model": "m", "inputs": [{**wide, "shape": [5]}]}), four), TL,
             "tensor 'x' shape [5] exceeds max elements 4")  # fmt: skip
    two = [{**X, "name": "a"}, {**X, "name": "b"}, {**X, "name": "c"}]  # 2 elements each
    _refused(lambda: decode_request(_raw({"model": "m", "inputs": two}), four), TL,
             "inputs hold more than 4 elements in all")  # fmt: skip


def test_bytes_element_count_boundary() -> None:
    limits = Limits(max_bytes_elements=3)
    at_limit = _bytes_tensor(3, _le(0) * 3)  # three empty elements: exactly 4 bytes each
    assert list(decode_request(_raw({"model": "m", "inputs": [at_limit]}), limits).inputs["b"]) == [b""] * 3
    over = _bytes_tensor(4, _le(0) * 4)
    _refused(lambda: decode_request(_raw({"model": "m", "inputs": [over]}), limits), TL,
             "BYTES tensor 'b' has 4 elements, more than 3")  # fmt: skip


@pytest.mark.parametrize("field", ["max_tensors", "max_rank", "max_parameters"])
def test_each_limit_can_raise_the_array_bound(field: str) -> None:
    limits = Limits(**{field: 1100})
    assert decode_request(_request(pad=list(range(1050))), limits).model == "m"
    _refused(lambda: decode_request(_request(pad=list(range(1050)))), M,
             "body is not valid msgpack (ValueError: 1050 exceeds max_array_len(1024)...")  # fmt: skip


def test_small_parameter_limits_keep_room_for_a_clear_refusal() -> None:
    limits = Limits(max_parameters=10)  # the map bound is 4 x max(10, 32) = 128
    params = {f"k{i}": i for i in range(128)}
    _refused(lambda: decode_request(_request(parameters=params), limits), TL, "128 parameters exceed max 10")
    _refused(lambda: decode_request(_request(parameters={**params, "one": 1}), limits), M,
             "body is not valid msgpack (ValueError: 129 exceeds max_map_len(128)...")  # fmt: skip
    _refused(lambda: decode_request(_request(parameters={"k" * 257: 1})), TL, "parameter name is longer than 256 bytes")
