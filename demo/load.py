"""Drive a ``producer.Client`` with a bounded number of requests in flight and record each one's timings."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(slots=True)
class Sample:
    """One request as the client saw it, plus the reply's server-side trace."""

    label: Any  # what was sent (e.g. the rotation)
    submit_wall_ns: int
    submit_mono_ns: int
    done_wall_ns: int = 0
    done_mono_ns: int = 0
    reply: Any = None  # redis_infer_protocol.codec.Reply when it succeeded
    error: BaseException | None = None

    @property
    def latency_s(self) -> float:
        return (self.done_mono_ns - self.submit_mono_ns) / 1e9


@dataclass(slots=True)
class LoadResult:
    samples: list[Sample] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.reply is not None]

    @property
    def failed(self) -> list[Sample]:
        return [s for s in self.samples if s.reply is None]


def run_load(
    client: Any,
    requests: Iterable[tuple[Any, Mapping[str, np.ndarray]]],
    *,
    concurrency: int,
    timeout_s: float = 60.0,
    on_done: Callable[[Sample], None] | None = None,
) -> LoadResult:
    """Submit every ``(label, inputs)`` through ``client.submit`` with at most ``concurrency`` in flight.

    ``on_done`` runs in the client's reply thread, so keep it short (a progress bar update).
    """
    slots = threading.BoundedSemaphore(concurrency)
    result = LoadResult()
    pending: list[Future[Any]] = []

    def finish(sample: Sample, future: Future[Any]) -> None:
        sample.done_mono_ns = time.perf_counter_ns()
        sample.done_wall_ns = time.time_ns()
        try:
            sample.reply = future.result()
        except BaseException as exc:
            sample.error = exc
        slots.release()
        if on_done is not None:
            on_done(sample)

    start = time.perf_counter()
    for label, inputs in requests:
        slots.acquire()
        sample = Sample(label, time.time_ns(), time.perf_counter_ns())
        result.samples.append(sample)
        try:
            future = client.submit(dict(inputs), timeout=timeout_s)
        except BaseException:
            slots.release()
            raise
        future.add_done_callback(lambda f, s=sample: finish(s, f))
        pending.append(future)
    for future in pending:
        with contextlib.suppress(BaseException):
            future.result(timeout=timeout_s + 5)
    result.elapsed_s = time.perf_counter() - start
    return result
