"""Intake: a raw stream entry becomes a validated ``WorkItem`` or a ``Rejection``.

Everything a peer controls is checked here, before the batcher sees it: the wire format (codec),
the model name and version, every input's name, datatype and shape against the model's specs, the
requested outputs, and the deadline. A rejection carries the status and message for its reply.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from redis_infer_protocol.batchcodec import RequestDecoder
from redis_infer_protocol.codec import (
    CodecError,
    Limits,
    Request,
    Status,
    Timing,
    datatype_of,
    decode_request,
    peek_envelope,
    request_id_problem,
)
from worker.engines.base import ModelInfo

Signature = tuple[tuple[int, ...], ...]  # per-sample shape of each model input, in model order


@dataclass(slots=True)
class WorkItem:
    """A request accepted for batching."""

    entry_id: str
    request: Request
    rows: int
    signature: Signature
    timing: Timing
    deadline_ns: int | None  # wall clock; None: no deadline
    fields: Mapping[Any, Any]  # the raw entry, for the dead-letter stream if it fails


@dataclass(slots=True)
class Rejection:
    """An entry answered with an error without being computed."""

    entry_id: str
    request_id: str | None
    reply_to: str | None
    status: Status
    error: str
    timing: Timing
    fields: Mapping[Any, Any]  # kept for the dead-letter stream
    dead_letter: bool = False  # also dead-letter it (always when there is nobody to reply to)


MAX_REPLY_VERDICTS = 4096  # reply streams whose verdict is remembered; past it the memory is cleared

# How far an entry id's time may run ahead of the server's clock (as estimated at read) before it is
# not believed: a producer may XADD with an explicit id, and a future one would push its deadline away.
FUTURE_ID_TOLERANCE_NS = 1_000_000_000


def entry_time_ns(entry_id: str, server_now_ns: int | None = None) -> int:
    """Wall-clock ns of a stream entry id (its millisecond part, set by the Redis server at XADD, or by a
    producer that gives an explicit id). Given ``server_now_ns``, a time more than a second ahead of it
    is replaced by it: entry ids are trusted only up to the server's clock."""
    try:
        value = int(entry_id.split("-", 1)[0]) * 1_000_000
    except ValueError:
        return 0
    if server_now_ns is not None and value > server_now_ns + FUTURE_ID_TOLERANCE_NS:
        return server_now_ns
    return value


class Intake:
    """Decodes and validates entries for one model.

    Args:
        info: the served model.
        version: the served model version (requests naming another are refused), or None.
        default_timeout_ms: deadline for requests that set none; a request may only shorten it.
        limits: decode limits.
        forbidden_reply_to: stream keys a reply must never go to (the request and dead-letter streams).
        reply_prefix: replies go only to keys that start with it (or with one of them, a tenant's prefix
            each) and are longer than it, so a request cannot make the worker write to (and set a TTL
            on) an arbitrary key.
        max_rows: the most rows one request may hold (the batch size); default the engine's maximum.
    """

    def __init__(
        self,
        info: ModelInfo,
        *,
        version: str | None = None,
        default_timeout_ms: int | None = None,
        limits: Limits | None = None,
        forbidden_reply_to: frozenset[str] = frozenset(),
        reply_prefix: str | tuple[str, ...] = "",
        max_rows: int | None = None,
    ) -> None:
        self.info = info
        self.version = version
        self.default_timeout_ms = default_timeout_ms
        self.limits = limits or Limits()
        self.forbidden_reply_to = forbidden_reply_to
        self.reply_prefixes = (reply_prefix,) if isinstance(reply_prefix, str) else reply_prefix
        self.max_rows = min(info.max_batch_size, max_rows or info.max_batch_size)
        self._output_names = {spec.name for spec in info.outputs}
        self._datatypes = {spec.name: spec.datatype for spec in info.inputs}
        # Headers (model, inputs' names, datatypes and shapes, outputs) validated once, with the rows and
        # batching signature they give: an entry repeating one is not validated again.
        self._decoder: RequestDecoder[tuple[int, Signature]] = RequestDecoder(self.limits)
        self._reply_verdicts: dict[str, bool] = {}  # may_reply_to's answers (a few reply streams, many requests)

    def admit(
        self, entry_id: str, fields: Mapping[Any, Any], read_ns: int | None = None, server_now_ns: int | None = None
    ) -> WorkItem | Rejection:
        """Decode and validate one entry. ``server_now_ns``: the Redis server's clock at read (bounds the
        trust in the entry id's time)."""
        timing = Timing(enqueued_ns=entry_time_ns(entry_id, server_now_ns), read_ns=read_ns or time.time_ns())
        try:
            request, known, key = self._decoder.lookup(fields)
            if request is None:
                request = decode_request(fields, self.limits, self._datatypes)
            if not self.may_reply_to(request.reply_to):
                raise CodecError(f"reply_to {request.reply_to!r} is not a reply stream", Status.INVALID_ARGUMENT)
            if known is None:
                known = self._check(request)
                if key is not None:
                    self._decoder.remember(key, request, known)
            rows, signature = known
        except CodecError as exc:
            return self.reject(entry_id, fields, exc.status, str(exc), timing)
        deadline_ns = self._deadline_ns(request, timing.enqueued_ns)
        return WorkItem(entry_id, request, rows, signature, timing, deadline_ns, fields)

    def may_reply_to(self, key: str) -> bool:
        """Whether replies may be written to ``key``: the one rule, applied on every path (the transport
        applies it again before each reply write and TTL)."""
        verdict = self._reply_verdicts.get(key)
        if verdict is None:
            # A bare prefix is no reply stream: under a tenant's prefix it would be shared by nobody's ACL.
            allowed = any(key.startswith(p) and len(key) > len(p) for p in self.reply_prefixes)
            verdict = allowed and key not in self.forbidden_reply_to
            if len(self._reply_verdicts) >= MAX_REPLY_VERDICTS:
                self._reply_verdicts.clear()
            self._reply_verdicts[key] = verdict
        return verdict

    def reject(
        self, entry_id: str, fields: Mapping[Any, Any], status: Status, error: str, timing: Timing, *,
        dead_letter: bool = False,
    ) -> Rejection:  # fmt: skip
        """The rejection of an entry answered without being computed, under the one rule (protocol §9): it is
        answered when its ``reply_to`` is readable and allowed, under its ``id``; when the id is unreadable,
        under its entry id (the id the producer's XADD returned) and dead-lettered as well (the producer is
        broken: the record stays for a look). With nowhere to reply, it is only dead-lettered."""
        request_id, reply_to = self.envelope(fields)
        if request_id is None and reply_to is not None:
            problem = request_id_problem(fields)
            why = "the request id is unreadable" if problem is None else str(problem)
            if error != why:  # otherwise the error is the id problem itself
                error = f"{error}; {why}"
            error = f"{error} (answered under the entry id {entry_id})"
            request_id, dead_letter = entry_id, True
        return Rejection(entry_id, request_id, reply_to, status, error, timing, fields, dead_letter)

    def envelope(self, fields: Mapping[Any, Any]) -> tuple[str | None, str | None]:
        """(request id, reply_to) of an entry that is answered without being decoded (poison, a bug);
        ``reply_to`` is None unless ``may_reply_to`` allows it."""
        request_id, reply_to = peek_envelope(fields)
        if reply_to is not None and not self.may_reply_to(reply_to):
            reply_to = None
        return request_id, reply_to

    def _deadline_ns(self, request: Request, enqueued_ns: int) -> int | None:
        timeouts = [t for t in (request.timeout_ms, self.default_timeout_ms) if t is not None]
        if not timeouts or not enqueued_ns:
            return None
        return enqueued_ns + min(timeouts) * 1_000_000

    def _check(self, request: Request) -> tuple[int, Signature]:
        """Validate against the model; return (rows, batching signature)."""
        info = self.info
        if request.model != info.name:
            raise CodecError(
                f"model {request.model!r} is not served here (this is {info.name!r})", Status.MODEL_NOT_FOUND
            )
        if request.model_version is not None and self.version is not None and request.model_version != self.version:
            raise CodecError(
                f"model {info.name!r} version {request.model_version!r} is not served (this is {self.version!r})",
                Status.MODEL_NOT_FOUND,
            )
        expected = [spec.name for spec in info.inputs]
        missing = [name for name in expected if name not in request.inputs]
        unexpected = [name for name in request.inputs if name not in expected]
        if missing or unexpected:
            raise CodecError(
                f"inputs must be {expected}; missing {missing}, unexpected {unexpected}", Status.INVALID_ARGUMENT
            )
        rows = {_check_input(spec.name, spec.datatype, spec.shape, request.inputs[spec.name]) for spec in info.inputs}
        if len(rows) > 1:
            raise CodecError(f"inputs disagree on the batch dimension: {sorted(rows)}", Status.INVALID_ARGUMENT)
        (count,) = rows
        if not 1 <= count <= self.max_rows:
            raise CodecError(
                f"a request holds 1..{self.max_rows} rows (batch dimension), got {count}", Status.INVALID_ARGUMENT
            )
        if request.outputs is not None:
            unknown = [name for name in request.outputs if name not in self._output_names]
            if unknown:
                raise CodecError(
                    f"unknown outputs {unknown}; the model has {sorted(self._output_names)}", Status.INVALID_ARGUMENT
                )
        # Names and datatypes are fixed by the model once validated: the per-sample shapes decide.
        return count, tuple(request.inputs[spec.name].shape[1:] for spec in info.inputs)


def _check_input(name: str, datatype: str, shape: tuple[int, ...], arr: np.ndarray[Any, Any]) -> int:
    """Check one input against its spec; return its batch size."""
    got = datatype_of(arr.dtype)
    if got != datatype:
        raise CodecError(f"input {name!r} must be {datatype}, got {got}", Status.INVALID_ARGUMENT)
    if arr.ndim != len(shape):
        raise CodecError(
            f"input {name!r} must have rank {len(shape)} (batch first, model shape {list(shape)}), "
            f"got shape {list(arr.shape)}",
            Status.INVALID_ARGUMENT,
        )
    for axis, (want, have) in enumerate(zip(shape[1:], arr.shape[1:], strict=True), start=1):
        if want >= 0 and want != have:
            raise CodecError(
                f"input {name!r} dimension {axis} must be {want} (model shape {list(shape)}), "
                f"got shape {list(arr.shape)}",
                Status.INVALID_ARGUMENT,
            )
    return int(arr.shape[0])
