"""The one error the demo and the end-to-end benchmark stop on."""

from __future__ import annotations


class DemoError(RuntimeError):
    """The demo or benchmark cannot go on (a warm-up request failed...)."""
