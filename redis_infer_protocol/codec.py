"""Wire format v1: msgpack-encoded tensors in Redis Stream entries.

With :mod:`redis_infer_protocol.keys` and :mod:`redis_infer_protocol.limits`, this module is the whole
contract between producers and workers (see ``docs/protocol.md``). It imports only numpy and msgpack
so that the client stays light and a port to another language has a single reference. Decoding never
copies tensor payloads: every array is an ``np.frombuffer`` view of the received bytes, and every size a
peer declares is checked against hard limits *before* anything is allocated for it.

A request entry has four stream fields::

    v         b"1"                      protocol version
    id        request id (UTF-8, <= 128 bytes)
    reply_to  stream key for the reply (UTF-8, <= 256 bytes)
    body      msgpack map (see RequestBody below)

The plain ``id``/``reply_to`` fields let a worker answer a request whose body is garbage.
A reply entry has ``v``, ``id`` and ``body`` (a msgpack map, see ``encode_reply``).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import msgpack
import numpy as np

from redis_infer_protocol.limits import DEFAULT_LIMITS as DEFAULT_LIMITS
from redis_infer_protocol.limits import MAX_REPLY_TO_BYTES, MAX_REQUEST_ID_BYTES, in_int32
from redis_infer_protocol.limits import Limits as Limits

__all__ = [
    "BYTES",
    "DATATYPES",
    "DEFAULT_LIMITS",
    "OPTIONAL_TIMING_FIELDS",
    "PROTOCOL_VERSION",
    "TIMING_FIELDS",
    "CodecError",
    "Envelope",
    "Limits",
    "ParamValue",
    "Parameters",
    "Reply",
    "Request",
    "Status",
    "Tensor",
    "Timing",
    "datatype_of",
    "decode_reply",
    "decode_request",
    "decode_tensor",
    "dtype_of",
    "encode_reply",
    "encode_request",
    "encode_tensor",
    "peek_envelope",
    "request_id_problem",
]

PROTOCOL_VERSION: Final = 1

# KServe v2 / Open Inference Protocol datatype names -> little-endian numpy dtypes.
DATATYPES: Final[dict[str, np.dtype[Any]]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
BYTES: Final = "BYTES"  # variable-length elements: 4-byte little-endian length, then the bytes
_KIND_SIZE_TO_NAME: Final = {(dt.kind, dt.itemsize): name for name, dt in DATATYPES.items()}

ParamValue = str | int | float | bool
Parameters = dict[str, ParamValue]


class Status(str, enum.Enum):
    """Reply status. Anything but OK carries an ``error`` message."""

    OK = "OK"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"  # decodable, but does not fit the model (name, dtype, shape)
    MALFORMED = "MALFORMED"  # the entry could not be decoded
    UNSUPPORTED_VERSION = "UNSUPPORTED_VERSION"
    TOO_LARGE = "TOO_LARGE"  # a decode limit was exceeded
    MODEL_NOT_FOUND = "MODEL_NOT_FOUND"
    EXPIRED = "EXPIRED"  # the deadline passed before compute started
    BUSY = "BUSY"  # rejected by backpressure
    INTERNAL = "INTERNAL"  # the engine failed on this request
    UNAVAILABLE = "UNAVAILABLE"  # the worker is shutting down or lost its device


class CodecError(ValueError):
    """A message could not be encoded or decoded. ``status`` says which reply the peer should get."""

    def __init__(self, message: str, status: Status = Status.MALFORMED) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Tensor:
    """A named tensor. ``data`` is a numpy array (object array of ``bytes`` for BYTES)."""

    name: str
    data: np.ndarray[Any, Any]

    @property
    def datatype(self) -> str:
        return datatype_of(self.data.dtype)


@dataclass(slots=True)
class Request:
    """A decoded inference request."""

    id: str
    reply_to: str
    model: str
    inputs: dict[str, np.ndarray[Any, Any]]
    model_version: str | None = None
    timeout_ms: int | None = None
    priority: int = 0
    outputs: tuple[str, ...] | None = None  # None: all model outputs
    parameters: Parameters = field(default_factory=dict)


@dataclass(slots=True)
class Timing:
    """Wall-clock nanoseconds (``time.time_ns``) at each step of a request's life."""

    enqueued_ns: int = 0  # from the stream entry id (Redis server clock, ms resolution)
    read_ns: int = 0  # the worker received it from XREADGROUP
    batched_ns: int = 0  # its batch was formed and given an execution slot
    compute_start_ns: int = 0
    compute_end_ns: int = 0
    published_ns: int = 0  # the reply was built, just before it is written to Redis
    # Optional (issue 13): set only by a model with a Python hook; sent only when non-zero.
    preprocess_end_ns: int = 0  # compute_start_ns .. this: the hook's preprocess
    postprocess_start_ns: int = 0  # this .. compute_end_ns: the hook's postprocess

    def as_dict(self) -> dict[str, int]:
        fields = {k: getattr(self, k) for k in TIMING_FIELDS}
        fields.update({k: getattr(self, k) for k in OPTIONAL_TIMING_FIELDS if getattr(self, k)})
        return fields


TIMING_FIELDS: Final = ("enqueued_ns", "read_ns", "batched_ns", "compute_start_ns", "compute_end_ns", "published_ns")
OPTIONAL_TIMING_FIELDS: Final = ("preprocess_end_ns", "postprocess_start_ns")


@dataclass(slots=True)
class Reply:
    """A decoded reply."""

    id: str
    status: Status
    outputs: dict[str, np.ndarray[Any, Any]] = field(default_factory=dict)
    error: str | None = None
    model: str | None = None
    timing: Timing = field(default_factory=Timing)
    worker: str | None = None
    batch_size: int = 0


# --------------------------------------------------------------------------------------------- dtypes


def datatype_of(dtype: np.dtype[Any]) -> str:
    """The wire datatype name of a numpy dtype (byte order ignored)."""
    if dtype.kind in "OSU":
        return BYTES
    name = _KIND_SIZE_TO_NAME.get((dtype.kind, dtype.itemsize))
    if name is None:
        raise CodecError(f"numpy dtype {dtype} has no wire datatype", Status.INVALID_ARGUMENT)
    return name


def dtype_of(datatype: str) -> np.dtype[Any]:
    """The little-endian numpy dtype of a fixed-size wire datatype."""
    try:
        return DATATYPES[datatype]
    except KeyError:
        raise CodecError(f"unknown datatype {datatype!r}", Status.INVALID_ARGUMENT) from None


# -------------------------------------------------------------------------------------------- tensors


def encode_tensor(name: str, array: Any) -> dict[str, Any]:
    """Encode one tensor as a msgpack-ready map. Any byte order and memory layout is accepted."""
    arr = np.asarray(array)
    datatype = datatype_of(arr.dtype)
    if datatype == BYTES:
        data = _pack_bytes_elements(arr)
    else:
        wire = DATATYPES[datatype]
        # ascontiguousarray + astype give row-major little-endian bytes; no copy when already so.
        data = np.ascontiguousarray(arr, dtype=wire).tobytes()
    return {"name": name, "datatype": datatype, "shape": list(arr.shape), "data": data}


def _pack_bytes_elements(arr: np.ndarray[Any, Any]) -> bytes:
    parts: list[bytes] = []
    for item in arr.reshape(-1):
        if isinstance(item, str):
            raw = item.encode()
        elif isinstance(item, bytes | bytearray | memoryview):
            raw = bytes(item)
        else:  # bytes(5) would silently give five zero bytes
            raise CodecError(f"BYTES elements must be bytes or str, got {type(item).__name__}", Status.INVALID_ARGUMENT)
        parts.append(len(raw).to_bytes(4, "little"))
        parts.append(raw)
    return b"".join(parts)


def decode_tensor(obj: Any, limits: Limits = DEFAULT_LIMITS, datatypes: Mapping[str, str] | None = None) -> Tensor:
    """Decode and validate one tensor map. Returns a zero-copy view for fixed-size datatypes.

    ``datatypes``: the datatype each named tensor must have, checked before any data is decoded.
    """
    if not isinstance(obj, Mapping):
        raise CodecError(f"tensor must be a map, got {type(obj).__name__}")
    name = _str(obj.get("name"), "tensor name", limits.max_name_bytes)
    datatype = _str(obj.get("datatype"), f"datatype of {name!r}", 16)
    shape = _shape(obj.get("shape"), name, limits)
    data = obj.get("data")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"data of tensor {name!r} must be bin, got {type(data).__name__}")
    want = None if datatypes is None else datatypes.get(name)
    if want is not None and want != datatype:
        raise CodecError(f"input {name!r} must be {want}, got {datatype}", Status.INVALID_ARGUMENT)
    count = math.prod(shape)
    if datatype == BYTES:
        if limits.max_bytes_elements < count <= len(data) // 4:  # fewer bytes: INVALID_ARGUMENT below
            raise CodecError(
                f"BYTES tensor {name!r} has {count} elements, more than {limits.max_bytes_elements}", Status.TOO_LARGE
            )
        return Tensor(name, _unpack_bytes_elements(bytes(data), count, name).reshape(shape))
    dtype = dtype_of(datatype)
    expected = count * dtype.itemsize
    if len(data) != expected:
        raise CodecError(
            f"tensor {name!r}: shape {shape} of {datatype} needs {expected} bytes, got {len(data)}",
            Status.INVALID_ARGUMENT,
        )
    return Tensor(name, np.frombuffer(data, dtype=dtype, count=count).reshape(shape))


def _unpack_bytes_elements(data: bytes, count: int, name: str) -> np.ndarray[Any, Any]:
    if 4 * count > len(data):  # before np.empty: a tiny body must not make us allocate count slots
        raise CodecError(
            f"BYTES tensor {name!r} has {count} elements but only {len(data)} bytes", Status.INVALID_ARGUMENT
        )
    out = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        if pos + 4 > len(data):
            raise CodecError(f"BYTES tensor {name!r} is truncated at element {i}", Status.INVALID_ARGUMENT)
        size = int.from_bytes(data[pos : pos + 4], "little")
        pos += 4
        if pos + size > len(data):
            raise CodecError(f"BYTES tensor {name!r} element {i} overruns the data", Status.INVALID_ARGUMENT)
        out[i] = data[pos : pos + size]
        pos += size
    if pos != len(data):
        raise CodecError(f"BYTES tensor {name!r} has {len(data) - pos} trailing bytes", Status.INVALID_ARGUMENT)
    return out


def _shape(obj: Any, name: str, limits: Limits) -> tuple[int, ...]:
    if not isinstance(obj, list | tuple):
        raise CodecError(f"shape of tensor {name!r} must be an array")
    if len(obj) > limits.max_rank:
        raise CodecError(f"tensor {name!r} has rank {len(obj)} > max rank {limits.max_rank}", Status.TOO_LARGE)
    count = 1
    for dim in obj:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 0:
            raise CodecError(f"shape of tensor {name!r} must hold non-negative integers, got {obj!r}")
        # Zero dims are skipped so that [0, 2**40, 2**40] is refused too: numpy cannot even build that empty shape.
        count *= max(dim, 1)
        if count > limits.max_elements:  # checked per dimension: a hostile shape never builds a huge int
            raise CodecError(
                f"tensor {name!r} shape {list(obj)} exceeds max elements {limits.max_elements}", Status.TOO_LARGE
            )
    return tuple(obj)


def _str(obj: Any, what: str, max_bytes: int) -> str:
    if not isinstance(obj, str):
        raise CodecError(f"{what} must be a string, got {type(obj).__name__}")
    # The limit is in UTF-8 bytes, as a port in another language counts it; len() first so a huge str is not encoded.
    if len(obj) > max_bytes or len(obj.encode()) > max_bytes:
        raise CodecError(f"{what} is longer than {max_bytes} bytes", Status.TOO_LARGE)
    return obj


# ------------------------------------------------------------------------------------------- msgpack


def _unpack(body: bytes, limits: Limits) -> dict[str, Any]:
    if len(body) > limits.max_body_bytes:
        raise CodecError(f"body of {len(body)} bytes exceeds max {limits.max_body_bytes}", Status.TOO_LARGE)
    # msgpack builds the whole tree before we look at it, and each 1-byte empty array costs a Python
    # list: count arrays and maps as they are built and stop past what any valid message holds.
    budget = 4 * limits.max_tensors + limits.max_parameters + 64

    def count(container: Any) -> Any:
        nonlocal budget
        budget -= 1
        if budget < 0:
            raise CodecError("body holds more arrays and maps than any valid message", Status.TOO_LARGE)
        return container

    try:
        obj = msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=True,
            max_str_len=limits.max_body_bytes,
            max_bin_len=limits.max_body_bytes,
            max_array_len=max(limits.max_tensors, limits.max_rank, limits.max_parameters, 1024),
            max_map_len=4 * max(limits.max_parameters, 32),  # room for a clear TOO_LARGE past the limit
            max_ext_len=0,
            list_hook=count,
            object_hook=count,
        )
    except CodecError:
        raise
    except Exception as exc:  # msgpack raises several types; all mean the same to a peer
        raise CodecError(f"body is not valid msgpack ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise CodecError(f"body must be a msgpack map, got {type(obj).__name__}")
    return obj


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def _field(fields: Mapping[Any, Any], key: str) -> bytes | None:
    value = fields.get(key.encode(), fields.get(key))
    if value is None:
        return None
    return value if isinstance(value, bytes) else str(value).encode()


def _text_field(fields: Mapping[Any, Any], key: str, max_bytes: int) -> str:
    raw = _field(fields, key)
    if raw is None:
        raise CodecError(f"entry has no {key!r} field")
    if not raw:
        raise CodecError(f"field {key!r} is empty")
    if len(raw) > max_bytes:
        raise CodecError(f"field {key!r} is longer than {max_bytes} bytes", Status.TOO_LARGE)
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise CodecError(f"field {key!r} is not UTF-8") from None


class Envelope(NamedTuple):
    """The plain fields of a request entry, readable when its body is not.

    A NamedTuple rather than a dataclass so that ``request_id, reply_to = peek_envelope(...)`` keeps working.
    """

    request_id: str | None
    reply_to: str | None


def peek_envelope(fields: Mapping[Any, Any]) -> Envelope:
    """Best-effort id and reply_to of an entry, for answering one whose body cannot be decoded."""
    return Envelope(_peek(fields, "id", MAX_REQUEST_ID_BYTES), _peek(fields, "reply_to", MAX_REPLY_TO_BYTES))


def request_id_problem(fields: Mapping[Any, Any]) -> CodecError | None:
    """Why an entry's ``id`` cannot be read (the error ``decode_request`` raises for it), or None if it can."""
    try:
        _text_field(fields, "id", MAX_REQUEST_ID_BYTES)
    except CodecError as exc:
        return exc
    return None


def _peek(fields: Mapping[Any, Any], key: str, max_bytes: int) -> str | None:
    try:
        return _text_field(fields, key, max_bytes) or None
    except CodecError:
        return None


# ------------------------------------------------------------------------------------------ requests


def encode_request(
    request_id: str,
    reply_to: str,
    model: str,
    inputs: Mapping[str, Any],
    *,
    model_version: str | None = None,
    timeout_ms: int | None = None,
    priority: int = 0,
    outputs: Sequence[str] | None = None,
    parameters: Mapping[str, ParamValue] | None = None,
) -> dict[str, bytes]:
    """Encode a request as stream-entry fields, ready for ``XADD``."""
    if not inputs:
        raise CodecError("a request needs at least one input", Status.INVALID_ARGUMENT)
    body: dict[str, Any] = {
        "model": model,
        "inputs": [encode_tensor(name, arr) for name, arr in inputs.items()],
    }
    if model_version is not None:
        body["model_version"] = model_version
    if timeout_ms is not None:
        if timeout_ms <= 0:
            raise CodecError("timeout_ms must be positive", Status.INVALID_ARGUMENT)
        body["timeout_ms"] = int(timeout_ms)
    if priority:
        body["priority"] = int(priority)
    if outputs is not None:
        body["outputs"] = list(outputs)
    if parameters:
        body["parameters"] = dict(parameters)
    return {
        "v": str(PROTOCOL_VERSION).encode(),
        "id": request_id.encode(),
        "reply_to": reply_to.encode(),
        "body": _pack(body),
    }


def decode_request(
    fields: Mapping[Any, Any], limits: Limits = DEFAULT_LIMITS, datatypes: Mapping[str, str] | None = None
) -> Request:
    """Decode and validate a request entry's fields. Raises ``CodecError`` with a status for the reply.

    ``datatypes``: the model's input datatypes by name, checked before any tensor data is decoded.
    """
    version = _field(fields, "v")
    if version is None:
        raise CodecError("entry has no 'v' (protocol version) field")
    if version != str(PROTOCOL_VERSION).encode():
        raise CodecError(
            f"protocol version {version[:16]!r} is not supported (this worker speaks {PROTOCOL_VERSION})",
            Status.UNSUPPORTED_VERSION,
        )
    request_id = _text_field(fields, "id", MAX_REQUEST_ID_BYTES)
    reply_to = _text_field(fields, "reply_to", MAX_REPLY_TO_BYTES)
    body_raw = _field(fields, "body")
    if body_raw is None:
        raise CodecError("entry has no 'body' field")
    body = _unpack(body_raw, limits)

    model = _str(body.get("model"), "model", limits.max_name_bytes)
    version_obj = body.get("model_version")
    model_version = None if version_obj is None else _str(version_obj, "model_version", limits.max_name_bytes)
    inputs = _decode_tensor_list(body.get("inputs"), "inputs", limits, datatypes)
    if not inputs:
        raise CodecError("request has no inputs", Status.INVALID_ARGUMENT)
    return Request(
        id=request_id,
        reply_to=reply_to,
        model=model,
        model_version=model_version,
        inputs=inputs,
        timeout_ms=_optional_positive_int(body.get("timeout_ms"), "timeout_ms"),
        priority=_int(body.get("priority", 0), "priority"),
        outputs=_output_names(body.get("outputs"), limits),
        parameters=_parameters(body.get("parameters"), limits),
    )


def _decode_tensor_list(
    obj: Any, what: str, limits: Limits, datatypes: Mapping[str, str] | None = None
) -> dict[str, np.ndarray[Any, Any]]:
    if not isinstance(obj, list):
        raise CodecError(f"{what} must be an array of tensors")
    if len(obj) > limits.max_tensors:
        raise CodecError(f"{len(obj)} {what} exceed max {limits.max_tensors}", Status.TOO_LARGE)
    tensors: dict[str, np.ndarray[Any, Any]] = {}
    total = 0
    for item in obj:
        tensor = decode_tensor(item, limits, datatypes)
        if tensor.name in tensors:
            raise CodecError(f"tensor {tensor.name!r} appears twice in {what}", Status.INVALID_ARGUMENT)
        total += tensor.data.size
        if total > limits.max_elements:
            raise CodecError(f"{what} hold more than {limits.max_elements} elements in all", Status.TOO_LARGE)
        tensors[tensor.name] = tensor.data
    return tensors


def _int(obj: Any, what: str) -> int:
    if not isinstance(obj, int) or isinstance(obj, bool):
        raise CodecError(f"{what} must be an integer, got {type(obj).__name__}")
    if not in_int32(obj):
        raise CodecError(f"{what} {obj} is out of range")
    return obj


def _optional_positive_int(obj: Any, what: str) -> int | None:
    if obj is None:
        return None
    value = _int(obj, what)
    if value <= 0:
        raise CodecError(f"{what} must be positive, got {value}")
    return value


def _output_names(obj: Any, limits: Limits) -> tuple[str, ...] | None:
    if obj is None:
        return None
    if not isinstance(obj, list) or len(obj) > limits.max_tensors:
        raise CodecError(f"outputs must be an array of at most {limits.max_tensors} names")
    return tuple(_str(name, "output name", limits.max_name_bytes) for name in obj)


def _parameters(obj: Any, limits: Limits) -> Parameters:
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise CodecError("parameters must be a map")
    if len(obj) > limits.max_parameters:
        raise CodecError(f"{len(obj)} parameters exceed max {limits.max_parameters}", Status.TOO_LARGE)
    out: Parameters = {}
    for key, value in obj.items():
        _str(key, "parameter name", limits.max_name_bytes)
        if isinstance(value, str):
            _str(value, f"parameter {key!r}", limits.max_string_bytes)
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise CodecError(f"parameter {key!r} must be finite")
        elif not isinstance(value, int | bool):
            raise CodecError(f"parameter {key!r} must be a string, number or boolean")
        out[key] = value
    return out


# -------------------------------------------------------------------------------------------- replies


def encode_reply(
    request_id: str,
    status: Status,
    *,
    outputs: Mapping[str, Any] | None = None,
    error: str | None = None,
    model: str | None = None,
    timing: Timing | None = None,
    worker: str | None = None,
    batch_size: int = 0,
) -> dict[str, bytes]:
    """Encode a reply as stream-entry fields, ready for ``XADD`` to the request's ``reply_to``."""
    body: dict[str, Any] = {"status": status.value}
    if outputs:
        body["outputs"] = [encode_tensor(name, arr) for name, arr in outputs.items()]
    if error is not None:
        # Cut in UTF-8 bytes (the decoder's unit), dropping a split trailing character.
        body["error"] = error.encode()[: DEFAULT_LIMITS.max_string_bytes].decode(errors="ignore")
    if model is not None:
        body["model"] = model
    if timing is not None:
        body["timing"] = timing.as_dict()
    if worker is not None:
        body["worker"] = worker
    if batch_size:
        body["batch_size"] = batch_size
    return {"v": str(PROTOCOL_VERSION).encode(), "id": request_id.encode(), "body": _pack(body)}


def decode_reply(fields: Mapping[Any, Any], limits: Limits = DEFAULT_LIMITS) -> Reply:
    """Decode a reply entry's fields."""
    version = _field(fields, "v")
    if version is None:
        raise CodecError("reply has no 'v' (protocol version) field")
    if version != str(PROTOCOL_VERSION).encode():
        raise CodecError(f"reply has unsupported protocol version {version[:16]!r}", Status.UNSUPPORTED_VERSION)
    request_id = _text_field(fields, "id", MAX_REQUEST_ID_BYTES)
    body_raw = _field(fields, "body")
    if body_raw is None:
        raise CodecError("reply has no 'body' field")
    body = _unpack(body_raw, limits)
    try:
        status = Status(body.get("status"))
    except ValueError:
        raise CodecError(f"reply has unknown status {body.get('status')!r}") from None
    timing_obj = body.get("timing") or {}
    if not isinstance(timing_obj, dict):
        raise CodecError("reply timing must be a map")
    timing = Timing(**{k: _int64(timing_obj.get(k, 0), k) for k in TIMING_FIELDS + OPTIONAL_TIMING_FIELDS})
    error = body.get("error")
    model = body.get("model")
    worker = body.get("worker")
    return Reply(
        id=request_id,
        status=status,
        outputs=_decode_tensor_list(body.get("outputs", []), "outputs", limits),
        error=None if error is None else _str(error, "error", limits.max_string_bytes),
        model=None if model is None else _str(model, "model", limits.max_name_bytes),
        timing=timing,
        worker=None if worker is None else _str(worker, "worker", limits.max_name_bytes),
        batch_size=_int(body.get("batch_size", 0), "batch_size"),
    )


def _int64(obj: Any, what: str) -> int:
    if not isinstance(obj, int) or isinstance(obj, bool) or not 0 <= obj < 2**63:
        raise CodecError(f"timing.{what} must be a non-negative 64-bit integer")
    return obj
