"""Sending a batch of prepared requests, as a sans-IO state machine both clients drive.

The shell asks :meth:`Submission.next_action` what to do, does it (one Redis round trip, or a sleep) and
reports back with :meth:`Submission.done` or :meth:`Submission.failed`, until the next action is None::

    while (action := submission.next_action()) is not None:
        if isinstance(action, Sleep):
            time.sleep(action.seconds)          # or: await asyncio.sleep(...)
            continue
        try:
            submission.done(action, run(action))  # run: HGET / SCRIPT LOAD / one packed round
        except Exception as exc:
            submission.failed(exc)            # raises when it gives up

The machine decides everything else: when to re-read the published backlog limit, plain XADDs or the
backlog script (by EVALSHA, one call per chunk of a round, loading it on NOSCRIPT), which requests a round
carries, busy retries with backoff until each request's deadline, re-sends after connection errors, and
which futures fail.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic

from redis.exceptions import NoScriptError

from producer.backpressure import ADD_SCRIPT, ADD_SCRIPT_SHA, MAX_BACKLOG_FIELD, Backpressure
from producer.core import ClientCore, F, PreparedRequest, backoff_s, fail, is_transient
from producer.wire import chunks


@dataclass(frozen=True, slots=True)
class FetchLimits:
    """``HGET key field``: the published backlog limit. Report its value."""

    key: str
    field: str = MAX_BACKLOG_FIELD


@dataclass(frozen=True, slots=True)
class LoadScript:
    """``SCRIPT LOAD script``: the backlog script is not in the server's cache."""

    script: str = ADD_SCRIPT


@dataclass(frozen=True, slots=True)
class SendRound:
    """One round trip of adds to ``stream``, packed in bulk (:mod:`producer.wire`).

    With ``max_backlog`` 0: one ``XADD`` per request; report one result per request. Otherwise one backlog
    script call (``EVALSHA sha``) per chunk of requests (``wire.chunks``); report one result per call. Errors
    are reported as results, not raised.
    """

    stream: str
    requests: list[PreparedRequest]
    max_backlog: int
    sha: str = ADD_SCRIPT_SHA

    @property
    def scripted(self) -> bool:
        return self.max_backlog > 0

    @property
    def commands(self) -> int:
        """How many replies the round's bytes get."""
        return len(chunks(len(self.requests))) if self.scripted else len(self.requests)


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait this long before asking for the next action."""

    seconds: float


Action = FetchLimits | LoadScript | SendRound | Sleep


class Submission(Generic[F]):
    """The send of ``prepared`` requests, registered with ``core`` under ``futures``.

    Args:
        core: The client core the requests are registered with.
        backpressure: The stream's published limit and the busy policy.
        prepared: The requests, in order.
        futures: Their futures, in the same order.
        raise_errors: A single ``submit``: a failed add raises from :meth:`failed` / :meth:`next_action`
            instead of failing the future (``submit_many`` fails each request's future alone).
    """

    def __init__(
        self,
        core: ClientCore[F],
        backpressure: Backpressure,
        prepared: Sequence[PreparedRequest],
        futures: Sequence[F],
        *,
        raise_errors: bool = False,
    ) -> None:
        self._core = core
        self._bp = backpressure
        self._prepared = prepared
        self._futures = futures
        self._raise = raise_errors
        self._todo = list(range(len(prepared)))
        self._busy_attempts = 0
        self._failures = 0  # connection errors so far, retried up to ``config.retries`` times
        self._wait: float | None = None
        self._need_script = False
        self._error: BaseException | None = None

    def next_action(self) -> Action | None:
        """What to do next; None when every request was sent or failed.

        Raises:
            Exception: In ``raise_errors`` mode, the error that failed the request (``Busy``, a Redis error).
        """
        if self._error is not None:
            raise self._error
        if not self._todo:
            return None
        if self._wait is not None:
            wait, self._wait = self._wait, None
            return Sleep(wait)
        if self._bp.stale:
            return FetchLimits(self._bp.limits_key)
        if self._need_script:
            return LoadScript()
        requests = [self._prepared[i] for i in self._todo]
        return SendRound(self._core.config.stream, requests, self._bp.max_backlog)

    def done(self, action: Action, result: Any) -> None:
        """Report the result of ``action``: the HGET's value, or the pipeline's per-command results."""
        if isinstance(action, FetchLimits):
            self._bp.update(result)
        elif isinstance(action, LoadScript):
            self._need_script = False
        elif isinstance(action, SendRound):
            self._settle(self._per_request(action, list(result)))

    def failed(self, error: Exception) -> None:
        """Report that an action raised. Schedules a re-send after a connection error, else re-raises it."""
        if is_transient(error) and self._failures < self._core.config.retries:
            self._wait = backoff_s(self._failures)
            self._failures += 1
            return
        raise error

    def abandon(self) -> None:
        """Forget the requests not sent yet (the shell gave up: an error, a cancel); their futures are cancelled."""
        for i in self._todo:
            self._core.discard(self._prepared[i].request_id)
            self._futures[i].cancel()
        self._todo = []

    def fail_unsent(self, error: BaseException) -> None:
        """Fail the requests not sent yet with ``error`` (a shell that sends for others gave up on a round)."""
        for i in self._todo:
            self._core.discard(self._prepared[i].request_id)
            fail(self._futures[i], error)
        self._todo = []

    def _per_request(self, action: SendRound, results: list[Any]) -> list[Any]:
        """One result per request of the round: an entry id, or the error it got."""
        if not action.scripted:
            return results
        out: list[Any] = []
        for chunk, result in zip(chunks(len(action.requests)), results, strict=True):
            if isinstance(result, Exception):  # the whole call failed: NOSCRIPT, a wrong type, OOM...
                out += [result] * len(chunk)
                continue
            held, ids = int(result[0]), list(result[1])
            refused = self._bp.refused(held)
            out += ids + [refused] * (len(chunk) - len(ids))
        return out

    def _settle(self, results: list[Any]) -> None:
        # A flushed script cache fails the calls of the round that came after the flush: those requests are
        # sent again once the script is loaded, the others are settled now (so none is added twice).
        noscript = {i for i, r in zip(self._todo, results, strict=True) if isinstance(r, NoScriptError)}
        busy = [i for i, r in zip(self._todo, results, strict=True) if self._bp.is_busy(r)]
        deadlines = (d for i in busy if (d := self._prepared[i].deadline) is not None)
        delay = self._bp.retry_delay(self._busy_attempts, min(deadlines, default=None)) if busy else None
        retry = set(busy) if delay is not None else set()
        outcome = dict(zip(self._todo, results, strict=True))
        for i in self._todo:
            if i in retry or i in noscript:
                continue
            error = self._bp.busy(self._prepared[i].request_id, outcome[i]) if i in busy else outcome[i]
            if isinstance(error, Exception):
                self._fail(i, error)
        self._todo = sorted(retry | noscript)
        self._need_script = bool(noscript)
        if busy:
            self._busy_attempts += 1
        self._wait = delay

    def _fail(self, index: int, error: Exception) -> None:
        self._core.discard(self._prepared[index].request_id)
        if self._raise:
            self._error = error
        else:
            fail(self._futures[index], error)
