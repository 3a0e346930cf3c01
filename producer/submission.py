"""Sending a batch of prepared requests, as a sans-IO state machine both clients drive.

The shell asks :meth:`Submission.next_action` what to do, does it (one Redis round trip, or a sleep) and
reports back with :meth:`Submission.done` or :meth:`Submission.failed`, until the next action is None::

    while (action := submission.next_action()) is not None:
        if isinstance(action, Sleep):
            time.sleep(action.seconds)          # or: await asyncio.sleep(...)
            continue
        try:
            submission.done(action, run(action))  # run: HGET / SCRIPT LOAD / one pipeline
        except Exception as exc:
            submission.failed(exc)            # raises when it gives up

The machine decides everything else: when to re-read the published backlog limit, plain XADD or the
backlog script (by EVALSHA, loading it once on NOSCRIPT), which requests a round carries, busy retries
with backoff until each request's deadline, re-sends after connection errors, and which futures fail.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic

from redis.exceptions import NoScriptError

from producer.backpressure import ADD_SCRIPT, ADD_SCRIPT_SHA, MAX_BACKLOG_FIELD, Backpressure
from producer.core import ClientCore, F, PreparedRequest, backoff_s, fail, is_transient


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
class AddEntry:
    """One command of a send round: ``XADD stream * fields`` or ``EVALSHA sha 1 stream *script_args``."""

    fields: dict[str, bytes]
    script_args: list[Any] | None  # None: plain XADD


@dataclass(frozen=True, slots=True)
class SendRound:
    """One pipeline (no transaction) of adds to ``stream``. Report its per-command results, errors included."""

    stream: str
    adds: list[AddEntry]
    sha: str = ADD_SCRIPT_SHA


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
        limited = self._bp.max_backlog > 0
        adds = [
            AddEntry(p.fields, self._bp.script_args(p.fields) if limited else None)
            for p in (self._prepared[i] for i in self._todo)
        ]
        return SendRound(self._core.config.stream, adds)

    def done(self, action: Action, result: Any) -> None:
        """Report the result of ``action``: the HGET's value, or the pipeline's per-command results."""
        if isinstance(action, FetchLimits):
            self._bp.update(result)
        elif isinstance(action, LoadScript):
            self._need_script = False
        elif isinstance(action, SendRound):
            self._settle(list(result))

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

    def _settle(self, results: list[Any]) -> None:
        if any(isinstance(r, NoScriptError) for r in results):
            self._need_script = True  # the script cache was flushed: load it and send the round again
            return
        busy = [i for i, r in zip(self._todo, results, strict=True) if self._bp.is_busy(r)]
        deadlines = (d for i in busy if (d := self._prepared[i].deadline) is not None)
        delay = self._bp.retry_delay(self._busy_attempts, min(deadlines, default=None)) if busy else None
        retry = set(busy) if delay is not None else set()
        outcome = dict(zip(self._todo, results, strict=True))
        for i in self._todo:
            if i in retry:
                continue
            error = self._bp.busy(self._prepared[i].request_id, outcome[i]) if i in busy else outcome[i]
            if isinstance(error, Exception):
                self._fail(i, error)
        self._todo = sorted(retry)
        self._busy_attempts += 1
        self._wait = delay

    def _fail(self, index: int, error: Exception) -> None:
        self._core.discard(self._prepared[index].request_id)
        if self._raise:
            self._error = error
        else:
            fail(self._futures[index], error)
