"""Producer-side backpressure: XADD only while the request stream's backlog is under the published limit.

Workers publish ``max_backlog`` in the hash ``<stream>:limits`` (``keys.limits_key``) and trim
acknowledged entries, so ``XLEN`` of the request stream is the backlog. With a limit set, a client adds
requests through ``ADD_SCRIPT`` (by ``EVALSHA``), which checks and adds atomically, once per chunk of a
send round (not once per request); a request that does not fit gets an error starting ``BACKLOG``. The
client then raises :class:`~producer.errors.Busy`, or waits and retries until the request's deadline
(``on_busy="wait"``). Any language can do the same with ``EVAL``.
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Final, Literal

from redis.exceptions import ResponseError

from producer.core import backoff_s
from producer.errors import Busy
from redis_infer_protocol import keys
from redis_infer_protocol.codec import Status

# KEYS[1] request stream; ARGV[1] max backlog (0: none); ARGV[2] entry count n; then for each entry: k, the
# number of its field/value arguments, and those k arguments. One call adds a whole chunk of a send round, in
# order, while XLEN stays under the limit, and returns {XLEN after, {ids of the entries added}}: the entries past
# the last id were refused (BUSY). It touches only KEYS[1], so under Redis Cluster it runs on the stream's slot.
ADD_SCRIPT: Final = """
local max = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local len = redis.call('XLEN', KEYS[1])
local ids = {}
local i = 3
for e = 1, n do
  if max > 0 and len >= max then break end
  local k = tonumber(ARGV[i])
  ids[e] = redis.call('XADD', KEYS[1], '*', unpack(ARGV, i + 1, i + k))
  len = len + 1
  i = i + k + 1
end
return {len, ids}
"""
ADD_SCRIPT_SHA: Final = hashlib.sha1(ADD_SCRIPT.encode()).hexdigest()
MAX_BACKLOG_FIELD: Final = "max_backlog"
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

    def refused(self, held: int) -> ResponseError:
        """The error a request the backlog script did not add gets (``held``: XLEN when it stopped)."""
        return ResponseError(f"BACKLOG {self.stream} holds {held} entries, the limit is {self.max_backlog}")

    @staticmethod
    def is_busy(result: object) -> bool:
        return isinstance(result, ResponseError) and str(result).startswith("BACKLOG")

    def busy(self, request_id: str, cause: object) -> Busy:
        return Busy(f"BUSY: {cause}", status=Status.BUSY, request_id=request_id)

    def retry_delay(self, attempt: int, deadline: float | None) -> float | None:
        """Seconds to wait before retrying a busy request, or None to give up (raise mode, or deadline reached).

        The last wait ends at the deadline, so a waiting request gets one more try right then.
        """
        if self.on_busy == "raise":
            return None
        delay = backoff_s(attempt, first_s=WAIT_FIRST_S, max_s=WAIT_MAX_S)
        if deadline is None:
            return delay
        remaining = deadline - time.monotonic()
        return None if remaining <= 0 else min(delay, remaining)
