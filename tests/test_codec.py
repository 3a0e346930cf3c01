"""Wire format v1: round-trips over every datatype and layout, zero-copy decoding, and every rejection path."""

from __future__ import annotations

import sys
import tracemalloc
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import pytest

from redis_infer_protocol.codec import (
    BYTES,
    DATATYPES,
    DEFAULT_LIMITS,
    TIMING_FIELDS,
    CodecError,
    Limits,
    Reply,
    Request,
    Status,
    Timing,
    datatype_of,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
    peek_envelope,
)

ALL_DATATYPES = [*DATATYPES, BYTES]
SHAPES = [(), (0,), (3, 0, 2), (1,), (7,), (2, 3, 4)]


# ------------------------------------------------------------------------------------------- helpers


def sample(datatype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray[Any, Any]:
    """Deterministic values for a datatype, including its extremes where there is room."""
    rng = np.random.default_rng(seed)
    count = int(np.prod(shape))
    if datatype == BYTES:
        items = [rng.bytes(int(rng.integers(0, 12))) for _ in range(count)]
        flat = np.empty(count, dtype=object)
        flat[:] = items
        return flat.reshape(shape)
    dtype = DATATYPES[datatype]
    if dtype.kind == "b":
        return (rng.random(count) > 0.5).reshape(shape)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        flat = rng.integers(info.min, info.max, size=count, dtype=dtype, endpoint=True)
        flat[: min(2, count)] = [info.min, info.max][: min(2, count)]
        return flat.reshape(shape)
    flat = rng.standard_normal(count).astype(dtype)
    specials = np.array([np.inf, -np.inf, np.nan, -0.0], dtype=dtype)[:count]
    flat[: len(specials)] = specials
    return flat.reshape(shape)


def request_fields(inputs: dict[str, Any], **kwargs: Any) -> dict[str, bytes]:
    return encode_request("req-1", "replies:client-1", "model-a", inputs, **kwargs)


def raw_fields(body: Any, /, **overrides: Any) -> dict[bytes, Any]:
    """Request entry fields around a hand-built body, as redis-py returns them (bytes keys)."""
    packed = body if isinstance(body, bytes) else msgpack.packb(body, use_bin_type=True)
    fields: dict[bytes, Any] = {b"v": b"1", b"id": b"req-1", b"reply_to": b"replies:client-1", b"body": packed}
    for key, value in overrides.items():
        if value is None:
            fields.pop(key.encode())
        else:
            fields[key.encode()] = value
    return fields


def tensor_map(name: str = "x", datatype: str = "FP32", shape: Any = (2,), data: Any = None) -> dict[str, Any]:
    if data is None:
        data = bytes(int(np.prod(shape)) * DATATYPES[datatype].itemsize)
    wire_shape = list(shape) if isinstance(shape, tuple) else shape
    return {"name": name, "datatype": datatype, "shape": wire_shape, "data": data}


def base_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "model-a", "inputs": [tensor_map()]}
    for key, value in overrides.items():
        if value is None:
            body.pop(key)
        else:
            body[key] = value
    return body


def reply_fields_raw(body: Any) -> dict[bytes, bytes]:
    return {b"v": b"1", b"id": b"req-1", b"body": msgpack.packb(body, use_bin_type=True)}


def assert_status(status: Status, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> CodecError:
    with pytest.raises(CodecError) as info:
        fn(*args, **kwargs)
    assert info.value.status is status, f"{info.value} -> {info.value.status}, wanted {status}"
    return info.value


def is_little_endian(dtype: np.dtype[Any]) -> bool:
    return dtype.byteorder in ("<", "|") or (dtype.byteorder == "=" and sys.byteorder == "little")


def assert_same_tensor(decoded: np.ndarray[Any, Any], original: np.ndarray[Any, Any], datatype: str) -> None:
    assert decoded.shape == original.shape
    assert datatype_of(decoded.dtype) == datatype
    if datatype == BYTES:
        assert decoded.dtype == object
        assert [bytes(x) for x in decoded.reshape(-1)] == [bytes(x) for x in original.reshape(-1)]
        return
    assert decoded.dtype == DATATYPES[datatype]
    assert is_little_endian(decoded.dtype)
    np.testing.assert_array_equal(decoded, original)
    assert decoded.tobytes() == np.ascontiguousarray(original, dtype=DATATYPES[datatype]).tobytes()  # -0.0, NaN bits


# --------------------------------------------------------------------------------------- round-trips


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("datatype", ALL_DATATYPES)
def test_request_round_trip(datatype: str, shape: tuple[int, ...]) -> None:
    array = sample(datatype, shape)
    request = decode_request(request_fields({"x": array, "second": sample(datatype, shape, seed=1)}))
    assert isinstance(request, Request)
    assert (request.id, request.reply_to, request.model) == ("req-1", "replies:client-1", "model-a")
    assert list(request.inputs) == ["x", "second"]
    assert_same_tensor(request.inputs["x"], array, datatype)
    assert_same_tensor(request.inputs["second"], sample(datatype, shape, seed=1), datatype)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("datatype", ALL_DATATYPES)
def test_reply_round_trip(datatype: str, shape: tuple[int, ...]) -> None:
    array = sample(datatype, shape)
    timing = Timing(*(1_700_000_000_000_000_000 + i for i in range(len(TIMING_FIELDS))))
    fields = encode_reply("req-1", Status.OK, outputs={"y": array}, model="m", timing=timing, worker="w1", batch_size=4)
    reply = decode_reply(fields)
    assert isinstance(reply, Reply)
    assert (reply.id, reply.status, reply.model, reply.worker, reply.batch_size) == ("req-1", Status.OK, "m", "w1", 4)
    assert reply.timing == timing
    assert reply.error is None
    assert_same_tensor(reply.outputs["y"], array, datatype)


def test_request_options_round_trip() -> None:
    params = {"threshold": 0.25, "top_k": 3, "normalize": True, "label": "chat ü", "neg": -(2**40)}
    fields = request_fields(
        {"x": np.zeros(2, np.float32)},
        model_version="7",
        timeout_ms=1500,
        priority=-3,
        outputs=["a", "b"],
        parameters=params,
    )
    request = decode_request(fields)
    assert request.model_version == "7"
    assert request.timeout_ms == 1500
    assert request.priority == -3
    assert request.outputs == ("a", "b")
    assert request.parameters == params
    assert type(request.parameters["normalize"]) is bool


def test_request_defaults() -> None:
    request = decode_request(request_fields({"x": np.zeros(1, np.int8)}))
    assert (request.model_version, request.timeout_ms, request.priority, request.outputs) == (None, None, 0, None)
    assert request.parameters == {}
    assert set(msgpack.unpackb(request_fields({"x": np.zeros(1)})["body"])) == {"model", "inputs"}  # minimal body


def test_error_reply_defaults() -> None:
    reply = decode_reply(encode_reply("r", Status.BUSY, error="queue full"))
    assert (reply.status, reply.error, reply.outputs) == (Status.BUSY, "queue full", {})
    assert (reply.model, reply.worker) == (None, None)
    assert reply.timing == Timing()
    assert reply.batch_size == 0


@pytest.mark.parametrize("datatype", ["FP32", "UINT8", "BYTES"])
def test_large_tensor_round_trip(datatype: str) -> None:
    shape = (4, 1024, 1024) if datatype != BYTES else (50_000,)  # 16 MiB of FP32, 4 MiB of UINT8
    array = sample(datatype, shape, seed=3)
    request = decode_request(request_fields({"big": array}))
    assert_same_tensor(request.inputs["big"], array, datatype)


LAYOUTS: dict[str, Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]]] = {
    "step": lambda a: a[::2],
    "reverse": lambda a: a[:, ::-1],
    "transpose": lambda a: a.T,
    "fortran": np.asfortranarray,
    "step_and_offset": lambda a: a[1:, 1::3],
    "swapaxes_3d": lambda a: a.reshape(4, 3, 5).swapaxes(0, 2),
    "broadcast": lambda a: np.broadcast_to(a[0], (6, 15)),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("datatype", ["FP32", "INT64", "FP16", "BOOL", "UINT16", "BYTES"])
def test_non_contiguous_inputs(datatype: str, layout: str) -> None:
    view = LAYOUTS[layout](sample(datatype, (4, 15), seed=5))
    assert not view.flags.c_contiguous or layout == "fortran"
    decoded = decode_request(request_fields({"x": view})).inputs["x"]
    assert decoded.flags.c_contiguous
    assert_same_tensor(decoded, view, datatype)


@pytest.mark.parametrize("dtype", [">f2", ">f4", ">f8", ">i2", ">i4", ">i8", ">u2", ">u4", ">u8", "=f4", "<i8"])
def test_any_byte_order_decodes_little_endian(dtype: str) -> None:
    native = sample(datatype_of(np.dtype(dtype)), (3, 5), seed=7)
    array = native.astype(dtype)
    datatype = datatype_of(array.dtype)
    body = msgpack.unpackb(request_fields({"x": array})["body"])
    assert body["inputs"][0]["data"] == native.astype(DATATYPES[datatype]).tobytes()  # wire is little-endian
    decoded = decode_request(request_fields({"x": array})).inputs["x"]
    assert is_little_endian(decoded.dtype)
    assert_same_tensor(decoded, array, datatype)


def test_str_and_bytes_arrays_encode_as_bytes() -> None:
    text = np.array([["héllo", ""], ["a", "ü" * 3]])
    decoded = decode_request(request_fields({"t": text, "b": np.array([b"\x00\xff", b"z"])})).inputs
    assert decoded["t"].tolist() == [["héllo".encode(), b""], [b"a", ("ü" * 3).encode()]]
    assert decoded["b"].tolist() == [b"\x00\xff", b"z"]


def test_bytes_element_framing() -> None:
    body = msgpack.unpackb(request_fields({"s": np.array([b"ab", b"", b"\x01"], dtype=object)})["body"])
    assert body["inputs"][0] == {
        "name": "s",
        "datatype": "BYTES",
        "shape": [3],
        "data": b"\x02\x00\x00\x00ab" + b"\x00\x00\x00\x00" + b"\x01\x00\x00\x00\x01",
    }


# ------------------------------------------------------------------------------------------- zero-copy


@pytest.mark.parametrize("shape", [(3, 4), (), (0, 5)], ids=str)
@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_decoded_arrays_are_read_only_views(datatype: str, shape: tuple[int, ...]) -> None:
    fields = request_fields({"x": sample(datatype, shape)})
    decoded = decode_request(fields).inputs["x"]
    assert not decoded.flags.owndata
    assert not decoded.flags.writeable
    base: Any = decoded
    while isinstance(base, np.ndarray):
        base = base.base
    # msgpack hands us each `bin` as one bytes object; the array is a view of it, not a copy of a copy.
    assert isinstance(base, bytes)
    assert len(base) == decoded.nbytes
    assert base in fields["body"]
    if decoded.size:
        with pytest.raises(ValueError):
            decoded.reshape(-1)[0] = decoded.reshape(-1)[0]


# ------------------------------------------------------------------------------------------------ limits


def test_limits_must_be_positive() -> None:
    for name in Limits.__dataclass_fields__:
        with pytest.raises(ValueError):
            Limits(**{name: 0})


def test_max_body_bytes() -> None:
    body = msgpack.packb(base_body(), use_bin_type=True)
    decode_request(raw_fields(body), Limits(max_body_bytes=len(body)))
    assert_status(Status.TOO_LARGE, decode_request, raw_fields(body), Limits(max_body_bytes=len(body) - 1))
    reply = encode_reply("r", Status.OK, outputs={"y": np.zeros(4)})
    assert_status(Status.TOO_LARGE, decode_reply, reply, Limits(max_body_bytes=len(reply["body"]) - 1))


def test_max_tensors() -> None:
    limits = Limits(max_tensors=2)
    two = {"a": np.zeros(1), "b": np.zeros(1)}
    decode_request(request_fields(two), limits)
    assert_status(Status.TOO_LARGE, decode_request, request_fields({**two, "c": np.zeros(1)}), limits)
    assert_status(Status.TOO_LARGE, decode_reply, encode_reply("r", Status.OK, outputs={**two, "c": [1]}), limits)
    decode_request(raw_fields(base_body(outputs=["a", "b"])), limits)
    assert_status(Status.MALFORMED, decode_request, raw_fields(base_body(outputs=["a", "b", "c"])), limits)


def test_datatype_length_bounded() -> None:
    body = base_body(inputs=[tensor_map(datatype="FP32" + " " * 13, data=bytes(8))])
    assert_status(Status.TOO_LARGE, decode_request, raw_fields(body))


def test_max_rank() -> None:
    limits = Limits(max_rank=3)
    decode_request(request_fields({"x": np.zeros((1, 1, 1))}), limits)
    assert_status(Status.TOO_LARGE, decode_request, request_fields({"x": np.zeros((1, 1, 1, 1))}), limits)
    assert_status(Status.TOO_LARGE, decode_request, raw_fields(base_body(inputs=[tensor_map(shape=[1] * 100)])))


def test_max_elements() -> None:
    limits = Limits(max_elements=100)
    decode_request(request_fields({"x": np.zeros((10, 10), np.uint8)}), limits)
    assert_status(Status.TOO_LARGE, decode_request, request_fields({"x": np.zeros(101, np.uint8)}), limits)
    assert_status(Status.TOO_LARGE, decode_request, request_fields({"x": np.array([b""] * 101)}), limits)
    # Each tensor fits, but together they do not.
    too_many = {"a": np.zeros(60, np.uint8), "b": np.zeros(60, np.uint8)}
    assert_status(Status.TOO_LARGE, decode_request, request_fields(too_many), limits)
    assert_status(Status.TOO_LARGE, decode_reply, encode_reply("r", Status.OK, outputs=too_many), limits)


HOSTILE_SHAPES = [
    [2**40, 2**40],
    [2**64 - 1],
    [2**63, 2],
    [0, 2**40, 2**40],  # empty, yet numpy cannot build it
    [2**40, 0],
    [0, 2**64 - 1],
    [65536, 65536, 65536, 65536, 65536, 65536, 65536, 65536],
]


@pytest.mark.parametrize("datatype", ["FP32", "BYTES"])
@pytest.mark.parametrize("shape", HOSTILE_SHAPES, ids=str)
def test_hostile_shape_rejected_without_allocating(shape: list[int], datatype: str) -> None:
    fields = raw_fields(base_body(inputs=[tensor_map(datatype=datatype, shape=shape, data=b"")]))
    tracemalloc.start()
    try:
        assert_status(Status.TOO_LARGE, decode_request, fields)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024


def test_bytes_tensor_element_count_checked_before_allocating() -> None:
    # 64 Mi elements (within max_elements) declared over an empty payload: each element needs >= 4 bytes.
    fields = raw_fields(base_body(inputs=[tensor_map(datatype="BYTES", shape=[DEFAULT_LIMITS.max_elements], data=b"")]))
    tracemalloc.start()
    try:
        assert_status(Status.INVALID_ARGUMENT, decode_request, fields)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024


NAME_SITES: dict[str, Callable[[str], dict[str, Any]]] = {
    "tensor_name": lambda s: base_body(inputs=[tensor_map(name=s)]),
    "model": lambda s: base_body(model=s),
    "model_version": lambda s: base_body(model_version=s),
    "output_name": lambda s: base_body(outputs=["ok", s]),
    "parameter_name": lambda s: base_body(parameters={s: 1}),
}


@pytest.mark.parametrize("site", NAME_SITES)
def test_max_name_bytes(site: str) -> None:
    limits = Limits(max_name_bytes=8)
    decode_request(raw_fields(NAME_SITES[site]("a" * 8)), limits)
    decode_request(raw_fields(NAME_SITES[site]("é" * 4)), limits)  # 8 UTF-8 bytes
    assert_status(Status.TOO_LARGE, decode_request, raw_fields(NAME_SITES[site]("a" * 9)), limits)
    assert_status(Status.TOO_LARGE, decode_request, raw_fields(NAME_SITES[site]("é" * 5)), limits)  # 5 chars, 10 bytes


def test_reply_names_limited() -> None:
    limits = Limits(max_name_bytes=8)
    for key in ("model", "worker"):
        assert_status(Status.TOO_LARGE, decode_reply, reply_fields_raw({"status": "OK", key: "w" * 9}), limits)
    outputs = [tensor_map(name="n" * 9)]
    assert_status(Status.TOO_LARGE, decode_reply, reply_fields_raw({"status": "OK", "outputs": outputs}), limits)


def test_max_parameters() -> None:
    limits = Limits(max_parameters=2)
    decode_request(raw_fields(base_body(parameters={"a": 1, "b": 2})), limits)
    assert_status(Status.TOO_LARGE, decode_request, raw_fields(base_body(parameters={"a": 1, "b": 2, "c": 3})), limits)


def test_max_string_bytes() -> None:
    limits = Limits(max_string_bytes=16)
    decode_request(raw_fields(base_body(parameters={"p": "x" * 16})), limits)
    assert_status(Status.TOO_LARGE, decode_request, raw_fields(base_body(parameters={"p": "x" * 17})), limits)
    assert_status(Status.TOO_LARGE, decode_request, raw_fields(base_body(parameters={"p": "€" * 6})), limits)
    assert_status(Status.TOO_LARGE, decode_reply, reply_fields_raw({"status": "INTERNAL", "error": "e" * 17}), limits)


@pytest.mark.parametrize("char", ["e", "é", "€", "😀"])
def test_encode_reply_cuts_long_errors_to_a_decodable_size(char: str) -> None:
    reply = decode_reply(encode_reply("r", Status.INTERNAL, error=char * DEFAULT_LIMITS.max_string_bytes))
    assert reply.error is not None
    assert 0 < len(reply.error.encode()) <= DEFAULT_LIMITS.max_string_bytes
    assert set(reply.error) == {char}


@pytest.mark.parametrize(("key", "limit"), [("id", 128), ("reply_to", 256)])
def test_envelope_field_lengths(key: str, limit: int) -> None:
    decode_request(raw_fields(base_body(), **{key: b"k" * limit}))
    assert_status(Status.TOO_LARGE, decode_request, raw_fields(base_body(), **{key: b"k" * (limit + 1)}))


# ------------------------------------------------------------------------------------ malformed entries


@pytest.mark.parametrize("missing", ["v", "id", "reply_to", "body"])
def test_request_missing_field(missing: str) -> None:
    assert_status(Status.MALFORMED, decode_request, raw_fields(base_body(), **{missing: None}))


@pytest.mark.parametrize("missing", ["v", "id", "body"])
def test_reply_missing_field(missing: str) -> None:
    fields = reply_fields_raw({"status": "OK"})
    del fields[missing.encode()]
    assert_status(Status.MALFORMED, decode_reply, fields)


@pytest.mark.parametrize("version", [b"2", b"0", b"", b"1.0", b" 1", b"v1", b"\xff" * 1000])
def test_unsupported_version(version: bytes) -> None:
    err = assert_status(Status.UNSUPPORTED_VERSION, decode_request, raw_fields(base_body(), v=version))
    assert len(str(err)) < 200  # a hostile version string is not echoed whole
    fields = reply_fields_raw({"status": "OK"})
    fields[b"v"] = version
    assert_status(Status.UNSUPPORTED_VERSION, decode_reply, fields)


def test_non_utf8_envelope() -> None:
    assert_status(Status.MALFORMED, decode_request, raw_fields(base_body(), id=b"\xff\xfe"))
    assert_status(Status.MALFORMED, decode_request, raw_fields(base_body(), reply_to=b"\xc3"))


VALID_BODY = msgpack.packb(base_body(timeout_ms=100, parameters={"a": "b"}), use_bin_type=True)

BAD_BODIES: dict[str, bytes] = {
    "empty": b"",
    "never_used_byte": b"\xc1",
    "text": b"not msgpack at all",
    "array": msgpack.packb([1, 2, 3]),
    "string": msgpack.packb("model"),
    "int": msgpack.packb(7),
    "nil": msgpack.packb(None),
    "truncated_by_one": VALID_BODY[:-1],
    "truncated_half": VALID_BODY[: len(VALID_BODY) // 2],
    "trailing_data": VALID_BODY + b"\x00",
    "ext_type": msgpack.packb(msgpack.ExtType(5, b"xyz")),
    "int_map_key": msgpack.packb({1: "a"}),
    "bad_utf8_str": b"\x81\xa1k\xa2\xff\xfe",
    "huge_array_header": b"\xdd\xff\xff\xff\xff",
    "huge_map_header": b"\xdf\xff\xff\xff\xff",
    "huge_bin_header": b"\xc6\xff\xff\xff\xff",
    "deep_nesting": b"\x91" * 100_000,
}


@pytest.mark.parametrize("name", BAD_BODIES)
def test_body_not_a_valid_map(name: str) -> None:
    assert_status(Status.MALFORMED, decode_request, raw_fields(BAD_BODIES[name]))
    assert_status(Status.MALFORMED, decode_reply, {b"v": b"1", b"id": b"r", b"body": BAD_BODIES[name]})


def _with_tensor(**kwargs: Any) -> dict[str, Any]:
    return base_body(inputs=[{**tensor_map(), **kwargs}])


WRONG_TYPES: dict[str, tuple[dict[Any, Any], Status]] = {
    "shape_as_string": (_with_tensor(shape="2"), Status.MALFORMED),
    "shape_missing": (_with_tensor(shape=None), Status.MALFORMED),
    "shape_as_map": (_with_tensor(shape={"0": 2}), Status.MALFORMED),
    "negative_dim": (_with_tensor(shape=[-2]), Status.MALFORMED),
    "bool_dim": (_with_tensor(shape=[True, True]), Status.MALFORMED),
    "float_dim": (_with_tensor(shape=[2.0]), Status.MALFORMED),
    "string_dim": (_with_tensor(shape=["2"]), Status.MALFORMED),
    "data_as_str": (_with_tensor(data="\x00" * 8), Status.MALFORMED),
    "data_as_list": (_with_tensor(data=[0, 0]), Status.MALFORMED),
    "data_missing": (_with_tensor(data=None), Status.MALFORMED),
    "name_missing": (_with_tensor(name=None), Status.MALFORMED),
    "name_as_bytes": (_with_tensor(name=b"x"), Status.MALFORMED),
    "datatype_as_int": (_with_tensor(datatype=11), Status.MALFORMED),
    "tensor_not_a_map": (base_body(inputs=[[1, 2]]), Status.MALFORMED),
    "inputs_not_a_list": (base_body(inputs={"x": tensor_map()}), Status.MALFORMED),
    "inputs_missing": (base_body(inputs=None), Status.MALFORMED),
    "inputs_empty": (base_body(inputs=[]), Status.INVALID_ARGUMENT),
    "model_missing": (base_body(model=None), Status.MALFORMED),
    "model_as_int": (base_body(model=3), Status.MALFORMED),
    "model_version_as_int": (base_body(model_version=3), Status.MALFORMED),
    "priority_as_float": (base_body(priority=1.5), Status.MALFORMED),
    "priority_as_bool": (base_body(priority=True), Status.MALFORMED),
    "priority_as_string": (base_body(priority="high"), Status.MALFORMED),
    "priority_out_of_range": (base_body(priority=2**31), Status.MALFORMED),
    "timeout_zero": (base_body(timeout_ms=0), Status.MALFORMED),
    "timeout_negative": (base_body(timeout_ms=-5), Status.MALFORMED),
    "timeout_as_float": (base_body(timeout_ms=100.0), Status.MALFORMED),
    "timeout_as_string": (base_body(timeout_ms="100"), Status.MALFORMED),
    "timeout_huge": (base_body(timeout_ms=2**64 - 1), Status.MALFORMED),
    "outputs_not_a_list": (base_body(outputs="y"), Status.MALFORMED),
    "outputs_of_ints": (base_body(outputs=[1]), Status.MALFORMED),
    "parameters_not_a_map": (base_body(parameters=[1]), Status.MALFORMED),
    "parameter_nan": (base_body(parameters={"p": float("nan")}), Status.MALFORMED),
    "parameter_inf": (base_body(parameters={"p": float("inf")}), Status.MALFORMED),
    "parameter_neg_inf": (base_body(parameters={"p": float("-inf")}), Status.MALFORMED),
    "parameter_none": (base_body(parameters={"p": None}), Status.MALFORMED),
    "parameter_list": (base_body(parameters={"p": [1]}), Status.MALFORMED),
    "parameter_bytes": (base_body(parameters={"p": b"x"}), Status.MALFORMED),
    "parameter_bytes_key": (base_body(parameters={b"p": 1}), Status.MALFORMED),
    "bytes_keys_in_body": ({b"model": "m", b"inputs": [tensor_map()]}, Status.MALFORMED),
}


@pytest.mark.parametrize("case", WRONG_TYPES)
def test_wrong_types(case: str) -> None:
    body, status = WRONG_TYPES[case]
    assert_status(status, decode_request, raw_fields(body))


def test_nan_parameter_rejected_even_as_float32() -> None:
    body = msgpack.packb(base_body(parameters={"p": float("nan")}), use_bin_type=True, use_single_float=True)
    assert_status(Status.MALFORMED, decode_request, raw_fields(body))


BAD_TENSOR_DATA: dict[str, dict[str, Any]] = {
    "too_few_bytes": tensor_map(shape=(3,), data=bytes(8)),
    "too_many_bytes": tensor_map(shape=(3,), data=bytes(16)),
    "scalar_without_data": tensor_map(shape=(), data=b""),
    "empty_with_data": tensor_map(shape=(0, 4), data=bytes(4)),
    "bytes_truncated_prefix": tensor_map(datatype="BYTES", shape=(2,), data=b"\x01\x00\x00\x00a\x01\x00\x00"),
    "bytes_element_overruns": tensor_map(datatype="BYTES", shape=(1,), data=b"\x05\x00\x00\x00abc"),
    "bytes_trailing": tensor_map(datatype="BYTES", shape=(1,), data=b"\x01\x00\x00\x00ab"),
    "bytes_huge_length": tensor_map(datatype="BYTES", shape=(1,), data=b"\xff\xff\xff\xffab"),
    "bytes_too_short_for_count": tensor_map(datatype="BYTES", shape=(3,), data=b"\x00" * 8),
    "unknown_datatype": tensor_map(datatype="FP8", data=b"\x00\x00"),
    "lowercase_datatype": tensor_map(datatype="fp32", data=bytes(8)),
    "empty_datatype": tensor_map(datatype="", data=bytes(8)),
    "numpy_name": tensor_map(datatype="float32", data=bytes(8)),
}


@pytest.mark.parametrize("case", BAD_TENSOR_DATA)
def test_tensor_data_disagrees(case: str) -> None:
    body = base_body(inputs=[BAD_TENSOR_DATA[case]])
    assert_status(Status.INVALID_ARGUMENT, decode_request, raw_fields(body))
    assert_status(Status.INVALID_ARGUMENT, decode_reply, reply_fields_raw({"status": "OK", "outputs": body["inputs"]}))


def test_duplicate_tensor_names() -> None:
    twice = [tensor_map(), tensor_map()]
    assert_status(Status.INVALID_ARGUMENT, decode_request, raw_fields(base_body(inputs=twice)))
    assert_status(Status.INVALID_ARGUMENT, decode_reply, reply_fields_raw({"status": "OK", "outputs": twice}))


def test_unknown_body_and_tensor_keys_are_ignored() -> None:
    body = base_body(future_key={"nested": [1, 2]}, inputs=[{**tensor_map(), "layout": "NCHW"}])
    assert decode_request(raw_fields(body)).inputs["x"].shape == (2,)
    assert decode_reply(reply_fields_raw({"status": "OK", "cost_usd": 0.5})).status is Status.OK


BAD_REPLIES: dict[str, dict[str, Any]] = {
    "status_missing": {},
    "status_unknown": {"status": "MAYBE"},
    "status_lowercase": {"status": "ok"},
    "status_as_int": {"status": 0},
    "status_as_list": {"status": ["OK"]},
    "timing_not_a_map": {"status": "OK", "timing": [1, 2]},
    "timing_negative": {"status": "OK", "timing": {"read_ns": -1}},
    "timing_float": {"status": "OK", "timing": {"read_ns": 1.5}},
    "timing_bool": {"status": "OK", "timing": {"read_ns": True}},
    "timing_uint64_overflow": {"status": "OK", "timing": {"read_ns": 2**63}},
    "error_not_a_string": {"status": "INTERNAL", "error": 5},
    "batch_size_as_string": {"status": "OK", "batch_size": "8"},
    "outputs_not_a_list": {"status": "OK", "outputs": {"y": 1}},
    "outputs_nil": {"status": "OK", "outputs": None},
}


@pytest.mark.parametrize("case", BAD_REPLIES)
def test_malformed_reply(case: str) -> None:
    assert_status(Status.MALFORMED, decode_reply, reply_fields_raw(BAD_REPLIES[case]))


# ----------------------------------------------------------------------------------------- field maps


@pytest.mark.parametrize("value_type", [bytes, str])
@pytest.mark.parametrize("key_type", [bytes, str])
def test_field_keys_as_str_or_bytes(key_type: type, value_type: type) -> None:
    def convert(fields: dict[str, bytes]) -> dict[Any, Any]:
        return {
            (key.encode() if key_type is bytes else key): (
                value if value_type is bytes or key == "body" else value.decode()
            )
            for key, value in fields.items()
        }

    request = decode_request(convert(request_fields({"x": np.arange(3)})))
    assert (request.id, request.reply_to) == ("req-1", "replies:client-1")
    assert peek_envelope(convert(request_fields({"x": np.arange(3)}))) == ("req-1", "replies:client-1")
    assert decode_reply(convert(encode_reply("req-1", Status.OK))).id == "req-1"


def test_version_given_as_int() -> None:
    assert decode_request(raw_fields(base_body(), v=1)).model == "model-a"
    assert_status(Status.UNSUPPORTED_VERSION, decode_request, raw_fields(base_body(), v=2))


GARBAGE_ENVELOPES: dict[str, tuple[dict[Any, Any], tuple[str | None, str | None]]] = {
    "empty": ({}, (None, None)),
    "only_id": ({b"id": b"abc"}, ("abc", None)),
    "only_reply_to": ({"reply_to": "q"}, (None, "q")),
    "non_utf8": ({b"id": b"\xff", b"reply_to": b"\xfe"}, (None, None)),
    "too_long": ({b"id": b"i" * 129, b"reply_to": b"r" * 257}, (None, None)),
    "empty_strings": ({b"id": b"", b"reply_to": b""}, (None, None)),
    "ints": ({b"id": 42, b"reply_to": 7}, ("42", "7")),
    "other_keys": ({b"x": b"y", 5: b"z", None: None}, (None, None)),
    "garbage_body": ({b"id": b"a", b"reply_to": b"b", b"v": b"9", b"body": b"\xc1"}, ("a", "b")),
}


@pytest.mark.parametrize("case", GARBAGE_ENVELOPES)
def test_peek_envelope_on_garbage(case: str) -> None:
    fields, expected = GARBAGE_ENVELOPES[case]
    assert peek_envelope(fields) == expected


# ------------------------------------------------------------------------------------------ encoding


def test_encode_rejects_what_has_no_wire_datatype() -> None:
    for dtype in ("c8", "c16", "datetime64[s]", "timedelta64[ms]", "V3"):
        bad = np.zeros(2, dtype)
        assert_status(Status.INVALID_ARGUMENT, request_fields, {"x": bad})
    assert_status(Status.INVALID_ARGUMENT, request_fields, {"x": np.array([1, 2], dtype=object)})  # not bytes(1)
    assert_status(Status.INVALID_ARGUMENT, request_fields, {})
    assert_status(Status.INVALID_ARGUMENT, request_fields, {"x": [1]}, timeout_ms=0)
    assert_status(Status.INVALID_ARGUMENT, request_fields, {"x": [1]}, timeout_ms=-1)


def test_encode_accepts_plain_sequences() -> None:
    inputs = decode_request(request_fields({"f": [1.5, 2.5], "i": [[1, 2]], "b": [True, False]})).inputs
    assert inputs["f"].dtype == np.float64 and inputs["f"].tolist() == [1.5, 2.5]
    assert inputs["i"].dtype == np.int64 and inputs["i"].shape == (1, 2)
    assert inputs["b"].dtype == np.bool_


def test_wire_fields_are_bytes() -> None:
    fields = request_fields({"x": [1]})
    assert list(fields) == ["v", "id", "reply_to", "body"]
    assert all(isinstance(v, bytes) for v in fields.values())
    assert fields["v"] == b"1"
    assert list(encode_reply("r", Status.OK)) == ["v", "id", "body"]
