"""The bytes the SDK sends, built in bulk: requests encoded with their constant parts reused, rounds packed as RESP.

Sans-IO like :mod:`producer.core`: nothing here touches a socket. :class:`RequestEncoder` gives the same bytes as
:func:`redis_infer_protocol.codec.encode_request` (a test holds it to that) without rebuilding what every request
of a client shares. :func:`pack_round` writes a whole send round (one ``XADD`` per request, or one backlog script
call per chunk of requests) as one RESP byte string, which the shells write with one ``send_packed_command`` and
answer by reading one reply per command: redis-py's per-command packing and pipeline bookkeeping are skipped.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgpack
import numpy as np

from redis_infer_protocol.codec import DATATYPES, PROTOCOL_VERSION, ParamValue, encode_tensor

CRLF: Final = b"\r\n"
SCRIPT_CHUNK: Final = 128  # requests per backlog script call: bounds how long one call holds Redis
_VERSION: Final = str(PROTOCOL_VERSION).encode()
# dtype -> wire datatype name, for the dtypes that go on the wire unchanged (native little-endian fixed size)
_AS_IS: Final[dict[np.dtype[Any], str]] = {dt: name for name, dt in DATATYPES.items()}


def bulk(value: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%b\r\n" % (len(value), value)


def command(*args: bytes) -> bytes:
    """One RESP command (an array of bulk strings)."""
    return b"*%d\r\n" % len(args) + b"".join(bulk(a) for a in args)


class RequestEncoder:
    """Encodes the requests of one client: ``encode_request``'s bytes, with the per-client parts built once.

    Thread-safe: each thread packs with a msgpack ``Packer`` of its own.
    """

    def __init__(self, reply_key: str, model: str, model_version: str | None) -> None:
        self._model = model
        self._model_version = model_version
        self._reply_to = reply_key.encode()
        # The RESP of the fields before the id's value and between it and the body's value.
        self._head = bulk(b"v") + bulk(_VERSION) + bulk(b"id")
        self._middle = bulk(b"reply_to") + bulk(self._reply_to) + bulk(b"body")
        self._local = threading.local()

    def options(
        self,
        timeout_ms: int | None,
        priority: int,
        outputs: Sequence[str] | None,
        parameters: Mapping[str, ParamValue] | None,
    ) -> dict[str, Any]:
        """The body's entries after ``inputs`` (in ``encode_request``'s order), shared by a call's requests."""
        tail: dict[str, Any] = {}
        if self._model_version is not None:
            tail["model_version"] = self._model_version
        if timeout_ms is not None:
            tail["timeout_ms"] = int(timeout_ms)
        if priority:
            tail["priority"] = int(priority)
        if outputs is not None:
            tail["outputs"] = list(outputs)
        if parameters:
            tail["parameters"] = dict(parameters)
        return tail

    def encode(
        self, request_id: str, inputs: Mapping[str, Any], tail: Mapping[str, Any]
    ) -> tuple[dict[str, bytes], bytes]:
        """The request's stream fields, and the RESP of its field/value pairs up to the body's bytes.

        Raises:
            CodecError, ValueError, TypeError, OverflowError: As ``encode_request`` does for bad inputs.
        """
        body: dict[str, Any] = {"model": self._model, "inputs": [_tensor(name, arr) for name, arr in inputs.items()]}
        if tail:
            body.update(tail)
        packer = getattr(self._local, "packer", None)
        if packer is None:
            packer = self._local.packer = msgpack.Packer(use_bin_type=True)
        packed: bytes = packer.pack(body)
        rid = request_id.encode()
        fields = {"v": _VERSION, "id": rid, "reply_to": self._reply_to, "body": packed}
        head = b"%b$%d\r\n%b\r\n%b$%d\r\n" % (self._head, len(rid), rid, self._middle, len(packed))
        return fields, head


def _tensor(name: str, value: Any) -> dict[str, Any]:
    arr = value if type(value) is np.ndarray else np.asarray(value)
    datatype = _AS_IS.get(arr.dtype)
    if datatype is None or not arr.flags.c_contiguous:  # converted, BYTES, or refused: the codec's way
        return encode_tensor(name, arr)
    return {"name": name, "datatype": datatype, "shape": list(arr.shape), "data": arr.tobytes()}


class RequestIds:
    """Request ids of one client: 32 lowercase hex digits, a random 64-bit prefix and a 64-bit counter.

    Unique within the client by the counter and across clients by the prefix (a collision needs two of the
    clients alive at once to draw the same 64 random bits), at a fraction of ``uuid4``'s cost. Thread-safe:
    ``next`` on an ``itertools.count`` is atomic.
    """

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(int.from_bytes(os.urandom(4), "big"))

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFF_FFFF_FFFF_FFFF:016x}"


# ----------------------------------------------------------------------------------------------- rounds


class Wire:
    """Header bytes of the commands one client sends to one request stream, built once."""

    def __init__(self, stream: str, sha: str) -> None:
        self._stream = bulk(stream.encode())
        self._xadd = b"*11\r\n" + bulk(b"XADD") + self._stream + bulk(b"*")
        self._evalsha = bulk(b"EVALSHA") + bulk(sha.encode()) + bulk(b"1") + self._stream

    def xadds(self, heads: Sequence[bytes], bodies: Sequence[bytes]) -> bytes:
        """One ``XADD stream * v .. id .. reply_to .. body ..`` per request, as one byte string."""
        xadd = self._xadd
        parts: list[bytes] = []
        for head, body in zip(heads, bodies, strict=True):
            parts += (xadd, head, body, CRLF)
        return b"".join(parts)

    def scripts(self, heads: Sequence[bytes], bodies: Sequence[bytes], max_backlog: int) -> tuple[bytes, int]:
        """Backlog script calls of up to ``SCRIPT_CHUNK`` requests each. Returns the bytes and the call count.

        ``EVALSHA sha 1 stream max n 8 <8 field args> 8 <8 field args> ...``: see
        :data:`producer.backpressure.ADD_SCRIPT`.
        """
        limit = bulk(b"%d" % max_backlog)
        parts: list[bytes] = []
        calls = 0
        for start in range(0, len(heads), SCRIPT_CHUNK):
            chunk = range(start, min(start + SCRIPT_CHUNK, len(heads)))
            parts += (b"*%d\r\n" % (6 + 9 * len(chunk)), self._evalsha, limit, bulk(b"%d" % len(chunk)))
            for i in chunk:
                parts += (b"$1\r\n8\r\n", heads[i], bodies[i], CRLF)
            calls += 1
        return b"".join(parts), calls


def chunks(count: int) -> list[range]:
    """The requests each backlog script call of a round carries (see :meth:`Wire.scripts`)."""
    return [range(s, min(s + SCRIPT_CHUNK, count)) for s in range(0, count, SCRIPT_CHUNK)]


def read_command(reply_key: bytes, last_id: bytes, count: int, block_ms: int, to_delete: Sequence[bytes]) -> bytes:
    """``XDEL`` of the consumed replies (when any), then ``XREAD COUNT .. BLOCK .. STREAMS key id``."""
    read = command(b"XREAD", b"COUNT", b"%d" % count, b"BLOCK", b"%d" % block_ms, b"STREAMS", reply_key, last_id)
    if not to_delete:
        return read
    return command(b"XDEL", reply_key, *to_delete) + read
