"""Every Redis key name of the protocol and its default, in one place (see docs/protocol.md and docs/operations.md).

Workers, the SDK, the CLI and the demo take key names from here; nothing else spells them.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "DEAD_LETTER_SUFFIX",
    "DEFAULT_GROUP",
    "DEFAULT_REPLY_PREFIX",
    "DEFAULT_STREAM",
    "HEALTH_INFIX",
    "LIMITS_SUFFIX",
    "MODELS_KEY",
    "MODEL_STREAM_PREFIX",
    "RESERVED_VERSIONS",
    "dead_letter_stream",
    "health_key",
    "health_pattern",
    "limits_key",
    "model_stream",
    "result_stream",
    "stream_keys",
]

DEFAULT_STREAM: Final = "infer:requests"
"""The request stream workers read and producers add to."""

DEFAULT_GROUP: Final = "workers"
"""The consumer group the workers of one request stream share."""

DEFAULT_REPLY_PREFIX: Final = "infer:reply:"
"""Prefix of every reply stream: a client's private stream is this prefix and a random hex id."""

DEAD_LETTER_SUFFIX: Final = ":dead"
LIMITS_SUFFIX: Final = ":limits"
HEALTH_INFIX: Final = ":worker:"


def health_key(stream: str, consumer: str) -> str:
    """Hash with a worker's status, refreshed with a TTL while it is alive."""
    return f"{stream}{HEALTH_INFIX}{consumer}"


def health_pattern(stream: str) -> str:
    """``SCAN MATCH`` pattern of every worker health key of a request stream."""
    return f"{stream}{HEALTH_INFIX}*"


def dead_letter_stream(stream: str) -> str:
    """Default dead-letter stream of a request stream (a worker may be configured with another)."""
    return f"{stream}{DEAD_LETTER_SUFFIX}"


def limits_key(stream: str) -> str:
    """Hash of producer-facing limits (``max_backlog``), written by workers, read by producers."""
    return f"{stream}{LIMITS_SUFFIX}"


def stream_keys(stream: str) -> list[str]:
    """The fixed keys that belong to a request stream: itself, its dead letters and its limits.

    Health keys are per worker: find them with :func:`health_pattern`.
    """
    return [stream, dead_letter_stream(stream), limits_key(stream)]


# ------------------------------------------------------------------------------- several models (issue 13)

MODEL_STREAM_PREFIX: Final = "infer:requests:"
"""Prefix of the per-model request streams: ``infer:requests:{<model>}`` (see :func:`model_stream`)."""

MODELS_KEY: Final = "infer:models"
"""Hash of served models: field = a request stream, value = JSON metadata of the model version served there."""

_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


RESERVED_VERSIONS: Final = frozenset({DEAD_LETTER_SUFFIX[1:], LIMITS_SUFFIX[1:], HEALTH_INFIX.strip(":")})
"""Versions that would name another key of the model's unversioned stream (its dead letters, limits, health keys)."""


def stream_suffix_owner(version: str) -> str:
    """What a reserved version would collide with, for error messages."""
    return f"infer:requests:{{model}}:{version} is a key of the unversioned stream"


def model_stream(model: str, version: str | None = None, prefix: str = MODEL_STREAM_PREFIX) -> str:
    """The request stream of a model, or of one version of it: ``infer:requests:{resnet}``,
    ``infer:requests:{resnet}:2``.

    The model name is a Redis Cluster hash tag, so every key derived from the stream (dead letters,
    limits, health keys) and every version of the model hash to the same slot: one model's keys live on
    one node, and scripts or transactions over them stay legal in a cluster.

    Args:
        model: letters, digits, ``.``, ``_``, ``-`` (first a letter or digit), at most 128 characters.
        version: the same characters, at most 64, and none of ``RESERVED_VERSIONS`` (``dead``, ``limits``,
            ``worker``: they would name the unversioned stream's own keys); None for the unversioned stream.
        prefix: the namespace before the tag.

    Raises:
        ValueError: the name or version has other characters (braces would break the hash tag, ``:``
            the key structure).
    """
    if not isinstance(model, str) or not _MODEL_NAME.fullmatch(model):
        raise ValueError(f"model name {model!r} must be 1-128 of [A-Za-z0-9._-], starting with a letter or digit")
    if version is not None and (not isinstance(version, str) or not _VERSION.fullmatch(version)):
        raise ValueError(f"model version {version!r} must be 1-64 of [A-Za-z0-9._-], starting with a letter or digit")
    if version in RESERVED_VERSIONS:
        raise ValueError(f"model version {version!r} is reserved: {stream_suffix_owner(version)}")
    stream = f"{prefix}{{{model}}}"
    return stream if version is None else f"{stream}:{version}"


RESULT_INFIX: Final = "result:"
_RESULT_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def result_stream(request_id: str, reply_prefix: str = DEFAULT_REPLY_PREFIX) -> str:
    """The reply stream of one request whose result is kept to be fetched later by its id:
    ``infer:reply:result:<id>``. An ordinary reply stream (the worker caps it and sets its TTL), named
    after the request so that any process that knows the id can read it.

    Raises:
        ValueError: the id is not 1-128 of ``[A-Za-z0-9._-]``.
    """
    if not isinstance(request_id, str) or not _RESULT_ID.fullmatch(request_id):
        raise ValueError(f"request id {request_id!r} must be 1-128 of [A-Za-z0-9._-] to name a result stream")
    return f"{reply_prefix}{RESULT_INFIX}{request_id}"
