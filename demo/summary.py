"""Numbers from a load run: latency percentiles, the server-side time breakdown, batch sizes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from demo.load import Sample

# (name, from-field, to-field) of the reply's timing trace (wall-clock ns)
STAGES: tuple[tuple[str, str, str], ...] = (
    ("in stream (enqueued -> read)", "enqueued_ns", "read_ns"),
    ("in worker: batching + slot wait (read -> batched)", "read_ns", "batched_ns"),
    ("staging copy (batched -> compute start)", "batched_ns", "compute_start_ns"),
    ("compute (engine run)", "compute_start_ns", "compute_end_ns"),
    ("reply encode (compute end -> published)", "compute_end_ns", "published_ns"),
)


def percentiles_ms(values_s: Sequence[float], points: Sequence[float] = (50, 90, 99)) -> dict[str, float]:
    """``{"p50": ms, ..., "max": ms, "mean": ms}`` of latencies given in seconds."""
    if not values_s:
        return {}
    arr = np.asarray(values_s, dtype=np.float64) * 1e3
    out = {f"p{p:g}": float(np.percentile(arr, p)) for p in points}
    out["max"] = float(arr.max())
    out["mean"] = float(arr.mean())
    return out


def server_breakdown_ms(samples: Sequence[Sample]) -> dict[str, float]:
    """Mean milliseconds of each server-side stage, plus the client-side remainder.

    ``enqueued_ns`` comes from the stream entry id (Redis clock, millisecond resolution), so the queue
    wait is only good to about a millisecond; every clock here is this machine's.
    """
    replies = [s for s in samples if s.reply is not None]
    if not replies:
        return {}
    out: dict[str, float] = {}
    for name, start, end in STAGES:
        deltas = [getattr(s.reply.timing, end) - getattr(s.reply.timing, start) for s in replies]
        out[name] = float(np.mean(deltas)) / 1e6
    out["client encode + XADD (submit -> enqueued)"] = (
        float(np.mean([s.reply.timing.enqueued_ns - s.submit_wall_ns for s in replies])) / 1e6
    )
    out["reply XADD + client read (published -> done)"] = (
        float(np.mean([s.done_wall_ns - s.reply.timing.published_ns for s in replies])) / 1e6
    )
    return out


def batch_stats(samples: Sequence[Sample]) -> tuple[float, float, Counter[str]]:
    """(mean batch size per batch, mean batch size per request, requests per worker).

    Replies carry the size of their batch, not its identity: a batch of size b is seen by b requests,
    so the number of batches is the sum of 1/b over requests (every request here is one row).
    """
    replies = [s.reply for s in samples if s.reply is not None]
    sizes = [r.batch_size for r in replies if r.batch_size > 0]
    if not sizes:
        return 0.0, 0.0, Counter(r.worker or "?" for r in replies)
    per_batch = len(sizes) / sum(1.0 / b for b in sizes)
    return per_batch, float(np.mean(sizes)), Counter(r.worker or "?" for r in replies)
