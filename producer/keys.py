"""Every Redis key name of the protocol, in one place (see docs/protocol.md and docs/operations.md)."""

from __future__ import annotations


def health_key(stream: str, consumer: str) -> str:
    """Hash with a worker's status, refreshed with a TTL while it is alive."""
    return f"{stream}:worker:{consumer}"


def health_pattern(stream: str) -> str:
    return f"{stream}:worker:*"


def dead_letter_stream(stream: str) -> str:
    return f"{stream}:dead"


def limits_key(stream: str) -> str:
    """Hash of producer-facing limits (``max_backlog``), written by workers, read by producers."""
    return f"{stream}:limits"
