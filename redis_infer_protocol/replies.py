"""Reply entries decoded in bulk: a whole raw ``XREAD`` response in one pass, for producers.

:func:`entries` flattens a raw ``XREAD`` response (RESP2 list or RESP3 map, as a connection's
``read_response`` gives it, without redis-py's per-entry dicts). :func:`decode_reply_fields` decodes one
entry's flat field list: a fast path for the well-formed reply (fields ``v``, ``id``, ``body`` in the order
every worker writes them, fixed-size tensors), which accepts a subset of what
:func:`~redis_infer_protocol.codec.decode_reply` accepts and gives the same :class:`Reply`; anything else goes
to ``decode_reply`` itself, so an odd or malformed reply gets exactly the codec's answer or error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

import msgpack
import numpy as np

from redis_infer_protocol.codec import (
    DATATYPES,
    OPTIONAL_TIMING_FIELDS,
    PROTOCOL_VERSION,
    TIMING_FIELDS,
    Reply,
    Status,
    Timing,
    decode_reply,
)
from redis_infer_protocol.limits import DEFAULT_LIMITS, MAX_REQUEST_ID_BYTES, Limits, in_int32

__all__ = ["RawEntry", "decode_reply_fields", "entries"]

RawEntry = tuple[bytes, Sequence[Any]]  # (entry id, [field, value, field, value, ...])

_VERSION: Final = str(PROTOCOL_VERSION).encode()
_STATUS: Final = {s.value: s for s in Status}
_INT64_END: Final = 2**63


def entries(response: Any) -> list[RawEntry]:
    """The entries of a raw ``XREAD`` response, in order, over every stream it names (None: no entries)."""
    if not response:
        return []
    batches = response.values() if isinstance(response, dict) else (item[1] for item in response)
    out: list[RawEntry] = []
    for batch in batches:
        out += [(entry[0], entry[1]) for entry in batch]
    return out


def decode_reply_fields(flat: Sequence[Any], limits: Limits = DEFAULT_LIMITS) -> Reply:
    """Decode one reply entry from its flat field list. Raises ``CodecError`` as ``decode_reply`` does."""
    if len(flat) == 6 and flat[0] == b"v" and flat[1] == _VERSION and flat[2] == b"id" and flat[4] == b"body":
        reply = _fast(flat[3], flat[5], limits)
        if reply is not None:
            return reply
    return decode_reply(dict(zip(flat[::2], flat[1::2], strict=False)), limits)


def _fast(raw_id: Any, body_raw: Any, limits: Limits) -> Reply | None:
    """The reply if it is plainly well-formed, else None (the codec then decides)."""
    if type(raw_id) is not bytes or not 0 < len(raw_id) <= MAX_REQUEST_ID_BYTES or type(body_raw) is not bytes:
        return None
    body = _unpack(body_raw, limits)
    if body is None:
        return None
    status = body.get("status")
    status = _STATUS.get(status) if type(status) is str else None
    timing = _timing(body.get("timing"))
    outputs = _outputs(body.get("outputs", []), limits)
    batch_size = body.get("batch_size", 0)
    if status is None or timing is None or outputs is None or type(batch_size) is not int or not in_int32(batch_size):
        return None
    error, model, worker = body.get("error"), body.get("model"), body.get("worker")
    if not (_text_ok(error, limits.max_string_bytes) and _text_ok(model, limits.max_name_bytes)):
        return None
    if not _text_ok(worker, limits.max_name_bytes):
        return None
    try:
        request_id = raw_id.decode()
    except UnicodeDecodeError:
        return None
    return Reply(request_id, status, outputs, error, model, timing, worker, batch_size)


def _unpack(body: bytes, limits: Limits) -> dict[str, Any] | None:
    if len(body) > limits.max_body_bytes:
        return None
    budget = [4 * limits.max_tensors + limits.max_parameters + 64]  # as the codec: stop container bombs early

    def count(container: Any) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            raise ValueError("too many containers")
        return container

    try:
        obj = msgpack.unpackb(
            body, raw=False, strict_map_key=True, max_str_len=limits.max_body_bytes,
            max_bin_len=limits.max_body_bytes, max_array_len=max(limits.max_tensors, limits.max_rank, 1024),
            max_map_len=4 * max(limits.max_parameters, 32), max_ext_len=0, list_hook=count, object_hook=count,
        )  # fmt: skip
    except Exception:
        return None
    return obj if type(obj) is dict else None


_ALL_TIMING_FIELDS = TIMING_FIELDS + OPTIONAL_TIMING_FIELDS


def _timing(obj: Any) -> Timing | None:
    if not obj:
        return Timing()
    if type(obj) is not dict:
        return None
    values = [obj.get(k, 0) for k in _ALL_TIMING_FIELDS]  # a hook's optional stages too
    if any(type(v) is not int or not 0 <= v < _INT64_END for v in values):
        return None
    return Timing(*values)


def _outputs(obj: Any, limits: Limits) -> dict[str, np.ndarray[Any, Any]] | None:
    if type(obj) is not list or len(obj) > limits.max_tensors:
        return None
    out: dict[str, np.ndarray[Any, Any]] = {}
    total = 0
    for item in obj:
        if type(item) is not dict:
            return None
        name, datatype, shape, data = item.get("name"), item.get("datatype"), item.get("shape"), item.get("data")
        dtype = DATATYPES.get(datatype) if type(datatype) is str else None
        if name is None or not _text_ok(name, limits.max_name_bytes) or name in out or dtype is None:
            return None
        if type(data) is not bytes or type(shape) is not list or len(shape) > limits.max_rank:
            return None
        if any(type(d) is not int or d < 0 for d in shape):
            return None
        count = math.prod(shape)
        if math.prod(max(d, 1) for d in shape) > limits.max_elements or len(data) != count * dtype.itemsize:
            return None
        total += count
        if total > limits.max_elements:
            return None
        out[name] = np.frombuffer(data, dtype=dtype, count=count).reshape(shape)
    return out


def _text_ok(obj: Any, max_bytes: int) -> bool:
    """Whether ``obj`` is None or a string of at most ``max_bytes`` UTF-8 bytes."""
    return obj is None or (type(obj) is str and len(obj) <= max_bytes and len(obj.encode()) <= max_bytes)
