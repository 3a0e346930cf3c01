"""Fuzzing the decoders: whatever a peer sends, the only exception is ``CodecError`` and nothing big is allocated.

Four sources of hostile input: random bytes as the body, random msgpack structures (some shaped like a real
body so the fuzzer gets past the first checks), mutations of valid bodies, and random stream-field maps.
Every decode runs under ``tracemalloc``: its peak must stay within a small multiple of the body size, which
catches any allocation driven by a declared size rather than by bytes actually received.
"""

from __future__ import annotations

import math
import tracemalloc
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from redis_infer_protocol.codec import (
    BYTES,
    DATATYPES,
    DEFAULT_LIMITS,
    CodecError,
    Limits,
    Reply,
    Request,
    Status,
    Timing,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
    peek_envelope,
)

EXAMPLES = 300
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # keep the tree clean; a failure prints its example and @reproduce_failure
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TINY_LIMITS = Limits(
    max_body_bytes=512,
    max_tensors=2,
    max_rank=3,
    max_elements=64,
    max_name_bytes=8,
    max_parameters=2,
    max_string_bytes=8,
)
limits_st = st.sampled_from([DEFAULT_LIMITS, TINY_LIMITS])
Decoder = Callable[[Any, Limits], Request | Reply]
DECODERS: dict[str, Decoder] = {"request": decode_request, "reply": decode_reply}


def check_decode(decoder: Decoder, fields: Any, limits: Limits) -> Request | Reply | None:
    """Decode; allow only CodecError; bound the peak allocation; check a success honours the limits."""
    body = fields.get(b"body", fields.get("body", b"")) if isinstance(fields, dict) else b""
    body_size = len(body) if isinstance(body, bytes | str) else 0
    result, exc_status, peak = _traced_decode(decoder, fields, limits)
    # Python objects for a msgpack structure cost up to ~100 bytes per wire byte (an empty map is 1 byte).
    bound = 1024 * 1024 + 160 * body_size
    if peak > bound:
        # tracemalloc counts every thread's allocations (and a first-time lazy import): on a busy machine a
        # one-off can land inside the window. A decoder that really over-allocates does so every time.
        result, exc_status, peak = _traced_decode(decoder, fields, limits)
    event("decoded" if result is not None else f"rejected {exc_status}")
    assert peak <= bound, f"decoding {body_size} bytes peaked at {peak} bytes (twice)"
    if result is not None:
        check_within_limits(result, limits)
    return result


def _traced_decode(decoder: Decoder, fields: Any, limits: Limits) -> tuple[Request | Reply | None, str, int]:
    """One decode under tracemalloc: (result or None, the rejection's status, peak bytes)."""
    exc_status = ""
    tracemalloc.start()
    try:
        result: Request | Reply | None = decoder(fields, limits)
    except CodecError as exc:
        assert isinstance(exc.status, Status)
        assert exc.status is not Status.OK
        exc_status = exc.status.value
        result = None
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()  # tracing only the decode: hypothesis itself runs many times slower under tracemalloc
    return result, exc_status, peak


def check_within_limits(result: Request | Reply, limits: Limits) -> None:
    tensors = result.inputs if isinstance(result, Request) else result.outputs
    assert len(tensors) <= limits.max_tensors
    assert sum(a.size for a in tensors.values()) <= limits.max_elements
    for name, array in tensors.items():
        assert len(name.encode()) <= limits.max_name_bytes
        assert array.ndim <= limits.max_rank
        assert math.prod(d for d in array.shape if d) <= limits.max_elements
        if array.dtype != object:
            assert not array.flags.writeable
    if isinstance(result, Request):
        assert len(result.parameters) <= limits.max_parameters
        assert result.timeout_ms is None or result.timeout_ms > 0
        assert all(not isinstance(v, float) or math.isfinite(v) for v in result.parameters.values())


def packb(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def request_entry(body: bytes) -> dict[bytes, bytes]:
    return {b"v": b"1", b"id": b"fuzz-1", b"reply_to": b"replies:fuzz", b"body": body}


def reply_entry(body: bytes) -> dict[bytes, bytes]:
    return {b"v": b"1", b"id": b"fuzz-1", b"body": body}


ENTRY: dict[str, Callable[[bytes], dict[bytes, bytes]]] = {"request": request_entry, "reply": reply_entry}


# ------------------------------------------------------------------------------------------ strategies

msgpack_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
msgpack_scalars = st.none() | st.booleans() | msgpack_ints | st.floats() | st.text(max_size=12) | st.binary(max_size=24)
msgpack_values = st.recursive(
    msgpack_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)


def mostly(valid: st.SearchStrategy[Any], junk: st.SearchStrategy[Any] = msgpack_values) -> st.SearchStrategy[Any]:
    """Valid 7 times in 8, so that the fuzzer gets past the type checks to the size and shape checks."""
    return st.integers(0, 7).flatmap(lambda roll: junk if roll == 0 else valid)


REQUEST_KEYS = ["model", "inputs", "model_version", "outputs", "timeout_ms", "priority", "parameters"]
REPLY_KEYS = ["status", "outputs", "error", "model", "timing", "worker", "batch_size"]
names = mostly(st.sampled_from(["x", "y", "z", "é" * 5]) | st.text(max_size=9))
param_names = mostly(st.sampled_from(["t", "k", "é" * 5]) | st.text(max_size=9), st.binary(max_size=4) | msgpack_ints)
dims = mostly(st.integers(0, 4), st.integers(0, 2**27) | msgpack_ints | st.booleans() | st.floats(allow_nan=False))
datatypes = mostly(
    st.sampled_from([*DATATYPES, BYTES]), st.sampled_from(["fp32", "FP8", "", "BYTES "]) | msgpack_values
)


@st.composite
def tensor_like(draw: st.DrawFn) -> Any:
    """A tensor map that is often right, so that the shape/data checks get exercised, not just the type checks."""
    datatype = draw(datatypes)
    shape = draw(mostly(st.lists(dims, max_size=4)))
    tensor = {"name": draw(names), "datatype": datatype, "shape": shape}
    if isinstance(shape, list) and all(type(d) is int and 0 <= d <= 8 for d in shape) and draw(st.booleans()):
        count = math.prod(shape)
        if datatype == BYTES:  # count well-framed elements
            tensor["data"] = b"".join(
                len(x).to_bytes(4, "little") + x for x in draw(st.lists(st.binary(), min_size=count, max_size=count))
            )
        else:
            itemsize = DATATYPES[datatype].itemsize if isinstance(datatype, str) and datatype in DATATYPES else 1
            tensor["data"] = bytes(count * itemsize)
    else:
        tensor["data"] = draw(mostly(st.binary(max_size=64)))
    return tensor


tensor_lists = mostly(st.lists(tensor_like(), min_size=1, max_size=3))
body_values = {
    "model": names,
    "model_version": names,
    "inputs": tensor_lists,
    "outputs": st.one_of(tensor_lists, mostly(st.lists(names, max_size=3))),
    "timeout_ms": mostly(st.integers(-5, 10**6), msgpack_ints | msgpack_values),
    "priority": mostly(st.integers(-5, 5), msgpack_ints | msgpack_values),
    "parameters": mostly(st.dictionaries(param_names, msgpack_scalars, max_size=3)),
    "status": mostly(st.sampled_from([s.value for s in Status])),
    "error": mostly(st.text(max_size=10)),
    "timing": mostly(st.dictionaries(st.sampled_from(list(Timing.__dataclass_fields__)), msgpack_ints)),
    "worker": names,
    "batch_size": mostly(st.integers(0, 64), msgpack_ints | msgpack_values),
}


@st.composite
def body_like(draw: st.DrawFn, keys: list[str]) -> dict[str, Any]:
    """The required keys (the first two) usually present, the others at random, plus now and then a junk key."""
    chosen = [key for key in keys[:2] if draw(mostly(st.just(True), st.just(False)))]
    chosen += draw(st.lists(st.sampled_from(keys[2:]), unique=True))
    body = {key: draw(body_values[key]) for key in chosen}
    body.update(draw(st.dictionaries(st.text(max_size=8), msgpack_values, max_size=1)))
    return body


def _valid_bodies() -> list[bytes]:
    rng = np.random.default_rng(0)
    requests = [
        encode_request("a", "b", "m", {"x": rng.standard_normal((2, 3)).astype(np.float32)}),
        encode_request(
            "a",
            "b",
            "m",
            {"ids": np.arange(6, dtype=np.int64).reshape(2, 3), "mask": np.ones((2, 3), bool)},
            model_version="2",
            timeout_ms=250,
            priority=3,
            outputs=["y"],
            parameters={"t": 0.5, "k": 3, "s": "txt", "b": True},
        ),
        encode_request("a", "b", "m", {"s": np.array([b"ab", b"", b"xyz"], dtype=object), "z": np.float64(2.5)}),
        encode_request("a", "b", "m", {"e": np.zeros((0, 3), np.uint16), "h": np.ones(4, np.float16)}),
    ]
    replies = [
        encode_reply(
            "a",
            Status.OK,
            outputs={"p": np.ones((1, 4), np.float32), "c": np.array([2], np.int32)},
            model="m",
            timing=Timing(1, 2, 3, 4, 5, 6),
            worker="w",
            batch_size=2,
        ),
        encode_reply("a", Status.EXPIRED, error="deadline passed", timing=Timing(10, 20, 0, 0, 0, 30)),
        encode_reply("a", Status.OK, outputs={"s": np.array([b"q"], dtype=object)}),
    ]
    return [f["body"] for f in requests + replies]


VALID_BODIES = _valid_bodies()


@st.composite
def mutated_body(draw: st.DrawFn) -> bytes:
    body = bytearray(draw(st.sampled_from(VALID_BODIES)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "append", "delete"]))
        at = draw(st.integers(0, max(len(body) - 1, 0)))
        if op == "flip" and body:
            body[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and body:
            body[at] = draw(st.integers(0, 255))
        elif op == "truncate":
            del body[at:]
        elif op == "insert":
            body[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "append":
            body.extend(draw(st.binary(min_size=1, max_size=16)))
        elif op == "delete":
            del body[at : at + draw(st.integers(1, 8))]
    return bytes(body)


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(node, dict):
        for key, child in node.items():
            out += _paths(child, (*path, key))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            out += _paths(child, (*path, i))
    return out


@st.composite
def tree_mutated_body(draw: st.DrawFn) -> bytes:
    """A valid body with one node replaced by a random value or deleted, re-encoded: structure stays valid msgpack."""
    body = msgpack.unpackb(draw(st.sampled_from(VALID_BODIES)))
    path = draw(st.sampled_from(_paths(body)[1:]))
    parent = body
    for step in path[:-1]:
        parent = parent[step]
    if draw(st.integers(0, 4)) == 0:
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(
            st.sampled_from([0, -1, 2**31, 2**63, 2**64 - 1, "", b"", None, [], {}]) | msgpack_values
        )
    return packb(body)


field_keys = st.sampled_from([b"v", "v", b"id", "id", b"reply_to", "reply_to", b"body", "body"])
field_values = (
    st.sampled_from([b"1", "1", 1, b"2", b""])
    | st.binary(max_size=40)
    | st.text(max_size=40)
    | msgpack_ints
    | st.sampled_from(VALID_BODIES)
    | mutated_body()
    | tree_mutated_body()
)
field_maps = st.dictionaries(field_keys | st.binary(max_size=6) | st.text(max_size=6), field_values, max_size=8)


# ------------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("kind", DECODERS)
@FUZZ
@given(body=st.binary(max_size=600), limits=limits_st)
def test_random_bytes_body(kind: str, body: bytes, limits: Limits) -> None:
    check_decode(DECODERS[kind], ENTRY[kind](body), limits)


@pytest.mark.parametrize("kind", DECODERS)
@FUZZ
@given(obj=msgpack_values, limits=limits_st)
def test_random_msgpack_body(kind: str, obj: Any, limits: Limits) -> None:
    check_decode(DECODERS[kind], ENTRY[kind](packb(obj)), limits)


@pytest.mark.parametrize("kind", DECODERS)
@FUZZ
@given(data=st.data(), limits=limits_st)
def test_body_shaped_msgpack(kind: str, data: st.DataObject, limits: Limits) -> None:
    body = data.draw(body_like(REQUEST_KEYS if kind == "request" else REPLY_KEYS))
    check_decode(DECODERS[kind], ENTRY[kind](packb(body)), limits)


hostile_dims = st.sampled_from([0, 1, 3, 2**16, 2**26, 2**32, 2**40, 2**63, 2**64 - 1]) | st.integers(0, 2**64 - 1)


@pytest.mark.parametrize("kind", DECODERS)
@FUZZ
@given(
    datatype=st.sampled_from([*DATATYPES, BYTES]),
    shape=st.lists(hostile_dims, max_size=9),
    data=st.binary(max_size=64),
    limits=limits_st,
)
def test_hostile_tensor_header(kind: str, datatype: str, shape: list[int], data: bytes, limits: Limits) -> None:
    """A valid body around one tensor whose declared shape is anything a uint64 can say, over a few bytes."""
    tensor = {"name": "x", "datatype": datatype, "shape": shape, "data": data}
    body = {"model": "m", "inputs": [tensor]} if kind == "request" else {"status": "OK", "outputs": [tensor]}
    check_decode(DECODERS[kind], ENTRY[kind](packb(body)), limits)


@pytest.mark.parametrize("kind", DECODERS)
@FUZZ
@given(body=mutated_body() | tree_mutated_body(), limits=limits_st)
def test_mutated_valid_body(kind: str, body: bytes, limits: Limits) -> None:
    check_decode(DECODERS[kind], ENTRY[kind](body), limits)


@pytest.mark.parametrize("kind", DECODERS)
@FUZZ
@given(fields=field_maps, limits=limits_st)
def test_random_field_maps(kind: str, fields: dict[Any, Any], limits: Limits) -> None:
    check_decode(DECODERS[kind], fields, limits)
    request_id, reply_to = peek_envelope(fields)  # best effort: never raises
    assert request_id is None or isinstance(request_id, str)
    assert reply_to is None or isinstance(reply_to, str)


fixed_dtypes = st.sampled_from(
    sorted({np.dtype(dt).newbyteorder(o) for dt in DATATYPES.values() for o in ("<", ">")}, key=str)
)


@settings(max_examples=150, deadline=None, database=None)
@given(array=hnp.arrays(fixed_dtypes, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)))
def test_round_trip_any_fixed_size_array(array: np.ndarray[Any, Any]) -> None:
    for view in (array, array.T, array[..., ::2] if array.ndim else array):
        decoded = decode_request(encode_request("i", "r", "m", {"x": view})).inputs["x"]
        assert decoded.shape == view.shape
        assert decoded.dtype == DATATYPES[next(k for k, v in DATATYPES.items() if v == view.dtype.newbyteorder("<"))]
        np.testing.assert_array_equal(decoded, view)


@settings(max_examples=150, deadline=None, database=None)
@given(items=st.lists(st.binary(max_size=20) | st.text(max_size=10), min_size=0, max_size=12))
def test_round_trip_bytes_elements(items: list[bytes | str]) -> None:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    decoded = decode_reply(encode_reply("i", Status.OK, outputs={"s": array})).outputs
    expected = [x.encode() if isinstance(x, str) else x for x in items]
    assert (decoded["s"].tolist() if items else []) == expected
