"""Process bootstrap: settings -> Redis (or a private redis-server) -> engine -> worker, with signals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

from worker.catalog import model_metadata, publish_forever
from worker.config import Settings
from worker.embedded import EmbeddedRedis
from worker.engines.base import Engine
from worker.engines.factory import load_engine
from worker.service import Worker
from worker.transport import Transport, connect
from worker.warmup import warm_up_before_serving

log = logging.getLogger(__name__)


@contextlib.contextmanager
def redis_url(settings: Settings) -> Iterator[str]:
    """The configured Redis URL, or a private redis-server's for as long as the worker runs."""
    if settings.redis.url:
        yield settings.redis.url
        return
    with EmbeddedRedis() as server:
        log.warning("WORKER_REDIS__URL is not set: started a private redis-server at %s", server.url)
        yield server.url


async def open_worker(settings: Settings, url: str, engine: Engine) -> tuple[Worker, Any]:
    """Wire one worker: a Redis client and transport for ``settings.stream`` around ``engine``.

    Returns the worker and its Redis client (close it after the worker stopped). On failure the engine
    and the client are closed.
    """
    client = connect(settings.redis, block_ms=settings.streams.block_ms, url=url)
    transport = Transport(
        client,
        stream=settings.stream,
        group=settings.group,
        consumer=settings.consumer,
        dead_letter_stream=settings.dead_letter_stream,
        reply_maxlen=settings.streams.reply_maxlen,
        reply_ttl_s=settings.streams.reply_ttl_s,
    )
    try:
        worker = Worker(settings, engine, transport)
    except BaseException:
        engine.close()
        await client.aclose()
        raise
    return worker, client


@contextlib.contextmanager
def signals_stop(stop: Callable[[], None], grace_s: float, *, install: bool = True) -> Iterator[None]:
    """While inside: SIGTERM/SIGINT call ``stop`` (drain); a second signal forces an immediate exit."""
    loop = asyncio.get_running_loop()
    count = 0

    def on_signal(signum: int) -> None:
        nonlocal count
        count += 1
        if count == 1:
            log.info("received %s: draining (grace %.1fs; send again to force exit)",
                     signal.Signals(signum).name, grace_s)  # fmt: skip
            stop()
        else:
            log.warning("second signal: exiting now; unacknowledged entries stay pending for other workers")
            os._exit(128 + signum)

    handled = (signal.SIGTERM, signal.SIGINT) if install else ()
    for signum in handled:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        yield
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)


async def serve(
    settings: Settings,
    url: str,
    engine: Engine | None = None,
    *,
    install_signals: bool = True,
    on_ready: Callable[[Worker], None] | None = None,
) -> None:
    """Run one worker until SIGTERM/SIGINT (or ``worker.stop()``). A second signal forces an immediate exit.

    Args:
        settings: validated settings.
        url: the Redis URL.
        engine: an engine already loaded (tests, benchmarks); default: load the configured model.
        install_signals: handle SIGTERM/SIGINT (only possible in the main thread).
        on_ready: called with the worker before it starts serving (tests use it to stop the worker).
    """
    warm_by_default = engine is None  # warm-up before ready (worker/warmup.py)
    if engine is None:
        engine = await asyncio.to_thread(load_engine, settings)
    await warm_up_before_serving(settings, engine, by_default=warm_by_default)
    worker, client = await open_worker(settings, url, engine)
    # discovery (protocol §17): the one model is listed like a repository's, refreshed every health TTL
    document = model_metadata(settings, engine.info, instances=len(engine.slots), hook=None)
    published = asyncio.Event()  # set: stop publishing
    catalog = asyncio.create_task(publish_forever(client, [document], settings.health_ttl_s, published))
    if on_ready is not None:
        on_ready(worker)
    try:
        with signals_stop(worker.stop, settings.shutdown_grace_s, install=install_signals):
            await worker.run()
    finally:
        published.set()
        await asyncio.gather(catalog, return_exceptions=True)
        engine.close()
        await client.aclose()
        log.info("worker %s stopped: %s", settings.consumer, worker.stats)
