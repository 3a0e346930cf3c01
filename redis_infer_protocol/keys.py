"""Every Redis key name of the protocol and its default, in one place (see docs/protocol.md and docs/operations.md).

Workers, the SDK, the CLI and the demo take key names from here; nothing else spells them.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "DEAD_LETTER_SUFFIX",
    "DEFAULT_GROUP",
    "DEFAULT_REPLY_PREFIX",
    "DEFAULT_STREAM",
    "HEALTH_INFIX",
    "LIMITS_SUFFIX",
    "dead_letter_stream",
    "health_key",
    "health_pattern",
    "limits_key",
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
