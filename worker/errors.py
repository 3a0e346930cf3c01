"""The worker's exception hierarchy."""

from __future__ import annotations


class WorkerError(Exception):
    """Base of every error the worker raises on purpose."""


class ConfigError(WorkerError):
    """The configuration cannot work (bad value, missing file, missing optional dependency)."""


class ModelError(WorkerError):
    """The model cannot be loaded or does not fit what the worker needs."""


class EngineError(WorkerError):
    """An engine failed while running a batch. ``fatal`` means the device is unusable: the worker
    must stop so the orchestrator restarts it."""

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


class RedisError(WorkerError):
    """Redis did not do what was asked. The transport turns every redis-py error into one of these, so
    no other module needs to know redis-py's exception types or parse Redis's error strings.

    Attributes:
        reason: a short tag: ``"connection"`` for a lost or timed-out connection, else the error code
            Redis sent (``"OOM"``, ``"READONLY"``, ``"MISCONF"``, ``"BUSY"``, ``"NOPERM"``...).
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class RedisUnavailable(RedisError):
    """An outage or a passing refusal (connection lost, out of memory, read-only replica, failed
    background save, missing replicas, a script running, loading): back off and try again."""


class NoGroup(RedisError):
    """The consumer group (or the stream) is gone: create it again."""


class RedisRefused(RedisError):
    """Redis refused the command for good (wrong type, no permission, a protocol limit): retrying the
    same write cannot help."""
