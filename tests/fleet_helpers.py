"""Test helpers for several models per process: write a model repository, serve it in a thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from worker.config import Settings, load_settings
from worker.fleet import Fleet, serve_repository
from worker.repository import load_repository
from worker.testing import HarnessError


def write_model(root: Path, folder: str, config: str, hook: str | None = None) -> Path:
    """Write ``root/folder/config.toml`` (and ``hook.py`` when given); returns the folder."""
    path = root / folder
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.toml").write_text(config, encoding="utf-8")
    if hook is not None:
        (path / "hook.py").write_text(hook, encoding="utf-8")
    return path


class FleetThread:
    """A real fleet (``worker.fleet.serve_repository``) in a background thread with its own event loop.

    Args:
        url: Redis URL.
        repository: the model repository folder.
        only: serve only these models.
        **overrides: settings, as for ``load_settings`` (default ``streams.block_ms`` 100).
    """

    def __init__(self, url: str, repository: Path, only: Sequence[str] | None = None, **overrides: Any) -> None:
        overrides.setdefault("redis", {"url": url})
        overrides.setdefault("streams", {"block_ms": 100})
        self.settings: Settings = load_settings(**overrides)
        self.entries = load_repository(repository, only)
        self.url = url
        self.fleet: Fleet | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        def ready(fleet: Fleet) -> None:
            self.fleet = fleet
            self.loop = asyncio.get_running_loop()
            self._ready.set()

        try:
            asyncio.run(serve_repository(self.settings, self.url, self.entries, install_signals=False, on_ready=ready))
        except BaseException as exc:  # surfaced by start() or stop()
            self.error = exc
            self._ready.set()

    @property
    def streams(self) -> Mapping[str, str]:
        """Model name -> request stream."""
        return {entry.name: entry.stream for entry in self.entries}

    def start(self, timeout_s: float = 60.0) -> FleetThread:
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise HarnessError(f"fleet not ready within {timeout_s:g} s")
        if self.error:
            raise self.error
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.loop is not None and self.fleet is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.fleet.stop)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise HarnessError(f"fleet did not stop within {timeout_s:g} s")
        if self.error:
            raise self.error

    def __enter__(self) -> FleetThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
