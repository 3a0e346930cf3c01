"""The codec batch at a time: requests sharing a header decoded with one validation, replies encoded in one pass.

Same wire format and same results as :func:`codec.decode_request` and :func:`codec.encode_reply` (the
tests compare them field for field and byte for byte); only the per-request work is smaller:

- :class:`RequestDecoder` remembers each *header* it has seen validated (model, version, requested
  outputs, and every input's name, datatype and full shape). An entry repeating a known header needs
  only its envelope, its ``timeout_ms``/``priority`` and the length of each tensor's data checked before
  its arrays are made (``np.frombuffer`` views, as ever). Anything unusual (parameters, BYTES tensors, a
  header not seen yet, a wrong data length) goes to the full decoder, which gives the precise error.
- :func:`encode_ok_replies` encodes the OK replies of one batch: each output is converted to wire bytes
  once for the whole batch, the constant parts of the body are packed once, and each reply's body is
  a join of byte strings.

Imports only numpy and msgpack, like the codec.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgpack
import numpy as np

from redis_infer_protocol.codec import (
    BYTES,
    DATATYPES,
    OPTIONAL_TIMING_FIELDS,
    PROTOCOL_VERSION,
    TIMING_FIELDS,
    Limits,
    Request,
    Status,
    Timing,
    _int,
    _optional_positive_int,
    _unpack,
    datatype_of,
    encode_tensor,
)
from redis_infer_protocol.limits import MAX_REPLY_TO_BYTES, MAX_REQUEST_ID_BYTES

__all__ = ["Header", "RequestDecoder", "encode_ok_replies"]

T = TypeVar("T")
HeaderKey = tuple[Any, ...]
_VERSION = str(PROTOCOL_VERSION).encode()
TEMPLATES_PER_HEADER = 4  # byte templates tried per header (a producer varying timeout_ms gets none to match)
TEMPLATE_MAX_BODY_BYTES = 1 << 20  # larger bodies gain little next to their data, and a template costs copies
_SIMPLE_BODY_KEYS = frozenset({"model", "model_version", "inputs", "outputs", "timeout_ms", "priority"})


@dataclass(frozen=True, slots=True)
class Header:
    """What a validated header fixes for every request that repeats it."""

    tensors: tuple[tuple[str, np.dtype[Any], tuple[int, ...], int], ...]  # name, dtype, shape, data bytes
    model: str
    model_version: str | None
    outputs: tuple[str, ...] | None


class RequestDecoder(Generic[T]):
    """Decodes request entries whose header was validated before without validating it again.

    ``lookup`` gives ``(request, extra, None)`` for a known header (``extra``: what the caller stored
    with ``remember``, e.g. the batching signature); ``(None, None, key)`` for a new one, which the
    caller decodes with the full decoder and then ``remember``s under ``key`` if it was valid; and
    ``(None, None, None)`` for an entry the fast path does not handle.

    Args:
        limits: decode limits (the body size and container budget are checked on every entry).
        max_headers: distinct headers remembered; past it the memory is cleared (a producer cycling
            through shapes only costs the full decoder, never memory).
    """

    def __init__(self, limits: Limits, max_headers: int = 1024) -> None:
        self.limits = limits
        self.max_headers = max_headers
        self._known: dict[HeaderKey, tuple[Header, T]] = {}
        self._templates: dict[int, list[_Template[T]]] = {}  # by body length
        self._template_tries: dict[HeaderKey, int] = {}
        self._template_count = 0

    def lookup(self, fields: Mapping[Any, Any]) -> tuple[Request | None, T | None, HeaderKey | None]:
        """Decode ``fields`` if its header is known. Raises ``CodecError`` as the full decoder would for a
        body that is not valid msgpack, too large, or a bad ``timeout_ms``/``priority``."""
        rid, reply_to, raw = fields.get(b"id"), fields.get(b"reply_to"), fields.get(b"body")
        if fields.get(b"v") != _VERSION or not isinstance(raw, bytes) or not isinstance(rid, bytes):
            return None, None, None
        if not rid or not reply_to or len(rid) > MAX_REQUEST_ID_BYTES or len(reply_to) > MAX_REPLY_TO_BYTES:
            return None, None, None
        try:
            request_id, reply_text = rid.decode(), reply_to.decode()
        except (UnicodeDecodeError, AttributeError):
            return None, None, None
        for template in self._templates.get(len(raw), ()):
            if template.matches(raw):
                return template.request(raw, request_id, reply_text), template.extra, None
        body = _unpack(raw, self.limits)
        key = _header_key(body)
        if key is None:
            return None, None, None
        known = self._known.get(key)
        if known is None:
            return None, None, key
        header, extra = known
        inputs = _arrays(header, body["inputs"])
        if inputs is None:
            return None, None, None
        request = Request(
            id=request_id,
            reply_to=reply_text,
            model=header.model,
            model_version=header.model_version,
            inputs=inputs,
            timeout_ms=_optional_positive_int(body.get("timeout_ms"), "timeout_ms"),
            priority=_int(body.get("priority", 0), "priority"),
            outputs=header.outputs,
        )
        if len(raw) <= TEMPLATE_MAX_BODY_BYTES and self._template_tries.get(key, 0) < TEMPLATES_PER_HEADER:
            self._template_tries[key] = self._template_tries.get(key, 0) + 1
            self._add_template(raw, body, header, extra, request)
        return request, extra, None

    def _add_template(self, raw: bytes, body: dict[str, Any], header: Header, extra: T, request: Request) -> None:
        """Remember the bytes of ``raw`` around its tensors' data: a body equal to them outside the data
        parses to the same (validated) header and parameters, so it needs no parsing at all."""
        segments: list[tuple[int, bytes]] = []
        places: list[int] = []
        pos = 0
        for (_name, _dtype, _shape, nbytes), tensor in zip(header.tensors, body["inputs"], strict=True):
            data = tensor["data"]
            framed = _pack(data)  # the bin header, then the data
            found = raw.find(framed, pos)
            if not nbytes or found < 0:
                return
            start = found + len(framed) - nbytes
            segments.append((pos, raw[pos:start]))
            places.append(start)
            pos = start + nbytes
        segments.append((pos, raw[pos:]))
        # Check the places: with every data region flipped, the body must parse to the same thing with
        # flipped data (packed again, so that 1 and True, 1 and 1.0, differ).
        flipped = bytearray(raw)
        expected = dict(body, inputs=[dict(t) for t in body["inputs"]])
        for start, (_n, _d, _s, nbytes), tensor in zip(places, header.tensors, expected["inputs"], strict=True):
            tensor["data"] = flipped[start : start + nbytes] = (
                np.frombuffer(raw, np.uint8, nbytes, start) ^ 0xFF
            ).tobytes()
        try:  # a data region found at the wrong place (an earlier string with the same bytes) breaks the body
            if _pack(_unpack(bytes(flipped), self.limits)) != _pack(expected):
                return
        except Exception:  # then there is no template: the request itself was valid and is served as decoded
            return
        if self._template_count >= self.max_headers:
            self._templates.clear()  # a counter, not a walk over the dict: a thread may clear it meanwhile
            self._template_count = 0
        self._template_count += 1
        template = _Template(tuple(segments), tuple(places), header, extra, request.timeout_ms, request.priority)
        self._templates.setdefault(len(raw), []).append(template)

    def remember(self, key: HeaderKey, request: Request, extra: T) -> None:
        """Store a header the full decoder (and the caller's checks) accepted, with the caller's ``extra``."""
        if len(self._known) >= self.max_headers:
            self._known.clear()
            self._templates.clear()
            self._template_tries.clear()
        tensors = tuple((name, arr.dtype, arr.shape, arr.nbytes) for name, arr in request.inputs.items())
        self._known[key] = (Header(tensors, request.model, request.model_version, request.outputs), extra)


@dataclass(frozen=True, slots=True)
class _Template(Generic[T]):
    """A validated body's bytes outside its tensors' data, and what they decode to."""

    segments: tuple[tuple[int, bytes], ...]  # (offset, the bytes there) around the data regions
    places: tuple[int, ...]  # where each tensor's data starts
    header: Header
    extra: T
    timeout_ms: int | None
    priority: int

    def matches(self, raw: bytes) -> bool:
        for offset, constant in self.segments:  # noqa: SIM110 (a loop, not all(): this runs once per entry)
            if not raw.startswith(constant, offset):
                return False
        return True

    def request(self, raw: bytes, request_id: str, reply_to: str) -> Request:
        inputs = {
            name: np.frombuffer(raw, dtype=dtype, count=nbytes // dtype.itemsize, offset=start).reshape(shape)
            for start, (name, dtype, shape, nbytes) in zip(self.places, self.header.tensors, strict=True)
        }
        header = self.header
        return Request(id=request_id, reply_to=reply_to, model=header.model, model_version=header.model_version,
                       inputs=inputs, timeout_ms=self.timeout_ms, priority=self.priority,
                       outputs=header.outputs)  # fmt: skip


def _header_key(body: dict[str, Any]) -> HeaderKey | None:
    """The header of a body as a hashable key, or None when the body is not of the simple kind."""
    if not body.keys() <= _SIMPLE_BODY_KEYS:
        return None
    inputs, outputs = body.get("inputs"), body.get("outputs")
    if not isinstance(inputs, list) or (outputs is not None and not isinstance(outputs, list)):
        return None
    tensors = []
    for tensor in inputs:
        if not isinstance(tensor, dict):
            return None
        shape, datatype, name = tensor.get("shape"), tensor.get("datatype"), tensor.get("name")
        # only strings name and type: a list or map here is the full decoder's to refuse (MALFORMED), and
        # would not hash as a cache key
        if not isinstance(shape, list) or type(datatype) is not str or type(name) is not str or datatype == BYTES:
            return None
        for dim in shape:  # type() is, not isinstance: True == 1 and 1.0 == 1 hash alike; only ints are dims
            if type(dim) is not int:
                return None
        tensors.append((name, datatype, tuple(shape)))
    if outputs is not None and not all(type(o) is str for o in outputs):
        return None
    out_key = None if outputs is None else tuple(outputs)
    model, version = body.get("model"), body.get("model_version")
    if type(model) is not str or (version is not None and type(version) is not str):
        return None
    return (model, version, out_key, tuple(tensors))


def _arrays(header: Header, tensors: list[dict[str, Any]]) -> dict[str, np.ndarray[Any, Any]] | None:
    inputs: dict[str, np.ndarray[Any, Any]] = {}
    for (name, dtype, shape, nbytes), tensor in zip(header.tensors, tensors, strict=True):
        data = tensor.get("data")
        if not isinstance(data, bytes) or len(data) != nbytes:
            return None  # the full decoder names the problem
        inputs[name] = np.frombuffer(data, dtype=dtype).reshape(shape)
    return inputs


# -------------------------------------------------------------------------------------------- replies


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def encode_ok_replies(
    request_ids: Sequence[str],
    rows: Sequence[int],
    outputs: Mapping[str, np.ndarray[Any, Any]],
    wanted: Sequence[tuple[str, ...] | None],
    timings: Sequence[Timing],
    *,
    model: str,
    worker: str,
) -> list[dict[str, bytes]]:
    """The OK replies of one batch, as ``encode_reply`` would encode each (byte for byte).

    Args:
        request_ids: each request's id, in batch order.
        rows: each request's rows (they follow each other in the outputs, dim 0).
        outputs: the batch's outputs, batch dimension first.
        wanted: each request's requested outputs (None: all, in ``outputs`` order).
        timings: each request's timing trace.
        model: the model name written in the replies.
        worker: the worker name written in the replies.
    """
    batch_size = sum(rows)
    parts: dict[str, tuple[bytes, list[int], int, memoryview] | None] = {}
    for name, arr in outputs.items():
        datatype = datatype_of(arr.dtype)
        if datatype == BYTES:
            parts[name] = None  # variable-length elements: encoded per reply
            continue
        wire = np.ascontiguousarray(arr, dtype=DATATYPES[datatype])
        row_bytes = wire[0:1].nbytes if len(wire) else 0
        head = b"\x84" + _pack("name") + _pack(name) + _pack("datatype") + _pack(datatype) + _pack("shape")
        parts[name] = (head, list(wire.shape[1:]), row_bytes, memoryview(wire.tobytes()))
    status = b"\x86" + _pack("status") + _pack(Status.OK.value) + _pack("outputs")
    middle = _pack("model") + _pack(model) + _pack("timing")
    tail = _pack("worker") + _pack(worker) + _pack("batch_size") + _pack(batch_size)
    version = str(PROTOCOL_VERSION).encode()
    timing_of = _TimingPacker()
    before_data: dict[tuple[str, int], bytes] = {}  # a tensor map's bytes up to its data, by name and rows
    replies = []
    offset = 0
    for request_id, count, names, timing in zip(request_ids, rows, wanted, timings, strict=True):
        chosen = tuple(dict.fromkeys(names)) if names else tuple(outputs)  # a name asked twice is sent once
        body: list[bytes | memoryview] = [status, _array_head(len(chosen))]
        for name in chosen:
            part = parts[name]
            if part is None:
                body.append(_pack(encode_tensor(name, outputs[name][offset : offset + count])))
                continue
            head, rest, row_bytes, data = part
            prefix = before_data.get((name, count))
            if prefix is None:
                prefix = before_data[name, count] = head + _pack([count, *rest]) + _DATA + _bin_head(count * row_bytes)
            body += (prefix, data[offset * row_bytes : (offset + count) * row_bytes])
        body += (middle, timing_of(timing), tail)
        offset += count
        replies.append({"v": version, "id": request_id.encode(), "body": b"".join(body)})
    return replies


_DATA = _pack("data")
_TIMING_KEYS = [_pack(name) for name in TIMING_FIELDS]
_OPTIONAL_TIMING_KEYS = [(name, _pack(name)) for name in OPTIONAL_TIMING_FIELDS]


class _TimingPacker:
    """Packs timing traces as msgpack maps, remembering the packed form of each value (the requests of a
    batch share most of them)."""

    def __init__(self) -> None:
        self._ints: dict[int, bytes] = {}

    def __call__(self, timing: Timing) -> bytes:
        ints = self._ints
        parts = [b"\x86"]
        values = (timing.enqueued_ns, timing.read_ns, timing.batched_ns, timing.compute_start_ns,
                  timing.compute_end_ns, timing.published_ns)  # fmt: skip
        for key, value in zip(_TIMING_KEYS, values, strict=True):
            packed = ints.get(value)
            if packed is None:
                packed = ints[value] = _pack(value)
            parts += (key, packed)
        if timing.preprocess_end_ns or timing.postprocess_start_ns:  # a hook's stages, sent only when set
            optional = [(key, getattr(timing, name)) for name, key in _OPTIONAL_TIMING_KEYS if getattr(timing, name)]
            parts[0] = bytes([0x80 | (len(_TIMING_KEYS) + len(optional))])
            parts += [b for key, value in optional for b in (key, _pack(value))]
        return b"".join(parts)


def _bin_head(size: int) -> bytes:
    """The msgpack bin header for ``size`` bytes (bin 8, 16 or 32, as msgpack packs bytes)."""
    if size < 1 << 8:
        return b"\xc4" + size.to_bytes(1, "big")
    if size < 1 << 16:
        return b"\xc5" + size.to_bytes(2, "big")
    return b"\xc6" + size.to_bytes(4, "big")


def _array_head(length: int) -> bytes:
    return bytes([0x90 | length]) if length < 16 else b"\xdc" + length.to_bytes(2, "big")
