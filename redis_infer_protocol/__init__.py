"""The wire protocol shared by the inference worker and its clients.

- :mod:`redis_infer_protocol.codec`: wire format v1 (request and reply entries, tensors, statuses).
- :mod:`redis_infer_protocol.keys`: every Redis key name and its default.
- :mod:`redis_infer_protocol.limits`: the bounds both sides enforce (sizes, id lengths, priority range).
- :mod:`redis_infer_protocol.validation`: the producer's pre-send checks, mirroring the decoder.

It imports only numpy and msgpack: a worker, a client or a conformance test can depend on it alone.
The specification is ``docs/protocol.md``.
"""

from __future__ import annotations

from redis_infer_protocol import keys
from redis_infer_protocol.codec import (
    DATATYPES,
    PROTOCOL_VERSION,
    CodecError,
    Reply,
    Request,
    Status,
    Timing,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)
from redis_infer_protocol.limits import DEFAULT_LIMITS, MAX_REPLY_TO_BYTES, MAX_REQUEST_ID_BYTES, Limits

__all__ = [
    "DATATYPES",
    "DEFAULT_LIMITS",
    "MAX_REPLY_TO_BYTES",
    "MAX_REQUEST_ID_BYTES",
    "PROTOCOL_VERSION",
    "CodecError",
    "Limits",
    "Reply",
    "Request",
    "Status",
    "Timing",
    "decode_reply",
    "decode_request",
    "encode_reply",
    "encode_request",
    "keys",
]
