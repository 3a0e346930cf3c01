"""Signals become ``KeyboardInterrupt``, so the demo's clean-up runs however it is stopped."""

from __future__ import annotations

import signal
from typing import Any


def interrupt_on_signals() -> None:
    """Turn SIGTERM (and SIGINT, even where a shell started us with it ignored) into KeyboardInterrupt,
    so that ``finally`` blocks stop the worker processes and Redis instead of orphaning them."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
