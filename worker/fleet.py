"""Several models in one process: one :class:`~worker.service.Worker` per model, in one event loop.

Each model has its own request stream, consumer group, batcher, execution slots, Redis connection pool
and reader, so a burst on one model fills only that model's batcher and slots: another model's requests
are read and run by its own loops (the structural answer to "one model's burst does not starve
another's"). The fleet starts them together, publishes their metadata for discovery (worker/catalog.py),
and stops them together: a signal drains every model; a worker that dies stops the others, and the
process exits non-zero so the orchestrator restarts it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from worker.catalog import model_metadata, publish_forever
from worker.config import Settings
from worker.engines.base import Engine
from worker.repository import ModelEntry, load_model, model_settings
from worker.runner import open_worker, signals_stop
from worker.service import Worker
from worker.transport import connect

log = logging.getLogger(__name__)

__all__ = ["Fleet", "Member", "serve_repository"]


@dataclass(slots=True)
class Member:
    """One served model: its entry, settings, engine, worker and Redis client."""

    entry: ModelEntry
    settings: Settings
    engine: Engine
    worker: Worker
    client: Any


class Fleet:
    """The workers of one process. ``await run()`` until ``stop()``."""

    def __init__(self, members: Sequence[Member]) -> None:
        self.members = list(members)
        self._stop = asyncio.Event()
        if self.members:  # only the first model serves HTTP: its /metrics carries every model's series
            self.members[0].worker.metrics.serve_also(m.worker.metrics for m in self.members[1:])

    @property
    def workers(self) -> dict[str, Worker]:
        """The workers by request stream."""
        return {m.settings.stream: m.worker for m in self.members}

    def stop(self) -> None:
        """Drain and stop every model's worker. Idempotent."""
        self._stop.set()
        for member in self.members:
            member.worker.stop()

    async def run(self, settings: Settings, url: str) -> None:
        """Serve every model until ``stop()``; re-raises the first worker's fatal error after all drained."""
        catalog = connect(settings.redis, block_ms=settings.streams.block_ms, url=url)
        docs = [
            model_metadata(m.settings, m.engine.info, instances=len(m.engine.slots),
                           hook=m.entry.config.hook.class_ if m.entry.config.hook else None)
            for m in self.members
        ]  # fmt: skip
        publisher = asyncio.create_task(publish_forever(catalog, docs, settings.health_ttl_s, self._stop))
        tasks = [asyncio.create_task(m.worker.run(), name=f"worker {m.entry.name}") for m in self.members]
        for task in tasks:
            task.add_done_callback(lambda _task: self.stop())  # one ends (fatal error): all drain
        try:
            results = await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self.stop()
            await asyncio.gather(publisher, return_exceptions=True)
            await catalog.aclose()
        for result in results:
            if isinstance(result, BaseException):
                raise result


async def _open_members(settings: Settings, url: str, entries: Sequence[ModelEntry]) -> list[Member]:
    members: list[Member] = []
    try:
        for index, entry in enumerate(entries):
            own = model_settings(settings, entry, first=index == 0)
            engine = await asyncio.to_thread(load_model, entry, own)
            worker, client = await open_worker(own, url, engine)
            members.append(Member(entry, own, engine, worker, client))
            hook = entry.config.hook.class_ if entry.config.hook else None
            log.info("model %r (version %s): stream %s, %d slots, hook %s",
                     entry.name, entry.config.version, own.stream, len(engine.slots), hook)  # fmt: skip
    except BaseException:
        await _close(members)
        raise
    return members


async def _close(members: Sequence[Member]) -> None:
    for member in members:
        member.engine.close()
        await member.client.aclose()


async def serve_repository(
    settings: Settings,
    url: str,
    entries: Sequence[ModelEntry],
    *,
    install_signals: bool = True,
    on_ready: Callable[[Fleet], None] | None = None,
) -> None:
    """Serve the models of a repository from this process until SIGTERM/SIGINT (or ``fleet.stop()``).

    Args:
        settings: the process's settings (each model's are derived with ``model_settings``).
        url: the Redis URL.
        entries: the validated repository entries to serve.
        install_signals: handle SIGTERM/SIGINT (only possible in the main thread).
        on_ready: called with the fleet before it starts serving.
    """
    fleet = Fleet(await _open_members(settings, url, entries))
    if on_ready is not None:
        on_ready(fleet)
    try:
        with signals_stop(fleet.stop, settings.shutdown_grace_s, install=install_signals):
            await fleet.run(settings, url)
    finally:
        await _close(fleet.members)
        for member in fleet.members:
            log.info("model %r stopped: %s", member.entry.name, member.worker.stats)
