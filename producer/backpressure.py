"""Producer-side backpressure: XADD only while the request stream's backlog is under the published limit.

Workers publish ``max_backlog`` in the hash ``<stream>:limits`` (``keys.limits_key``) and trim
acknowledged entries, so ``XLEN`` of the request stream is the backlog. With a limit set, a client adds
requests through ``ADD_SCRIPT``, which checks and adds atomically; a full stream answers with an error
starting ``BACKLOG``. The client then raises :class:`~producer.errors.Busy`, or waits and retries until
the request's deadline (``on_busy="wait"``). Any language can do the same with ``EVAL``.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal

from redis.exceptions import ResponseError

from producer import keys
from producer.codec import Status
from producer.errors import Busy

if TYPE_CHECKING:
    from producer._common import ClientCore, PreparedRequest

# KEYS[1] request stream; ARGV[1] max backlog; ARGV[2..] field, value, field, value, ...
ADD_SCRIPT: Final = """
local max = tonumber(ARGV[1])
local len = redis.call('XLEN', KEYS[1])
if max > 0 and len >= max then
  return redis.error_reply('BACKLOG ' .. KEYS[1] .. ' holds ' .. len .. ' entries, the limit is ' .. max)
end
return redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
"""
REFRESH_S: Final = 5.0  # how often the published limit is re-read
WAIT_FIRST_S: Final = 0.02
WAIT_MAX_S: Final = 1.0

OnBusy = Literal["raise", "wait"]


class Backpressure:
    """The published limit of one request stream, and what to do when it is reached."""

    def __init__(self, stream: str, on_busy: OnBusy) -> None:
        if on_busy not in ("raise", "wait"):
            raise ValueError(f"on_busy must be 'raise' or 'wait', got {on_busy!r}")
        self.stream = stream
        self.limits_key = keys.limits_key(stream)
        self.on_busy = on_busy
        self.max_backlog = 0
        self._fetched_at = -math.inf

    @property
    def stale(self) -> bool:
        return time.monotonic() - self._fetched_at > REFRESH_S

    def update(self, raw: bytes | str | None) -> None:
        """Take the value of ``HGET <limits key> max_backlog`` (None or garbage: no limit)."""
        try:
            self.max_backlog = max(0, int(raw or 0))
        except ValueError:
            self.max_backlog = 0
        self._fetched_at = time.monotonic()

    def script_args(self, fields: Mapping[str, bytes]) -> list[Any]:
        args: list[Any] = [self.max_backlog]
        for name, value in fields.items():
            args += [name, value]
        return args

    @staticmethod
    def is_busy(result: object) -> bool:
        return isinstance(result, ResponseError) and str(result).startswith("BACKLOG")

    def busy(self, request_id: str, cause: object) -> Busy:
        return Busy(f"BUSY: {cause}", status=Status.BUSY, request_id=request_id)

    def settle(
        self,
        prepared: Sequence[PreparedRequest],
        todo: list[int],
        results: Sequence[Any],
        attempt: int,
        core: ClientCore[Any],
        futures: Sequence[Any],
    ) -> tuple[list[int], float | None]:
        """Apply one pipelined round of adds: failed sends fail their futures, busy ones are retried.

        Returns the indices still to send and the delay before the next round (None: nothing to retry).
        """
        busy = [i for i, result in zip(todo, results, strict=True) if self.is_busy(result)]
        delay = self.retry_delay(attempt, min((d for i in busy if (d := prepared[i].deadline)), default=None))
        retry = set(busy) if delay is not None else set()
        done = [i for i in todo if i not in retry]
        outcome = {i: r for i, r in zip(todo, results, strict=True)}
        core.sent(
            [prepared[i] for i in done],
            [futures[i] for i in done],
            [self.busy(prepared[i].request_id, outcome[i]) if i in busy else outcome[i] for i in done],
        )
        return sorted(retry), delay

    def retry_delay(self, attempt: int, deadline: float | None) -> float | None:
        """Seconds to wait before retrying a busy request, or None to give up (raise mode, or deadline reached).

        The last wait ends at the deadline, so a waiting request gets one more try right then.
        """
        if self.on_busy == "raise":
            return None
        delay = random.uniform(0, min(WAIT_MAX_S, WAIT_FIRST_S * 2**attempt))
        if deadline is None:
            return delay
        remaining = deadline - time.monotonic()
        return None if remaining <= 0 else min(delay, remaining)
