"""The worker's view of its Redis link: up or down, and retrying through outages with jittered backoff.

Reader, publisher, recovery and heartbeat all report failures and successes here, so that there is one
answer to "is Redis up" (``/readyz``) and one backoff helper.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from worker.errors import RedisError, RedisUnavailable
from worker.observability import Metrics, Stats

log = logging.getLogger(__name__)

REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError,)


class Backoff:
    """Exponential backoff with full jitter, for Redis outages."""

    def __init__(self, base_s: float = 0.05, cap_s: float = 5.0) -> None:
        self.base_s, self.cap_s, self.attempt = base_s, cap_s, 0

    def next_delay(self) -> float:
        """The next delay in seconds: uniform in [0, min(cap, base * 2**attempt)]."""
        delay = random.uniform(0, min(self.cap_s, self.base_s * 2**self.attempt))
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """Start again from the base delay (after a success)."""
        self.attempt = 0


class RedisLink:
    """Whether Redis is up, since when it is down, and retries with backoff.

    Args:
        stats: counters to update (``redis_errors``).
        metrics: gauges and counters to update (``redis_up``, ``redis_errors``).
        health_ttl_s: after an outage, claims of other workers' entries wait this long.
        give_up: True when a failing operation should raise instead of retrying (stopping, past grace).
    """

    def __init__(self, stats: Stats, metrics: Metrics, health_ttl_s: float, give_up: Callable[[], bool]) -> None:
        self.stats, self.metrics = stats, metrics
        self.health_ttl_s = health_ttl_s
        self.give_up = give_up
        self.down_since: float | None = None
        self.claims_paused_until = 0.0

    def failed(self, exc: BaseException) -> None:
        """Record a failed Redis operation (an outage or a refusal)."""
        self.stats.redis_errors += 1
        if self.down_since is None:
            self.down_since = time.monotonic()
            self.metrics.redis_up.set(0)
            log.error("redis unavailable: %s", exc)

    def ok(self) -> None:
        """Record a Redis operation that worked."""
        if self.down_since is not None:
            log.warning("redis is back after %.1fs", time.monotonic() - self.down_since)
            self.down_since = None
            self.metrics.redis_up.set(1)
            # Other workers' health keys may have expired during the outage: give them one TTL to
            # write them again before taking their pending entries for orphans.
            self.claims_paused_until = time.monotonic() + self.health_ttl_s

    def may_claim(self) -> bool:
        """False while Redis is down (or refusing) and for one health TTL after it came back."""
        return self.down_since is None and time.monotonic() >= self.claims_paused_until

    async def with_retry(
        self, op: Any, *args: Any, refused: Callable[[Any], str | None] | None = None, writes: bool = True
    ) -> Any:
        """Run a Redis operation, retrying through outages with backoff and jitter until it works.

        ``refused``: given the result, the reason Redis refused part of the work (the caller retries
        that part), or None; a refusal keeps the worker marked unavailable (/readyz 503).
        ``writes``: False for an operation that may succeed without writing (a read-only replica answers
        it): its success does not mark Redis available again.
        Gives up only when ``give_up()`` says so, leaving the entries pending for others.
        """
        backoff = Backoff()
        while True:
            try:
                result = await op(*args)
            except REDIS_ERRORS as exc:  # outages and refusals alike; bad credentials raise ConfigError
                self.failed(exc)
                if self.give_up():
                    raise
                delay = backoff.next_delay()
                log.debug("redis operation failed (%s); retry in %.2fs", exc, delay)
                await asyncio.sleep(delay)
            else:
                reason = refused(result) if refused is not None else None
                if reason is not None:
                    self.failed(RedisUnavailable(f"writes refused: {reason}", reason=reason))
                elif writes:
                    self.ok()
                return result
