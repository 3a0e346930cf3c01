"""Request checks that mirror what :func:`~redis_infer_protocol.codec.decode_request` accepts.

A producer runs them before sending, so that a request a worker would reject as MALFORMED or TOO_LARGE
fails at once, with nothing sent. They raise :class:`~redis_infer_protocol.codec.CodecError` carrying the
status the worker would have answered.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from redis_infer_protocol.codec import CodecError, Status
from redis_infer_protocol.limits import MAX_REPLY_TO_BYTES, MAX_REQUEST_ID_BYTES, PRIORITY_MAX, PRIORITY_MIN, Limits


def check_request_id(request_id: Any) -> str:
    """A non-empty string of at most ``MAX_REQUEST_ID_BYTES`` UTF-8 bytes."""
    if not isinstance(request_id, str) or not request_id:
        raise CodecError(f"request_id must be a non-empty string, got {request_id!r}")
    if len(request_id.encode()) > MAX_REQUEST_ID_BYTES:
        raise CodecError(f"request_id is longer than {MAX_REQUEST_ID_BYTES} bytes", Status.TOO_LARGE)
    return request_id


def check_reply_prefix(prefix: str, id_chars: int) -> None:
    """A reply stream key (``prefix`` and ``id_chars`` more) must fit ``MAX_REPLY_TO_BYTES``.

    Raises:
        ValueError: If it does not.
    """
    if len(prefix.encode()) + id_chars > MAX_REPLY_TO_BYTES:
        raise ValueError(f"reply_prefix is too long: a reply_to key holds at most {MAX_REPLY_TO_BYTES} bytes")


def check_priority(priority: Any) -> int:
    """A signed 32-bit integer (not a bool)."""
    if not isinstance(priority, int) or isinstance(priority, bool) or not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise CodecError(f"priority must be a 32-bit integer, got {priority!r}")
    return priority


def check_inputs(inputs: Any, limits: Limits) -> None:
    """A mapping of at most ``max_tensors`` string names (the arrays are checked by the encoder)."""
    if not isinstance(inputs, Mapping):
        raise CodecError(f"inputs must be a mapping of name to array, got {type(inputs).__name__}")
    if len(inputs) > limits.max_tensors:
        raise CodecError(f"{len(inputs)} inputs exceed the limit of {limits.max_tensors}", Status.TOO_LARGE)
    for name in inputs:
        _check_name(name, "input name", limits)


def check_parameters(parameters: Mapping[str, Any] | None, limits: Limits) -> None:
    """None, or at most ``max_parameters`` entries of str (bounded), finite float, int or bool."""
    if parameters is None:
        return
    if not isinstance(parameters, Mapping) or len(parameters) > limits.max_parameters:
        raise CodecError(f"parameters must be a mapping of at most {limits.max_parameters} entries")
    for key, value in parameters.items():
        _check_name(key, "parameter name", limits)
        if isinstance(value, str):
            if len(value) > limits.max_string_bytes:
                raise CodecError(f"parameter {key!r} is longer than {limits.max_string_bytes} characters")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise CodecError(f"parameter {key!r} must be finite, got {value}")
        elif not isinstance(value, int):  # bool is an int
            raise CodecError(f"parameter {key!r} must be a str, int, float or bool, got {type(value).__name__}")


def check_outputs(outputs: Sequence[str] | None, limits: Limits) -> None:
    """None, or a sequence (not a string) of at most ``max_tensors`` bounded names."""
    if outputs is None:
        return
    if isinstance(outputs, str | bytes) or len(outputs) > limits.max_tensors:
        raise CodecError(f"outputs must be a sequence of at most {limits.max_tensors} names")
    for name in outputs:
        _check_name(name, "output name", limits)


def check_body_size(body: bytes, limits: Limits) -> None:
    """An encoded body of at most ``max_body_bytes``."""
    if len(body) > limits.max_body_bytes:
        raise CodecError(
            f"request body of {len(body)} bytes exceeds the limit of {limits.max_body_bytes}", Status.TOO_LARGE
        )


def _check_name(name: Any, what: str, limits: Limits) -> None:
    if not isinstance(name, str):
        raise CodecError(f"{what} must be a string, got {type(name).__name__}")
    if len(name) > limits.max_name_bytes:
        raise CodecError(f"{what} {name[:32]!r}... is longer than {limits.max_name_bytes} characters", Status.TOO_LARGE)
