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
